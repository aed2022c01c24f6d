"""The wire contract, end to end: CloudEvents in on a real bus, a real Temporal workflow,
CloudEvents out. Every test runs on Kafka and on NATS."""

import asyncio
import contextlib
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from temporal_executor.schemas.cloudevent import STRUCTURED_MEDIA_TYPE
from temporal_executor.schemas.config import ContentMode
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from temporal_executor.schemas.task import BusName, TaskStatus
from tests.harness import (
    BUSES,
    ONE_APPROVED_TOOL_CALL,
    ONE_TOOL_CALL,
    ServiceHarness,
    data,
    new_task_id,
    types,
)

pytestmark = pytest.mark.parametrize("bus", BUSES)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize("mode", ["binary", "structured"])
async def test_request_runs_to_completion(
    service: ServiceHarness, bus: BusName, mode: ContentMode
) -> None:
    task_id = new_task_id()
    producer, watcher = service.producers[bus], service.watchers[bus]
    await producer.send(
        EventType.EXECUTION_REQUESTED,
        task_id,
        {
            "task_id": task_id,
            "user_message": "say hi",
            "model_config": {"provider": "scripted", "model": "one-turn"},
            "metadata": {"tenant": "acme"},
        },
        mode=mode,
        extensions={"traceparent": TRACEPARENT},
    )
    events = await watcher.wait_for_end(task_id)
    assert types(events) == [
        EventType.EXECUTION_STARTED,
        EventType.LLM_RESPONDED,
        EventType.EXECUTION_COMPLETED,
    ]
    workflow_id = workflow_id_for(task_id)
    for sequence, event in enumerate(events, start=1):
        assert event.id == f"{workflow_id}/{sequence}"
        assert event.extension("sequence") == str(sequence)
        assert event.extension("taskid") == task_id
        assert event.extension("traceparent") == TRACEPARENT
        assert event.datacontenttype == "application/json"
        assert data(event)["metadata"] == {"tenant": "acme"}
        assert data(event)["task_id"] == task_id
    assert data(events[0])["workflow_id"] == workflow_id
    assert data(events[0])["model_config"]["model"] == "one-turn"
    assert data(events[-1])["final_message"] == "done: say hi"
    assert data(events[-1])["iterations"] == 1
    # One task's events are keyed by its id (Kafka) or on its own subject (NATS).
    raw = watcher.raw_events(task_id)
    if bus == "kafka":
        assert {m.key for m in raw} == {task_id.encode()}
    else:
        assert {m.source for m in raw} == {
            service.producers[bus].transport.events_destination(task_id)
        }
    # Published in binary mode by default: attributes in headers, data alone in the value.
    assert all(m.header("content-type") != STRUCTURED_MEDIA_TYPE.encode() for m in raw)


async def test_tool_call_result_reaches_the_model(service: ServiceHarness, bus: BusName) -> None:
    task_id = new_task_id()
    await service.producers[bus].request(task_id, "calculate")
    events = await service.watchers[bus].wait_for_end(task_id)
    assert types(events) == ONE_TOOL_CALL
    tool = data(events[2])
    assert (tool["name"], tool["result"], tool["error"]) == ("calculator", 42, None)
    assert data(events[1])["message"]["tool_calls"][0]["arguments"] == {"expression": "6 * 7"}
    assert data(events[-1])["final_message"] == "the answer is 42"
    assert data(events[-1])["iterations"] == 2
    assert data(events[-1])["usage"]["output_tokens"] > 0


async def test_task_id_defaults_to_the_event_id(service: ServiceHarness, bus: BusName) -> None:
    event_id = new_task_id("event")
    await service.producers[bus].send(
        EventType.EXECUTION_REQUESTED,
        event_id,
        {
            "user_message": "no task id",
            "model_config": {"provider": "scripted", "model": "one-turn"},
        },
        event_id=event_id,
    )
    events = await service.watchers[bus].wait_for_end(event_id)
    assert data(events[0])["workflow_id"] == workflow_id_for(event_id)


