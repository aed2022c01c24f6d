"""What the gateway asks of Temporal and the bus, for the REST API and A2A alike.

A task starts through the bridge's `TemporalGateway`, with the workflow input the bridge
builds (`router.task_input`), so a task started over HTTP is exactly the task a bus request
starts: same validation, same workflow id, same duplicate handling. Its events go to the
default bus (`bus.default`), and streams read them back from there with `Transport.watch`:
what an HTTP or A2A caller sees is what a bus subscriber sees.

The gateway serves while Temporal is unreachable: it connects in the background and
answers 503 until then, and again whenever Temporal stops answering.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import Any

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client, WorkflowExecution, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from temporal_executor.bridge.announcer import announce_started
from temporal_executor.bridge.router import task_input
from temporal_executor.bus.errors import (
    DeadLetter,
    DeadLetterReason,
    RetryLater,
    TransportError,
)
from temporal_executor.bus.transport import Transport
from temporal_executor.gateway._errors import (
    BusUnavailable,
    Forbidden,
    GatewayError,
    InvalidRequest,
    NotAwaitingApproval,
    ShuttingDown,
    TaskNotFound,
    TaskNotRunning,
    TemporalUnavailable,
)
from temporal_executor.gateway._fanout import FanOut
from temporal_executor.gateway._streams import PastEventsUnavailable, past_events, task_stream
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import Settings
from temporal_executor.schemas.event_types import workflow_id_for
from temporal_executor.schemas.requests import ExecutionRequested
from temporal_executor.schemas.task import (
    AgentTaskInput,
    ApprovalDecision,
    BusName,
    EventRoute,
    TaskStatus,
)
from temporal_executor.tasks.temporal_connection import connect_with_retry
from temporal_executor.tasks.temporal_gateway import TemporalGateway

log = logging.getLogger(__name__)

TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})


class TemporalLink:
    """The gateway's Temporal client: given, or connected in the background (with the
    bridge's backoff) so that the gateway starts and answers 503 while Temporal is away."""

    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self._settings = settings
        self._client = client
        self._gateway: TemporalGateway | None = None
        self._stop = asyncio.Event()
        self._connecting: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._client is None and self._connecting is None:
            self._connecting = asyncio.create_task(self._connect(), name="gateway-connect")

    async def _connect(self) -> None:
        self._client = await connect_with_retry(self._settings, self._stop)
        if self._client is not None:
            log.info("gateway connected to Temporal", extra={"temporal": self._address})

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

    @property
    def gateway(self) -> TemporalGateway:
        if self._gateway is None:
            self._gateway = TemporalGateway(
                self.client,
                self._settings.temporal.task_queue,
                rpc_timeout=timedelta(seconds=self._settings.bridge.rpc_timeout_seconds),
            )
        return self._gateway


