"""The agent loop where real models push it (CONTRACT.md, "Additions in v1.1"; README,
"Tools"): a model's mistaken tool call goes back to it until it makes
`max_tool_errors` in a row; a turn's tool calls run at once (bounded by
`executor.max_parallel_tools`), their approvals asked all at once and answered in any
order; a task stops at its token budget, and reports its cumulative usage.

The `sleeper` tool is a function of this module, loaded by the worker (in this process)
from config, so each call's start and end are seen here.
"""

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import ProviderSettings, ScriptedTurn, Settings, ToolSettings
from temporal_executor.schemas.conversation import ToolCall
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from temporal_executor.schemas.requests import ExecutionRequested
from temporal_executor.schemas.task import TaskStatus, ToolCallInput
from temporal_executor.worker.service import build_activities
from temporal_executor.worker.workflow import AgentExecutionWorkflow
from tests.fakes.llm_servers import FakeOpenAIServer, FakeToolCall, text, tool_calls
from tests.harness import ServiceHarness, new_task_id, service_settings, types

MAX_PARALLEL_TOOLS = 4
OPENAI_KEY_ENV = "TE_TEST_AGENT_LOOP_OPENAI_KEY"
OPENAI = {"provider": "fake-openai", "model": "gpt-4.1-mini"}
SLEEP_SECONDS = 1.0

# Each sleeper call's (start, end), by task.
spans: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)


async def sleeper(key: str, n: int, seconds: float) -> str:
    started = time.monotonic()
    await asyncio.sleep(seconds)
    spans[key].append((started, time.monotonic()))
    return f"sleeper {n} woke up"


def _calc(expression: str) -> dict[str, Any]:
    return {"name": "calculator", "arguments": {"expression": expression}}


def _sleepers(count: int) -> list[dict[str, Any]]:
    return [
        {
            "name": "sleeper",
            "arguments": {"key": "{user_message}", "n": n, "seconds": SLEEP_SECONDS},
        }
        for n in range(count)
    ]


def _note(title: str) -> dict[str, Any]:
    return {"name": "save_note", "arguments": {"title": title, "text": "{user_message}"}}


WRONG_ARGUMENTS = {"name": "calculator", "arguments": {"formula": "1 + 1"}}
REJECTED_INPUT = _calc("2 + x")
NOT_JSON = {"name": "calculator", "arguments": {"_raw": '{"expression": "1 +'}}
NOT_OFFERED = {"name": "weather", "arguments": {"city": "Paris"}}
ANSWER = {"text": "the model read: {last_tool_result}"}

SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "recovers": [
        {"tool_calls": [WRONG_ARGUMENTS]},
        {"tool_calls": [REJECTED_INPUT]},
        {"tool_calls": [_calc("2 + 2")]},
        ANSWER,
    ],
    "not-json-then-not-offered": [
        {"tool_calls": [NOT_JSON]},
        {"tool_calls": [NOT_OFFERED]},
        ANSWER,
    ],
    "mixed-mistakes": [
        {"tool_calls": [NOT_JSON]},
        {"tool_calls": [REJECTED_INPUT]},
        {"tool_calls": [NOT_OFFERED]},
        ANSWER,
    ],
    "mistakes-between-successes": [
        {"tool_calls": [WRONG_ARGUMENTS]},
        {"tool_calls": [_calc("1 + 1")]},
        {"tool_calls": [WRONG_ARGUMENTS]},
        {"tool_calls": [_calc("2 + 2")]},
        ANSWER,
    ],
    "one-bad-call-of-two": [{"tool_calls": [_calc("3 * 3"), WRONG_ARGUMENTS]}, ANSWER],
    "calculate": [{"tool_calls": [_calc("6 * 7")]}, ANSWER],
    "four-sleepers": [{"tool_calls": _sleepers(4)}, ANSWER],
    "five-sleepers": [{"tool_calls": _sleepers(5)}, ANSWER],
    "two-notes": [{"tool_calls": [_note("first"), _note("second")]}, ANSWER],
}


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server, pytest.MonkeyPatch.context() as env:
        env.setenv(OPENAI_KEY_ENV, server.api_key)
        yield server


