"""Tasks' events for the REST API's SSE and A2A streams alike: past ones from the task,
live ones from the bus.

A task started here publishes on the default bus (`bus.default`). A stream follows the
gateway's one shared subscription of the destination its route sends events to
(`_fanout`), then asks the task what it published before (the workflow's `published`
query, through the task service); it drops what it has already sent by `sequence`, so
nothing falls between the two and nothing comes twice: a `Last-Event-ID` resume is exact,
and what an HTTP or A2A caller sees is what a bus subscriber sees. Deltas
(`agent.llm.delta`, best-effort and never in the task's history) are live only.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from temporal_executor.bus.errors import TransportError
from temporal_executor.bus.outbound import build_event
from temporal_executor.bus.transport import Transport
from temporal_executor.gateway._errors import BusUnavailable, ShuttingDown
from temporal_executor.gateway._fanout import FanOut, Inbox
from temporal_executor.schemas.cloudevent import SEQUENCE_EXTENSION, CloudEvent
from temporal_executor.schemas.event_types import TERMINAL_TYPES, EventType
from temporal_executor.schemas.task import BusName, EventRoute
from temporal_executor.tasks.service import TaskService

log = logging.getLogger(__name__)

LLM_DELTA = EventType.LLM_DELTA


class TaskStreams:
    def __init__(
        self,
        transports: Mapping[BusName, Transport],
        default_bus: BusName,
        tasks: TaskService,
        *,
        source: str,
    ) -> None:
        self._transports = transports
        self._default_bus = default_bus
        self._tasks = tasks
        self._source = source  # of the events the workflow publishes (`bus.source`)
        self._fanout = FanOut(transports)
        self.closing = False

    @property
    def default(self) -> Transport:
        """The bus tasks started here publish on (`bus.default`)."""
        return self._transports[self._default_bus]

    @property
    def subscriptions(self) -> int:
        """Bus subscriptions held for streams: one per destination, however many streams."""
        return self._fanout.subscriptions

    @property
    def followers(self) -> int:
        """Streams following them (one with deltas counts twice)."""
        return self._fanout.followers

    @asynccontextmanager
    async def events(
        self, task_id: str, route: EventRoute, *, after: int | None = None, deltas: bool = False
    ) -> AsyncIterator[AsyncIterator[CloudEvent]]:
        """The task's events where its route sends them, each once, ending after the terminal
        one (or when the gateway stops); its `agent.llm.delta`s too with `deltas`.

        With `after=None`, what the task publishes from now on: following starts on entry,
        so open it before starting or changing the task, and nothing that causes is missed.
        With a sequence number, the task's events after it (0: all of them)."""
        if self.closing:
            msg = "the gateway is shutting down"
            raise ShuttingDown(msg)
        transport = self._transports.get(route.bus)
        if transport is None:
            msg = (
                f"task {task_id} publishes on {route.bus}, which bus.{route.bus}.enabled turns off"
            )
            raise BusUnavailable(msg)
        inbox: Inbox = asyncio.Queue()
        followed: list[str] = []
        try:
            try:
                destination = events_destination(transport, route, task_id)
                await self._fanout.follow(route.bus, destination, task_id, inbox)
                followed.append(destination)
            except TransportError as exc:
                raise BusUnavailable(str(exc)) from exc
            if deltas:
                destination = deltas_destination(transport)
                try:
                    await self._fanout.follow(route.bus, destination, task_id, inbox)
                    followed.append(destination)
                except TransportError as exc:  # best-effort: the events still come
                    log.warning("no deltas for task %s: %s", task_id, exc)
            earlier: list[CloudEvent] = []
            if after is not None:
                published = await self._tasks.published(task_id, after)
                earlier = [build_event(event, self._source) for event in published]
            yield _merged(earlier, inbox, after or 0)
        finally:
            for destination in followed:
                self._fanout.unfollow(route.bus, destination, task_id, inbox)

    async def end(self) -> None:
        """Stopping: end every open stream (their responses then finish) and open no more."""
        self.closing = True
        await self._fanout.close()


def events_destination(transport: Transport, route: EventRoute, task_id: str) -> str:
    """What to watch for the task's events: the one destination every task on the default
    route shares (NATS: the `agent.events.>` wildcard), or the task's own `replyto`."""
    if route.events_destination == transport.events_destination(task_id):
        return transport.events_destination(None)
    return route.events_destination


def deltas_destination(transport: Transport) -> str:
    """Where every task's deltas go on this bus (NATS: a wildcard)."""
    return transport.deltas_destination(None)


async def _merged(earlier: list[CloudEvent], inbox: Inbox, after: int) -> AsyncIterator[CloudEvent]:
    last = after  # the sequence of the last event sent
    seen: set[str] = set()  # ids of events without a sequence (deltas) sent

    def fresh(event: CloudEvent) -> bool:
        nonlocal last
        sequence = event.extension(SEQUENCE_EXTENSION)
        if sequence is None or not sequence.isdigit():
            if event.id in seen:
                return False
            seen.add(event.id)
            return True
        if int(sequence) <= last:  # delivered again, or already sent from the past
            return False
        last = int(sequence)
        return True

    for event in earlier:
        if fresh(event):
            yield event
            if event.type in TERMINAL_TYPES:
                return
    while (event_or_end := await inbox.get()) is not None:
        if fresh(event_or_end):
            yield event_or_end
            if event_or_end.type in TERMINAL_TYPES:
                return


def cloudevent_json(event: CloudEvent) -> dict[str, Any]:
    """The event in the CloudEvents JSON format (as structured mode puts it on the bus)."""
    attributes = event.model_dump(mode="json", exclude_none=True, exclude={"extensions"})
    return {**attributes, **event.extensions}
