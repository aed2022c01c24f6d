"""Processes die; tasks do not. The bridge and the worker run as real processes here and
are killed with SIGKILL mid-stream, then started again."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client

from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.event_types import TERMINAL_TYPES, EventType, workflow_id_for
from temporal_executor.schemas.task import BusName
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