async def test_duplicate_request_starts_one_workflow(service: ServiceHarness, bus: BusName) -> None:
    task_id = new_task_id()
    producer, watcher = service.producers[bus], service.watchers[bus]
    await producer.request(task_id)
    await producer.request(task_id)
    await watcher.wait_for_end(task_id)
    await _final_status(service, task_id)
    # Once more after the task ended, then a cancel on the same key: when the cancel is
    # dead-lettered (the task is not running) the duplicate before it has been handled.
    await producer.request(task_id)
    cancel = await producer.send(
        EventType.CANCEL_REQUESTED, task_id, {"task_id": task_id, "reason": "marker"}
    )
    dead = await watcher.wait_for_dead_letter(cancel.id.encode(), field="id")
    assert dead.header("dlq_reason") == b"task-not-running"
    assert types(watcher.events(task_id)).count(EventType.EXECUTION_STARTED) == 1
    runs = [
        w async for w in service.client.list_workflows(f'WorkflowId = "{workflow_id_for(task_id)}"')
    ]
    assert len(runs) == 1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x00\xffnot json at all", "invalid-cloudevent"),
        (
            b'{"specversion": "1.0", "id": "x", "type": "agent.execution.requested"}',
            "invalid-cloudevent",
        ),
    ],
)
async def test_unreadable_messages_are_dead_lettered_and_do_not_block(
    service: ServiceHarness, bus: BusName, payload: bytes, reason: str
) -> None:
    transport = service.producers[bus].transport
    marker = new_task_id("bad")
    body = payload + marker.encode()
    headers = [("content-type", STRUCTURED_MEDIA_TYPE.encode()), ("x-test", marker.encode())]
    await transport.publish_raw(
        transport.requests_destination(marker), marker.encode(), body, headers
    )
    good = new_task_id()
    await service.producers[bus].request(good)
    dead = await service.watchers[bus].wait_for_dead_letter(marker.encode())
    assert dead.value == body  # unchanged
    assert dead.header("x-test") == marker.encode()
    assert dead.header("dlq_reason") == reason.encode()
    assert dead.header("dlq_error")
    assert dead.header("dlq_source") == transport.requests_destination(marker).encode()
    if bus == "kafka":
        assert dead.key == marker.encode()
        assert dead.header("dlq_partition") is not None
        assert dead.header("dlq_offset") is not None
    events = await service.watchers[bus].wait_for_end(good)
    assert events[-1].type == EventType.EXECUTION_COMPLETED


@pytest.mark.parametrize(
    ("event_type", "payload", "reason", "error_part"),
    [
        ("com.example.unknown", {"task_id": "x"}, "unknown-type", "unknown event type"),
        (EventType.EXECUTION_REQUESTED, {"task_id": "x"}, "invalid-data", "user_message"),
        (
            EventType.EXECUTION_REQUESTED,
            {"task_id": "bad id!", "user_message": "m"},
            "invalid-data",
            "task_id",
        ),
        (EventType.EXECUTION_REQUESTED, ["not", "an", "object"], "invalid-data", "JSON object"),
        (
            EventType.APPROVAL_REPLIED,
            {"task_id": "x", "approval_id": "a"},
            "invalid-data",
            "approved",
        ),
    ],
)
async def test_invalid_events_are_dead_lettered_with_the_reason(
    service: ServiceHarness,
    bus: BusName,
    event_type: str,
    payload: Any,
    reason: str,
    error_part: str,
) -> None:
    marker = new_task_id("invalid")
    event = await service.producers[bus].send(event_type, marker, payload)
    dead = await service.watchers[bus].wait_for_dead_letter(event.id.encode(), field="id")
    assert dead.header("dlq_reason") == reason.encode()
    assert error_part in (dead.header("dlq_error") or b"").decode()


async def test_oversized_message_is_dead_lettered(service: ServiceHarness, bus: BusName) -> None:
    task_id = new_task_id("large")
    limit = service.settings.bus.max_message_bytes
    event = await service.producers[bus].request(task_id, user_message="x" * (limit + 10))
    dead = await service.watchers[bus].wait_for_dead_letter(event.id.encode(), field="id")
    assert dead.header("dlq_reason") == b"too-large"


