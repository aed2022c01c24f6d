"""Spans and metrics of the worker's activities, in the OpenTelemetry GenAI conventions.

The activities carry one decorator each (`llm_call`, `tool_call`); the publisher reports
each event it published (`published`), from which approvals and finished tasks are
counted. Span names: `chat {model}` (kind CLIENT) and `execute_tool {tool}`, under the
activity's span (Temporal's tracing interceptor) or, with tracing off, nowhere. Prompts,
replies, tool arguments and results go on spans only with
`observability.tracing.capture_content`.
"""

import functools
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from temporalio import activity
from temporalio.exceptions import ApplicationError

from temporal_executor.schemas.event_types import EventType
from temporal_executor.schemas.task import LlmCallInput, LlmCallResult, PublishInput, ToolCallInput
from temporal_executor.telemetry import metrics
from temporal_executor.telemetry.tracing import capture_content, tracer

S = TypeVar("S")
R = TypeVar("R")

# The GenAI conventions' well-known `gen_ai.provider.name` of each provider kind.
PROVIDER_NAMES = {
    "anthropic": "anthropic",
    "openai": "openai",
    "azure_openai": "azure.ai.openai",
    "vertex_anthropic": "gcp.vertex_ai",
    "vertex_gemini": "gcp.vertex_ai",
    "scripted": "scripted",
}
# Events already counted, by id: a retried publish activity publishes them again.
_REMEMBERED_EVENTS = 10_000
OK = "ok"


def error_type(exc: BaseException) -> str:
    """The error type the task would fail with (the activity's ApplicationError type)."""
    if isinstance(exc, ApplicationError) and exc.type:
        return exc.type
    cause = exc.__cause__
    if isinstance(exc, ApplicationError) and cause is not None:
        return type(cause).__name__
    return type(exc).__name__


def _attempt() -> int:
    return activity.info().attempt if activity.in_activity() else 1


def llm_call(
    provider_kind: Callable[[S, str], str | None],
) -> Callable[
    [Callable[[S, LlmCallInput], Coroutine[Any, Any, LlmCallResult]]],
    Callable[[S, LlmCallInput], Coroutine[Any, Any, LlmCallResult]],
]:
    """Wrap an LLM call activity: a `chat {model}` span, the GenAI duration and token
    metrics, the calls counter. `provider_kind` maps a configured provider's name to its
    kind (anthropic, vertex_gemini, ...)."""

    def wrap(
        call_llm: Callable[[S, LlmCallInput], Coroutine[Any, Any, LlmCallResult]],
    ) -> Callable[[S, LlmCallInput], Coroutine[Any, Any, LlmCallResult]]:
        @functools.wraps(call_llm)
        async def observed(self: S, call: LlmCallInput) -> LlmCallResult:
            selection = call.selection
            system = PROVIDER_NAMES.get(provider_kind(self, selection.provider) or "", "")
            system = system or selection.provider
            model = metrics.model_label(selection.model)
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": system,
                "gen_ai.request.model": selection.model,
                "gen_ai.conversation.id": call.task_id,
                "temporal_executor.llm.provider": selection.provider,
                "temporal_executor.attempt": _attempt(),
            }
            if selection.max_tokens is not None:
                attributes["gen_ai.request.max_tokens"] = selection.max_tokens
            if selection.temperature is not None:
                attributes["gen_ai.request.temperature"] = selection.temperature
            if capture_content():
                attributes["gen_ai.input.messages"] = _json([m.model_dump() for m in call.messages])
                if call.system_prompt:
                    attributes["gen_ai.system_instructions"] = call.system_prompt
            began = time.perf_counter()
            with tracer().start_as_current_span(
                f"chat {selection.model}", kind=SpanKind.CLIENT, attributes=attributes
            ) as span:
                try:
                    result = await call_llm(self, call)
                except BaseException as exc:
                    kind = error_type(exc)
                    _failed(span, kind, exc)
                    metrics.LLM_CALLS.labels(selection.provider, model, kind).inc()
                    _observe_llm(system, model, kind, time.perf_counter() - began)
                    raise
                usage = result.usage
                span.set_attribute("gen_ai.response.model", result.model)
                span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
                if capture_content():
                    span.set_attribute("gen_ai.output.messages", _json(result.message.model_dump()))
            metrics.LLM_CALLS.labels(selection.provider, model, OK).inc()
            _observe_llm(system, model, "", time.perf_counter() - began)
            for token_type, count in (
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
            ):
                metrics.GEN_AI_TOKEN_USAGE.labels("chat", system, model, token_type).observe(count)
            return result

        return observed

    return wrap


def _observe_llm(system: str, model: str, error: str, seconds: float) -> None:
    metrics.GEN_AI_OPERATION_DURATION.labels("chat", system, model, error).observe(seconds)


