"""Processes die; tasks do not. The bridge and the worker run as real processes here and
are killed with SIGKILL mid-stream, then started again."""

import asyncio
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import TimeoutType
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client

from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import ProviderSettings
from temporal_executor.schemas.event_types import TERMINAL_TYPES, EventType, workflow_id_for
from temporal_executor.schemas.task import BusName
from tests.fakes.llm_servers import FakeOpenAIServer, RecordedRequest, Reply, text
from tests.harness import (
    BUSES,
    ONE_APPROVED_TOOL_CALL,
    ServiceHarness,
    ServiceProcess,
    new_task_id,
    service_settings,
)

TASKS = 24


async def _harness(
    stack: EmbeddedStack, client: Client, tmp_path: Path, *, bridge: bool, worker: bool
) -> tuple[ServiceHarness, Path]:
    settings = service_settings(
        stack,
        tmp_path / "notes",
        approval_timeout_seconds=600,
    )
    settings.logging.format = "text"
    harness = ServiceHarness(settings, client, bridge=bridge, worker=worker)
    await harness.start()
    return harness, ServiceProcess.write_config(settings, tmp_path / "config.yaml")


@pytest.fixture
async def worker_in_process(
    embedded_stack: EmbeddedStack, temporal_client: Client, tmp_path: Path
) -> AsyncIterator[tuple[ServiceHarness, Path]]:
    harness, config = await _harness(
        embedded_stack, temporal_client, tmp_path, bridge=False, worker=True
    )
    yield harness, config
    await harness.stop()


@pytest.fixture
async def bridge_in_process(
    embedded_stack: EmbeddedStack, temporal_client: Client, tmp_path: Path
) -> AsyncIterator[tuple[ServiceHarness, Path]]:
    harness, config = await _harness(
        embedded_stack, temporal_client, tmp_path, bridge=True, worker=False
    )
    yield harness, config
    await harness.stop()


