"""The CLI's commands, each an async function returning the process exit code."""

import asyncio
import contextlib
import shlex
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temporal_executor.bus.codec import encode_nats
from temporal_executor.bus.factory import create_transport
from temporal_executor.bus.transport import Transport
from temporal_executor.bus_client import (
    approval_reply_event,
    cancel_event,
    default_approver,
    merged,
    print_until_done,
    request_event,
    task_events,
)
from temporal_executor.dev.embedded_stack import EmbeddedStackError
from temporal_executor.dev.stack import DevPorts
from temporal_executor.processes import stop_on_signals
from temporal_executor.schemas.cloudevent import APPROVALSIG_EXTENSION, CloudEvent
from temporal_executor.schemas.config import Settings
from temporal_executor.schemas.event_types import EventType
from temporal_executor.schemas.requests import (
    ApprovalReplied,
    CancelRequested,
    ExecutionRequested,
    ModelSelection,
)
from temporal_executor.telemetry.process import observed

if TYPE_CHECKING:
    from temporal_executor.signing import ReplySigner

DEMO_MESSAGE = "Work out 6 * 7 and save a note about it."


# Each process imports only what it runs (a bridge does not need the worker, the gateway's
# web stack or the LLM SDKs): that is most of its memory (docs/performance.md, "Memory").


async def worker(settings: Settings) -> int:
    from temporal_executor.worker.service import run_worker

    return await _run_until_signalled(settings, "worker", run_worker)


async def bridge(settings: Settings) -> int:
    from temporal_executor.bridge.service import run_bridge

    return await _run_until_signalled(settings, "bridge", run_bridge)


