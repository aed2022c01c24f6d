"""The agent workflow: LLM turn → tool calls (with approvals) → … → one terminal event.

Deterministic and free of I/O: every effect (planning from config, LLM and tool calls,
publishing) is an activity. Events are published one at a time, in order, each with the
next `sequence`, so a task's events arrive in the order it produced them.
"""

import asyncio
import json
from datetime import timedelta
from typing import Any, NoReturn

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from temporal_executor.schemas.conversation import ChatMessage, ToolCall
    from temporal_executor.schemas.event_types import WORKFLOW_TYPE, event_id_for
    from temporal_executor.schemas.events import (
        ApprovalRequested,
        ApprovalResolved,
        ErrorInfo,
        ExecutionCancelled,
        ExecutionCompleted,
        ExecutionFailed,
        ExecutionStarted,
        LlmResponded,
        TaskEventData,
        ToolCompleted,
    )
    from temporal_executor.schemas.task import (
        AgentTaskInput,
        ApprovalDecision,
        ApprovalOutcome,
        LlmCallInput,
        LlmCallResult,
        PendingApproval,
        PublishBatch,
        PublishInput,
        TaskPlan,
        TaskResult,
        TaskState,
        TaskStatus,
        ToolCallInput,
        ToolCallResult,
    )
    from temporal_executor.worker.activity_declarations import AgentActivityDeclarations

# Errors from which a retry of the same call cannot recover: the task fails at once.
TASK_FATAL_TOOL_ERRORS = frozenset({"invalid_tool_arguments", "unknown_tool"})
PLAN_TIMEOUT = timedelta(seconds=30)
# Planning and publishing run as local activities: both are short and idempotent (events
# have deterministic ids), and a local activity saves two round trips through the server's
# matching per call — the largest part of a one-turn task's latency (docs/performance.md).
# Tasks that started before this patch keep replaying with regular activities.
LOCAL_ACTIVITIES_PATCH = "local-plan-and-publish"
# An `agent.llm.responded` waits for the event that follows it (the task's end, or an
# approval request) and both go out in one local activity: one round trip through the
# worker's SDK core less per turn. Older tasks publish each event on its own.
BATCHED_PUBLISH_PATCH = "batched-publish"
# A worker that dies during a tool call is noticed this soon, whatever the tool's timeout.
TOOL_HEARTBEAT_TIMEOUT = timedelta(seconds=15)


class TaskFailed(Exception):
    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error


