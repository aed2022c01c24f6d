"""The agent workflow: LLM turn → tool calls (with approvals) → … → one terminal event.

Deterministic and free of I/O: every effect (planning from config, LLM and tool calls,
publishing) is an activity. Events get the next `sequence` as they are made and are
published in that order, one publishing activity at a time, so a task's events arrive
in the order it produced them, even while a turn's tool calls run at once.
"""

import asyncio
import json
from dataclasses import dataclass
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
        PublishedEvents,
        PublishedQuery,
        PublishInput,
        TaskPlan,
        TaskResult,
        TaskState,
        TaskStatus,
        ToolCallInput,
        ToolCallResult,
    )
    from temporal_executor.worker.activity_declarations import AgentActivityDeclarations

# A model's mistakes in a tool call (arguments not JSON or not fitting the tool, a tool the
# task may not call, input the tool rejects), which a retry of the same call cannot fix:
# the model is told, and the task fails after `max_tool_errors` of them in a row.
MODEL_MISTAKES = frozenset({"invalid_tool_arguments", "unknown_tool"})
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
# A turn's tool calls run at once, their approvals are asked all at once, and a model's
# mistaken call goes back to it. Older tasks run the calls one after another, and fail at
# the first mistake.
PARALLEL_TOOL_CALLS_PATCH = "parallel-tool-calls"
# A worker that dies during a tool call is noticed this soon, whatever the tool's timeout.
TOOL_HEARTBEAT_TIMEOUT = timedelta(seconds=15)
# LLM calls heartbeat too, with the plan's heartbeat timeout: a worker that dies during one
# is noticed in seconds, not after the LLM timeout. Older tasks' calls have none.
LLM_HEARTBEAT_PATCH = "llm-heartbeat"
# A payload over the plan's limit (an LLM call's input, a continue-as-new input) fails the
# task with `payload_too_large`; before, Temporal refused the command and the workflow task
# failed forever. The marker is written only by a task that fails so.
PAYLOAD_LIMIT_PATCH = "payload-size-check"


class TaskFailed(Exception):
    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class ToolOutcome:
    """How one tool call ended; `mistake` is set when it was the model's mistake."""

    call: ToolCall
    result: ToolCallResult
    mistake: ErrorInfo | None = None


