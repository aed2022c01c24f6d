"""Every piece of a task's I/O: planning from config, LLM calls, tool calls, publishing.

The activities are methods of one class that takes its clients in `__init__`, so tests
and the benchmark can give it other ones; it implements the declarations the workflow
imports (`activity_declarations.py`), under the same activity names. Errors become
`ApplicationError`s whose `type` is the `error.type` the task fails with; only retryable
ones are retried by Temporal.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from temporal_executor.bus.transport import MessageTooLarge
from temporal_executor.schemas.config import ExecutorSettings, LlmSettings
from temporal_executor.schemas.conversation import ToolSpec
from temporal_executor.schemas.events import ErrorInfo
from temporal_executor.schemas.requests import ExecutionRequested, ModelSelection
from temporal_executor.schemas.task import (
    ApprovalPolicy,
    LlmCallInput,
    LlmCallResult,
    PublishBatch,
    PublishInput,
    TaskPlan,
    ToolCallInput,
    ToolCallResult,
)
from temporal_executor.worker.activity_declarations import AgentActivityDeclarations
from temporal_executor.worker.deltas import DeltaPublisher
from temporal_executor.worker.errors import WorkerError
from temporal_executor.worker.instrumentation import llm_call, tool_call
from temporal_executor.worker.llm.registry import ProviderRegistry
from temporal_executor.worker.publisher import EventPublisher
from temporal_executor.worker.tools.registry import ToolRegistry
from temporal_executor.worker.truncation import truncate_text, truncate_value

# How often LLM and tool calls heartbeat while they run (the SDK throttles what it sends).
HEARTBEAT_EVERY_SECONDS = 1.0


def to_application_error(error: WorkerError) -> ApplicationError:
    delay = timedelta(seconds=error.retry_after) if error.retry_after else None
    return ApplicationError(
        str(error),
        type=error.error_type,
        non_retryable=not error.retryable,
        next_retry_delay=delay,
    )


class AgentActivities(AgentActivityDeclarations):
    def __init__(
        self,
        *,
        executor: ExecutorSettings,
        llm: LlmSettings,
        providers: ProviderRegistry,
        tools: ToolRegistry,
        publisher: EventPublisher,
        approvers_for: Callable[[str], list[str] | None] = lambda _tool: None,
        max_payload_bytes: int | None = None,
    ) -> None:
        self._max_payload_bytes = max_payload_bytes
        self._executor = executor
        # Who may approve a tool's calls (`Settings.approvers_for`); None: anyone.
        self._approvers_for = approvers_for
        self._llm = llm
        self._providers = providers
        self._tools = tools
        self._publisher = publisher
        self._deltas = DeltaPublisher(publisher, executor.delta_interval_seconds)

    @activity.defn(name="plan_task")
    async def plan_task(self, request: ExecutionRequested) -> TaskPlan:
        """Resolve a request against config: model, tools, approval policy, limits."""
        executor = self._executor
        selection = request.llm or ModelSelection(
            provider=self._llm.default_provider, model=self._llm.default_model
        )
        wanted = self._tools.names if request.tools is None else request.tools
        unknown = [name for name in wanted if self._tools.get(name) is None]
        specs: list[ToolSpec] = []
        approval_needed: list[str] = []
        timeouts: dict[str, float] = {}
        for name in wanted:
            tool = self._tools.get(name)
            if tool is None:
                continue
            specs.append(tool.spec)
            if tool.settings.timeout_seconds is not None:
                timeouts[name] = tool.settings.timeout_seconds
            if _needs_approval(name, tool.settings.require_approval, executor, request):
                approval_needed.append(name)
        # The selected provider's fallbacks, with the request's model settings. Not checked
        # here: one naming a provider config lacks fails the task only if it is ever needed.
        primary = self._llm.provider(selection.provider)
        fallbacks = [
            selection.model_copy(
                update={"provider": target.provider, "model": target.model or selection.model}
            )
            for target in (primary.fallbacks if primary else [])
        ]
        error = None
        if unknown:
            error = ErrorInfo(
                type="unknown_tool",
                message=f"the request names tools config lacks: {', '.join(unknown)} "
                f"(configured: {', '.join(self._tools.names) or 'none'})",
            )
        return TaskPlan(
            selection=selection,
            fallbacks=fallbacks,
            tools=specs,
            approval=ApprovalPolicy(
                tools=approval_needed,
                approvers={
                    name: approvers
                    for name in approval_needed
                    if (approvers := self._approvers_for(name)) is not None
                },
                timeout_seconds=executor.approval_timeout_seconds,
                approve_on_timeout=executor.approve_on_timeout,
            ),
            max_iterations=request.max_iterations or executor.max_iterations,
            llm_timeout_seconds=executor.llm_timeout_seconds,
            llm_max_attempts=executor.llm_max_attempts,
            llm_heartbeat_timeout_seconds=executor.llm_heartbeat_timeout_seconds,
            tool_timeout_seconds=executor.tool_timeout_seconds,
            tool_timeouts=timeouts,
            tool_max_attempts=executor.tool_max_attempts,
            publish_timeout_seconds=executor.publish_timeout_seconds,
            continue_as_new_after_events=executor.continue_as_new_after_events,
            max_payload_bytes=self._max_payload_bytes,
            max_tool_errors=min(
                request.max_tool_errors or executor.max_tool_errors, executor.max_tool_errors
            ),
            max_parallel_tools=executor.max_parallel_tools,
            max_total_tokens=request.max_total_tokens or executor.max_total_tokens,
            stream=executor.stream if request.stream is None else request.stream,
            error=error,
        )

    def provider_kind(self, name: str) -> str | None:
        """The kind of the configured provider `name` (anthropic, vertex_gemini, ...)."""
        settings = self._llm.provider(name)
        return settings.kind if settings is not None else None

    @activity.defn(name="call_llm")
    @llm_call(provider_kind)
    async def call_llm(self, call: LlmCallInput) -> LlmCallResult:
        try:
            provider = self._providers.get(call.selection.provider)
            # Streaming: fragments go out as `agent.llm.delta` events as they come.
            async with self._deltas.sink_for(call) as deltas:
                result: LlmCallResult = await _heartbeating(provider.complete(call, deltas))
        except WorkerError as exc:
            raise to_application_error(exc) from exc
        content, truncated = truncate_text(result.message.content, self._executor.max_result_bytes)
        if truncated:
            activity.logger.warning("LLM reply truncated", extra={"task_id": call.task_id})
            result.message.content = content
            result.truncated = True
        return result

    @activity.defn(name="run_tool")
    @tool_call
    async def run_tool(self, call: ToolCallInput) -> ToolCallResult:
        tool = self._tools.get(call.tool_call.name)
        if tool is None:
            msg = f"tool {call.tool_call.name!r} is not available on this worker"
            raise ApplicationError(msg, type="unknown_tool", non_retryable=True)
        try:
            value: Any = await _heartbeating(tool(call.tool_call.arguments))
        except WorkerError as exc:
            raise to_application_error(exc) from exc
        value, truncated = truncate_value(_jsonable(value), self._executor.max_result_bytes)
        return ToolCallResult(result=value, truncated=truncated)

    @activity.defn(name="publish_event")
    async def publish_event(self, publish: PublishInput) -> None:
        await self._publish(publish)

    @activity.defn(name="publish_events")
    async def publish_events(self, batch: PublishBatch) -> None:
        # In order; a retry publishes the earlier ones again, with the same ids.
        for publish in batch.events:
            await self._publish(publish)

    async def _publish(self, publish: PublishInput) -> None:
        try:
            await self._publisher.publish(publish)
        except MessageTooLarge as exc:
            # Results are truncated well below the bus limit, so this is a misconfiguration
            # (bus.max_message_bytes below executor.max_result_bytes): fail, don't retry forever.
            raise ApplicationError(str(exc), type="event_too_large", non_retryable=True) from exc


async def _heartbeating(call: Awaitable[Any]) -> Any:
    """Await an LLM or tool call, heartbeating meanwhile: a long call stays alive, and a
    worker that dies mid-call is noticed after the heartbeat timeout, not the call's
    timeout. (The SDK sends at most one heartbeat per 80% of the heartbeat timeout.)

    A worker shutting down cancels the calls still running after its grace period; the
    SDK would report them cancelled, which nobody asked for, so they fail retryably instead
    and Temporal gives them to another worker at once.
    """

    async def beat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY_SECONDS)
            activity.heartbeat()

    beating = asyncio.create_task(beat())
    try:
        return await call
    except asyncio.CancelledError:
        if not activity.is_worker_shutdown():
            raise
        msg = "the worker shut down during the call; another worker retries it"
        raise ApplicationError(msg, type="worker_shutdown") from None
    finally:
        beating.cancel()


def _needs_approval(
    name: str, tool_default: bool, executor: ExecutorSettings, request: ExecutionRequested
) -> bool:
    return (
        tool_default
        or _listed(name, executor.require_approval)
        or _listed(name, request.require_approval)
    )


def _listed(name: str, policy: bool | list[str]) -> bool:
    return policy if isinstance(policy, bool) else name in policy


def _jsonable(value: Any) -> Any:
    """Tool results travel as JSON; anything else is sent as its string form."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value