@pytest.fixture(scope="module")
async def loop_service(
    embedded_stack: EmbeddedStack,
    temporal_client: Client,
    tmp_path_factory: pytest.TempPathFactory,
    openai_server: FakeOpenAIServer,
) -> AsyncIterator[ServiceHarness]:
    settings = service_settings(embedded_stack, tmp_path_factory.mktemp("notes"))
    settings.llm.providers.append(
        ProviderSettings(
            name=OPENAI["provider"],
            kind="openai",
            api_key_env=OPENAI_KEY_ENV,
            base_url=openai_server.base_url,
        )
    )
    settings.executor.max_iterations = 8
    settings.executor.max_parallel_tools = MAX_PARALLEL_TOOLS
    settings.tools.append(ToolSettings(name="sleeper", function=f"{__name__}:sleeper"))
    scripted = settings.llm.provider("scripted")
    assert scripted is not None
    scripted.scripts.update(
        {
            model: [ScriptedTurn.model_validate(turn) for turn in turns]
            for model, turns in SCRIPTS.items()
        }
    )
    harness = ServiceHarness(settings, temporal_client)
    await harness.start()
    yield harness
    await harness.stop()


def data(event: CloudEvent) -> dict[str, Any]:
    assert isinstance(event.data, dict)
    return event.data


def of_type(events: list[CloudEvent], event_type: EventType) -> list[dict[str, Any]]:
    return [data(e) for e in events if e.type == event_type]


async def _run(service: ServiceHarness, model: str, **fields: Any) -> list[CloudEvent]:
    task_id = new_task_id(model)
    await service.producers["nats"].request(task_id, model, user_message=task_id, **fields)
    events = await service.watchers["nats"].wait_for_end(task_id)
    _assert_gap_free(events)
    return events


def _assert_gap_free(events: list[CloudEvent]) -> None:
    sequences = [int(e.extension("sequence") or 0) for e in events]
    assert sequences == list(range(1, len(events) + 1))


# -- 1. A model's mistake goes back to it ------------------------------------------------


async def test_mistakes_go_back_to_the_model_which_fixes_them(
    loop_service: ServiceHarness,
) -> None:
    events = await _run(loop_service, "recovers")
    assert events[-1].type == EventType.EXECUTION_COMPLETED
    wrong, rejected, right = of_type(events, EventType.TOOL_COMPLETED)
    assert wrong["result"] is None
    assert wrong["error"].startswith("invalid arguments for tool 'calculator': expression:")
    assert rejected["error"] == "unsupported in an arithmetic expression: 'x'"
    assert (right["result"], right["error"]) == (4, None)
    # The model saw each error as its tool result, and answered from the last one.
    assert data(events[-1])["final_message"] == "the model read: 4"


async def test_arguments_not_json_and_a_tool_not_offered_are_explained(
    loop_service: ServiceHarness,
) -> None:
    events = await _run(
        loop_service, "not-json-then-not-offered", tools=["calculator", "current_time"]
    )
    assert events[-1].type == EventType.EXECUTION_COMPLETED
    not_json, not_offered = of_type(events, EventType.TOOL_COMPLETED)
    assert not_json["error"] == (
        'the arguments for tool \'calculator\' are not a JSON object: {"expression": "1 +'
    )
    assert not_offered["name"] == "weather"
    assert not_offered["error"] == (
        "this task may not call tool 'weather'; it may call: calculator, current_time"
    )
    assert data(events[-1])["final_message"] == f"the model read: error: {not_offered['error']}"


