"""The task service: what every way in (bus, HTTP, A2A) asks of Temporal, in one place.

API. `TaskService(settings, client=None)` wraps the Temporal client (without one,
`connect_in_background()` connects with the bridge's backoff and every call raises
`TemporalUnavailable` until then; `close()` stops it). `prepare(request, transport,
reply_to=, traceparent=, tracestate=)` builds the workflow input (`AgentTaskInput`, its
events routed on `transport`'s bus); `start(task, transport)` starts the workflow
(`agent-execution-<task_id>`, an id is never reused) and returns False for a duplicate,
else True after announcing `agent.execution.started` on `transport`
(`bridge.announce_started`). `cancel(task_id, reason)` cancels a running task (HTTP and A2A
call `running_status` first, for 404 vs 409). `approve(task_id, decision)` applies an
`ApprovalDecision` as a bus reply does (the first valid reply wins; a later one returns
`ApprovalOutcome(applied=False)`); `approve_reply(reply, event_id=, signature=)` is a bus
reply: its `approvalsig` checked against `approvals.keys` (`InvalidSignature`), the approver
it proves recorded; `approve_waiting(task_id, approval_id=None, approved=, approver=,
reason=, arguments=)` is the interactive form (HTTP, A2A, the approver being the
authenticated caller): the task must run, the approval defaults to the one it waits for,
and changing nothing raises. All check that the approver may approve the tool
(`check_approver`, `Settings.approvers_for`: `approvals.tools`, `approvals.mcp_servers`,
`bridge.allowed_approvers`; `ApproverNotAllowed`); the workflow's update validator has the
last word. `status(task_id)` is the workflow's
`status` query (`running_status(task_id)` also raises once the task has ended);
`task_input(task_id)` decodes the input of the task's current run (its request and event
route) from its history; `ping()` asks Temporal for its system info. `validated(model,
data)` (`tasks/validation.py`) checks inbound data. Every failure is a `TaskError`
(`tasks/errors.py`): `InvalidRequest`, `ApproverNotAllowed`, `TaskNotFound`,
`TaskNotRunning`, `UnknownApproval`, `InvalidSignature`, `StatusUnavailable`,
`TemporalUnavailable` (retry later); `classify_rpc_error` is the one place Temporal's RPC
errors are classified. A new check on a start or an approval (signatures, budgets, tracing)
goes here, and the bridge and the gateway both get it; docs/architecture.md says how each
way in answers each error.
"""

import asyncio
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from temporal_executor.bus.transport import Transport
from temporal_executor.schemas.config import Settings
from temporal_executor.schemas.event_types import WORKFLOW_TYPE, workflow_id_for
from temporal_executor.schemas.requests import ApprovalReplied, ExecutionRequested
from temporal_executor.schemas.task import (
    AgentTaskInput,
    ApprovalDecision,
    ApprovalOutcome,
    EventRoute,
    PublishedEvents,
    PublishedQuery,
    PublishInput,
    TaskStatus,
)
from temporal_executor.tasks.announcer import announce_started
from temporal_executor.tasks.errors import (
    ApproverNotAllowed,
    InvalidRequest,
    StatusUnavailable,
    TaskError,
    TaskNotFound,
    TaskNotRunning,
    TemporalUnavailable,
    UnknownApproval,
)
from temporal_executor.tasks.temporal_connection import connect_with_retry
from temporal_executor.telemetry import metrics

if TYPE_CHECKING:
    from temporal_executor.tasks.approval_signatures import ApprovalVerifier

log = logging.getLogger(__name__)

# States of the workflow's `status` query after which the task takes no more changes.
TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})

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
        # A credentials or permissions problem is config's fault, not the request's:
        # keep the request until an operator fixes it.
        RPCStatusCode.UNAUTHENTICATED,
        RPCStatusCode.PERMISSION_DENIED,
    }
)


