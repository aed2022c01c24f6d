"""Routes one inbound CloudEvent by type to what it asks of Temporal.

`handle` either completes (the message may be acknowledged), dead-letters the message
with its reason (then it may be acknowledged), or raises `RetryLater` (keep it).
"""

import logging
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from temporal_executor.bridge.announcer import announce_started
from temporal_executor.bus.errors import DeadLetter, DeadLetterReason
from temporal_executor.bus.transport import InboundMessage, Transport
from temporal_executor.schemas.cloudevent import (
    REPLYTO_EXTENSION,
    TRACEPARENT_EXTENSION,
    TRACESTATE_EXTENSION,
    CloudEvent,
)
from temporal_executor.schemas.config import Settings
from temporal_executor.schemas.event_types import EventType
from temporal_executor.schemas.requests import ApprovalReplied, CancelRequested, ExecutionRequested
from temporal_executor.schemas.task import AgentTaskInput, ApprovalDecision, EventRoute
from temporal_executor.tasks.temporal_gateway import TemporalGateway

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


class Router:
    def __init__(self, gateway: TemporalGateway, settings: Settings) -> None:
        self._gateway = gateway
        self._max_bytes = settings.bus.max_message_bytes
        self._allowed_approvers = frozenset(settings.bridge.allowed_approvers)
        self._announce_started = settings.bridge.announce_started
        self._source = settings.bus.source

    async def handle(self, transport: Transport, message: InboundMessage) -> None:
        try:
            await self._route(transport, message)
        except DeadLetter as dead:
            log.warning(
                "dead-lettering message",
                extra={
                    "reason": dead.reason,
                    "error": dead.detail,
                    "source": message.source,
                    "partition": message.partition,
                    "offset": message.offset,
                },
            )
            await transport.dead_letter(message, dead.reason, dead.detail)

    async def _route(self, transport: Transport, message: InboundMessage) -> None:
        if len(message.value) > self._max_bytes:
            detail = f"{len(message.value)} bytes exceeds the {self._max_bytes}-byte limit"
            raise DeadLetter(DeadLetterReason.TOO_LARGE, detail)
        event = transport.decode(message)
        if event.type == EventType.EXECUTION_REQUESTED:
            await self._start(transport, event)
        elif event.type == EventType.CANCEL_REQUESTED:
            cancel = _validated(CancelRequested, event.data, event)
            await self._gateway.cancel_task(cancel.task_id, cancel.reason)
            log.info("task cancel requested", extra={"task_id": cancel.task_id})
        elif event.type == EventType.APPROVAL_REPLIED:
            await self._resolve_approval(event)
        else:
            detail = (
                f"unknown event type {event.type!r}; expected one of "
                f"{EventType.EXECUTION_REQUESTED}, {EventType.CANCEL_REQUESTED}, "
                f"{EventType.APPROVAL_REPLIED}"
            )
            raise DeadLetter(DeadLetterReason.UNKNOWN_TYPE, detail)

    async def _start(self, transport: Transport, event: CloudEvent) -> None:
        data = event.data
        if isinstance(data, dict) and "task_id" not in data:
            # The contract: a request without task_id is the task whose id is the event's id.
            data = {**data, "task_id": event.id}
        request = _validated(ExecutionRequested, data, event)
        task_id = request.task_id
        task = task_input(
            request,
            transport,
            reply_to=event.extension(REPLYTO_EXTENSION),
            traceparent=event.extension(TRACEPARENT_EXTENSION),
            tracestate=event.extension(TRACESTATE_EXTENSION),
        )
        started = await self._gateway.start_task(task)
        if started:
            log.info("task started", extra={"task_id": task_id, "bus": transport.bus})
            if self._announce_started:
                await announce_started(transport, task, self._source)
        else:
            log.info("duplicate request ignored: task exists", extra={"task_id": task_id})

    async def _resolve_approval(self, event: CloudEvent) -> None:
        reply = _validated(ApprovalReplied, event.data, event)
        if self._allowed_approvers and reply.approver not in self._allowed_approvers:
            detail = f"approver {reply.approver!r} is not in bridge.allowed_approvers"
            raise DeadLetter(DeadLetterReason.APPROVER_NOT_ALLOWED, detail)
        outcome = await self._gateway.resolve_approval(
            reply.task_id,
            ApprovalDecision(
                approval_id=reply.approval_id,
                approved=reply.approved,
                approver=reply.approver,
                reason=reply.reason,
                arguments=reply.arguments,
            ),
        )
        log.info(
            "approval reply applied" if outcome.applied else "approval reply ignored",
            extra={
                "task_id": reply.task_id,
                "approval_id": reply.approval_id,
                "approved": reply.approved,
                "detail": outcome.detail,
            },
        )


def _validated(model: type[M], data: Any, event: CloudEvent) -> M:
    if not isinstance(data, dict):
        detail = f"{event.type} data must be a JSON object, got {type(data).__name__}"
        raise DeadLetter(DeadLetterReason.INVALID_DATA, detail)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = f"{event.type}: {validation_problems(exc)}"
        raise DeadLetter(DeadLetterReason.INVALID_DATA, detail) from None


def task_input(
    request: ExecutionRequested,
    transport: Transport,
    *,
    reply_to: str | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> AgentTaskInput:
    """The workflow input of a request whose events go out on `transport`: to the task's
    destinations there, or all to `reply_to` when the request names one. The bridge and the
    HTTP gateway start every task with it."""
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


def validation_problems(exc: ValidationError) -> str:
    """`field: what is wrong` for each problem, as dead letters and HTTP errors report them."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'data'}: {err['msg']}" for err in exc.errors()
    )