async def test_approval_granted(service: ServiceHarness, bus: BusName) -> None:
    task_id = new_task_id()
    producer, watcher = service.producers[bus], service.watchers[bus]
    await producer.request(task_id, "note", user_message="remember the milk")
    request = data(await watcher.wait_for(task_id, EventType.APPROVAL_REQUESTED))
    assert request["tool_call"]["name"] == "save_note"
    assert request["reply_to"] == producer.transport.approval_replies_destination(task_id)
    assert request["expires_at"].endswith("Z") or "+00:00" in request["expires_at"]
    status = await _status(service, task_id)
    assert status.state == "awaiting_approval"
    assert [p.approval_id for p in status.pending_approvals] == [request["approval_id"]]
    await producer.approve(task_id, request["approval_id"], approver="alice", reason="fine")
    events = await watcher.wait_for_end(task_id)
    assert types(events) == ONE_APPROVED_TOOL_CALL
    resolved = data(events[3])
    assert (
        resolved["approved"],
        resolved["approver"],
        resolved["reason"],
        resolved["timed_out"],
    ) == (
        True,
        "alice",
        "fine",
        False,
    )
    assert "saved 17 characters" in data(events[4])["result"]
    # Approval bots read the approvals destination only: the request is there too.
    approvals = watcher.approval_requests(task_id)
    assert [e.id for e in approvals] == [events[2].id]


async def test_approval_denied_is_reported_to_the_model(
    service: ServiceHarness, bus: BusName
) -> None:
    task_id = new_task_id()
    producer, watcher = service.producers[bus], service.watchers[bus]
    await producer.request(task_id, "note")
    request = data(await watcher.wait_for(task_id, EventType.APPROVAL_REQUESTED))
    await producer.approve(task_id, request["approval_id"], approved=False, reason="not today")
    events = await watcher.wait_for_end(task_id)
    tool = data(next(e for e in events if e.type == EventType.TOOL_COMPLETED))
    assert tool["result"] is None
    assert "denied" in tool["error"]
    assert "not today" in tool["error"]
    assert events[-1].type == EventType.EXECUTION_COMPLETED
    assert "denied" in data(events[-1])["final_message"]


async def test_approval_edited_arguments_are_used(service: ServiceHarness, bus: BusName) -> None:
    task_id = new_task_id()
    producer, watcher = service.producers[bus], service.watchers[bus]
    await producer.request(task_id, "note")
    request = data(await watcher.wait_for(task_id, EventType.APPROVAL_REQUESTED))
    await producer.approve(
        task_id, request["approval_id"], arguments={"title": "edited", "text": "four"}
    )
    events = await watcher.wait_for_end(task_id)
    tool = data(next(e for e in events if e.type == EventType.TOOL_COMPLETED))
    assert "saved 4 characters" in tool["result"]
    assert "edited" in tool["result"]


async def test_unanswered_approval_times_out_as_denied(
    service: ServiceHarness, bus: BusName
) -> None:
    task_id = new_task_id()
    watcher = service.watchers[bus]
    await service.producers[bus].request(task_id, "note")
    events = await watcher.wait_for_end(
        task_id, timeout=service.settings.executor.approval_timeout_seconds + 30
    )
    resolved = data(next(e for e in events if e.type == EventType.APPROVAL_RESOLVED))
    assert (resolved["approved"], resolved["timed_out"]) == (False, True)
    assert events[-1].type == EventType.EXECUTION_COMPLETED


async def test_reply_for_unknown_approval_is_dead_lettered_and_first_reply_wins(
    service: ServiceHarness, bus: BusName
) -> None:
    task_id = new_task_id()
    producer, watcher = service.producers[bus], service.watchers[bus]
    await producer.request(task_id, "note")
    request = data(await watcher.wait_for(task_id, EventType.APPROVAL_REQUESTED))
    unknown = await producer.send(
        EventType.APPROVAL_REPLIED,
        task_id,
        {"task_id": task_id, "approval_id": "approval-99-1", "approved": True},
    )
    dead = await watcher.wait_for_dead_letter(unknown.id.encode(), field="id")
    assert dead.header("dlq_reason") == b"unknown-approval"
    await producer.approve(task_id, request["approval_id"], approved=True, approver="first")
    await producer.approve(task_id, request["approval_id"], approved=False, approver="second")
    events = await watcher.wait_for_end(task_id)
    resolved = [data(e) for e in events if e.type == EventType.APPROVAL_RESOLVED]
    assert [(r["approved"], r["approver"]) for r in resolved] == [(True, "first")]
    await _final_status(service, task_id)
    late = await producer.send(
        EventType.APPROVAL_REPLIED,
        task_id,
        {"task_id": task_id, "approval_id": request["approval_id"], "approved": False},
    )
    dead = await watcher.wait_for_dead_letter(late.id.encode(), field="id")
    assert dead.header("dlq_reason") == b"task-not-running"