def tool_call(
    run_tool: Callable[[S, ToolCallInput], Coroutine[Any, Any, R]],
) -> Callable[[S, ToolCallInput], Coroutine[Any, Any, R]]:
    """Wrap a tool call activity: an `execute_tool {tool}` span, calls and duration."""

    @functools.wraps(run_tool)
    async def observed(self: S, call: ToolCallInput) -> R:
        tool = call.tool_call
        label = metrics.tool_label(tool.name)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool.name,
            "gen_ai.tool.call.id": tool.id,
            "gen_ai.tool.type": "function",
            "gen_ai.conversation.id": call.task_id,
            "temporal_executor.attempt": _attempt(),
        }
        if capture_content():
            attributes["gen_ai.tool.call.arguments"] = _json(tool.arguments)
        began = time.perf_counter()
        with tracer().start_as_current_span(
            f"execute_tool {tool.name}", kind=SpanKind.INTERNAL, attributes=attributes
        ) as span:
            try:
                result = await run_tool(self, call)
            except BaseException as exc:
                kind = error_type(exc)
                _failed(span, kind, exc)
                metrics.TOOL_CALLS.labels(label, kind).inc()
                metrics.TOOL_CALL_DURATION.labels(label).observe(time.perf_counter() - began)
                raise
            if capture_content():
                span.set_attribute(
                    "gen_ai.tool.call.result", _json(getattr(result, "result", None))
                )
        metrics.TOOL_CALLS.labels(label, OK).inc()
        metrics.TOOL_CALL_DURATION.labels(label).observe(time.perf_counter() - began)
        return result

    return observed


def _failed(span: Span, kind: str, exc: BaseException) -> None:
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, f"{kind}: {exc}"))


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class _Approval:
    def __init__(self, tool: str, requested_at: datetime, context: trace.SpanContext) -> None:
        self.tool = tool
        self.requested_at = requested_at
        self.context = context


class PublishedEvents:
    """Counts approvals and finished tasks from the events the worker publishes, once per
    event id, and makes each approval's `await_approval {tool}` span: from the request's
    publish to the resolution's, under the span that published the request.

    A request is remembered by the worker that published it; a resolution published by
    another worker (or after a restart) is counted, but has no wait span or duration."""

    def __init__(self, remembered: int = _REMEMBERED_EVENTS) -> None:
        self._remembered = remembered
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._approvals: OrderedDict[tuple[str, str], _Approval] = OrderedDict()
        self._lock = threading.Lock()

    def published(self, publish: PublishInput) -> None:
        with self._lock:
            if publish.event_id in self._seen:
                return
            self._seen[publish.event_id] = None
            if len(self._seen) > self._remembered:
                self._seen.popitem(last=False)
        data = publish.data
        if publish.event_type == EventType.APPROVAL_REQUESTED:
            tool = str(data.get("tool_call", {}).get("name", ""))
            metrics.APPROVALS_REQUESTED.labels(metrics.tool_label(tool)).inc()
            key = (publish.task_id, str(data.get("approval_id")))
            context = trace.get_current_span().get_span_context()
            with self._lock:
                self._approvals[key] = _Approval(tool, publish.time, context)
                if len(self._approvals) > self._remembered:
                    self._approvals.popitem(last=False)
        elif publish.event_type == EventType.APPROVAL_RESOLVED:
            self._resolved(publish)
        elif publish.event_type in _TERMINAL_STATES:
            error = data.get("error") or {}
            error_kind = str(error.get("type", "")) if isinstance(error, dict) else ""
            metrics.TASKS_FINISHED.labels(_TERMINAL_STATES[publish.event_type], error_kind).inc()

    def _resolved(self, publish: PublishInput) -> None:
        data = publish.data
        if data.get("timed_out"):
            outcome = "timed_out"
        else:
            outcome = "approved" if data.get("approved") else "denied"
        metrics.APPROVALS_RESOLVED.labels(outcome).inc()
        with self._lock:
            approval = self._approvals.pop((publish.task_id, str(data.get("approval_id"))), None)
        if approval is None:
            return
        waited = (publish.time - approval.requested_at).total_seconds()
        metrics.APPROVAL_DECISION_DURATION.labels(outcome).observe(max(waited, 0.0))
        parent = trace.set_span_in_context(trace.NonRecordingSpan(approval.context))
        span = tracer().start_span(
            f"await_approval {approval.tool}",
            context=parent if approval.context.is_valid else None,
            start_time=_nanos(approval.requested_at),
            attributes={
                "gen_ai.tool.name": approval.tool,
                "gen_ai.conversation.id": publish.task_id,
                "temporal_executor.approval.id": str(data.get("approval_id")),
                "temporal_executor.approval.outcome": outcome,
            },
        )
        span.end(end_time=_nanos(publish.time))


def _nanos(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


_TERMINAL_STATES: dict[str, str] = {
    EventType.EXECUTION_COMPLETED: "completed",
    EventType.EXECUTION_FAILED: "failed",
    EventType.EXECUTION_CANCELLED: "cancelled",
}

PUBLISHED = PublishedEvents()
