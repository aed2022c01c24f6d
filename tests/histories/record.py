"""Runs each scenario of the agent workflow on real servers and writes its history.

    python -m tests.histories.record            # from the repository root

Starts an embedded stack (Temporal, NATS, Kafka), runs every scenario in `SCENARIOS`
through the bus as a user would, and writes each workflow run's history
(`WorkflowHistory.to_json()`) to `tests/histories/<scenario>.json` (a scenario that
continues as new writes `<scenario>.<run>.json`, one per run). tests/test_replay.py
replays these files with the current workflow code. Read README.md before re-recording:
the files stand for workflows already running in production, so they are re-recorded
only on purpose.

The same scenarios also run inside the test session (tests/test_replay.py), so a new
scenario is added here once and replayed both ways.
"""

import asyncio
import contextlib
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter

from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import ScriptedTurn, Settings
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from temporal_executor.schemas.task import BusName
from tests.harness import BusWatcher, Producer, ServiceHarness, service_settings, types

HISTORY_DIR = Path(__file__).parent
# One directory per version of the workflow's commands; `record` writes the newest.
CURRENT_VERSION = "v5-llm-heartbeat"
# Recorded task ids are fixed (a fresh stack each time), so a file names its workflow.
RECORDED_PREFIX = "recorded"
BUS: BusName = "nats"
# Long enough that a reply sent at once always beats it, even on a busy machine.
APPROVAL_TIMEOUT_SECONDS = 2.5
LONG_TOOL_TURNS = 12

Steps = Callable[[Producer, BusWatcher, str], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    model: str
    ending: EventType
    status: WorkflowExecutionStatus
    steps: Steps | None = None  # what a person does once the request is sent
    continues_as_new: bool = False
    # The first version directory that records it (the number after its `v`).
    since: int = 1
    # More fields of the request.
    request: dict[str, Any] = field(default_factory=dict)


def _data(event: CloudEvent) -> dict[str, Any]:
    assert isinstance(event.data, dict)
    return event.data


async def _reply(watcher: BusWatcher, producer: Producer, task_id: str, approved: bool) -> None:
    request = await watcher.wait_for(task_id, EventType.APPROVAL_REQUESTED)
    await producer.approve(task_id, _data(request)["approval_id"], approved, approver="alice")
    resolved = _data(await watcher.wait_for(task_id, EventType.APPROVAL_RESOLVED))
    assert (resolved["approver"], resolved["timed_out"]) == ("alice", False), resolved


async def _approve(producer: Producer, watcher: BusWatcher, task_id: str) -> None:
    await _reply(watcher, producer, task_id, approved=True)


async def _deny(producer: Producer, watcher: BusWatcher, task_id: str) -> None:
    await _reply(watcher, producer, task_id, approved=False)


async def _cancel(producer: Producer, watcher: BusWatcher, task_id: str) -> None:
    await watcher.wait_for(task_id, EventType.APPROVAL_REQUESTED)
    cancel = {"task_id": task_id, "reason": "changed my mind"}
    await producer.send(EventType.CANCEL_REQUESTED, task_id, cancel)
    ended = await watcher.wait_for_end(task_id)
    # Cancelled while it waited for the person, not after the approval timed out.
    assert EventType.APPROVAL_RESOLVED not in types(ended), types(ended)


async def _approve_in_reverse(producer: Producer, watcher: BusWatcher, task_id: str) -> None:
    """Both approval requests are out at once; the second is answered first."""
    events = await watcher.wait_until(
        task_id, lambda es: types(es).count(EventType.APPROVAL_REQUESTED) == 2
    )
    requests = [_data(e) for e in events if e.type == EventType.APPROVAL_REQUESTED]
    for request in reversed(requests):
        await producer.approve(task_id, request["approval_id"], True, approver="alice")
        await watcher.wait_until(task_id, _resolved(request["approval_id"]))


def _resolved(approval_id: str) -> Callable[[list[CloudEvent]], bool]:
    def resolved(events: list[CloudEvent]) -> bool:
        return any(
            e.type == EventType.APPROVAL_RESOLVED and _data(e)["approval_id"] == approval_id
            for e in events
        )

    return resolved


COMPLETED = (EventType.EXECUTION_COMPLETED, WorkflowExecutionStatus.COMPLETED)
FAILED = (EventType.EXECUTION_FAILED, WorkflowExecutionStatus.FAILED)
SCENARIOS: dict[str, Scenario] = {
    "completed": Scenario("one-turn", *COMPLETED),
    "tool_call": Scenario("calculate", *COMPLETED),
    "approval_granted": Scenario("note", *COMPLETED, steps=_approve),
    "approval_denied": Scenario("note", *COMPLETED, steps=_deny),
    # No reply: the approval times out after APPROVAL_TIMEOUT_SECONDS (a durable timer).
    "approval_timed_out": Scenario("note", *COMPLETED),
    "cancelled": Scenario(
        "note", EventType.EXECUTION_CANCELLED, WorkflowExecutionStatus.CANCELED, steps=_cancel
    ),
    # Since v4 the model hears of its mistake, and the task fails at the third in a row.
    "failed": Scenario("bad-arguments", *FAILED),
    "continued_as_new": Scenario("long", *COMPLETED, continues_as_new=True),
    # v4: patch `parallel-tool-calls`.
    "model_mistake": Scenario("mistake-then-fix", *COMPLETED, since=4),
    "parallel_tools": Scenario("four-calculations", *COMPLETED, since=4),
    "parallel_approvals": Scenario("two-notes", *COMPLETED, steps=_approve_in_reverse, since=4),
    "budget_exceeded": Scenario("calculate", *FAILED, since=4, request={"max_total_tokens": 1}),
}


def _calculation(expression: str) -> dict[str, Any]:
    return {"name": "calculator", "arguments": {"expression": expression}}


def _note(title: str) -> dict[str, Any]:
    return {"name": "save_note", "arguments": {"title": title, "text": "{user_message}"}}


SCENARIO_SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "mistake-then-fix": [
        {"tool_calls": [{"name": "calculator", "arguments": {"formula": "1 + 1"}}]},
        {"tool_calls": [_calculation("1 + 1")]},
        {"text": "the answer is {last_tool_result}"},
    ],
    "four-calculations": [
        {"tool_calls": [_calculation(f"{n} * 2") for n in range(4)]},
        {"text": "the last is {last_tool_result}"},
    ],
    "two-notes": [
        {"tool_calls": [_note("first"), _note("second")]},
        {"text": "notes: {last_tool_result}"},
    ],
}