async def _run_until_signalled(
    settings: Settings, role: str, run: Callable[[Settings, asyncio.Event], Awaitable[None]]
) -> int:
    """Run a service process, observed, until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with observed(settings, role):
        await run(settings, stop)
    return 0


async def gateway(settings: Settings) -> int:
    from temporal_executor.gateway import CannotStart, run_gateway

    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        # The gateway serves /metrics, /healthz and /readyz on its own port.
        async with observed(settings, "gateway", serve=False):
            await run_gateway(settings, stop)
    except CannotStart as exc:
        print(f"temporal-executor gateway: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


async def dev(settings: Settings, data_dir: Path, *, demo: bool, ports: DevPorts) -> int:
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with observed(settings, "dev"):
        return await _dev(settings, stop, data_dir, demo=demo, ports=ports)


async def _dev(
    settings: Settings, stop: asyncio.Event, data_dir: Path, *, demo: bool, ports: DevPorts
) -> int:
    from temporal_executor.dev.stack import run_dev
    from temporal_executor.gateway import CannotStart

    started: asyncio.Future[Settings] = asyncio.get_running_loop().create_future()
    stack_run = asyncio.create_task(
        run_dev(settings, stop, data_dir=data_dir, ports=ports, after_start=started)
    )
    if demo:
        first: list[asyncio.Future[Any]] = [started, stack_run]
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if started.done():
            await _demo(started.result(), stop)
    try:
        await stack_run
    except (EmbeddedStackError, CannotStart) as exc:
        print(f"temporal-executor dev: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


async def _demo(settings: Settings, stop: asyncio.Event) -> None:
    """Send the demo task and follow it, unless Ctrl-C comes first."""
    demo = asyncio.create_task(send(settings, DEMO_MESSAGE, task_id=_new_task_id(), follow=True))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([demo, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if demo.done():
        if demo.result() == 0:
            print("Demo done. Press Ctrl-C to stop the stack.", flush=True)
        else:
            print("Demo task did not complete. Press Ctrl-C to stop the stack.", flush=True)
        return
    demo.cancel()  # the stack is going away: its events will not come
    with contextlib.suppress(asyncio.CancelledError):
        await demo


def approve_hint(settings: Settings, task_id: str, approval_id: str) -> str:
    """The command a person types to approve, as printed next to an approval request."""
    words = ["temporal-executor", "approve", task_id, approval_id]
    if settings.bus.default != "kafka":
        words += ["--transport", settings.bus.default]
    return shlex.join(words)


def _new_task_id() -> str:
    return f"task-{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def _connected(settings: Settings) -> AsyncIterator[Transport]:
    transport = create_transport(settings.bus.default, settings.bus)
    await transport.start()
    try:
        yield transport
    finally:
        await transport.close()


async def send(
    settings: Settings,
    message: str,
    *,
    task_id: str,
    provider: str | None = None,
    model: str | None = None,
    tools: list[str] | None = None,
    require_approval: bool = False,
    follow: bool = False,
    stream: bool | None = None,
) -> int:
    selection = None
    if provider or model:
        selection = ModelSelection(
            provider=provider or settings.llm.default_provider,
            model=model or settings.llm.default_model,
        )
    request = ExecutionRequested(
        task_id=task_id,
        user_message=message,
        llm=selection,
        tools=tools,
        require_approval=require_approval,
        # Following, the model's words are printed as they come (unless asked not to).
        stream=stream if stream is not None else (True if follow else None),
    )
    event = request_event(request)
    async with _connected(settings) as transport:
        if not follow:
            await transport.publish(transport.requests_destination(task_id), event)
            print(f"sent {EventType.EXECUTION_REQUESTED} for task {task_id}")
            return 0
        async with (
            transport.watch(transport.events_destination(task_id), from_start=False) as watched,
            transport.watch(transport.deltas_destination(task_id), from_start=False) as deltas,
        ):
            return await _follow(settings, transport, event, task_id, watched, deltas)


async def _follow(
    settings: Settings,
    transport: Transport,
    event: CloudEvent,
    task_id: str,
    watched: AsyncIterator[object],
    deltas: AsyncIterator[object],
) -> int:
    await transport.publish(transport.requests_destination(task_id), event)
    print(f"sent {EventType.EXECUTION_REQUESTED} for task {task_id}; following its events")
    terminal = await print_until_done(
        merged(task_events(transport, task_id, watched), task_events(transport, task_id, deltas)),
        sys.stdout,
        lambda t, a: approve_hint(settings, t, a),
    )
    return 0 if terminal is not None and terminal.type == EventType.EXECUTION_COMPLETED else 1


async def approve(
    settings: Settings,
    task_id: str,
    approval_id: str,
    *,
    approved: bool,
    reason: str | None,
    approver: str | None = None,
    signer: "ReplySigner | None" = None,
) -> int:
    reply = ApprovalReplied(
        task_id=task_id,
        approval_id=approval_id,
        approved=approved,
        approver=approver or default_approver(),
        reason=reason,
    )
    event = approval_reply_event(reply)
    if signer is not None:
        event = signer.signed(event, reply)
    async with _connected(settings) as transport:
        destination = transport.approval_replies_destination(task_id)
        await transport.publish(destination, event)
    verdict = "approved" if approved else "denied"
    signed = f", signed {signer.algorithm} as {reply.approver}" if signer is not None else ""
    print(f"{verdict} {approval_id} of task {task_id} (sent to {destination}{signed})")
    return 0


def sign_approval(
    reply: ApprovalReplied, signer: "ReplySigner", *, event_id: str | None, whole_event: bool
) -> int:
    """Print the `approvalsig` of a reply (or the whole signed reply, structured mode)."""
    event = approval_reply_event(reply)
    if event_id is not None:
        event = event.model_copy(update={"id": event_id})
    signed = signer.signed(event, reply)
    if whole_event:
        # Structured mode: one line that kcat or nats publishes as it is.
        print(encode_nats(signed, "structured").value.decode())
        return 0
    if event_id is None:
        print(f"the reply's event id must be {event.id}", file=sys.stderr)
    print(signed.extensions[APPROVALSIG_EXTENSION])
    return 0


async def cancel(settings: Settings, task_id: str, *, reason: str | None) -> int:
    async with _connected(settings) as transport:
        await transport.publish(
            transport.requests_destination(task_id),
            cancel_event(CancelRequested(task_id=task_id, reason=reason)),
        )
    print(f"asked to cancel task {task_id}")
    return 0


async def events(
    settings: Settings, task_id: str | None, *, from_start: bool, deltas: bool = False
) -> int:
    """Print task events (with `deltas`, also the models' text as it streams) until Ctrl-C."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with contextlib.AsyncExitStack() as stack:
        transport = await stack.enter_async_context(_connected(settings))
        watched = transport.watch(transport.events_destination(task_id), from_start=from_start)
        await watched.start()
        sources = [task_events(transport, task_id, watched)]
        if deltas:
            # Deltas are live only (best-effort, short retention): never from the start.
            streamed = await stack.enter_async_context(
                transport.watch(transport.deltas_destination(task_id), from_start=False)
            )
            sources.append(task_events(transport, task_id, streamed))
        which = f"task {task_id}" if task_id else "all tasks"
        print(f"watching {which}{' with deltas' if deltas else ''}; Ctrl-C stops", file=sys.stderr)
        printing = asyncio.create_task(
            print_until_done(
                merged(*sources) if deltas else sources[0],
                sys.stdout,
                lambda t, a: approve_hint(settings, t, a),
                stop_at_terminal=False,
                many_tasks=task_id is None,
            )
        )
        await asyncio.wait(
            [printing, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        printing.cancel()
    return 0