async def test_arguments_an_openai_model_sent_as_broken_json_go_back_to_it(
    loop_service: ServiceHarness, openai_server: FakeOpenAIServer
) -> None:
    """The real OpenAI SDK, against a local server speaking its wire format."""
    broken = '{"expression": "6 *'
    openai_server.enqueue(
        tool_calls(FakeToolCall("calculator", broken)),
        tool_calls(("calculator", {"expression": "6 * 7"})),
        text("42"),
    )
    events = await _run(loop_service, "openai", model_config=OPENAI)
    assert events[-1].type == EventType.EXECUTION_COMPLETED
    wrong, right = of_type(events, EventType.TOOL_COMPLETED)
    assert wrong["error"] == f"the arguments for tool 'calculator' are not a JSON object: {broken}"
    assert right["result"] == 42
    # The second request told the model, beside its arguments sent back as it wrote them.
    _, call, result = openai_server.requests[1].body["messages"]
    assert call["tool_calls"][0]["function"]["arguments"] == broken
    assert (result["role"], result["content"]) == ("tool", f"Error: error: {wrong['error']}")


async def test_max_tool_errors_mistakes_in_a_row_fail_the_task(
    loop_service: ServiceHarness,
) -> None:
    events = await _run(loop_service, "mixed-mistakes")
    assert types(events).count(EventType.TOOL_COMPLETED) == 3  # config's max_tool_errors
    assert EventType.LLM_RESPONDED not in types(events[-2:])  # no LLM call after the third
    error = data(events[-1])["error"]
    assert events[-1].type == EventType.EXECUTION_FAILED
    # The type of the mistake that reached the limit.
    assert error["type"] == "unknown_tool"
    assert error["message"].endswith("(3 mistaken tool calls in a row)")


async def test_a_request_may_lower_max_tool_errors_but_not_raise_it(
    loop_service: ServiceHarness,
) -> None:
    lowered = await _run(loop_service, "recovers", max_tool_errors=1)
    assert types(lowered).count(EventType.TOOL_COMPLETED) == 1
    assert data(lowered[-1])["error"]["type"] == "invalid_tool_arguments"
    # bad-arguments repeats its mistake three times, then would answer.
    capped = await _run(loop_service, "bad-arguments", max_tool_errors=10)
    assert types(capped).count(EventType.TOOL_COMPLETED) == 3
    assert data(capped[-1])["error"]["type"] == "invalid_tool_arguments"


async def test_a_call_that_is_not_a_mistake_ends_the_run_of_mistakes(
    loop_service: ServiceHarness,
) -> None:
    events = await _run(loop_service, "mistakes-between-successes", max_tool_errors=2)
    assert events[-1].type == EventType.EXECUTION_COMPLETED
    errors = [t["error"] is not None for t in of_type(events, EventType.TOOL_COMPLETED)]
    assert errors == [True, False, True, False]
    # A bad call beside a good one in one turn: the good one still runs.
    events = await _run(loop_service, "one-bad-call-of-two", max_tool_errors=1)
    assert events[-1].type == EventType.EXECUTION_FAILED
    good, bad = of_type(events, EventType.TOOL_COMPLETED)
    assert (good["result"], bad["result"]) == (9, None)


# -- 4. Parallel tool calls ---------------------------------------------------------------


async def _run_tool_intervals(service: ServiceHarness, task_id: str) -> list[tuple[int, int]]:
    """(scheduled, closed) history event ids of each run_tool activity of the task."""
    history = await service.client.get_workflow_handle(workflow_id_for(task_id)).fetch_history()
    scheduled = {
        e.event_id
        for e in history.events
        if e.event_type == HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "run_tool"
    }
    closed = {
        e.activity_task_completed_event_attributes.scheduled_event_id: e.event_id
        for e in history.events
        if e.event_type == HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    }
    return sorted((s, closed[s]) for s in scheduled)


def _scheduled_before_the_first_ended(intervals: list[tuple[int, int]]) -> int:
    first_end = min(closed for _, closed in intervals)
    return sum(scheduled < first_end for scheduled, _ in intervals)