class TaskService:
    def __init__(
        self, settings: Settings, temporal: TemporalLink, transports: Mapping[BusName, Transport]
    ) -> None:
        self._settings = settings
        self._temporal = temporal
        self._transports = transports
        self._rpc_timeout = timedelta(seconds=settings.bridge.rpc_timeout_seconds)
        self._allowed_approvers = frozenset(settings.bridge.allowed_approvers)
        self._fanout = FanOut(transports)
        self._closing = False

    def prepare(
        self,
        request: ExecutionRequested,
        *,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> AgentTaskInput:
        """The workflow input of a new task: its events go to the default bus."""
        transport = self._transports[self._settings.bus.default]
        return task_input(request, transport, traceparent=traceparent, tracestate=tracestate)

    async def start(self, task: AgentTaskInput) -> bool:
        """Start the task; False if a task with its id exists or existed (nothing started)."""
        task_id = task.request.task_id
        try:
            started = await self._temporal.gateway.start_task(task)
        except RetryLater as exc:
            raise TemporalUnavailable(str(exc)) from exc
        except DeadLetter as exc:
            raise InvalidRequest(exc.detail) from exc
        log.info(
            "task started" if started else "duplicate request ignored: task exists",
            extra={"task_id": task_id, "bus": task.route.bus, "via": "gateway"},
        )
        if started and self._settings.bridge.announce_started:
            transport = self._transports[task.route.bus]
            await announce_started(transport, task, self._settings.bus.source)
        return started

    async def status(self, task_id: str) -> TaskStatus:
        """The workflow's `status` query (running or finished)."""
        handle = self._temporal.client.get_workflow_handle(workflow_id_for(task_id))
        try:
            status: TaskStatus = await handle.query(
                "status", result_type=TaskStatus, rpc_timeout=self._rpc_timeout
            )
        except RPCError as exc:
            raise _rpc_error(exc, task_id) from exc
        except WorkflowQueryFailedError as exc:
            msg = f"the status query of task {task_id} failed: {exc}"
            raise GatewayError(msg) from exc
        return status

    async def running_status(self, task_id: str) -> TaskStatus:
        status = await self.status(task_id)
        if status.state in TERMINAL_STATES:
            msg = f"task {task_id} is not running: it has {status.state}"
            raise TaskNotRunning(msg)
        return status

    async def task_input(self, task_id: str) -> AgentTaskInput:
        """The input of the task's current run (its request, and where its events go)."""
        client = self._temporal.client
        handle = client.get_workflow_handle(workflow_id_for(task_id))
        try:
            async for event in handle.fetch_history_events(
                page_size=1, rpc_timeout=self._rpc_timeout
            ):
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                decoded: list[Any] = await client.data_converter.decode(payloads, [AgentTaskInput])
                task: AgentTaskInput = decoded[0]
                return task
        except RPCError as exc:
            raise _rpc_error(exc, task_id) from exc
        msg = f"no task {task_id!r}"
        raise TaskNotFound(msg)

    async def approve(
        self,
        task_id: str,
        *,
        approval_id: str | None,
        approved: bool,
        approver: str | None,
        reason: str | None = None,
        arguments: dict[str, Any] | None = None,
    ) -> str:
        """Resolve an approval (by default the one pending) as a bus reply would; its id."""
        if self._allowed_approvers and approver not in self._allowed_approvers:
            msg = f"approver {approver!r} is not in bridge.allowed_approvers"
            raise Forbidden(msg)
        status = await self.running_status(task_id)
        if approval_id is None:
            if not status.pending_approvals:
                msg = f"task {task_id} is not waiting for an approval (it is {status.state})"
                raise NotAwaitingApproval(msg)
            approval_id = status.pending_approvals[0].approval_id
        decision = ApprovalDecision(
            approval_id=approval_id,
            approved=approved,
            approver=approver,
            reason=reason,
            arguments=arguments,
        )
        try:
            outcome = await self._temporal.gateway.resolve_approval(task_id, decision)
        except RetryLater as exc:
            raise TemporalUnavailable(str(exc)) from exc
        except DeadLetter as exc:
            if exc.reason == DeadLetterReason.UNKNOWN_APPROVAL:
                raise NotAwaitingApproval(exc.detail) from exc
            raise TaskNotRunning(exc.detail) from exc
        if not outcome.applied:
            msg = f"approval {approval_id} of task {task_id} is {outcome.detail or 'resolved'}"
            raise NotAwaitingApproval(msg)
        log.info(
            "approval reply applied",
            extra={"task_id": task_id, "approval_id": approval_id, "approved": approved},
        )
        return approval_id

    async def cancel(self, task_id: str, reason: str | None) -> None:
        await self.running_status(task_id)
        try:
            await self._temporal.gateway.cancel_task(task_id, reason)
        except RetryLater as exc:
            raise TemporalUnavailable(str(exc)) from exc
        except DeadLetter as exc:
            raise TaskNotRunning(exc.detail) from exc
        log.info("task cancel requested", extra={"task_id": task_id, "via": "gateway"})

    @asynccontextmanager
    async def events(
        self, task_id: str, route: EventRoute, *, after: int | None = None, deltas: bool = False
    ) -> AsyncIterator[AsyncIterator[CloudEvent]]:
        """The task's events where its route sends them, each once, ending after the terminal
        one (or when the gateway stops); its `agent.llm.delta`s too with `deltas`.

        With `after=None`, what the task publishes from now on: following starts on entry,
        so open it before starting or changing the task, and nothing that causes is missed.
        With a sequence number, the task's events after it (0: all of them), the earlier
        ones from the task itself (`_streams`)."""
        if self._closing:
            msg = "the gateway is shutting down"
            raise ShuttingDown(msg)
        transport = self._transports.get(route.bus)
        if transport is None:
            msg = (
                f"task {task_id} publishes on {route.bus}, which bus.{route.bus}.enabled turns off"
            )
            raise BusUnavailable(msg)
        past = None if after is None else partial(self._past_events, task_id, after)
        try:
            async with task_stream(
                self._fanout, transport, route, task_id, past=past, after=after or 0, deltas=deltas
            ) as found:
                yield found
        except TransportError as exc:
            raise BusUnavailable(str(exc)) from exc
        except PastEventsUnavailable as exc:
            raise TemporalUnavailable(str(exc)) from exc

    async def _past_events(self, task_id: str, after: int) -> list[CloudEvent]:
        return await past_events(
            self._temporal.client,
            task_id,
            after,
            self._settings.bus.source,
            rpc_timeout=self._rpc_timeout,
        )

    @property
    def stream_subscriptions(self) -> int:
        """Bus subscriptions held for streams: one per destination, however many streams."""
        return self._fanout.subscriptions

    @property
    def stream_followers(self) -> int:
        return self._fanout.followers

    async def end_streams(self) -> None:
        """Stopping: end every open stream (their responses then finish) and open no more."""
        self._closing = True
        await self._fanout.close()

    async def visible_tasks(
        self, query: str, page_size: int, page_token: bytes | None
    ) -> tuple[list[WorkflowExecution], bytes | None]:
        """One page of the workflows Temporal's visibility finds for `query`, and the token
        of the next page (None: this was the last)."""
        client = self._temporal.client
        try:
            found = client.list_workflows(
                query,
                page_size=page_size,
                next_page_token=page_token,
                rpc_timeout=self._rpc_timeout,
            )
            await found.fetch_next_page()
        except RPCError as exc:
            # Temporal cannot read a made-up token: INVALID_ARGUMENT, or UNKNOWN on some stores.
            unreadable = {RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.UNKNOWN}
            if page_token is not None and exc.status in unreadable:
                msg = f"the page_token is not one this agent gave ({exc.message})"
                raise InvalidRequest(msg) from exc
            if exc.status == RPCStatusCode.INVALID_ARGUMENT:
                msg = f"Temporal refused the listing: {exc.message}"
                raise InvalidRequest(msg) from exc
            msg = f"Temporal ({exc.status.name}): {exc.message}"
            raise TemporalUnavailable(msg) from exc
        return list(found.current_page or []), found.next_page_token or None

    async def count_tasks(self, query: str) -> int:
        try:
            counted = await self._temporal.client.count_workflows(
                query, rpc_timeout=self._rpc_timeout
            )
        except RPCError as exc:
            msg = f"Temporal ({exc.status.name}): {exc.message}"
            raise TemporalUnavailable(msg) from exc
        return counted.count

    async def readiness(self) -> str | None:
        """What keeps the gateway from serving, or None when Temporal answers."""
        if self._closing:
            return "shutting down"
        try:
            client = self._temporal.client
            await client.workflow_service.get_system_info(
                GetSystemInfoRequest(), timeout=self._rpc_timeout
            )
        except TemporalUnavailable as exc:
            return exc.message
        except RPCError as exc:
            return f"Temporal at {self._settings.temporal.host_port}: {exc.message}"
        return None


def _rpc_error(exc: RPCError, task_id: str) -> GatewayError:
    if exc.status == RPCStatusCode.NOT_FOUND:
        return TaskNotFound(f"no task {task_id!r} (workflow {workflow_id_for(task_id)})")
    if exc.status == RPCStatusCode.INVALID_ARGUMENT:
        return InvalidRequest(f"Temporal refused: {exc.message}")
    # Unavailable, timed out (no worker answered the query), throttled, not permitted: none
    # of these is the caller's fault, and a later retry may succeed.
    return TemporalUnavailable(f"Temporal ({exc.status.name}): {exc.message}")


def cloudevent_json(event: CloudEvent) -> dict[str, Any]:
    """The event in the CloudEvents JSON format (as structured mode puts it on the bus)."""
    attributes = event.model_dump(mode="json", exclude_none=True, exclude={"extensions"})
    return {**attributes, **event.extensions}
