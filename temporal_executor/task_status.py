"""`temporal-executor status TASK_ID`: a task as a person wants to read it.

State, iteration, pending approvals with their expiry, final message or error come from
the task service's `status` (the workflow's query); where its events go from the task's
input; the last events and the usage from the bus, read from the start of the task's
events destination until it stays quiet (on NATS the task's own subject, on Kafka the
events topic, filtered).
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, TextIO

from temporal_executor.bus.factory import create_transport
from temporal_executor.bus_client import describe, task_events
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import Settings
from temporal_executor.schemas.event_types import workflow_id_for
from temporal_executor.schemas.task import EventRoute, TaskStatus
from temporal_executor.tasks.errors import TaskError
from temporal_executor.tasks.service import TaskService
from temporal_executor.tasks.temporal_connection import connect_temporal

LAST_EVENTS = 5
# The bus has shown everything there was once it stays quiet this long.
QUIET_SECONDS = 1.0
READ_AT_MOST_SECONDS = 15.0


async def show_status(settings: Settings, task_id: str, out: TextIO) -> int:
    """Print the task's status; 0, or 1 when Temporal has no such task or cannot answer."""
    try:
        client = await connect_temporal(settings)
    except RuntimeError as exc:
        print(f"Temporal at {settings.temporal.host_port} is unreachable: {exc}", file=out)
        return 1
    tasks = TaskService(settings, client)
    try:
        status = await tasks.status(task_id)
        route = (await tasks.task_input(task_id)).route
    except TaskError as exc:
        print(exc.message, file=out)
        return 1
    events = await _events(settings, task_id, route)
    print(render(status, events, now=datetime.now(UTC)), file=out)
    return 0


async def _events(settings: Settings, task_id: str, route: EventRoute) -> list[CloudEvent]:
    if not getattr(settings.bus, route.bus).enabled:
        return []
    transport = create_transport(route.bus, settings.bus)
    try:
        await transport.start()
        async with transport.watch(route.events_destination, from_start=True) as watched:
            return await _until_quiet(task_events(transport, task_id, watched))
    finally:
        await transport.close()


async def _until_quiet(events: AsyncIterator[CloudEvent]) -> list[CloudEvent]:
    unique: dict[str, CloudEvent] = {}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(READ_AT_MOST_SECONDS):
            while True:
                event = await asyncio.wait_for(anext(events), QUIET_SECONDS)
                unique.setdefault(event.id, event)
    return sorted(unique.values(), key=lambda e: int(e.extension("sequence") or 0))


def render(status: TaskStatus, events: list[CloudEvent], *, now: datetime) -> str:
    lines = [
        f"task        {status.task_id} (workflow {workflow_id_for(status.task_id)})",
        f"state       {status.state}",
        f"iteration   {status.iteration}",
    ]
    for pending in status.pending_approvals:
        call = pending.tool_call
        left = (pending.expires_at - now).total_seconds()
        expiry = f"expires {pending.expires_at.isoformat()} ({_duration(left)})"
        arguments = json.dumps(call.arguments, ensure_ascii=False)
        lines.append(f"approval    {pending.approval_id}: {call.name}({arguments}) {expiry}")
    usage = _usage(events)
    if usage is not None:
        lines.append(
            f"usage       {usage.get('input_tokens', 0)} input + "
            f"{usage.get('output_tokens', 0)} output tokens"
        )
    if status.final_message is not None:
        lines.append(f"final       {status.final_message}")
    if status.error is not None:
        lines.append(f"error       {status.error}")
    shown = events[-LAST_EVENTS:]
    lines.append(f"last events ({len(shown)} of {len(events)})" if events else "last events none")
    lines.extend(f"  {describe(event)}" for event in shown)
    return "\n".join(lines)


def _usage(events: list[CloudEvent]) -> dict[str, Any] | None:
    """The usage of the latest event that carries one (cumulative in v1.1 events)."""
    for event in reversed(events):
        data = event.data if isinstance(event.data, dict) else {}
        if isinstance(data.get("usage"), dict):
            usage: dict[str, Any] = data["usage"]
            return usage
    return None


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "overdue"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"in {hours}h{minutes:02d}m" if hours else f"in {minutes}m{secs:02d}s"