async def test_a_turn_s_tool_calls_run_at_once(loop_service: ServiceHarness) -> None:
    events = await _run(loop_service, "four-sleepers")
    task_id = data(events[0])["task_id"]
    assert events[-1].type == EventType.EXECUTION_COMPLETED
    # The workflow scheduled all four before any of them ended.
    intervals = await _run_tool_intervals(loop_service, task_id)
    assert len(intervals) == 4
    assert _scheduled_before_the_first_ended(intervals) == 4
    # Results go back to the model in call order, whatever order they ended in.
    assert data(events[-1])["final_message"] == "the model read: sleeper 3 woke up"
    # The figure for the docs, not asserted: the tools' own spans, and turn to turn.
    tools = max(end for _, end in spans[task_id]) - min(start for start, _ in spans[task_id])
    turn_1, turn_2 = (e.time for e in events if e.type == EventType.LLM_RESPONDED)
    assert turn_1 is not None
    assert turn_2 is not None
    turn = (turn_2 - turn_1).total_seconds()
    print(f"four {SLEEP_SECONDS:g} s tools: {tools:.2f} s; LLM turn to turn: {turn:.2f} s")


async def test_at_most_max_parallel_tools_run_at_once(loop_service: ServiceHarness) -> None:
    events = await _run(loop_service, "five-sleepers")
    task_id = data(events[0])["task_id"]
    assert types(events).count(EventType.TOOL_COMPLETED) == 5
    # The fifth waited for a free slot: it was scheduled only once one had ended.
    intervals = await _run_tool_intervals(loop_service, task_id)
    assert len(intervals) == 5
    assert _scheduled_before_the_first_ended(intervals) == MAX_PARALLEL_TOOLS


async def test_approvals_go_out_at_once_and_are_answered_in_any_order(
    loop_service: ServiceHarness,
) -> None:
    producer, watcher = loop_service.producers["nats"], loop_service.watchers["nats"]
    task_id = new_task_id("two-notes")
    await producer.request(task_id, "two-notes", user_message=task_id)
    requested = await watcher.wait_until(
        task_id, lambda es: types(es).count(EventType.APPROVAL_REQUESTED) == 2
    )
    first, second = of_type(requested, EventType.APPROVAL_REQUESTED)
    assert (first["tool_call"]["id"], second["tool_call"]["id"]) == ("call_0_0", "call_0_1")
    handle = loop_service.client.get_workflow_handle(workflow_id_for(task_id))
    status = await handle.query(AgentExecutionWorkflow.status)
    assert isinstance(status, TaskStatus)
    assert [p.approval_id for p in status.pending_approvals] == [
        first["approval_id"],
        second["approval_id"],
    ]

    # The second is answered first, and its tool runs while the first still waits.
    await producer.approve(task_id, second["approval_id"], approver="bob")
    done = await watcher.wait_until(
        task_id, lambda es: EventType.TOOL_COMPLETED in types(es), timeout=30
    )
    assert of_type(done, EventType.TOOL_COMPLETED)[0]["tool_call_id"] == "call_0_1"
    assert [r["approval_id"] for r in of_type(done, EventType.APPROVAL_RESOLVED)] == [
        second["approval_id"]
    ]
    await producer.approve(task_id, first["approval_id"], approver="alice")
    events = await watcher.wait_for_end(task_id)

    _assert_gap_free(events)
    assert types(events) == [
        EventType.EXECUTION_STARTED,
        EventType.LLM_RESPONDED,
        EventType.APPROVAL_REQUESTED,
        EventType.APPROVAL_REQUESTED,
        EventType.APPROVAL_RESOLVED,
        EventType.TOOL_COMPLETED,
        EventType.APPROVAL_RESOLVED,
        EventType.TOOL_COMPLETED,
        EventType.LLM_RESPONDED,
        EventType.EXECUTION_COMPLETED,
    ]
    # In call order, the second note's result is the model's last tool message.
    assert "second.txt" in data(events[-1])["final_message"]


# -- 5. A budget per task -----------------------------------------------------------------