@pytest.mark.parametrize("bus", BUSES)
async def test_bridge_killed_mid_stream_every_request_ends_exactly_once(
    worker_in_process: tuple[ServiceHarness, Path], bus: BusName
) -> None:
    harness, config = worker_in_process
    producer, watcher = harness.producers[bus], harness.watchers[bus]
    bridge = ServiceProcess("bridge", config)
    await bridge.start()
    task_ids = [new_task_id(f"crash-{i}") for i in range(TASKS)]
    try:
        for task_id in task_ids[: TASKS // 2]:
            await producer.request(task_id)
        await watcher.wait_for(task_ids[0], EventType.EXECUTION_STARTED, timeout=60)
        await bridge.kill()
        # Requests keep arriving while no bridge runs; none may be lost.
        for task_id in task_ids[TASKS // 2 :]:
            await producer.request(task_id)
        await bridge.start()
        for task_id in task_ids:
            events = await watcher.wait_for_end(task_id, timeout=60)
            assert [e.type for e in events].count(EventType.EXECUTION_STARTED) == 1
            assert sum(e.type in TERMINAL_TYPES for e in events) == 1
            assert events[-1].type == EventType.EXECUTION_COMPLETED
    finally:
        assert await bridge.terminate() in (0, -9)
    for task_id in task_ids:
        query = f'WorkflowId = "{workflow_id_for(task_id)}"'
        assert len([w async for w in harness.client.list_workflows(query)]) == 1


async def test_worker_killed_mid_task_the_task_completes(
    bridge_in_process: tuple[ServiceHarness, Path],
) -> None:
    harness, config = bridge_in_process
    bus: BusName = "nats"
    producer, watcher = harness.producers[bus], harness.watchers[bus]
    worker = ServiceProcess("worker", config)
    await worker.start()
    task_id = new_task_id("worker-crash")
    try:
        await producer.request(task_id, "note")
        request = await watcher.wait_for(task_id, EventType.APPROVAL_REQUESTED, timeout=60)
        await worker.kill()
        await worker.start()
        assert isinstance(request.data, dict)
        await producer.approve(task_id, request.data["approval_id"], approver="after-crash")
        events = await watcher.wait_for_end(task_id, timeout=60)
    finally:
        assert await worker.terminate() == 0
    assert [e.type for e in events] == ONE_APPROVED_TOOL_CALL
    assert [int(e.extension("sequence") or 0) for e in events] == list(range(1, 8))


# -- a worker lost during an LLM call (issue 12, point 2) ------------------------------

SLOW_CALL_SECONDS = 3.0
SLOW_PROVIDER = "slow-openai"
SLOW_KEY_ENV = "SLOW_OPENAI_KEY"


class SlowModel(FakeOpenAIServer):
    """A model that takes SLOW_CALL_SECONDS to answer every call."""

    def __init__(self) -> None:
        super().__init__()
        self.called = threading.Event()
        self.default = self._slowly

    def _slowly(self, _: RecordedRequest) -> Reply:
        self.called.set()
        time.sleep(SLOW_CALL_SECONDS)
        return text("done, slowly")


@pytest.fixture
def slow_llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowModel]:
    with SlowModel() as server:
        monkeypatch.setenv(SLOW_KEY_ENV, server.api_key)  # the worker processes inherit it
        yield server


async def _with_slow_provider(
    bridge: tuple[ServiceHarness, Path], server: SlowModel, **worker: float
) -> Path:
    harness, config = bridge
    harness.settings.llm.providers.append(
        ProviderSettings(
            name=SLOW_PROVIDER, kind="openai", api_key_env=SLOW_KEY_ENV, base_url=server.base_url
        )
    )
    # Room for an attempt more than the test means, on a machine too busy to heartbeat.
    harness.settings.executor.llm_max_attempts = 4
    for name, value in worker.items():
        setattr(harness.settings.worker, name, value)
    return ServiceProcess.write_config(harness.settings, config)


async def _request_slow_task(harness: ServiceHarness, server: SlowModel) -> str:
    """Send a task to the slow model; return once the model is working on its call."""
    task_id = new_task_id("slow")
    model = {"provider": SLOW_PROVIDER, "model": "gpt-4o"}
    data = {"task_id": task_id, "user_message": "take your time", "model_config": model}
    await harness.producers["nats"].send(EventType.EXECUTION_REQUESTED, task_id, data)
    assert await asyncio.to_thread(server.called.wait, 60)
    return task_id


async def _llm_retry_cause(harness: ServiceHarness, task_id: str) -> tuple[int, Failure]:
    """How many attempts the task's LLM call took, and why the one before the last failed
    (history keeps only the attempt that completed, with its predecessor's failure)."""
    history = await harness.client.get_workflow_handle(workflow_id_for(task_id)).fetch_history()
    started = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    (last,) = [s for s in started if s.attempt > 1]
    return last.attempt, last.last_failure


async def _completes_once(harness: ServiceHarness, task_id: str) -> list[CloudEvent]:
    events = await harness.watchers["nats"].wait_for_end(task_id, timeout=60)
    assert [e.type for e in events] == [
        EventType.EXECUTION_STARTED,
        EventType.LLM_RESPONDED,
        EventType.EXECUTION_COMPLETED,
    ], events[-1].data
    return events


async def test_worker_killed_during_an_llm_call_is_noticed_by_its_heartbeat(
    bridge_in_process: tuple[ServiceHarness, Path], slow_llm: SlowModel
) -> None:
    harness = bridge_in_process[0]
    config = await _with_slow_provider(bridge_in_process, slow_llm)
    first, second = ServiceProcess("worker", config), ServiceProcess("worker", config)
    await first.start()
    try:
        task_id = await _request_slow_task(harness, slow_llm)
        killed_at = time.monotonic()
        await first.kill()
        await second.start()
        await _completes_once(harness, task_id)
        sys.stderr.write(
            f"\nSIGKILL mid LLM call -> completed in {time.monotonic() - killed_at:.1f} s\n"
        )
    finally:
        assert await second.terminate() == 0
    attempts, cause = await _llm_retry_cause(harness, task_id)
    # Noticed by the heartbeat timeout, not after the LLM call's start-to-close timeout.
    assert cause.timeout_failure_info.timeout_type == TimeoutType.TIMEOUT_TYPE_HEARTBEAT
    assert len(slow_llm.requests) == attempts


async def test_sigterm_lets_a_running_llm_call_finish(
    bridge_in_process: tuple[ServiceHarness, Path], slow_llm: SlowModel
) -> None:
    harness = bridge_in_process[0]
    config = await _with_slow_provider(
        bridge_in_process, slow_llm, graceful_shutdown_seconds=SLOW_CALL_SECONDS * 10
    )
    first, second = ServiceProcess("worker", config), ServiceProcess("worker", config)
    await first.start()
    try:
        task_id = await _request_slow_task(harness, slow_llm)
        assert await first.terminate() == 0  # after the call finished, within its grace
        await second.start()
        await _completes_once(harness, task_id)
    finally:
        assert await second.terminate() == 0
    assert len(slow_llm.requests) == 1  # the call was not made again


async def test_sigterm_hands_a_call_longer_than_the_grace_to_another_worker(
    bridge_in_process: tuple[ServiceHarness, Path], slow_llm: SlowModel
) -> None:
    harness = bridge_in_process[0]
    config = await _with_slow_provider(bridge_in_process, slow_llm, graceful_shutdown_seconds=0.5)
    first, second = ServiceProcess("worker", config), ServiceProcess("worker", config)
    await first.start()
    try:
        task_id = await _request_slow_task(harness, slow_llm)
        stopped_at = time.monotonic()
        assert await first.terminate() == 0
        await second.start()
        await _completes_once(harness, task_id)
        sys.stderr.write(
            f"\nSIGTERM mid LLM call -> completed in {time.monotonic() - stopped_at:.1f} s\n"
        )
    finally:
        assert await second.terminate() == 0
    attempts, cause = await _llm_retry_cause(harness, task_id)
    # Failed by the stopping worker and retried at once, not left to the call's 120 s
    # timeout. (On a host too busy for the stopping worker to report that in time, an
    # attempt may still end by the heartbeat timeout: seen at load average 15.)
    shut_down = cause.application_failure_info.type == "worker_shutdown"
    heartbeat = cause.timeout_failure_info.timeout_type == TimeoutType.TIMEOUT_TYPE_HEARTBEAT
    assert shut_down or heartbeat, cause
    assert len(slow_llm.requests) == attempts
