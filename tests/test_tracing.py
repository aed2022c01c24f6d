"""One trace per task (README, "Operations"): from the request's `traceparent` through the
bridge (process, start), the workflow and its activities (LLM, tool, publish) to every
published event, whose `traceparent` names the span that published it.

The bridge and the worker run in this process on the real servers, with Temporal's
tracing interceptor on their client and spans read back from an in-memory exporter.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.gateway import GatewayServer
from temporal_executor.schemas.cloudevent import TRACEPARENT_EXTENSION
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from temporal_executor.schemas.task import BusName
from temporal_executor.tasks.temporal_connection import connect_temporal
from temporal_executor.telemetry import tracing
from temporal_executor.worker.workflow import AgentExecutionWorkflow
from tests.harness import ServiceHarness, new_task_id, service_settings
from tests.test_gateway import gateway_settings

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
async def traced(
    embedded_stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceHarness]:
    """A bridge and a worker whose Temporal client carries the tracing interceptor."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    tracing.use_tracer_provider(provider, set_global=False)  # the other tests trace nothing
    try:
        settings = service_settings(embedded_stack, tmp_path_factory.mktemp("notes"))
        client = await connect_temporal(settings)  # with the interceptor
        harness = ServiceHarness(settings, client)
        await harness.start()
        yield harness
        await harness.stop()
    finally:
        tracing.stop_using_tracer_provider()


def new_traceparent() -> tuple[str, str, str]:
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def in_trace(trace_id: str) -> list[ReadableSpan]:
    return [s for s in EXPORTER.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]


