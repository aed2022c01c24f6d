"""What the bridge asks of Temporal, with Temporal's errors turned into bridge errors.

`RetryLater` when Temporal cannot be reached (keep the message, back off);
`DeadLetter` when the request can never succeed (no such task, no such approval).
"""

import time
from datetime import timedelta

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from temporal_executor.bus.errors import DeadLetter, DeadLetterReason, RetryLater
from temporal_executor.schemas.event_types import WORKFLOW_TYPE, workflow_id_for
from temporal_executor.schemas.task import AgentTaskInput, ApprovalDecision, ApprovalOutcome
from temporal_executor.telemetry import metrics

# Codes that mean "Temporal is not there right now", not "this request is wrong".
_TRANSIENT_CODES = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.INTERNAL,
        RPCStatusCode.UNKNOWN,
        RPCStatusCode.CANCELLED,
        # A credentials or permissions problem is config's fault, not the message's:
        # keep the message until an operator fixes it.
        RPCStatusCode.UNAUTHENTICATED,
        RPCStatusCode.PERMISSION_DENIED,
    }
)


class TemporalGateway:
    def __init__(self, client: Client, task_queue: str, rpc_timeout: timedelta) -> None:
        self._client = client
        self._task_queue = task_queue
        self._rpc_timeout = rpc_timeout

    async def start_task(self, task: AgentTaskInput) -> bool:
        """Start the task's workflow; False if one with its id exists or existed."""
        began = time.perf_counter()
        outcome = "unavailable"  # Temporal did not answer: the message will be retried
        try:
            started = await self._start(task)
            outcome = "started" if started else "duplicate"
            return started
        except DeadLetter:
            outcome = "refused"
            raise
        finally:
            metrics.TASK_START_DURATION.labels(outcome).observe(time.perf_counter() - began)

    async def _start(self, task: AgentTaskInput) -> bool:
        try:
            await self._client.start_workflow(
                WORKFLOW_TYPE,
                task,
                id=workflow_id_for(task.request.task_id),
                task_queue=self._task_queue,
                # A task id is never reused, not even after its workflow closed.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                rpc_timeout=self._rpc_timeout,
            )
        except WorkflowAlreadyStartedError:
            return False
        except RPCError as exc:
            raise _classify(exc, task.request.task_id) from exc
        return True

    async def cancel_task(self, task_id: str, reason: str | None) -> None:
        # Temporal accepts a cancel for a closed workflow silently; the sender should learn
        # (from the dead letter) that it changed nothing.
        if not await self.is_running(task_id):
            detail = f"task {task_id} is not running (finished, or never started)"
            raise DeadLetter(DeadLetterReason.TASK_NOT_RUNNING, detail)
        handle = self._client.get_workflow_handle(workflow_id_for(task_id))
        try:
            await handle.cancel(reason=reason or "", rpc_timeout=self._rpc_timeout)
        except RPCError as exc:
            raise _classify(exc, task_id) from exc

    async def resolve_approval(self, task_id: str, decision: ApprovalDecision) -> ApprovalOutcome:
        handle = self._client.get_workflow_handle(workflow_id_for(task_id))
        try:
            outcome: ApprovalOutcome = await handle.execute_update(
                "resolve_approval",
                decision,
                result_type=ApprovalOutcome,
                rpc_timeout=self._rpc_timeout,
            )
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == "unknown_approval":
                raise DeadLetter(DeadLetterReason.UNKNOWN_APPROVAL, cause.message) from exc
            raise DeadLetter(DeadLetterReason.TASK_NOT_RUNNING, str(cause or exc)) from exc
        except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
            # No worker took the update in time (workers down or busy): try again later.
            msg = f"approval for task {task_id}: no worker answered in time"
            raise RetryLater(msg) from exc
        except RPCError as exc:
            raise _classify(exc, task_id) from exc
        return outcome

    async def is_running(self, task_id: str) -> bool:
        handle = self._client.get_workflow_handle(workflow_id_for(task_id))
        try:
            description = await handle.describe(rpc_timeout=self._rpc_timeout)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise _classify(exc, task_id) from exc
        return description.status == WorkflowExecutionStatus.RUNNING


def _classify(exc: RPCError, task_id: str) -> Exception:
    if exc.status in _TRANSIENT_CODES:
        return RetryLater(f"Temporal unavailable ({exc.status.name}): {exc.message}")
    if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
        return DeadLetter(
            DeadLetterReason.TASK_NOT_RUNNING, f"task {task_id} is not running: {exc.message}"
        )
    return DeadLetter(DeadLetterReason.INVALID_DATA, f"Temporal refused: {exc.message}")
