"""A task's stream: what it published so far, from the task, then what it publishes, live.

Past events come from the workflow's `published` query (each run of the task, back
through its continue-as-new chain as far as needed), live ones from the gateway's shared
subscription (`_fanout`). The stream follows the bus before it asks the task, so nothing
falls between the two; it drops what it has already sent by `sequence`, so nothing comes
twice: a `Last-Event-ID` resume is exact. Deltas (`agent.llm.delta`, best-effort and
never in the task's history) are live only.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from temporal_executor.bus.errors import TransportError
from temporal_executor.bus.outbound import build_event
from temporal_executor.bus.transport import Transport
from temporal_executor.gateway._fanout import FanOut, Inbox
from temporal_executor.schemas.cloudevent import SEQUENCE_EXTENSION, CloudEvent
from temporal_executor.schemas.event_types import TERMINAL_TYPES, workflow_id_for
from temporal_executor.schemas.task import (
    AgentTaskInput,
    EventRoute,
    PublishedEvents,
    PublishedQuery,
    PublishInput,
)

log = logging.getLogger(__name__)

LLM_DELTA = "agent.llm.delta"
# Where deltas go when the transport does not name it (contract v1.1, "Streaming").
DEFAULT_DELTAS: dict[str, str] = {"kafka": "agent.deltas", "nats": "agent.deltas.>"}


class PastEventsUnavailable(Exception):
    """The task could not say what it published (Temporal or its workers do not answer)."""


def events_destination(transport: Transport, route: EventRoute, task_id: str) -> str:
    """What to watch for the task's events: the one destination every task on the default
    route shares (NATS: the `agent.events.>` wildcard), or the task's own `replyto`."""
    if route.events_destination == transport.events_destination(task_id):
        return transport.events_destination(None)
    return route.events_destination


def deltas_destination(transport: Transport) -> str:
    named = getattr(transport, "deltas_destination", None)
    if callable(named):
        found: str = named(None)
        return found
    return DEFAULT_DELTAS[transport.bus]


async def past_events(
    client: Client, task_id: str, after: int, source: str, *, rpc_timeout: timedelta
) -> list[CloudEvent]:
    """The task's events with a sequence over `after`, oldest first, as the bus has them."""
    workflow_id = workflow_id_for(task_id)
    found: list[PublishInput] = []
    run_id: str | None = None
    try:
        while True:
            handle = client.get_workflow_handle(workflow_id, run_id=run_id)
            if run_id is None:  # the latest run, fixed so that query and history agree
                run_id = (await handle.describe(rpc_timeout=rpc_timeout)).run_id
                handle = client.get_workflow_handle(workflow_id, run_id=run_id)
            page: PublishedEvents = await handle.query(
                "published",
                PublishedQuery(after=after),
                result_type=PublishedEvents,
                rpc_timeout=rpc_timeout,
            )
            found[:0] = page.events
            carried, previous = await _run_start(client, handle.id, run_id, rpc_timeout)
            if carried <= after or not previous:
                break
            run_id = previous
    except (RPCError, WorkflowQueryFailedError) as exc:
        msg = f"task {task_id} did not say what it published: {exc}"
        raise PastEventsUnavailable(msg) from exc
    return [build_event(event, source) for event in found]


async def _run_start(
    client: Client, workflow_id: str, run_id: str, rpc_timeout: timedelta
) -> tuple[int, str]:
    """The sequence a run carried over from the run before it, and that run's id."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    async for event in handle.fetch_history_events(page_size=1, rpc_timeout=rpc_timeout):
        started = event.workflow_execution_started_event_attributes
        decoded: list[Any] = await client.data_converter.decode(
            started.input.payloads, [AgentTaskInput]
        )
        task: AgentTaskInput = decoded[0]
        return task.carried_sequence, started.continued_execution_run_id
    return 0, ""  # pragma: no cover - a run's history starts with its start


@asynccontextmanager
async def task_stream(
    fanout: FanOut,
    transport: Transport,
    route: EventRoute,
    task_id: str,
    *,
    past: Callable[[], Awaitable[list[CloudEvent]]] | None = None,
    after: int = 0,
    deltas: bool = False,
) -> AsyncIterator[AsyncIterator[CloudEvent]]:
    """The task's events after sequence `after` (and its deltas when asked) until its
    terminal event or the gateway stops. Following starts on entry; `past`, when given, is
    called after that for the events published before (see `past_events`)."""
    inbox: Inbox = asyncio.Queue()
    followed: list[str] = []
    try:
        destination = events_destination(transport, route, task_id)
        await fanout.follow(route.bus, destination, task_id, inbox)
        followed.append(destination)
        if deltas:
            destination = deltas_destination(transport)
            try:
                await fanout.follow(route.bus, destination, task_id, inbox)
                followed.append(destination)
            except TransportError as exc:  # deltas are best-effort: the events still come
                log.warning("no deltas for task %s: %s", task_id, exc)
        earlier = await past() if past is not None else []
        yield _merged(earlier, inbox, after)
    finally:
        for destination in followed:
            fanout.unfollow(route.bus, destination, task_id, inbox)


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
