"""Tasks' events read back from the bus, for the REST API's SSE and A2A streams alike.

A task started here publishes on the default bus (`bus.default`), and streams read its
events back from where its route sends them with `Transport.watch`: what an HTTP or A2A
caller sees is what a bus subscriber sees. Nothing is kept here but the open watches, so
that stopping can end them.
"""

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from temporal_executor.bus.errors import BusError, TransportError
from temporal_executor.bus.transport import Transport, Watch
from temporal_executor.gateway._errors import BusUnavailable, ShuttingDown
from temporal_executor.schemas.cloudevent import TASKID_EXTENSION, CloudEvent
from temporal_executor.schemas.event_types import TERMINAL_TYPES
from temporal_executor.schemas.task import BusName, EventRoute


class TaskStreams:
    def __init__(self, transports: Mapping[BusName, Transport], default_bus: BusName) -> None:
        self._transports = transports
        self._default_bus = default_bus
        self._watches: set[Watch] = set()
        self.closing = False

    @property
    def default(self) -> Transport:
        """The bus tasks started here publish on (`bus.default`)."""
        return self._transports[self._default_bus]

    @asynccontextmanager
    async def events(
        self, task_id: str, route: EventRoute, *, from_start: bool
    ) -> AsyncIterator[AsyncIterator[CloudEvent]]:
        """The task's events where its route sends them, deduplicated by id, ending after the
        terminal one (or when the gateway stops). Watching starts on entry: open it before
        starting or changing the task, and nothing that causes is missed."""
        if self.closing:
            msg = "the gateway is shutting down"
            raise ShuttingDown(msg)
        transport = self._transports.get(route.bus)
        if transport is None:
            msg = (
                f"task {task_id} publishes on {route.bus}, which bus.{route.bus}.enabled turns off"
            )
            raise BusUnavailable(msg)
        watch = transport.watch(route.events_destination, from_start=from_start)
        self._watches.add(watch)
        try:
            try:
                await watch.start()
            except TransportError as exc:
                raise BusUnavailable(str(exc)) from exc
            yield _task_events(transport, watch, task_id)
        finally:
            self._watches.discard(watch)
            await watch.aclose()

    async def end(self) -> None:
        """Stopping: end every open stream (their responses then finish) and open no more."""
        self.closing = True
        for watch in list(self._watches):
            await watch.aclose()


async def _task_events(
    transport: Transport, messages: AsyncIterator[Any], task_id: str
) -> AsyncIterator[CloudEvent]:
    seen: set[str] = set()
    async for message in messages:
        try:
            event = transport.decode(message)
        except BusError:  # not a CloudEvent, so not one of ours
            continue
        # Delivery is at least once: a redelivered event has the id it had.
        if event.extension(TASKID_EXTENSION) != task_id or event.id in seen:
            continue
        seen.add(event.id)
        yield event
        if event.type in TERMINAL_TYPES:
            return


def cloudevent_json(event: CloudEvent) -> dict[str, Any]:
    """The event in the CloudEvents JSON format (as structured mode puts it on the bus)."""
    attributes = event.model_dump(mode="json", exclude_none=True, exclude={"extensions"})
    return {**attributes, **event.extensions}
