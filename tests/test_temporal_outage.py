"""Nothing is lost while a dependency is down (CONTRACT.md, "Guarantees").

A bridge and a worker run on the real servers, and Temporal is stopped. Requests, an
approval reply and a cancel arrive on Kafka and on NATS; another bridge starts and finds
no Temporal; the first bridge is restarted (a deploy during the outage). While Temporal
is down nothing is dead-lettered for the outage, nothing happens and no bridge crashes;
once it is back every message takes effect, each task exactly once.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RetryConfig

from temporal_executor.bridge.service import run_bridge
from temporal_executor.bus.errors import DeadLetter
from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import ContentMode, Settings
from temporal_executor.schemas.event_types import TERMINAL_TYPES, EventType, workflow_id_for
from temporal_executor.schemas.task import BusName
from temporal_executor.tasks.temporal_connection import connect_temporal
from tests.harness import (
    BUSES,
    BusWatcher,
    ServiceHarness,
    data,
    new_task_id,
    service_settings,
    types,
)

REQUESTS_PER_BUS = 3
# Long enough for the bridge to fail against the stopped Temporal many times over (its
# retries start at 0.1 s and back off to 1 s; were the outage taken for a bug, five
# failures in a row would dead-letter a message within about 2 s).
OUTAGE_SECONDS = 3.0
# A bridge told to stop must not wait for the outage to end (a deploy, a scale-down).
STOP_SECONDS = 5.0
MODES: tuple[ContentMode, ...] = ("binary", "structured")


class Bridge:
    """`run_bridge` as a task of its own, so the test sees whether it is still running."""

    def __init__(self, settings: Settings, client: Client | None) -> None:
        self._stop = asyncio.Event()
        self.task = asyncio.create_task(run_bridge(settings, self._stop, client))

    def running(self) -> bool:
        return not self.task.done()

    async def stop(self, timeout: float = 20) -> None:
        """Like SIGTERM; raises TimeoutError if the bridge is not done in time."""
        self._stop.set()
        await asyncio.wait_for(asyncio.shield(self.task), timeout)


@dataclass
class Outage:
    stack: EmbeddedStack
    harness: ServiceHarness  # the worker; producers and watchers for the main bridge
    late: ServiceHarness  # producers and watchers for a bridge started during the outage
    bridge_client: Client
    bridges: list[Bridge] = field(default_factory=list)

    def start_bridge(self, settings: Settings, client: Client | None) -> Bridge:
        bridge = Bridge(settings, client)
        self.bridges.append(bridge)
        return bridge


def _settings(stack: EmbeddedStack, notes: Path) -> Settings:
    return service_settings(
        stack,
        notes,
        approval_timeout_seconds=600,
    )


@pytest.fixture
async def outage(embedded_stack: EmbeddedStack, tmp_path: Path) -> AsyncIterator[Outage]:
    settings = _settings(embedded_stack, tmp_path)
    # Clients of their own, as the processes have. The SDK retries a failing call for
    # about 10 s before it raises; the bridge's client gives up at once instead, so that
    # within the outage the bridge's own handling of it (RetryLater: keep the message,
    # back off, retry) runs many times over.
    worker_client = await connect_temporal(settings)
    bridge_client = await Client.connect(
        settings.temporal.host_port,
        data_converter=pydantic_data_converter,
        retry_config=RetryConfig(max_retries=1, max_elapsed_time_millis=300),
    )
    harness = ServiceHarness(settings, worker_client, bridge=False, worker=True)
    await harness.start()
    # Topics, streams and consumers of its own; its tasks run on the same worker.
    late_settings = _settings(embedded_stack, tmp_path)
    late_settings.temporal.task_queue = settings.temporal.task_queue
    late = ServiceHarness(late_settings, worker_client, bridge=False, worker=False)
    await late.start()
    outage = Outage(embedded_stack, harness, late, bridge_client)
    try:
        yield outage
    finally:
        for bridge in outage.bridges:
            with contextlib.suppress(TimeoutError):
                await bridge.stop()
        await late.stop()
        await harness.stop()


def dead_letters_for(watcher: BusWatcher, events: list[CloudEvent]) -> list[str]:
    ids = {e.id for e in events}
    found = []
    for message in watcher.dead_letters:
        with contextlib.suppress(DeadLetter):  # not a CloudEvent: not one of ours
            if (event_id := watcher.transport.decode(message).id) in ids:
                found.append(event_id)
    return found


async def _approval_ids(
    harness: ServiceHarness, task_ids: dict[BusName, str]
) -> dict[BusName, str]:
    approval_ids: dict[BusName, str] = {}
    for bus, task_id in task_ids.items():
        request = await harness.watchers[bus].wait_for(task_id, EventType.APPROVAL_REQUESTED)
        approval_ids[bus] = data(request)["approval_id"]
    return approval_ids


async def _assert_completed_once(client: Client, task_ids: list[str]) -> None:
    for task_id in task_ids:
        handle = client.get_workflow_handle(workflow_id_for(task_id))
        # The terminal event is published just before the workflow closes.
        await asyncio.wait_for(handle.result(), 30)
        assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
        query = f'WorkflowId = "{workflow_id_for(task_id)}"'
        assert len([w async for w in client.list_workflows(query)]) == 1


async def test_messages_sent_while_temporal_is_down_take_effect_once_it_is_back(
    outage: Outage,
) -> None:
    harness, late = outage.harness, outage.late
    bridge = outage.start_bridge(harness.settings, outage.bridge_client)
    # Before the outage: each bus consumes, and on each two tasks wait for a person.
    waiting = {bus: new_task_id("approve-later") for bus in BUSES}
    to_cancel = {bus: new_task_id("cancel-later") for bus in BUSES}
    for bus in BUSES:
        await harness.producers[bus].request(waiting[bus], "note")
        await harness.producers[bus].request(to_cancel[bus], "note")
    approval_ids = await _approval_ids(harness, waiting)
    await _approval_ids(harness, to_cancel)

    sent: dict[BusName, list[CloudEvent]] = {bus: [] for bus in BUSES}
    new_tasks: dict[BusName, list[str]] = {bus: [] for bus in BUSES}
    late_tasks = {bus: new_task_id("late-bridge") for bus in BUSES}
    late_sent: dict[BusName, list[CloudEvent]] = {}
    await outage.stack.stop_temporal()
    try:
        # Bridges (re)started now find no Temporal: they wait for it, not crash-loop.
        late_bridge = outage.start_bridge(late.settings, None)
        quitter = outage.start_bridge(late.settings, None)
        for bus in BUSES:
            producer = harness.producers[bus]
            for i in range(REQUESTS_PER_BUS):
                task_id = new_task_id(f"outage-{i}")
                new_tasks[bus].append(task_id)
                mode = MODES[i % len(MODES)]
                sent[bus].append(await producer.request(task_id, "calculate", mode=mode))
            reply = {
                "task_id": waiting[bus],
                "approval_id": approval_ids[bus],
                "approved": True,
                "approver": "during-outage",
            }
            sent[bus].append(await producer.send(EventType.APPROVAL_REPLIED, waiting[bus], reply))
            cancel = {"task_id": to_cancel[bus], "reason": "during outage"}
            sent[bus].append(
                await producer.send(EventType.CANCEL_REQUESTED, to_cancel[bus], cancel)
            )
            late_sent[bus] = [await late.producers[bus].request(late_tasks[bus], "one-turn")]
        await asyncio.sleep(OUTAGE_SECONDS)

        assert bridge.running(), "the bridge stopped while Temporal was down"
        assert late_bridge.running(), "a bridge started without Temporal stopped"
        assert quitter.running(), "a bridge started without Temporal stopped"
        for bus in BUSES:
            watcher = harness.watchers[bus]
            assert dead_letters_for(watcher, sent[bus]) == [], f"dead-lettered on {bus}"
            for task_id in new_tasks[bus]:
                assert watcher.events(task_id) == [], f"{task_id} ran without Temporal"
            assert EventType.APPROVAL_RESOLVED not in types(watcher.events(waiting[bus]))
            assert EventType.EXECUTION_CANCELLED not in types(watcher.events(to_cancel[bus]))

        # Told to stop while waiting to connect: it stops, cleanly.
        await quitter.stop(STOP_SECONDS)
        assert quitter.task.exception() is None
        # A deploy during the outage: the bridge holding the messages stops without
        # acknowledging them, and its successor gets them again.
        await bridge.stop(STOP_SECONDS)
        assert bridge.task.exception() is None
        successor = outage.start_bridge(harness.settings, outage.bridge_client)
    finally:
        await outage.stack.start_temporal()

    for bus in BUSES:
        watcher = harness.watchers[bus]
        for task_id in new_tasks[bus]:
            events = await watcher.wait_for_end(task_id)
            assert types(events).count(EventType.EXECUTION_STARTED) == 1
            assert sum(e.type in TERMINAL_TYPES for e in events) == 1
            assert events[-1].type == EventType.EXECUTION_COMPLETED
            assert data(events[-1])["final_message"] == "the answer is 42"
        approved = await watcher.wait_for_end(waiting[bus])
        resolved = [data(e) for e in approved if e.type == EventType.APPROVAL_RESOLVED]
        assert [(r["approved"], r["approver"]) for r in resolved] == [(True, "during-outage")]
        assert approved[-1].type == EventType.EXECUTION_COMPLETED
        cancelled = await watcher.wait_for_end(to_cancel[bus])
        assert cancelled[-1].type == EventType.EXECUTION_CANCELLED
        assert data(cancelled[-1])["reason"] == "during outage"
        late_events = await late.watchers[bus].wait_for_end(late_tasks[bus])
        assert late_events[-1].type == EventType.EXECUTION_COMPLETED
    assert successor.running(), "the bridge stopped after Temporal came back"
    assert late_bridge.running(), "the bridge started during the outage stopped"
    for bus in BUSES:
        assert dead_letters_for(harness.watchers[bus], sent[bus]) == []
        assert dead_letters_for(late.watchers[bus], late_sent[bus]) == []
        await _assert_completed_once(harness.client, [*new_tasks[bus], late_tasks[bus]])