async def test_cancel_while_waiting_for_approval(service: ServiceHarness, bus: BusName) -> None:
    task_id = new_task_id()
    producer, watcher = service.producers[bus], service.watchers[bus]
    await producer.request(task_id, "note")
    await watcher.wait_for(task_id, EventType.APPROVAL_REQUESTED)
    await producer.send(
        EventType.CANCEL_REQUESTED, task_id, {"task_id": task_id, "reason": "changed my mind"}
    )
    events = await watcher.wait_for_end(task_id)
    assert events[-1].type == EventType.EXECUTION_CANCELLED
    assert data(events[-1])["reason"] == "changed my mind"
    assert (
        sum(e.type in (EventType.EXECUTION_COMPLETED, EventType.EXECUTION_FAILED) for e in events)
        == 0
    )
    assert await _final_status(service, task_id) == WorkflowExecutionStatus.CANCELED


@pytest.mark.parametrize(
    ("fields", "error_type"),
    [
        ({"model": "bad-arguments"}, "invalid_tool_arguments"),
        ({"model": "unauthorised"}, "authentication_failed"),
        ({"model": "endless-tools"}, "max_iterations_reached"),
        ({"model": "one-turn", "tools": ["no_such_tool"]}, "unknown_tool"),
        (
            {"model": "one-turn", "model_config": {"provider": "nope", "model": "m"}},
            "provider_not_configured",
        ),
    ],
)
async def test_task_failures_end_with_failed(
    service: ServiceHarness, bus: BusName, fields: dict[str, Any], error_type: str
) -> None:
    task_id = new_task_id()
    await service.producers[bus].request(task_id, **fields)
    events = await service.watchers[bus].wait_for_end(task_id)
    assert events[0].type == EventType.EXECUTION_STARTED
    assert events[-1].type == EventType.EXECUTION_FAILED
    assert data(events[-1])["error"]["type"] == error_type
    assert data(events[-1])["error"]["message"]
    assert await _final_status(service, task_id) == WorkflowExecutionStatus.FAILED


async def test_replyto_extension_redirects_the_task_events(
    service: ServiceHarness, bus: BusName
) -> None:
    task_id = new_task_id()
    producer = service.producers[bus]
    transport = producer.transport
    # Not the events destination: the approvals one stands in for the caller's own.
    elsewhere = transport.approvals_destination(f"{task_id}-replies")
    await producer.send(
        EventType.EXECUTION_REQUESTED,
        task_id,
        {
            "task_id": task_id,
            "user_message": "m",
            "model_config": {"provider": "scripted", "model": "one-turn"},
        },
        extensions={"replyto": elsewhere},
    )
    events = await service.watchers[bus].wait_for_end(task_id)
    assert {m.source for m in service.watchers[bus].raw_events(task_id)} == {elsewhere}
    assert events[-1].type == EventType.EXECUTION_COMPLETED


async def _final_status(service: ServiceHarness, task_id: str) -> WorkflowExecutionStatus | None:
    """The workflow's status once it closed (its terminal event is published just before)."""
    handle = service.client.get_workflow_handle(workflow_id_for(task_id))
    with contextlib.suppress(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), 30)
    return (await handle.describe()).status


async def _status(service: ServiceHarness, task_id: str) -> TaskStatus:
    handle = service.client.get_workflow_handle(workflow_id_for(task_id))
    status: TaskStatus = await handle.query("status", result_type=TaskStatus)
    return status


async def test_too_large_llm_reply_is_truncated_with_a_note(
    service: ServiceHarness, bus: BusName
) -> None:
    task_id = new_task_id()
    limit = service.settings.executor.max_result_bytes
    await service.producers[bus].request(task_id, user_message="y" * (limit + 500))
    events = await service.watchers[bus].wait_for_end(task_id)
    responded = data(events[1])
    assert responded["truncated"] is True
    assert len(responded["message"]["content"].encode()) <= limit
    assert "truncated by temporal-executor" in responded["message"]["content"]
    assert events[-1].type == EventType.EXECUTION_COMPLETED