@workflow.defn(name=WORKFLOW_TYPE)
class AgentExecutionWorkflow:
    @workflow.init
    def __init__(self, task: AgentTaskInput) -> None:
        self._task = task
        self._request = task.request
        self._sequence = task.carried_sequence
        self._iteration = task.carried_iteration
        self._usage = task.carried_usage
        # The model's mistaken tool calls since its last call that was not one.
        self._mistakes_in_a_row = task.carried_mistakes_in_a_row
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
        # Every event of this run, for the `published` query (the gateway's replay).
        self._published: list[PublishInput] = []
        # One publishing activity at a time, so events go out in `sequence` order.
        self._publishing = asyncio.Lock()

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
                    total_usage=self._usage,
                    provider=reply.provider,
                    model=reply.model,
                    truncated=reply.truncated,
                    metadata=self._request.metadata,
                ),
                hold=True,
            )
            self._check_budget()
            if not reply.message.tool_calls:
                return await self._finish_completed(reply.message.content)
            if workflow.patched(PARALLEL_TOOL_CALLS_PATCH):
                await self._run_tool_calls(reply.message.tool_calls)
            else:  # a task started before the patch, replaying
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
        heartbeat_timeout = (
            timedelta(seconds=plan.llm_heartbeat_timeout_seconds)
            if workflow.patched(LLM_HEARTBEAT_PATCH)
            else None
        )
        while True:
            position = len(plan.fallbacks) + 1 - len(selections)
            selection = selections.pop(0)
            call = LlmCallInput(
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
                metadata=self._request.metadata,
            )
            self._check_payload_size("the conversation sent to the LLM", call)
            try:
                return await workflow.execute_activity_method(
                    AgentActivityDeclarations.call_llm,
                    call,
                    start_to_close_timeout=timedelta(seconds=plan.llm_timeout_seconds),
                    heartbeat_timeout=heartbeat_timeout,
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

    def _check_budget(self) -> None:
        budget = self._planned.max_total_tokens
        used = self._usage.total_tokens
        if budget is not None and used > budget:
            raise TaskFailed(
                ErrorInfo(
                    type="budget_exceeded",
                    message=f"the task used {used} tokens, over its budget of {budget}",
                )
            )

    async def _run_tool_calls(self, calls: list[ToolCall]) -> None:
        """A turn's tool calls, at once: every approval request goes out first, then each
        call waits for its answer (in any order), runs, and reports `agent.tool.completed`
        as it ends; the results go back to the model in call order."""
        plan = self._planned
        approvals: dict[int, str] = {}
        for index, call in enumerate(calls):
            if _mistake(call, plan) is None and call.name in plan.approval.tools:
                approvals[index] = await self._request_approval(call, index, hold=True)
        await self._flush()
        slots = asyncio.Semaphore(plan.max_parallel_tools)
        outcomes = await asyncio.gather(
            *(
                self._run_tool_call(call, approvals.get(index), slots)
                for index, call in enumerate(calls)
            )
        )
        for outcome in outcomes:
            self._add_tool_message(outcome.call, outcome.result)
        for outcome in outcomes:
            self._mistakes_in_a_row = self._mistakes_in_a_row + 1 if outcome.mistake else 0
            if outcome.mistake and self._mistakes_in_a_row >= plan.max_tool_errors:
                message = (
                    f"{outcome.mistake.message} "
                    f"({self._mistakes_in_a_row} mistaken tool calls in a row)"
                )
                raise TaskFailed(ErrorInfo(type=outcome.mistake.type, message=message))

    async def _run_tool_call(
        self, call: ToolCall, approval_id: str | None, slots: asyncio.Semaphore
    ) -> ToolOutcome:
        outcome = await self._tool_outcome(call, approval_id, slots)
        await self._emit_tool_completed(outcome.call, outcome.result)
        return outcome

    async def _tool_outcome(
        self, call: ToolCall, approval_id: str | None, slots: asyncio.Semaphore
    ) -> ToolOutcome:
        mistake = _mistake(call, self._planned)
        if mistake is not None:
            return ToolOutcome(call, ToolCallResult(error=mistake.message), mistake)
        if approval_id is not None:
            decision = await self._await_decision(approval_id)
            if not decision.approved:
                return ToolOutcome(call, _denied(decision))
            if decision.arguments is not None:
                call = call.model_copy(update={"arguments": decision.arguments})
        async with slots:
            return await self._execute_tool(call)

    async def _handle_tool_call(self, call: ToolCall, index: int) -> None:
        """One call of a task started before `PARALLEL_TOOL_CALLS_PATCH`, replaying."""
        if call.name in self._planned.approval.tools:
            approval_id = await self._request_approval(call, index, hold=False)
            decision = await self._await_decision(approval_id)
            if not decision.approved:
                await self._record_tool_result(call, _denied(decision))
                return
            if decision.arguments is not None:
                call = call.model_copy(update={"arguments": decision.arguments})
        await self._flush()
        outcome = await self._execute_tool(call)
        if outcome.mistake is not None:
            raise TaskFailed(outcome.mistake)
        await self._record_tool_result(call, outcome.result)

    async def _execute_tool(self, call: ToolCall) -> ToolOutcome:
        plan = self._planned
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
            # A mistake, or the tool itself failed after its retries: the model is told.
            mistake = error if error.type in MODEL_MISTAKES else None
            return ToolOutcome(call, ToolCallResult(error=error.message), mistake)
        return ToolOutcome(call, result)

    async def _record_tool_result(self, call: ToolCall, result: ToolCallResult) -> None:
        self._add_tool_message(call, result)
        await self._emit_tool_completed(call, result)

    def _add_tool_message(self, call: ToolCall, result: ToolCallResult) -> None:
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

    async def _emit_tool_completed(self, call: ToolCall, result: ToolCallResult) -> None:
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

    async def _request_approval(self, call: ToolCall, index: int, *, hold: bool) -> str:
        approval_id = f"approval-{self._iteration}-{index + 1}"
        timeout = timedelta(seconds=self._planned.approval.timeout_seconds)
        expires_at = workflow.now() + timeout
        self._pending[approval_id] = PendingApproval(
            approval_id=approval_id,
            tool_call=call,
            expires_at=expires_at,
            approvers=self._planned.approval.approvers.get(call.name),
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
            hold=hold,
        )
        return approval_id

    async def _await_decision(self, approval_id: str) -> ApprovalDecision:
        plan = self._planned
        timeout = timedelta(seconds=plan.approval.timeout_seconds)
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
        # The last word on who may approve (the task service checked it already).
        pending = self._pending.get(decision.approval_id)
        if pending is not None and not pending.allows(decision.approver):
            msg = (
                f"approver {decision.approver!r} may not approve {pending.tool_call.name} "
                f"(allowed: {', '.join(pending.approvers or [])})"
            )
            raise ApplicationError(msg, type="approver_not_allowed")

    @workflow.query(name="published")
    def published(self, query: PublishedQuery) -> PublishedEvents:
        """This run's events after `query.after`, published or about to be: a stream
        replays them, then follows the bus (the gateway's `Last-Event-ID` resume)."""
        return PublishedEvents(
            events=[event for event in self._published if event.sequence > query.after]
        )

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
        carried = AgentTaskInput(
            request=self._request,
            route=self._task.route,
            carried_sequence=self._sequence,
            carried_iteration=self._iteration,
            carried_messages=self._messages,
            carried_usage=self._usage,
            carried_mistakes_in_a_row=self._mistakes_in_a_row,
        )
        self._check_payload_size("the conversation carried over by continue-as-new", carried)
        workflow.continue_as_new(carried)

    def _check_payload_size(self, what: str, value: object) -> None:
        limit = self._planned.max_payload_bytes
        if limit is None:
            return
        size = workflow.payload_converter().to_payload(value).ByteSize()
        if size > limit and workflow.patched(PAYLOAD_LIMIT_PATCH):
            raise TaskFailed(
                ErrorInfo(
                    type="payload_too_large",
                    message=f"{what} is {size} bytes, over the {limit} bytes a Temporal "
                    "payload may hold here; configure payload_storage to keep large "
                    "payloads in an object store",
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
                total_usage=self._usage,
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
                total_usage=self._usage,
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
                total_usage=self._usage,
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
        self._published.append(
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
        self._outbox.append(self._published[-1])
        if (
            hold
            and workflow.patched(LOCAL_ACTIVITIES_PATCH)
            and workflow.patched(BATCHED_PUBLISH_PATCH)
        ):
            return
        await self._flush()

    async def _flush(self) -> None:
        """Publish the held events, in order, in one activity (after any publishing now)."""
        async with self._publishing:
            await self._publish_outbox()

    async def _publish_outbox(self) -> None:
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


def _mistake(call: ToolCall, plan: TaskPlan) -> ErrorInfo | None:
    """What the workflow itself can tell is wrong with a call (the tool checks the rest)."""
    offered = [tool.name for tool in plan.tools]
    if call.name not in offered:
        return ErrorInfo(
            type="unknown_tool",
            message=f"this task may not call tool {call.name!r}; "
            f"it may call: {', '.join(offered) or 'no tool'}",
        )
    raw = call.unreadable_arguments()
    if raw is not None:
        return ErrorInfo(
            type="invalid_tool_arguments",
            message=f"the arguments for tool {call.name!r} are not a JSON object: {raw}",
        )
    return None


def _denied(decision: ApprovalDecision) -> ToolCallResult:
    why = f": {decision.reason}" if decision.reason else ""
    return ToolCallResult(error=f"a person denied this tool call{why}")


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