def _total(usage: dict[str, int]) -> int:
    return usage["input_tokens"] + usage["output_tokens"]


async def test_every_turn_and_the_end_report_the_cumulative_usage(
    loop_service: ServiceHarness,
) -> None:
    events = await _run(loop_service, "calculate")
    turn_1, turn_2 = of_type(events, EventType.LLM_RESPONDED)
    assert turn_1["total_usage"] == turn_1["usage"]
    assert turn_2["total_usage"] == {
        key: turn_1["usage"][key] + turn_2["usage"][key] for key in turn_1["usage"]
    }
    completed = data(events[-1])
    assert completed["total_usage"] == completed["usage"] == turn_2["total_usage"]


async def test_the_turn_that_crosses_the_budget_is_the_last(
    loop_service: ServiceHarness,
) -> None:
    unlimited = await _run(loop_service, "calculate")
    turn_1 = of_type(unlimited, EventType.LLM_RESPONDED)[0]
    # Exactly the first turn's usage: not crossed yet; the second turn crosses it.
    budget = _total(turn_1["total_usage"])
    events = await _run(loop_service, "calculate", max_total_tokens=budget)
    assert types(events) == [
        EventType.EXECUTION_STARTED,
        EventType.LLM_RESPONDED,
        EventType.TOOL_COMPLETED,
        EventType.LLM_RESPONDED,
        EventType.EXECUTION_FAILED,
    ]
    failed = data(events[-1])
    assert failed["error"]["type"] == "budget_exceeded"
    assert f"over its budget of {budget}" in failed["error"]["message"]
    assert failed["total_usage"] == of_type(events, EventType.LLM_RESPONDED)[1]["total_usage"]
    assert _total(failed["total_usage"]) > budget


async def test_a_cancelled_task_reports_its_usage(loop_service: ServiceHarness) -> None:
    producer, watcher = loop_service.producers["nats"], loop_service.watchers["nats"]
    task_id = new_task_id("cancel")
    await producer.request(task_id, "two-notes", user_message=task_id)
    turn = data(await watcher.wait_for(task_id, EventType.LLM_RESPONDED))
    await producer.send(EventType.CANCEL_REQUESTED, task_id, {"task_id": task_id})
    events = await watcher.wait_for_end(task_id)
    assert events[-1].type == EventType.EXECUTION_CANCELLED
    assert data(events[-1])["total_usage"] == turn["total_usage"]


async def test_a_tool_gone_from_the_worker_is_unknown() -> None:
    """A tool the task was offered but the worker no longer has (an MCP server's, gone
    since planning) is reported as the model's `unknown_tool` mistake."""
    activities, _, providers = build_activities(Settings())
    call = ToolCall(id="call_0_0", name="gone", arguments={})
    try:
        with pytest.raises(ApplicationError) as raised:
            await activities.run_tool(ToolCallInput(task_id="t", tool_call=call))
    finally:
        await providers.aclose()
    assert (raised.value.type, raised.value.non_retryable) == ("unknown_tool", True)
    assert raised.value.message == "tool 'gone' is not available on this worker"


async def test_the_plan_takes_limits_from_the_request_within_config() -> None:
    settings = Settings()
    settings.executor.max_total_tokens = 5000
    settings.executor.max_tool_errors = 3
    activities, _, providers = build_activities(settings)
    try:

        async def plan(**fields: Any) -> tuple[int | None, int]:
            request = ExecutionRequested(task_id="t", user_message="hi", **fields)
            planned = await activities.plan_task(request)
            return planned.max_total_tokens, planned.max_tool_errors

        assert await plan() == (5000, 3)
        assert await plan(max_total_tokens=100, max_tool_errors=1) == (100, 1)
        assert await plan(max_total_tokens=99_999, max_tool_errors=9) == (99_999, 3)
        settings.executor.max_total_tokens = None
        assert await plan() == (None, 3)
    finally:
        await providers.aclose()