def scenario_settings(settings: Settings) -> Settings:
    """What the scenarios need on top of the tests' settings (`harness.service_settings`)."""
    settings.executor.approval_timeout_seconds = APPROVAL_TIMEOUT_SECONDS
    settings.executor.continue_as_new_after_events = 100  # the least config allows
    settings.executor.max_iterations = LONG_TOOL_TURNS + 1
    scripted = settings.llm.provider("scripted")
    assert scripted is not None
    scripted.scripts.update(
        {
            name: [ScriptedTurn.model_validate(turn) for turn in turns]
            for name, turns in SCENARIO_SCRIPTS.items()
        }
    )
    scripted.scripts["long"] = [
        ScriptedTurn.model_validate(
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": f"{n} * 2"}}]}
        )
        for n in range(LONG_TOOL_TURNS)
    ] + [ScriptedTurn(text="results so far: {last_tool_result}")]
    return settings


async def run_scenario(harness: ServiceHarness, name: str, task_id: str) -> list[WorkflowHistory]:
    """Run one scenario to its end; the histories of its workflow's runs, oldest first."""
    scenario = SCENARIOS[name]
    producer, watcher = harness.producers[BUS], harness.watchers[BUS]
    await producer.request(
        task_id, scenario.model, user_message=f"scenario {name}", **scenario.request
    )
    if scenario.steps is not None:
        await scenario.steps(producer, watcher, task_id)
    events = await watcher.wait_for_end(task_id, timeout=60)
    assert events[-1].type == scenario.ending, f"{name}: {types(events)}"
    workflow_id = workflow_id_for(task_id)
    handle = harness.client.get_workflow_handle(workflow_id)
    with contextlib.suppress(WorkflowFailureError):  # failed or cancelled: still closed
        await asyncio.wait_for(handle.result(), 30)
    assert (await handle.describe()).status == scenario.status, name
    # From the last run back to the first (visibility, `list_workflows`, may lag behind).
    histories = [await handle.fetch_history()]
    while previous := _continued_from(histories[0]):
        run = harness.client.get_workflow_handle(workflow_id, run_id=previous)
        histories.insert(0, await run.fetch_history())
    assert (len(histories) > 1) == scenario.continues_as_new, f"{name}: {len(histories)} runs"
    return histories


def _continued_from(history: WorkflowHistory) -> str:
    """The run id of the run this one continues ("" for a first run)."""
    started = history.events[0].workflow_execution_started_event_attributes
    return started.continued_execution_run_id


def history_files(name: str, count: int, directory: Path) -> list[Path]:
    if count == 1:
        return [directory / f"{name}.json"]
    return [directory / f"{name}.{n}.json" for n in range(1, count + 1)]


def recorded_workflow_id(path: Path) -> str:
    return workflow_id_for(f"{RECORDED_PREFIX}-{path.name.split('.')[0]}")


def version_dirs() -> list[Path]:
    return sorted(p for p in HISTORY_DIR.iterdir() if p.is_dir() and p.name.startswith("v"))


def version_number(directory: Path) -> int:
    return int(directory.name[1:].split("-")[0])


def scenarios_of(directory: Path) -> list[str]:
    """The scenarios a version directory records."""
    return [name for name, s in SCENARIOS.items() if s.since <= version_number(directory)]


async def record(directory: Path) -> list[Path]:
    async with EmbeddedStack(("temporal", "nats", "kafka"), headless=True) as stack:
        client = await Client.connect(
            stack.temporal_address, data_converter=pydantic_data_converter
        )
        with tempfile.TemporaryDirectory() as notes:
            settings = service_settings(
                stack,
                notes,
                name=RECORDED_PREFIX,
            )
            harness = ServiceHarness(scenario_settings(settings), client)
            await harness.start()
            try:
                names = scenarios_of(directory)
                histories = await asyncio.gather(
                    *(run_scenario(harness, n, f"{RECORDED_PREFIX}-{n}") for n in names)
                )
            finally:
                await harness.stop()
    written: list[Path] = []
    for name, runs in zip(names, histories, strict=True):
        for path, history in zip(history_files(name, len(runs), directory), runs, strict=True):
            path.write_text(history.to_json() + "\n", encoding="utf-8")
            written.append(path)
    return written


def main() -> None:
    directory = HISTORY_DIR / CURRENT_VERSION
    directory.mkdir(exist_ok=True)
    for path in asyncio.run(record(directory)):
        sys.stdout.write(f"wrote {path}\n")


if __name__ == "__main__":
    main()