@workflow.defn(name=WORKFLOW_TYPE)
class AgentExecutionWorkflow:
    @workflow.init
    def __init__(self, task: AgentTaskInput) -> None:
        self._task = task
        self._request = task.request
        self._sequence = task.carried_sequence
        self._iteration = task.carried_iteration
        self._usage = task.carried_usage
        self._messages: list[ChatMessage] = (
            task.carried_messages
            if task.carried_messages is not None
            else [
                *task.request.history,
                ChatMessage(role="user", content=task.request.user_message),
            ]
        )
        self._state: TaskState = "running"
        self._pending: dict[str, PendingApproval] = {}
        self._decisions: dict[str, ApprovalDecision] = {}
        self._final_message: str | None = None
        self._error: str | None = None
        # Set by the first activity; None only while it runs (or if it never returns).
        self._plan: TaskPlan | None = None
        # Events made but not yet published; see `_emit`.
        self._outbox: list[PublishInput] = []

    @workflow.run
    async def run(self, task: AgentTaskInput) -> TaskResult:
        try:
            if workflow.patched(LOCAL_ACTIVITIES_PATCH):
                self._plan = await workflow.execute_local_activity_method(
                    AgentActivityDeclarations.plan_task,
                    self._request,
                    start_to_close_timeout=PLAN_TIMEOUT,
                )
            else:  # a task started before the patch, replaying
                self._plan = await workflow.execute_activity_method(
                    AgentActivityDeclarations.plan_task,
                    self._request,
                    start_to_close_timeout=PLAN_TIMEOUT,
                )
            if self._sequence == 0:
                await self._emit(
                    ExecutionStarted(
                        task_id=self._request.task_id,
                        workflow_id=workflow.info().workflow_id,
                        llm=self._plan.selection,
                        metadata=self._request.metadata,
                    )
                )
            if self._plan.error:
                raise TaskFailed(self._plan.error)
            return await self._loop()
        except TaskFailed as failure:
            await self._finish_failed(failure.error)
        except asyncio.CancelledError:
            await self._finish_cancelled()
            raise

    async def _loop(self) -> TaskResult:
        plan = self._planned
        while self._iteration < plan.max_iterations:
            self._continue_as_new_if_due()
            self._iteration += 1
            reply = await self._call_llm()
            self._usage = self._usage + reply.usage
            self._messages.append(
                ChatMessage(
                    role="assistant",
                    content=reply.message.content,
                    tool_calls=reply.message.tool_calls,
                )
            )
            await self._emit(
                LlmResponded(
                    task_id=self._request.task_id,
                    iteration=self._iteration,
                    message=reply.message,
                    usage=reply.usage,
                    provider=reply.provider,
                    model=reply.model,
                    truncated=reply.truncated,
                    metadata=self._request.metadata,
                ),
                hold=True,
            )
            if not reply.message.tool_calls:
                return await self._finish_completed(reply.message.content)
            for index, call in enumerate(reply.message.tool_calls):
                await self._handle_tool_call(call, index)
        raise TaskFailed(
            ErrorInfo(
                type="max_iterations_reached",
                message=f"the model still wanted tools after {plan.max_iterations} iterations",
            )
        )

    async def _call_llm(self) -> LlmCallResult:
        """One LLM turn: the planned selection, then its fallbacks while it is down.

        A selection is "down" when the activity failed with a retryable error (rate limit,
        5xx, no connection) or timed out, after all its attempts; any other error fails the
        task at once. Every turn starts with the planned selection, so a task returns to it
        as soon as it recovers; the `provider` and `model` of `agent.llm.responded` tell
        which one answered.
        """
        plan = self._planned
        selections = [plan.selection, *plan.fallbacks]
        while True:
            position = len(plan.fallbacks) + 1 - len(selections)
            selection = selections.pop(0)
            try:
                return await workflow.execute_activity_method(
                    AgentActivityDeclarations.call_llm,
                    LlmCallInput(
                        task_id=self._request.task_id,
                        selection=selection,
                        system_prompt=self._request.system_prompt,
                        messages=self._messages,
                        tools=plan.tools,
                        stream=plan.stream,
                        iteration=self._iteration,
                        # A fallback's attempts number on from the earlier selections'.
                        attempt_offset=position * plan.llm_max_attempts,
                        route=self._task.route if plan.stream else None,
                    ),
                    start_to_close_timeout=timedelta(seconds=plan.llm_timeout_seconds),
                    retry_policy=RetryPolicy(maximum_attempts=plan.llm_max_attempts),
                )
            except ActivityError as exc:
                error = _error_info(exc, default_type="llm_error")
                down = error.type in ("rate_limited", "provider_unavailable") or isinstance(
                    exc.cause, ActivityTimeoutError
                )
                if not (down and selections):
                    raise TaskFailed(error) from exc
                workflow.logger.warning(
                    "LLM provider down, falling back",
                    extra={"failed": selection.provider, "next": selections[0].provider},
                )

    async def _handle_tool_call(self, call: ToolCall, index: int) -> None:
        plan = self._planned
        if call.name in plan.approval.tools:
            decision = await self._await_approval(call, index)
            if not decision.approved:
                why = f": {decision.reason}" if decision.reason else ""
                await self._record_tool_result(
                    call, ToolCallResult(error=f"a person denied this tool call{why}")
                )
                return
            if decision.arguments is not None:
                call = call.model_copy(update={"arguments": decision.arguments})
        await self._flush()
        try:
            result = await workflow.execute_activity_method(
                AgentActivityDeclarations.run_tool,
                ToolCallInput(task_id=self._request.task_id, tool_call=call),
                start_to_close_timeout=timedelta(
                    seconds=plan.tool_timeouts.get(call.name, plan.tool_timeout_seconds)
                ),
                # run_tool heartbeats while the tool runs (see activities._heartbeating).
                heartbeat_timeout=TOOL_HEARTBEAT_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=plan.tool_max_attempts),
            )
        except ActivityError as exc:
            error = _error_info(exc, default_type="tool_error")
            if error.type in TASK_FATAL_TOOL_ERRORS:
                raise TaskFailed(error) from exc
            # The tool itself failed after its retries: the model is told and may adapt.
            result = ToolCallResult(error=error.message)
        await self._record_tool_result(call, result)

    async def _record_tool_result(self, call: ToolCall, result: ToolCallResult) -> None:
        content = f"error: {result.error}" if result.error is not None else _as_text(result.result)
        self._messages.append(
            ChatMessage(
                role="tool",
                content=content,
                tool_call_id=call.id,
                name=call.name,
                is_error=result.error is not None,
            )
        )
        await self._emit(
            ToolCompleted(
                task_id=self._request.task_id,
                tool_call_id=call.id,
                name=call.name,
                result=result.result,
                error=result.error,
                truncated=result.truncated,
                metadata=self._request.metadata,
            ),
        )

    async def _await_approval(self, call: ToolCall, index: int) -> ApprovalDecision:
        plan = self._planned
        approval_id = f"approval-{self._iteration}-{index + 1}"
        timeout = timedelta(seconds=plan.approval.timeout_seconds)
        expires_at = workflow.now() + timeout
        self._pending[approval_id] = PendingApproval(
            approval_id=approval_id, tool_call=call, expires_at=expires_at
        )
        self._state = "awaiting_approval"
        await self._emit(
            ApprovalRequested(
                task_id=self._request.task_id,
                approval_id=approval_id,
                tool_call=call,
                reply_to=self._task.route.approval_replies_destination,
                expires_at=expires_at,
                metadata=self._request.metadata,
            ),
        )
        try:
            await workflow.wait_condition(
                lambda: approval_id in self._decisions,
                timeout=timeout,
                timeout_summary=f"approval {approval_id}",
            )
            decision = self._decisions[approval_id]
            timed_out = False
        except TimeoutError:
            decision = ApprovalDecision(
                approval_id=approval_id,
                approved=plan.approval.approve_on_timeout,
                reason="no reply before the approval deadline",
            )
            self._decisions[approval_id] = decision
            timed_out = True
        finally:
            self._pending.pop(approval_id, None)
            self._state = "awaiting_approval" if self._pending else "running"
        await self._emit(
            ApprovalResolved(
                task_id=self._request.task_id,
                approval_id=approval_id,
                approved=decision.approved,
                approver=decision.approver,
                reason=decision.reason,
                timed_out=timed_out,
                metadata=self._request.metadata,
            ),
        )
        return decision

    @workflow.update(name="resolve_approval")
    def resolve_approval(self, decision: ApprovalDecision) -> ApprovalOutcome:
        if decision.approval_id in self._decisions:
            # The first valid reply wins; later ones change nothing.
            return ApprovalOutcome(applied=False, detail="already resolved")
        self._decisions[decision.approval_id] = decision
        return ApprovalOutcome(applied=True)

    @resolve_approval.validator
    def _validate_approval(self, decision: ApprovalDecision) -> None:
        known = decision.approval_id in self._pending or decision.approval_id in self._decisions
        if not known:
            msg = f"task {self._request.task_id} has no approval {decision.approval_id!r}"
            raise ApplicationError(msg, type="unknown_approval")

    @workflow.query(name="status")
    def status(self) -> TaskStatus:
        return TaskStatus(
            task_id=self._request.task_id,
            state=self._state,
            iteration=self._iteration,
            pending_approvals=list(self._pending.values()),
            final_message=self._final_message,
            error=self._error,
        )

    def _continue_as_new_if_due(self) -> None:
        info = workflow.info()
        due = (
            info.get_current_history_length() >= self._planned.continue_as_new_after_events
            or info.is_continue_as_new_suggested()
        )
        if not due:
            return
        workflow.logger.info("continuing as new", extra={"iteration": self._iteration})
        workflow.continue_as_new(
            AgentTaskInput(
                request=self._request,
                route=self._task.route,
                carried_sequence=self._sequence,
                carried_iteration=self._iteration,
                carried_messages=self._messages,
                carried_usage=self._usage,
            )
        )

    async def _finish_completed(self, final_message: str) -> TaskResult:
        self._state, self._final_message = "completed", final_message
        await self._emit(
            ExecutionCompleted(
                task_id=self._request.task_id,
                final_message=final_message,
                iterations=self._iteration,
                usage=self._usage,
                metadata=self._request.metadata,
            ),
        )
        return TaskResult(
            task_id=self._request.task_id,
            state="completed",
            final_message=final_message,
            iterations=self._iteration,
            usage=self._usage,
        )

    async def _finish_failed(self, error: ErrorInfo) -> NoReturn:
        self._state, self._error = "failed", error.message
        await self._emit(
            ExecutionFailed(
                task_id=self._request.task_id,
                error=error,
                iterations=self._iteration,
                metadata=self._request.metadata,
            ),
        )
        # Failing the workflow itself shows the task as Failed in the Temporal UI.
        raise ApplicationError(error.message, type=error.type, non_retryable=True)

    async def _finish_cancelled(self) -> None:
        self._state = "cancelled"
        self._pending.clear()
        await self._emit(
            ExecutionCancelled(
                task_id=self._request.task_id,
                reason=workflow.cancellation_reason() or None,
                metadata=self._request.metadata,
            ),
        )

    @property
    def _planned(self) -> TaskPlan:
        assert self._plan is not None, "the task is planned before anything else"
        return self._plan

    async def _emit(self, data: TaskEventData, *, hold: bool = False) -> None:
        """Publish the event, after any held ones; `hold` keeps it for the next publish
        (or `_flush`) instead, which the caller must make before it waits on anything."""
        self._sequence += 1
        workflow_id = workflow.info().workflow_id
        self._outbox.append(
            PublishInput(
                route=self._task.route,
                event_type=data.event_type,
                event_id=event_id_for(workflow_id, self._sequence),
                task_id=self._request.task_id,
                sequence=self._sequence,
                time=workflow.now(),
                data=data.model_dump(mode="json", by_alias=True),
            )
        )
        if (
            hold
            and workflow.patched(LOCAL_ACTIVITIES_PATCH)
            and workflow.patched(BATCHED_PUBLISH_PATCH)
        ):
            return
        await self._flush()

    async def _flush(self) -> None:
        """Publish the held events, in order, in one activity."""
        if not self._outbox:
            return
        plan = self._plan
        timeout = timedelta(seconds=plan.publish_timeout_seconds if plan else 15)
        # Publishing must not give up: the bus being down delays the task, never loses events
        # (a cancellation may interrupt it: the terminal event still follows).
        retry = RetryPolicy(maximum_interval=timedelta(seconds=30))
        batch, self._outbox = self._outbox, []
        if len(batch) > 1:
            await workflow.execute_local_activity_method(
                AgentActivityDeclarations.publish_events,
                PublishBatch(events=batch),
                start_to_close_timeout=timeout,
                retry_policy=retry,
            )
        elif workflow.patched(LOCAL_ACTIVITIES_PATCH):
            await workflow.execute_local_activity_method(
                AgentActivityDeclarations.publish_event,
                batch[0],
                start_to_close_timeout=timeout,
                retry_policy=retry,
            )
        else:  # a task started before the patch, replaying
            await workflow.execute_activity_method(
                AgentActivityDeclarations.publish_event,
                batch[0],
                start_to_close_timeout=timeout,
                retry_policy=retry,
            )


def _error_info(exc: ActivityError, *, default_type: str) -> ErrorInfo:
    if is_cancelled_exception(exc):
        # The task is being cancelled: let the cancellation, not a failure, end it.
        raise asyncio.CancelledError
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return ErrorInfo(type=cause.type or default_type, message=cause.message)
    return ErrorInfo(type=default_type, message=str(cause or exc))


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