class TaskService:
    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self._settings = settings
        self._client = client
        self._rpc_timeout = timedelta(seconds=settings.bridge.rpc_timeout_seconds)
        # Reads the signers' keys now: one config names but cannot read fails the start.
        # Without keys, the JWT and crypto libraries (~11 MB) load with the first signed reply.
        self._verifier: ApprovalVerifier | None = None
        if settings.approvals.keys or settings.approvals.require_signature:
            self._verifier = self._approval_verifier()
        approvals = settings.approvals
        # Without any approver list, nobody need look up which tool an approval is for.
        self._approvers_listed = bool(
            approvals.tools or approvals.mcp_servers or settings.bridge.allowed_approvers
        )
        self._stop = asyncio.Event()
        self._connecting: asyncio.Task[None] | None = None

    # The Temporal client ------------------------------------------------------------------

    def connect_in_background(self) -> None:
        """Connect (with backoff) unless given a client; calls raise `TemporalUnavailable`
        until connected, so a caller can serve while Temporal is away."""
        if self._client is None and self._connecting is None:
            self._connecting = asyncio.create_task(self._connect(), name="temporal-connect")

    async def _connect(self) -> None:
        self._client = await connect_with_retry(self._settings, self._stop)
        if self._client is not None:
            log.info("connected to Temporal", extra={"temporal": self._address})

    async def close(self) -> None:
        self._stop.set()
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)

    @property
    def _address(self) -> str:
        return self._settings.temporal.host_port

    @property
    def client(self) -> Client:
        if self._client is None:
            msg = f"Temporal at {self._address} is not reachable (yet)"
            raise TemporalUnavailable(msg)
        return self._client

    async def ping(self) -> None:
        """Return once Temporal answers; `TemporalUnavailable` saying why it does not."""
        try:
            await self.client.workflow_service.get_system_info(
                GetSystemInfoRequest(), timeout=self._rpc_timeout
            )
        except RPCError as exc:
            msg = f"Temporal at {self._address}: {exc.message}"
            raise TemporalUnavailable(msg) from exc

    # Starting -----------------------------------------------------------------------------

    def prepare(
        self,
        request: ExecutionRequested,
        transport: Transport,
        *,
        reply_to: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> AgentTaskInput:
        """The workflow input of a request whose events go out on `transport`: to the task's
        destinations there, or all to `reply_to` when the request names one."""
        task_id = request.task_id
        route = EventRoute(
            bus=transport.bus,
            events_destination=reply_to or transport.events_destination(task_id),
            approvals_destination=reply_to or transport.approvals_destination(task_id),
            approval_replies_destination=transport.approval_replies_destination(task_id),
            deltas_destination=transport.deltas_destination(task_id),
            traceparent=traceparent,
            tracestate=tracestate,
        )
        return AgentTaskInput(request=request, route=route)

    async def start(self, task: AgentTaskInput, transport: Transport) -> bool:
        """Start the task's workflow; False if a task with its id exists or existed (then
        nothing starts). A started task is announced on `transport`, its route's bus."""
        began = time.perf_counter()
        outcome = "unavailable"  # Temporal did not answer: the caller retries or says 503
        try:
            started = await self._start(task)
            outcome = "started" if started else "duplicate"
        except TemporalUnavailable:
            raise
        except TaskError:
            outcome = "refused"
            raise
        finally:
            metrics.TASK_START_DURATION.labels(outcome).observe(time.perf_counter() - began)
        if started and self._settings.bridge.announce_started:
            await announce_started(transport, task, self._settings.bus.source)
        return started

    async def _start(self, task: AgentTaskInput) -> bool:
        task_id = task.request.task_id
        try:
            await self.client.start_workflow(
                WORKFLOW_TYPE,
                task,
                id=workflow_id_for(task_id),
                task_queue=self._settings.temporal.task_queue,
                # A task id is never reused, not even after its workflow closed.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                rpc_timeout=self._rpc_timeout,
            )
        except WorkflowAlreadyStartedError:
            log.info("duplicate request ignored: task exists", extra={"task_id": task_id})
            return False
        except RPCError as exc:
            raise classify_rpc_error(exc, task_id) from exc
        log.info("task started", extra={"task_id": task_id, "bus": task.route.bus})
        return True

    # Changing a running task --------------------------------------------------------------

    async def cancel(self, task_id: str, reason: str | None) -> None:
        # Temporal accepts a cancel for a closed workflow silently; the sender should learn
        # that it changed nothing.
        if not await self._is_running(task_id):
            msg = f"task {task_id} is not running (finished, or never started)"
            raise TaskNotRunning(msg)
        handle = self.client.get_workflow_handle(workflow_id_for(task_id))
        try:
            await handle.cancel(reason=reason or "", rpc_timeout=self._rpc_timeout)
        except RPCError as exc:
            raise classify_rpc_error(exc, task_id) from exc
        log.info("task cancel requested", extra={"task_id": task_id})

    async def check_approver(
        self,
        task_id: str,
        approval_id: str,
        approver: str | None,
        status: TaskStatus | None = None,
    ) -> None:
        """`ApproverNotAllowed` unless `approver` may approve the tool the approval is for.
        An approval the task does not wait for is left to the update to refuse."""
        if not self._approvers_listed:
            return
        if status is None:
            status = await self.status(task_id)
        pending = next((p for p in status.pending_approvals if p.approval_id == approval_id), None)
        if pending is None:
            return
        tool = pending.tool_call.name
        allowed = self._settings.approvers_for(tool)
        if allowed is not None and approver not in allowed:
            msg = f"approver {approver!r} may not approve {tool} (allowed: {', '.join(allowed)})"
            raise ApproverNotAllowed(msg)

    async def approve(self, task_id: str, decision: ApprovalDecision) -> ApprovalOutcome:
        """Apply an approval reply; `applied` is False when an earlier reply won."""
        await self.check_approver(task_id, decision.approval_id, decision.approver)
        return await self._resolve(task_id, decision)

    def _approval_verifier(self) -> "ApprovalVerifier":
        if self._verifier is None:
            from temporal_executor.tasks.approval_signatures import ApprovalVerifier

            self._verifier = ApprovalVerifier(self._settings.approvals)
        return self._verifier

    async def approve_reply(
        self, reply: ApprovalReplied, *, event_id: str, signature: str | None
    ) -> ApprovalOutcome:
        """Apply a bus reply whose `approvalsig` (None: unsigned) proves its approver."""
        if signature is None and self._verifier is None:
            approver = reply.approver  # unsigned, and no signature is required
        else:
            verifier = self._approval_verifier()
            approver = verifier.verified_approver(reply, event_id=event_id, signature=signature)
        decision = ApprovalDecision(
            approval_id=reply.approval_id,
            approved=reply.approved,
            approver=approver,
            reason=reply.reason,
            arguments=reply.arguments,
        )
        return await self.approve(reply.task_id, decision)

    async def approve_waiting(
        self,
        task_id: str,
        *,
        approval_id: str | None,
        approved: bool,
        approver: str | None,
        reason: str | None = None,
        arguments: dict[str, object] | None = None,
    ) -> str:
        """Resolve an approval the running task waits for (by default the first pending);
        its id. `UnknownApproval` when it waits for no such approval (any more)."""
        status = await self.running_status(task_id)
        if approval_id is None:
            if not status.pending_approvals:
                msg = f"task {task_id} is not waiting for an approval (it is {status.state})"
                raise UnknownApproval(msg)
            approval_id = status.pending_approvals[0].approval_id
        await self.check_approver(task_id, approval_id, approver, status)
        decision = ApprovalDecision(
            approval_id=approval_id,
            approved=approved,
            approver=approver,
            reason=reason,
            arguments=arguments,
        )
        outcome = await self._resolve(task_id, decision)
        if not outcome.applied:
            msg = f"approval {approval_id} of task {task_id} is {outcome.detail or 'resolved'}"
            raise UnknownApproval(msg)
        return approval_id

    async def _resolve(self, task_id: str, decision: ApprovalDecision) -> ApprovalOutcome:
        handle = self.client.get_workflow_handle(workflow_id_for(task_id))
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
                raise UnknownApproval(cause.message) from exc
            if isinstance(cause, ApplicationError) and cause.type == "approver_not_allowed":
                # The workflow's validator: the task's plan says otherwise than our config.
                raise ApproverNotAllowed(cause.message) from exc
            raise TaskNotRunning(str(cause or exc)) from exc
        except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
            # No worker took the update in time (workers down or busy): try again later.
            msg = f"approval for task {task_id}: no worker answered in time"
            raise TemporalUnavailable(msg) from exc
        except RPCError as exc:
            # An update to a workflow that has just closed is NOT_FOUND too: the task exists.
            if exc.status == RPCStatusCode.NOT_FOUND and await self._exists(task_id):
                msg = f"task {task_id} is not running: it has ended"
                raise TaskNotRunning(msg) from exc
            raise classify_rpc_error(exc, task_id) from exc
        log.info(
            "approval reply applied" if outcome.applied else "approval reply ignored",
            extra={
                "task_id": task_id,
                "approval_id": decision.approval_id,
                "approved": decision.approved,
                "detail": outcome.detail,
            },
        )
        return outcome

    # Reading a task -----------------------------------------------------------------------

    async def status(self, task_id: str) -> TaskStatus:
        """The workflow's `status` query (running or finished)."""
        handle = self.client.get_workflow_handle(workflow_id_for(task_id))
        try:
            status: TaskStatus = await handle.query(
                "status", result_type=TaskStatus, rpc_timeout=self._rpc_timeout
            )
        except RPCError as exc:
            raise classify_rpc_error(exc, task_id) from exc
        except WorkflowQueryFailedError as exc:
            msg = f"the status query of task {task_id} failed: {exc}"
            raise StatusUnavailable(msg) from exc
        return status

    async def running_status(self, task_id: str) -> TaskStatus:
        """The status of a task that can still change; `TaskNotRunning` once it has ended."""
        status = await self.status(task_id)
        if status.state in TERMINAL_STATES:
            msg = f"task {task_id} is not running: it has {status.state}"
            raise TaskNotRunning(msg)
        return status

    async def task_input(self, task_id: str) -> AgentTaskInput:
        """The input of the task's current run (its request, and where its events go)."""
        client = self.client
        handle = client.get_workflow_handle(workflow_id_for(task_id))
        try:
            async for event in handle.fetch_history_events(
                page_size=1, rpc_timeout=self._rpc_timeout
            ):
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                decoded = await client.data_converter.decode(payloads, [AgentTaskInput])
                task: AgentTaskInput = decoded[0]
                return task
        except RPCError as exc:
            raise classify_rpc_error(exc, task_id) from exc
        msg = f"no task {task_id!r}"
        raise TaskNotFound(msg)

    async def published(self, task_id: str, after: int) -> list[PublishInput]:
        """The events the task published (or is about to) with a sequence over `after`, in
        order: each run's `published` query, back through continue-as-new as far as needed."""
        client = self.client
        workflow_id = workflow_id_for(task_id)
        found: list[PublishInput] = []
        try:
            # The latest run, fixed, so that its query and its history agree.
            latest = client.get_workflow_handle(workflow_id)
            run_id: str = (await latest.describe(rpc_timeout=self._rpc_timeout)).run_id
            while True:
                handle = client.get_workflow_handle(workflow_id, run_id=run_id)
                page: PublishedEvents = await handle.query(
                    "published",
                    PublishedQuery(after=after),
                    result_type=PublishedEvents,
                    rpc_timeout=self._rpc_timeout,
                )
                found[:0] = page.events
                carried, previous = await self._run_start(workflow_id, run_id)
                if carried <= after or not previous:
                    return found
                run_id = previous
        except RPCError as exc:
            raise classify_rpc_error(exc, task_id) from exc
        except WorkflowQueryFailedError as exc:
            msg = f"the published query of task {task_id} failed: {exc}"
            raise StatusUnavailable(msg) from exc

    async def _run_start(self, workflow_id: str, run_id: str) -> tuple[int, str]:
        """The sequence a run carried over from the run before it, and that run's id."""
        client = self.client
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        async for event in handle.fetch_history_events(page_size=1, rpc_timeout=self._rpc_timeout):
            started = event.workflow_execution_started_event_attributes
            decoded = await client.data_converter.decode(started.input.payloads, [AgentTaskInput])
            task: AgentTaskInput = decoded[0]
            return task.carried_sequence, started.continued_execution_run_id
        return 0, ""  # pragma: no cover - a run's history starts with its start

    # Listing tasks (Temporal's visibility) --------------------------------------------------

    async def list_page(
        self, query: str, page_size: int, page_token: bytes | None
    ) -> tuple[list[WorkflowExecution], bytes | None]:
        """One page of the workflows visibility finds for `query`, and the next page's token
        (None: this was the last). `query` is a visibility query on task workflows."""
        found = self.client.list_workflows(
            query,
            page_size=page_size,
            next_page_token=page_token,
            rpc_timeout=self._rpc_timeout,
        )
        try:
            await found.fetch_next_page()
        except RPCError as exc:
            # Temporal cannot read a made-up token: INVALID_ARGUMENT, or UNKNOWN on some stores.
            unreadable = {RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.UNKNOWN}
            if page_token is not None and exc.status in unreadable:
                msg = f"the page_token is not one this agent gave ({exc.message})"
                raise InvalidRequest(msg) from exc
            raise classify_rpc_error(exc, "*") from exc
        return list(found.current_page or []), found.next_page_token or None

    async def count(self, query: str) -> int:
        """How many workflows visibility finds for `query`."""
        try:
            counted = await self.client.count_workflows(query, rpc_timeout=self._rpc_timeout)
        except RPCError as exc:
            raise classify_rpc_error(exc, "*") from exc
        return counted.count

    async def _exists(self, task_id: str) -> bool:
        handle = self.client.get_workflow_handle(workflow_id_for(task_id))
        try:
            await handle.describe(rpc_timeout=self._rpc_timeout)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise classify_rpc_error(exc, task_id) from exc
        return True

    async def _is_running(self, task_id: str) -> bool:
        handle = self.client.get_workflow_handle(workflow_id_for(task_id))
        try:
            description = await handle.describe(rpc_timeout=self._rpc_timeout)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise classify_rpc_error(exc, task_id) from exc
        return description.status == WorkflowExecutionStatus.RUNNING


def classify_rpc_error(exc: RPCError, task_id: str) -> TaskError:
    """Temporal's RPC errors, classified once for every way in."""
    if exc.status in _TRANSIENT_CODES:
        return TemporalUnavailable(f"Temporal unavailable ({exc.status.name}): {exc.message}")
    if exc.status == RPCStatusCode.NOT_FOUND:
        return TaskNotFound(f"no task {task_id!r} (workflow {workflow_id_for(task_id)})")
    if exc.status == RPCStatusCode.FAILED_PRECONDITION:
        return TaskNotRunning(f"task {task_id} is not running: {exc.message}")
    return InvalidRequest(f"Temporal refused: {exc.message}")
