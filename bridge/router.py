"""Routes one inbound CloudEvent by type to the task service, and its answer to the bus.

`handle` either completes (the message may be acknowledged), dead-letters the message
with its reason (then it may be acknowledged), or raises `RetryLater` (keep it): the task
service's errors map to those three in `handle`. It returns what it did, the outcome the
consumed-messages metric counts (`Outcome`).
"""

import logging
from typing import Any, TypeVar

from pydantic import BaseModel

from temporal_executor.bus.errors import DeadLetter, DeadLetterReason, RetryLater
from temporal_executor.bus.transport import InboundMessage, Transport
from temporal_executor.schemas.cloudevent import (
    APPROVALSIG_EXTENSION,
    REPLYTO_EXTENSION,
    TRACEPARENT_EXTENSION,
    TRACESTATE_EXTENSION,
    CloudEvent,
)
from temporal_executor.schemas.config import Settings
from temporal_executor.schemas.event_types import EventType
from temporal_executor.schemas.requests import ApprovalReplied, CancelRequested, ExecutionRequested
from temporal_executor.tasks.errors import (
    ApproverNotAllowed,
    InvalidRequest,
    InvalidSignature,
    TaskError,
    TaskNotFound,
    TaskNotRunning,
    TemporalUnavailable,
    UnknownApproval,
)
from temporal_executor.tasks.service import TaskService
from temporal_executor.tasks.validation import validated

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


class Outcome:
    """What handling a message did (the `outcome` label of the consumed-messages metric)."""

    STARTED = "started"
    DUPLICATE = "duplicate"
    CANCELLED = "cancelled"
    APPROVAL_APPLIED = "approval_applied"
    APPROVAL_IGNORED = "approval_ignored"
    DEAD_LETTERED = "dead_lettered"
    RETRIED = "retried"


# What a refusal of the task service means for the message that asked.
DEAD_LETTER_REASONS: dict[type[TaskError], str] = {
    InvalidRequest: DeadLetterReason.INVALID_DATA,
    ApproverNotAllowed: DeadLetterReason.APPROVER_NOT_ALLOWED,
    InvalidSignature: DeadLetterReason.INVALID_SIGNATURE,
    TaskNotFound: DeadLetterReason.TASK_NOT_RUNNING,
    TaskNotRunning: DeadLetterReason.TASK_NOT_RUNNING,
    UnknownApproval: DeadLetterReason.UNKNOWN_APPROVAL,
}


class Router:
    def __init__(self, tasks: TaskService, settings: Settings) -> None:
        self._tasks = tasks
        self._max_bytes = settings.bus.max_message_bytes

    async def handle(self, transport: Transport, message: InboundMessage) -> tuple[str, str]:
        """Handle `message`; returns the outcome and, for a dead letter, its reason."""
        try:
            return await self._route(transport, message), ""
        except TemporalUnavailable as exc:
            raise RetryLater(exc.message) from exc
        except TaskError as exc:
            reason = DEAD_LETTER_REASONS.get(type(exc))
            if reason is None:  # not a refusal of the request: a bug, retried as one
                raise
            dead = DeadLetter(reason, exc.message)
        except DeadLetter as refused:
            dead = refused
        await _dead_letter(transport, message, dead)
        return Outcome.DEAD_LETTERED, dead.reason

    async def _route(self, transport: Transport, message: InboundMessage) -> str:
        if len(message.value) > self._max_bytes:
            detail = f"{len(message.value)} bytes exceeds the {self._max_bytes}-byte limit"
            raise DeadLetter(DeadLetterReason.TOO_LARGE, detail)
        event = transport.decode(message)
        if event.type == EventType.EXECUTION_REQUESTED:
            return await self._start(transport, event)
        if event.type == EventType.CANCEL_REQUESTED:
            cancel = _validated(CancelRequested, event.data, event)
            await self._tasks.cancel(cancel.task_id, cancel.reason)
            return Outcome.CANCELLED
        if event.type == EventType.APPROVAL_REPLIED:
            reply = _validated(ApprovalReplied, event.data, event)
            signature = event.extension(APPROVALSIG_EXTENSION)
            outcome = await self._tasks.approve_reply(reply, event_id=event.id, signature=signature)
            return Outcome.APPROVAL_APPLIED if outcome.applied else Outcome.APPROVAL_IGNORED
        detail = (
            f"unknown event type {event.type!r}; expected one of "
            f"{EventType.EXECUTION_REQUESTED}, {EventType.CANCEL_REQUESTED}, "
            f"{EventType.APPROVAL_REPLIED}"
        )
        raise DeadLetter(DeadLetterReason.UNKNOWN_TYPE, detail)

    async def _start(self, transport: Transport, event: CloudEvent) -> str:
        data = event.data
        if isinstance(data, dict) and "task_id" not in data:
            # The contract: a request without task_id is the task whose id is the event's id.
            data = {**data, "task_id": event.id}
        request = _validated(ExecutionRequested, data, event)
        task = self._tasks.prepare(
            request,
            transport,
            reply_to=event.extension(REPLYTO_EXTENSION),
            traceparent=event.extension(TRACEPARENT_EXTENSION),
            tracestate=event.extension(TRACESTATE_EXTENSION),
        )
        started = await self._tasks.start(task, transport)
        return Outcome.STARTED if started else Outcome.DUPLICATE


async def _dead_letter(transport: Transport, message: InboundMessage, dead: DeadLetter) -> None:
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


def _validated(model: type[M], data: Any, event: CloudEvent) -> M:
    if not isinstance(data, dict):
        detail = f"{event.type} data must be a JSON object, got {type(data).__name__}"
        raise DeadLetter(DeadLetterReason.INVALID_DATA, detail)
    try:
        return validated(model, data)
    except InvalidRequest as exc:
        raise DeadLetter(DeadLetterReason.INVALID_DATA, f"{event.type}: {exc.message}") from None
