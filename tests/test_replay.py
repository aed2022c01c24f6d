"""The workflow code replays its histories deterministically.

Temporal rebuilds a workflow's state by replaying its history through the workflow code;
if the code now makes different decisions (another activity, a timer where an activity
was, activities in another order) the task gets stuck with a NondeterminismError.

- Histories of tasks run now, in this session: catch non-determinism in the current code
  itself (a decision that depends on time, randomness or anything outside the history).
- RECORDED histories committed under tests/histories/: these stand for workflows already
  running in production. A code change that no longer replays them would break every such
  workflow when it is next replayed (a worker restart, a cache eviction, a query). Only
  these catch that. A failure here means: do not ship the change as it is; put it behind
  `workflow.patched(...)` (or a new workflow type), keep the old path for old histories,
  and only then re-record (tests/histories/README.md). Re-recording to make this test pass
  hides exactly the breakage it exists to catch.
"""

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.event_types import WORKFLOW_TYPE, workflow_id_for
from temporal_executor.schemas.task import AgentTaskInput
from temporal_executor.worker.workflow import AgentExecutionWorkflow
from tests.harness import ServiceHarness, new_task_id, service_settings
from tests.histories.record import (
    CURRENT_VERSION,
    SCENARIOS,
    recorded_workflow_id,
    run_scenario,
    scenario_settings,
    scenarios_of,
    version_dirs,
)


def replayer(*workflows: type) -> Replayer:
    return Replayer(
        workflows=list(workflows or [AgentExecutionWorkflow]),
        data_converter=pydantic_data_converter,
    )


async def replay_failures(
    histories: dict[str, WorkflowHistory], *workflows: type
) -> dict[str, str]:
    """What went wrong replaying each history that did not replay, by its label."""
    failures = {}
    for label, history in histories.items():
        result = await replayer(*workflows).replay_workflow(history, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            failures[label] = repr(result.replay_failure)
    return failures


def recorded_histories() -> dict[str, WorkflowHistory]:
    return {
        f"{path.parent.name}/{path.name}": WorkflowHistory.from_json(
            recorded_workflow_id(path), path.read_text(encoding="utf-8")
        )
        for version in version_dirs()
        for path in sorted(version.glob("*.json"))
    }


@pytest.fixture
async def scenario_service(
    embedded_stack: EmbeddedStack, temporal_client: Client, tmp_path: Path
) -> AsyncIterator[ServiceHarness]:
    settings = service_settings(
        embedded_stack,
        tmp_path,
    )
    harness = ServiceHarness(scenario_settings(settings), temporal_client)
    await harness.start()
    yield harness
    await harness.stop()


async def test_histories_of_tasks_run_now_replay(scenario_service: ServiceHarness) -> None:
    names = list(SCENARIOS)
    runs = await asyncio.gather(
        *(run_scenario(scenario_service, name, new_task_id(name)) for name in names)
    )
    histories = {
        f"{name} run {n}": history
        for name, histories in zip(names, runs, strict=True)
        for n, history in enumerate(histories, start=1)
    }
    assert len(histories) > len(names)  # the continue-as-new scenario has several runs
    assert await replay_failures(histories) == {}


def test_every_scenario_has_a_recorded_history_in_every_version() -> None:
    versions = version_dirs()
    assert CURRENT_VERSION in [v.name for v in versions]
    for version in versions:
        recorded = {path.name.split(".")[0] for path in version.glob("*.json")}
        assert recorded == set(scenarios_of(version)), f"{version.name}: see README.md there"


async def test_recorded_histories_replay_with_the_current_code() -> None:
    """Workflows started by earlier versions of the code (see the module docstring)."""
    histories = recorded_histories()
    assert {h.workflow_id for h in histories.values()} == {
        workflow_id_for(f"recorded-{name}") for name in SCENARIOS
    }
    assert await replay_failures(histories) == {}


@workflow.defn(name=WORKFLOW_TYPE, sandboxed=False)
class WorkflowThatWaitsFirst:
    """A stand-in for a careless change: it waits before planning, as no history did."""

    @workflow.run
    async def run(self, task: AgentTaskInput) -> None:
        await workflow.sleep(timedelta(seconds=1))


async def test_replay_catches_a_workflow_that_decides_differently() -> None:
    """The check above can fail: the recorded histories do not replay with other code."""
    histories = recorded_histories()
    failures = await replay_failures(histories, WorkflowThatWaitsFirst)
    assert set(failures) == set(histories)
    assert all("Nondeterminism" in failure for failure in failures.values()), failures
