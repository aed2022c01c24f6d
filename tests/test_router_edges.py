"""The bridge's less travelled paths, on the real servers (CONTRACT.md, "Guarantees").

- A bug that makes handling a message fail is retried a few times (it may pass); if it
  persists the message is dead-lettered `internal-error`, so it neither blocks its
  partition nor is lost.
- Approval replies from an approver config does not allow, approval replies and cancels
  for a task that never existed: dead-lettered with their reason, nothing changes.
- An approval reply while no worker answers the update is kept (not acknowledged, not
  dead-lettered) and applies once a worker is back.

The bridge here is `run_bridge`'s parts (a transport per bus, a `Router`, a `Dispatcher`
each) put together by the test, so that the Router can be a subclass that fails on cue.
"""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from temporal_executor.bridge.dispatcher import MAX_UNEXPECTED_FAILURES, Dispatcher
from temporal_executor.bridge.router import Router
from temporal_executor.bus.factory import create_transport
from temporal_executor.bus.transport import InboundMessage, Transport
from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import Settings
from temporal_executor.schemas.event_types import TERMINAL_TYPES, EventType, workflow_id_for
from temporal_executor.schemas.task import BusName
from temporal_executor.tasks.service import TaskService
from temporal_executor.worker.service import run_worker
from tests.harness import (
    BUSES,
    BusWatcher,
    ServiceHarness,
    data,
    new_task_id,
    service_settings,
    types,
)

pytestmark = pytest.mark.parametrize("bus", BUSES)

ALLOWED_APPROVER = "alice"


class ScriptedFaultRouter(Router):
    """The real Router, except that it raises a plain bug on the first `failures[id]`
    attempts at the event with that id; it counts every attempt at every event."""

    def __init__(self, tasks: TaskService, settings: Settings) -> None:
        super().__init__(tasks, settings)
        self.failures: dict[str, int] = {}
        self.attempts: Counter[str] = Counter()
        self._attempted = asyncio.Condition()

    async def wait_for_attempts(self, event_id: str, count: int) -> None:
        async with self._attempted:
            await self._attempted.wait_for(lambda: self.attempts[event_id] >= count)

    async def handle(self, transport: Transport, message: InboundMessage) -> tuple[str, str]:
        event_id = transport.decode(message).id
        async with self._attempted:
            self.attempts[event_id] += 1
            self._attempted.notify_all()
        if self.attempts[event_id] <= self.failures.get(event_id, 0):
            msg = f"bug on attempt {self.attempts[event_id]}"
            raise RuntimeError(msg)
        return await super().handle(transport, message)


class AssembledBridge:
    """What `run_bridge` runs, with the Router above."""

    def __init__(self, settings: Settings, client: Client) -> None:
        self._settings = settings
        self.router = ScriptedFaultRouter(TaskService(settings, client), settings)
        self._transports: list[Transport] = []
        self._runs: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for bus in BUSES:
            transport = create_transport(bus, self._settings.bus)
            await transport.start()
            self._transports.append(transport)
            dispatcher = Dispatcher(transport, self.router, self._settings.bridge)
            self._runs.append(asyncio.create_task(dispatcher.run()))

    def running(self) -> bool:
        return not any(run.done() for run in self._runs)

    async def stop(self) -> None:
        for run in self._runs:
            run.cancel()
        await asyncio.gather(*self._runs, return_exceptions=True)
        for transport in self._transports:
            await transport.close()


class WorkerSwitch:
    """A worker that the test can stop and start again."""

    def __init__(self, settings: Settings, client: Client) -> None:
        self._settings = settings
        self._client = client
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(run_worker(self._settings, self._stop, self._client))

    async def stop(self) -> None:
        if self._task is not None:
            self._stop.set()
            await asyncio.wait_for(self._task, 20)
            self._task = None


def _settings(stack: EmbeddedStack, notes: Path) -> Settings:
    settings = service_settings(
        stack,
        notes,
        approval_timeout_seconds=600,
    )
    settings.bridge.allowed_approvers = [ALLOWED_APPROVER]
    settings.bridge.retry_initial_seconds = 0.05
    settings.bridge.retry_max_seconds = 0.4
    # An approval update that no worker takes gives up (and is retried) after this long.
    settings.bridge.rpc_timeout_seconds = 1
    return settings