def named(spans: Sequence[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def parent_of(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> ReadableSpan | None:
    assert span.parent is not None
    return next((s for s in spans if s.context.span_id == span.parent.span_id), None)


def ancestors(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> list[str]:
    names = []
    current: ReadableSpan | None = span
    while current is not None and current.parent is not None:
        current = parent_of(current, spans)
        if current is not None:
            names.append(current.name)
    return names


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def spans_until(trace_id: str, name: str, count: int = 1) -> list[ReadableSpan]:
    """The trace's spans once `count` spans named `name...` ended (the last publish's span
    ends just after the event reached the bus)."""
    async with asyncio.timeout(10):
        while True:
            spans = in_trace(trace_id)
            if len(named(spans, name)) >= count:
                return spans
            await asyncio.sleep(0.05)  # spans end in the service's tasks: poll the exporter


@pytest.mark.parametrize("bus", ["kafka", "nats"])
async def test_a_task_is_one_trace_from_request_to_every_published_event(
    traced: ServiceHarness, bus: BusName
) -> None:
    traceparent, trace_id, request_span_id = new_traceparent()
    task_id = new_task_id("traced")
    data = {
        "task_id": task_id,
        "user_message": "what is 6 * 7?",
        "model_config": {"provider": "scripted", "model": "calculate"},
    }
    await traced.producers[bus].send(
        EventType.EXECUTION_REQUESTED, task_id, data, extensions={"traceparent": traceparent}
    )
    events = await traced.watchers[bus].wait_for_end(task_id)
    assert events[-1].type == EventType.EXECUTION_COMPLETED
    raw = traced.watchers[bus].raw_events(task_id)
    spans = await spans_until(trace_id, "send ", count=len(raw) + 1)
    transport = traced.watchers[bus].transport
    requests = transport.requests_destination(task_id)

    # The bridge: a `process` span continuing the request's trace, the start under it.
    [process] = named(spans, "process ")
    assert process.kind == SpanKind.CONSUMER
    # Its parent: the producer's own `send` (our transport, here in the test), which
    # continued the trace of the request's `traceparent`.
    produced = parent_of(process, spans)
    assert produced is not None
    assert produced.name.startswith("send ")
    assert attrs(produced)["messaging.destination.name"] == requests
    assert produced.parent is not None
    assert f"{produced.parent.span_id:016x}" == request_span_id
    consumed = attrs(process)
    assert consumed["messaging.system"] == bus
    assert consumed["messaging.destination.name"] == requests
    assert consumed["messaging.operation.type"] == "process"
    assert consumed["temporal_executor.outcome"] == "started"
    if bus == "kafka":
        assert isinstance(consumed["messaging.kafka.offset"], int)
        assert consumed["messaging.destination.partition.id"].isdigit()
        assert consumed["messaging.kafka.message.key"] == task_id
    else:
        assert consumed["messaging.destination.template"] == transport.requests_destination(None)
    [start] = named(spans, "StartWorkflow:")
    assert parent_of(start, spans) is process

    # The worker: the workflow, its LLM turns and its tool call, all under the start.
    chats = named(spans, "chat calculate")
    assert len(chats) == 2
    for chat in chats:
        assert chat.kind == SpanKind.CLIENT
        assert "RunActivity:call_llm" in ancestors(chat, spans)
        assert start.name in ancestors(chat, spans)
        gen_ai = attrs(chat)
        assert gen_ai["gen_ai.operation.name"] == "chat"
        assert gen_ai["gen_ai.provider.name"] == "scripted"
        assert gen_ai["gen_ai.request.model"] == "calculate"
        assert gen_ai["gen_ai.conversation.id"] == task_id
        assert isinstance(gen_ai["gen_ai.usage.input_tokens"], int)
        assert isinstance(gen_ai["gen_ai.usage.output_tokens"], int)
        # No content on spans unless config opts in.
        assert not {"gen_ai.input.messages", "gen_ai.output.messages"} & set(gen_ai)
    [tool] = named(spans, "execute_tool calculator")
    assert "RunActivity:run_tool" in ancestors(tool, spans)
    called = attrs(tool)
    assert called["gen_ai.tool.name"] == "calculator"
    assert called["gen_ai.tool.call.id"]
    assert "gen_ai.tool.call.arguments" not in called

    # Every published event names the `send` span that published it, in this trace.
    sends = {f"{s.context.span_id:016x}": s for s in named(spans, "send ") if s is not produced}
    for message in raw:
        event = transport.decode(message)
        header = event.extension(TRACEPARENT_EXTENSION)
        assert header is not None
        _, event_trace, event_span, _ = header.split("-")
        assert event_trace == trace_id
        send = sends[event_span]
        assert send.kind == SpanKind.PRODUCER
        sent = attrs(send)
        assert sent["messaging.message.id"] == event.id
        assert sent["messaging.destination.name"] == message.source
        assert sent["messaging.operation.type"] == "send"
        assert sent["cloudevents.event_type"] == event.type
        if bus == "kafka" and process.name not in ancestors(send, spans):
            # Confirmed by the broker (the bridge's early `started` is not: it says so).
            assert isinstance(sent.get("messaging.kafka.offset"), int)
    # The worker's events are published from its activities, under the workflow's start.
    completed = next(
        s for s in sends.values() if attrs(s)["cloudevents.event_type"].endswith("completed")
    )
    assert start.name in ancestors(completed, spans)


async def test_an_approval_wait_is_a_span_of_the_task(traced: ServiceHarness) -> None:
    traceparent, trace_id, _ = new_traceparent()
    task_id = new_task_id("traced-approval")
    data = {
        "task_id": task_id,
        "user_message": "keep this",
        "model_config": {"provider": "scripted", "model": "note"},
    }
    producer = traced.producers["nats"]
    await producer.send(
        EventType.EXECUTION_REQUESTED, task_id, data, extensions={"traceparent": traceparent}
    )
    watcher = traced.watchers["nats"]
    request = await watcher.wait_for(task_id, EventType.APPROVAL_REQUESTED)
    assert isinstance(request.data, dict)
    await producer.approve(task_id, request.data["approval_id"], approver="alice")
    await watcher.wait_for_end(task_id)
    spans = await spans_until(trace_id, "await_approval ")
    [wait] = named(spans, "await_approval save_note")
    waited = attrs(wait)
    assert waited["temporal_executor.approval.outcome"] == "approved"
    assert waited["gen_ai.conversation.id"] == task_id
    assert wait.end_time is not None
    assert wait.start_time is not None
    assert wait.end_time > wait.start_time
    # Under the activity that published the approval request, in the task's trace.
    assert ancestors(wait, spans)[0].startswith("RunActivity:publish_event")
    assert any(name.startswith("StartWorkflow:") for name in ancestors(wait, spans))


async def test_an_http_call_to_the_gateway_starts_the_trace_of_its_task(
    traced: ServiceHarness,
) -> None:
    traceparent, trace_id, caller_span_id = new_traceparent()
    task_id = new_task_id("traced-http")
    server = GatewayServer(gateway_settings(traced), traced.client)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            body = {
                "task_id": task_id,
                "user_message": "hi",
                "model_config": {"provider": "scripted", "model": "one-turn"},
            }
            reply = await http.post(
                "/api/v1/execute", json=body, headers={"traceparent": traceparent}
            )
            assert reply.status_code == 202
            metrics = await http.get("/metrics")
        events = await traced.watchers["kafka"].wait_for_end(task_id)
    finally:
        await server.stop()
    assert metrics.status_code == 200
    assert "temporal_executor_task_start_duration_seconds_bucket" in metrics.text
    spans = await spans_until(trace_id, "chat one-turn")
    [call] = [s for s in spans if s.kind == SpanKind.SERVER and s.name.startswith("POST ")]
    assert call.name == "POST /api/v1/execute"  # the route, not the path: bounded names
    assert call.parent is not None
    assert f"{call.parent.span_id:016x}" == caller_span_id
    [start] = named(spans, "StartWorkflow:")
    assert call.name in ancestors(start, spans)
    [chat] = named(spans, "chat one-turn")
    assert call.name in ancestors(chat, spans)
    completed = events[-1].extension(TRACEPARENT_EXTENSION)
    assert completed is not None
    assert completed.split("-")[1] == trace_id


async def test_content_goes_on_spans_only_when_config_opts_in(traced: ServiceHarness) -> None:
    traceparent, trace_id, _ = new_traceparent()
    task_id = new_task_id("traced-content")
    data = {
        "task_id": task_id,
        "user_message": "what is 6 * 7?",
        "system_prompt": "be brief",
        "model_config": {"provider": "scripted", "model": "calculate"},
    }
    tracing.set_capture_content(True)
    try:
        await traced.producers["nats"].send(
            EventType.EXECUTION_REQUESTED, task_id, data, extensions={"traceparent": traceparent}
        )
        await traced.watchers["nats"].wait_for_end(task_id)
    finally:
        tracing.set_capture_content(False)
    spans = await spans_until(trace_id, "chat calculate", count=2)
    first = attrs(named(spans, "chat calculate")[0])
    assert "what is 6 * 7?" in first["gen_ai.input.messages"]
    assert first["gen_ai.system_instructions"] == "be brief"
    assert "calculator" in first["gen_ai.output.messages"]
    tool = attrs(named(spans, "execute_tool calculator")[0])
    assert tool["gen_ai.tool.call.arguments"] == '{"expression": "6 * 7"}'
    assert tool["gen_ai.tool.call.result"] == "42"


async def test_replaying_a_traced_task_makes_no_spans(traced: ServiceHarness) -> None:
    """Temporal's interceptor makes workflow spans only when a workflow task is not being
    replayed: a worker that rebuilds a task from its history adds nothing to its trace."""
    traceparent, trace_id, _ = new_traceparent()
    task_id = new_task_id("traced-replay")
    data = {
        "task_id": task_id,
        "user_message": "what is 6 * 7?",
        "model_config": {"provider": "scripted", "model": "calculate"},
    }
    await traced.producers["nats"].send(
        EventType.EXECUTION_REQUESTED, task_id, data, extensions={"traceparent": traceparent}
    )
    await traced.watchers["nats"].wait_for_end(task_id)
    handle = traced.client.get_workflow_handle(workflow_id_for(task_id))
    await handle.result()
    before = await spans_until(trace_id, "CompleteWorkflow:")
    history = await handle.fetch_history()
    replayer = Replayer(
        workflows=[AgentExecutionWorkflow],
        data_converter=pydantic_data_converter,
        interceptors=tracing.temporal_interceptors(),
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None
    assert len(in_trace(trace_id)) == len(before)
