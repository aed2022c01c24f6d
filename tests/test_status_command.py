"""`temporal-executor status TASK_ID` against the session's real servers and service."""

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from temporal_executor.cli import main
from temporal_executor.schemas.event_types import EventType
from tests.harness import ServiceHarness, ServiceProcess, new_task_id

TIMEOUT = 60.0


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`main()` configures the root logger for a process; put the test session's back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def config(service: ServiceHarness, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("status") / "temporal-executor.yaml"
    return ServiceProcess.write_config(service.settings, path)


async def status(config: Path, task_id: str) -> int:
    argv = ["--config", str(config), "status", task_id]
    return await asyncio.wait_for(asyncio.to_thread(main, argv), TIMEOUT)


async def test_status_of_a_task_waiting_for_approval(
    service: ServiceHarness, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = new_task_id("status")
    await service.producers["nats"].request(task_id, "note")
    request = await service.watchers["nats"].wait_for(task_id, EventType.APPROVAL_REQUESTED)
    assert isinstance(request.data, dict)
    approval_id = request.data["approval_id"]
    capsys.readouterr()

    assert await status(config, task_id) == 0
    out = capsys.readouterr().out
    assert f"task        {task_id} (workflow agent-execution-{task_id})" in out
    assert "state       awaiting_approval" in out
    assert "iteration   1" in out
    assert f"approval    {approval_id}: save_note(" in out
    assert f"expires {request.data['expires_at'][:19]}" in out
    assert "(in " in out
    assert "usage       " in out
    last = out.split("last events ", 1)[1]
    assert f"[{task_id} #1] {EventType.EXECUTION_STARTED}" in last
    assert f"[{task_id} #3] {EventType.APPROVAL_REQUESTED}" in last
    await service.producers["nats"].approve(task_id, approval_id)
    await service.watchers["nats"].wait_for_end(task_id)


async def test_status_of_a_finished_task_and_of_none(
    service: ServiceHarness, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = new_task_id("status")
    await service.producers["kafka"].request(task_id, "one-turn")
    events = await service.watchers["kafka"].wait_for_end(task_id)
    await service.client.get_workflow_handle(f"agent-execution-{task_id}").result()
    capsys.readouterr()

    assert await status(config, task_id) == 0
    out = capsys.readouterr().out
    assert "state       completed" in out
    assert f"final       done: hello from {task_id}" in out
    assert f"last events ({len(events)} of {len(events)})" in out
    assert f"{EventType.EXECUTION_COMPLETED}  after 1 iterations" in out

    assert await status(config, "no-such-task") == 1
    assert "no-such-task" in capsys.readouterr().out