@pytest.fixture(scope="module")
async def edges(
    embedded_stack: EmbeddedStack,
    temporal_client: Client,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[ServiceHarness, AssembledBridge, WorkerSwitch]]:
    settings = _settings(embedded_stack, tmp_path_factory.mktemp("edges"))
    harness = ServiceHarness(settings, temporal_client, bridge=False, worker=False)
    await harness.start()
    bridge = AssembledBridge(settings, temporal_client)
    await bridge.start()
    worker = WorkerSwitch(settings, temporal_client)
    worker.start()
    try:
        yield harness, bridge, worker
    finally:
        await bridge.stop()
        await worker.stop()
        await harness.stop()


Edges = tuple[ServiceHarness, AssembledBridge, WorkerSwitch]


async def _send(
    harness: ServiceHarness, bus: BusName, event_type: str, task_id: str, payload: dict[str, Any]
) -> CloudEvent:
    return await harness.producers[bus].send(event_type, task_id, payload)


def _request(task_id: str, model: str = "one-turn") -> dict[str, Any]:
    return {
        "task_id": task_id,
        "user_message": f"hello from {task_id}",
        "model_config": {"provider": "scripted", "model": model},
    }


async def _dead_letter(watcher: BusWatcher, event: CloudEvent) -> InboundMessage:
    return await watcher.wait_for_dead_letter(event.id.encode(), field="id")


def _dead_lettered(watcher: BusWatcher, event: CloudEvent) -> bool:
    ids = (m.header("ce_id") or m.header("ce-id") for m in watcher.dead_letters)
    return event.id.encode() in set(ids)


async def test_a_message_that_keeps_failing_is_dead_lettered_as_internal_error(
    edges: Edges, bus: BusName
) -> None:
    harness, bridge, _ = edges
    watcher = harness.watchers[bus]
    task_id = new_task_id("bug")
    doomed_id = new_task_id("doomed")
    bridge.router.failures[doomed_id] = 1000  # a bug that does not pass
    doomed = await harness.producers[bus].send(
        EventType.EXECUTION_REQUESTED, task_id, _request(task_id), event_id=doomed_id
    )
    # The same task again, on the same key: it waits for the doomed one, then runs.
    retry = await _send(harness, bus, EventType.EXECUTION_REQUESTED, task_id, _request(task_id))
    dead = await _dead_letter(watcher, doomed)
    assert dead.header("dlq_reason") == b"internal-error"
    assert (
        dead.header("dlq_error")
        == f"RuntimeError: bug on attempt {MAX_UNEXPECTED_FAILURES}".encode()
    )
    assert bridge.router.attempts[doomed.id] == MAX_UNEXPECTED_FAILURES
    events = await watcher.wait_for_end(task_id)
    assert types(events).count(EventType.EXECUTION_STARTED) == 1
    assert events[-1].type == EventType.EXECUTION_COMPLETED
    assert bridge.router.attempts[retry.id] == 1
    assert not _dead_lettered(watcher, retry)
    assert bridge.running()


async def test_a_passing_fault_is_retried_and_the_message_handled(
    edges: Edges, bus: BusName
) -> None:
    harness, bridge, _ = edges
    watcher = harness.watchers[bus]
    task_id = new_task_id("flaky")
    event_id = new_task_id("flaky-event")
    bridge.router.failures[event_id] = MAX_UNEXPECTED_FAILURES - 1
    event = await harness.producers[bus].send(
        EventType.EXECUTION_REQUESTED, task_id, _request(task_id), event_id=event_id
    )
    events = await watcher.wait_for_end(task_id)
    assert events[-1].type == EventType.EXECUTION_COMPLETED
    assert bridge.router.attempts[event_id] == MAX_UNEXPECTED_FAILURES
    assert not _dead_lettered(watcher, event)


