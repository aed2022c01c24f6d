"""Tools that fail, hang or are interrupted (README, "Tools"; CONTRACT.md, event types).

A tool that raises is retried (`executor.tool_max_attempts`) and then reported to the
model as an error, in `agent.tool.completed` too; the task goes on. So is a tool that
outruns its timeout (its own `timeout_seconds`, else the executor's). A `ToolError` is
the tool's own verdict: reported without retries. A task cancelled while a tool runs
ends `cancelled`, once.

The tools are functions of this module, loaded by the worker (in this process) from
config as `tests.test_tool_failures:<name>`, as a user's own tools are.
"""

import asyncio
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError

from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import ScriptedTurn, ToolSettings
from temporal_executor.schemas.event_types import TERMINAL_TYPES, EventType, workflow_id_for
from temporal_executor.worker.errors import ToolError
from tests.harness import ONE_TOOL_CALL, ServiceHarness, data, new_task_id, service_settings, types

TOOL_TIMEOUT_SECONDS = 1.0
TOOL_MAX_ATTEMPTS = 2
# A tool whose own `timeout_seconds` is above the executor's takes this long: longer than
# the executor allows, well within its own limit (seconds apart: Temporal's timers are
# not finer than that).
PATIENT_TOOL_SECONDS = 2 * TOOL_TIMEOUT_SECONDS
PATIENT_TOOL_TIMEOUT_SECONDS = 5 * TOOL_TIMEOUT_SECONDS

calls: Counter[str] = Counter()
started: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
released: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)


async def broken(key: str) -> str:
    """Fails as a user's tool does when what it calls is down."""
    calls[key] += 1
    msg = f"the order service is down (call {calls[key]})"
    raise ConnectionError(msg)


async def refusing(key: str) -> str:
    """Fails with a `ToolError`: the tool's own verdict, which a retry would not change."""
    calls[key] += 1
    msg = "no such order"
    raise ToolError(msg)


async def sleepy(key: str, seconds: float) -> str:
    calls[key] += 1
    await asyncio.sleep(seconds)
    return f"slept {seconds}s"


async def gated(key: str) -> str:
    started[key].set()
    await released[key].wait()
    return "released"


def _tool_turns(name: str, arguments: dict[str, Any]) -> list[ScriptedTurn]:
    call = {"name": name, "arguments": {"key": "{user_message}", **arguments}}
    return [
        ScriptedTurn.model_validate({"tool_calls": [call]}),
        ScriptedTurn(text="the tool said: {last_tool_result}"),
    ]


@pytest.fixture(scope="module")
async def tool_service(
    embedded_stack: EmbeddedStack, temporal_client: Client, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceHarness]:
    settings = service_settings(
        embedded_stack,
        tmp_path_factory.mktemp("notes"),
    )
    settings.executor.tool_timeout_seconds = TOOL_TIMEOUT_SECONDS
    settings.executor.tool_max_attempts = TOOL_MAX_ATTEMPTS
    module = __name__
    settings.tools += [
        ToolSettings(name="broken", function=f"{module}:broken"),
        ToolSettings(name="refusing", function=f"{module}:refusing"),
        ToolSettings(name="sleepy", function=f"{module}:sleepy"),
        ToolSettings(
            name="patient",
            function=f"{module}:sleepy",
            timeout_seconds=PATIENT_TOOL_TIMEOUT_SECONDS,
        ),
        ToolSettings(name="gated", function=f"{module}:gated"),
    ]
    scripted = settings.llm.provider("scripted")
    assert scripted is not None
    scripted.scripts.update(
        {
            "broken": _tool_turns("broken", {}),
            "refusing": _tool_turns("refusing", {}),
            "too-slow": _tool_turns("sleepy", {"seconds": 2 * TOOL_TIMEOUT_SECONDS}),
            "patient": _tool_turns("patient", {"seconds": PATIENT_TOOL_SECONDS}),
            "gated": _tool_turns("gated", {}),
        }
    )
    harness = ServiceHarness(settings, temporal_client)
    await harness.start()
    yield harness
    await harness.stop()


async def _run(service: ServiceHarness, model: str) -> tuple[str, list[CloudEvent]]:
    task_id = new_task_id(model)
    await service.producers["nats"].request(task_id, model, user_message=task_id)
    return task_id, await service.watchers["nats"].wait_for_end(task_id)


def _tool_reported(events: list[CloudEvent]) -> tuple[dict[str, Any], str]:
    """The tool's event, and the model's final answer (which quotes what it was told)."""
    assert types(events) == ONE_TOOL_CALL
    return data(events[2]), data(events[-1])["final_message"]


async def test_a_failing_tool_is_retried_then_reported_to_the_model(
    tool_service: ServiceHarness,
) -> None:
    task_id, events = await _run(tool_service, "broken")
    tool, answer = _tool_reported(events)
    assert calls[task_id] == TOOL_MAX_ATTEMPTS
    assert tool["result"] is None
    assert f"the order service is down (call {TOOL_MAX_ATTEMPTS})" in tool["error"]
    assert answer.startswith("the tool said: error: ")
    assert "the order service is down" in answer


async def test_a_tool_error_is_reported_to_the_model_without_retrying(
    tool_service: ServiceHarness,
) -> None:
    task_id, events = await _run(tool_service, "refusing")
    tool, answer = _tool_reported(events)
    assert calls[task_id] == 1
    assert (tool["result"], tool["error"]) == (None, "no such order")
    assert answer == "the tool said: error: no such order"


async def test_a_tool_that_outruns_its_timeout_is_reported_to_the_model(
    tool_service: ServiceHarness,
) -> None:
    task_id, events = await _run(tool_service, "too-slow")
    tool, answer = _tool_reported(events)
    assert calls[task_id] == TOOL_MAX_ATTEMPTS
    assert tool["result"] is None
    assert "timeout" in tool["error"].lower()
    assert answer.startswith("the tool said: error: ")


async def test_a_tool_s_own_timeout_replaces_the_executor_s(tool_service: ServiceHarness) -> None:
    """README, "Tools": `tools[].timeout_seconds` (it was ignored until plan_task passed it
    on: every tool got `executor.tool_timeout_seconds`)."""
    task_id, events = await _run(tool_service, "patient")
    tool, answer = _tool_reported(events)
    assert (tool["result"], tool["error"]) == (f"slept {PATIENT_TOOL_SECONDS}s", None)
    assert calls[task_id] == 1
    assert answer == f"the tool said: slept {PATIENT_TOOL_SECONDS}s"


async def test_cancel_while_a_tool_runs_ends_cancelled_once(tool_service: ServiceHarness) -> None:
    producer, watcher = tool_service.producers["nats"], tool_service.watchers["nats"]
    task_id = new_task_id("gated")
    await producer.request(task_id, "gated", user_message=task_id)
    try:
        await asyncio.wait_for(started[task_id].wait(), 30)
        cancel = {"task_id": task_id, "reason": "taking too long"}
        await producer.send(EventType.CANCEL_REQUESTED, task_id, cancel)
        events = await watcher.wait_for_end(task_id)
    finally:
        released[task_id].set()
    assert events[-1].type == EventType.EXECUTION_CANCELLED
    assert data(events[-1])["reason"] == "taking too long"
    assert sum(e.type in TERMINAL_TYPES for e in events) == 1
    assert EventType.TOOL_COMPLETED not in types(events)
    handle = tool_service.client.get_workflow_handle(workflow_id_for(task_id))
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), 30)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