async def test_approvals_only_from_allowed_approvers(edges: Edges, bus: BusName) -> None:
    harness, _, _ = edges
    watcher = harness.watchers[bus]
    task_id = new_task_id("approvers")
    await _send(harness, bus, EventType.EXECUTION_REQUESTED, task_id, _request(task_id, "note"))
    approval_id = data(await watcher.wait_for(task_id, EventType.APPROVAL_REQUESTED))["approval_id"]
    reply = {"task_id": task_id, "approval_id": approval_id, "approved": True}
    strangers = [
        await _send(harness, bus, EventType.APPROVAL_REPLIED, task_id, {**reply, **who})
        for who in ({"approver": "mallory"}, {})  # named, and anonymous
    ]
    for stranger in strangers:
        dead = await _dead_letter(watcher, stranger)
        assert dead.header("dlq_reason") == b"approver-not-allowed"
    # Nothing changed: the task still waits, and the allowed approver's reply decides.
    assert EventType.APPROVAL_RESOLVED not in types(watcher.events(task_id))
    denial = {**reply, "approved": False, "approver": ALLOWED_APPROVER}
    await _send(harness, bus, EventType.APPROVAL_REPLIED, task_id, denial)
    events = await watcher.wait_for_end(task_id)
    resolved = [data(e) for e in events if e.type == EventType.APPROVAL_RESOLVED]
    assert [(r["approved"], r["approver"]) for r in resolved] == [(False, ALLOWED_APPROVER)]
    assert events[-1].type == EventType.EXECUTION_COMPLETED


async def test_replies_and_cancels_for_a_task_that_never_existed_are_dead_lettered(
    edges: Edges, bus: BusName
) -> None:
    harness, _, _ = edges
    watcher = harness.watchers[bus]
    task_id = new_task_id("never")
    reply = {
        "task_id": task_id,
        "approval_id": "approval-1-1",
        "approved": True,
        "approver": ALLOWED_APPROVER,
    }
    sent = [
        await _send(harness, bus, EventType.APPROVAL_REPLIED, task_id, reply),
        await _send(harness, bus, EventType.CANCEL_REQUESTED, task_id, {"task_id": task_id}),
    ]
    for event in sent:
        dead = await _dead_letter(watcher, event)
        assert dead.header("dlq_reason") == b"task-not-running"
        assert task_id.encode() in (dead.header("dlq_error") or b"")
    # Neither started anything.
    runs = [
        w async for w in harness.client.list_workflows(f'WorkflowId = "{workflow_id_for(task_id)}"')
    ]
    assert runs == []


async def test_an_approval_is_kept_while_no_worker_answers_then_applies(
    edges: Edges, bus: BusName
) -> None:
    harness, bridge, worker = edges
    watcher = harness.watchers[bus]
    task_id = new_task_id("no-worker")
    await _send(harness, bus, EventType.EXECUTION_REQUESTED, task_id, _request(task_id, "note"))
    approval_id = data(await watcher.wait_for(task_id, EventType.APPROVAL_REQUESTED))["approval_id"]
    await worker.stop()
    try:
        reply = {
            "task_id": task_id,
            "approval_id": approval_id,
            "approved": True,
            "approver": ALLOWED_APPROVER,
        }
        event = await _send(harness, bus, EventType.APPROVAL_REPLIED, task_id, reply)
        # Each attempt waits rpc_timeout_seconds for a worker, gets RetryLater, backs off.
        rpc_timeout = harness.settings.bridge.rpc_timeout_seconds
        await asyncio.wait_for(bridge.router.wait_for_attempts(event.id, 3), rpc_timeout * 6)
        assert not _dead_lettered(watcher, event)
        assert EventType.APPROVAL_RESOLVED not in types(watcher.events(task_id))
    finally:
        worker.start()
    events = await watcher.wait_for_end(task_id)
    resolved = [data(e) for e in events if e.type == EventType.APPROVAL_RESOLVED]
    assert [(r["approved"], r["approver"]) for r in resolved] == [(True, ALLOWED_APPROVER)]
    assert sum(e.type in TERMINAL_TYPES for e in events) == 1
    assert events[-1].type == EventType.EXECUTION_COMPLETED
    assert not _dead_lettered(watcher, event)
    handle = harness.client.get_workflow_handle(workflow_id_for(task_id))
    await asyncio.wait_for(handle.result(), 30)
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    assert bridge.running()
