"""Spans and metrics of the bus layer, in the OpenTelemetry messaging conventions.

Every publish is a `send` span (kind PRODUCER) whose context becomes the published event's
`traceparent`, so a subscriber's trace continues from the span that published the event.
Every handling of an inbound message is a `process` span (kind CONSUMER) continuing the
trace its `traceparent` names. Attributes: `messaging.system`, `messaging.destination.name`
(and `.template`: the destination's pattern, e.g. `agent.events.>` on NATS),
`messaging.operation.type` / `.name`, `messaging.message.id`, Kafka key, partition and
offset, and the CloudEvents attributes `cloudevents.event_id` / `event_type`.
"""

import contextlib
from collections.abc import Iterator
from typing import Protocol

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from temporal_executor.bus.errors import BusError, DeadLetter
from temporal_executor.bus.transport import InboundMessage, MessageTooLarge, Transport
from temporal_executor.schemas.cloudevent import (
    STRUCTURED_MEDIA_TYPE,
    TASKID_EXTENSION,
    TRACEPARENT_EXTENSION,
    TRACESTATE_EXTENSION,
    CloudEvent,
)
from temporal_executor.telemetry import metrics
from temporal_executor.telemetry.tracing import context_from, current_traceparent, tracer

OTHER_DESTINATION = "other"


class Destinations(Protocol):
    """What naming spans and labels needs of a transport: its bus and its destinations."""

    @property
    def bus(self) -> str: ...

    def requests_destination(self, task_id: str | None) -> str: ...
    def approval_replies_destination(self, task_id: str | None) -> str: ...
    def events_destination(self, task_id: str | None) -> str: ...
    def approvals_destination(self, task_id: str | None) -> str: ...
    def dead_letter_destination(self, reason: str | None) -> str: ...


def destination_pattern(transport: Destinations, destination: str) -> str:
    """The configured topic or subject pattern `destination` belongs to: bounded, for
    metric labels and span names (a NATS subject ends in the task id)."""
    for pattern in (
        transport.requests_destination(None),
        transport.approval_replies_destination(None),
        transport.events_destination(None),
        transport.approvals_destination(None),
        transport.dead_letter_destination(None),
    ):
        if destination == pattern or (
            pattern.endswith(".>") and destination.startswith(pattern[:-1])
        ):
            return pattern
    return OTHER_DESTINATION  # a request's `replyto`: any name a producer chose


class Publishing:
    """One publish: the event to send (with `traceparent` naming this span) and its span."""

    def __init__(self, event: CloudEvent, span: Span) -> None:
        self.event = event
        self.span = span

    def stored(self, partition: int | None = None, offset: int | None = None) -> None:
        if partition is not None:
            self.span.set_attribute("messaging.destination.partition.id", str(partition))
        if offset is not None:
            self.span.set_attribute("messaging.kafka.offset", offset)


@contextlib.contextmanager
def publishing(
    transport: Destinations, destination: str, event: CloudEvent
) -> Iterator[Publishing]:
    """Wrap one publish of `event`: a `send` span under the current span (or, when there is
    none, under the trace the event's own `traceparent` names), counted when it succeeds."""
    pattern = destination_pattern(transport, destination)
    parent = None
    if not trace.get_current_span().get_span_context().is_valid:
        parent = context_from(
            event.extension(TRACEPARENT_EXTENSION), event.extension(TRACESTATE_EXTENSION)
        )
    attributes: dict[str, str | int] = {
        "messaging.system": transport.bus,
        "messaging.destination.name": destination,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.message.id": event.id,
        "cloudevents.event_id": event.id,
        "cloudevents.event_type": event.type,
        "cloudevents.event_source": event.source,
    }
    if pattern != destination:
        attributes["messaging.destination.template"] = pattern
    key = event.extension(TASKID_EXTENSION)
    if key is not None and transport.bus == "kafka":
        attributes["messaging.kafka.message.key"] = key
    with tracer().start_as_current_span(
        f"send {pattern}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        traceparent, tracestate = current_traceparent(span)
        traced = _with_trace(event, traceparent, tracestate)
        try:
            yield Publishing(traced, span)
        except BusError as exc:
            error = "too_large" if isinstance(exc, MessageTooLarge) else "transport"
            metrics.PUBLISH_FAILURES.labels(transport.bus, pattern, error).inc()
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            raise
    metrics.EVENTS_PUBLISHED.labels(transport.bus, pattern, event.type).inc()


def _with_trace(event: CloudEvent, traceparent: str | None, tracestate: str | None) -> CloudEvent:
    if traceparent is None or event.extension(TRACEPARENT_EXTENSION) == traceparent:
        return event
    extensions = {**event.extensions, TRACEPARENT_EXTENSION: traceparent}
    extensions.pop(TRACESTATE_EXTENSION, None)
    if tracestate:
        extensions[TRACESTATE_EXTENSION] = tracestate
    return event.model_copy(update={"extensions": extensions})


def inbound_trace(transport: Transport, message: InboundMessage) -> tuple[str | None, str | None]:
    """The `traceparent` and `tracestate` a message carries, in either content mode."""
    for prefix in ("ce_", "ce-"):
        traceparent = message.header(prefix + TRACEPARENT_EXTENSION)
        if traceparent is not None:
            tracestate = message.header(prefix + TRACESTATE_EXTENSION)
            return _text(traceparent), _text(tracestate)
    content_type = _text(message.header("content-type")) or ""
    if STRUCTURED_MEDIA_TYPE in content_type.lower() or not message.headers:
        with contextlib.suppress(DeadLetter):
            event = transport.decode(message)
            return event.extension(TRACEPARENT_EXTENSION), event.extension(TRACESTATE_EXTENSION)
    return None, None


def _text(raw: bytes | None) -> str | None:
    return raw.decode("utf-8", "replace") if raw is not None else None


class Processing:
    """One attempt at handling an inbound message: its span, and its outcome once known."""

    def __init__(self, span: Span, bus: str, pattern: str) -> None:
        self.span = span
        self._bus = bus
        self._pattern = pattern

    def outcome(self, outcome: str, reason: str = "") -> None:
        """Count the message under `outcome` (started, duplicate, dead_lettered, ...)."""
        metrics.MESSAGES_CONSUMED.labels(self._bus, self._pattern, outcome, reason).inc()
        self.span.set_attribute("temporal_executor.outcome", outcome)
        if reason:
            self.span.set_attribute("temporal_executor.dead_letter.reason", reason)

    def retry(self, exc: Exception) -> None:
        """This attempt failed and the message will be handled again (not acknowledged)."""
        self.outcome("retried")
        self.span.set_attribute("error.type", type(exc).__name__)
        self.span.set_status(Status(StatusCode.ERROR, str(exc)))


@contextlib.contextmanager
def processing(transport: Transport, message: InboundMessage) -> Iterator[Processing]:
    """A `process` span for one attempt at `message`, continuing the trace it carries."""
    pattern = destination_pattern(transport, message.source)
    traceparent, tracestate = inbound_trace(transport, message)
    attributes: dict[str, str | int] = {
        "messaging.system": transport.bus,
        "messaging.destination.name": message.source,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.body.size": len(message.value),
    }
    if pattern != message.source:
        attributes["messaging.destination.template"] = pattern
    if message.partition is not None:
        attributes["messaging.destination.partition.id"] = str(message.partition)
    if message.offset is not None:
        attributes["messaging.kafka.offset"] = message.offset
    if message.key is not None and transport.bus == "kafka":
        attributes["messaging.kafka.message.key"] = message.key.decode("utf-8", "replace")
    message_id = message.header("ce_id") or message.header("ce-id")
    if message_id is not None:
        attributes["messaging.message.id"] = message_id.decode("utf-8", "replace")
    with tracer().start_as_current_span(
        f"process {pattern}",
        context=context_from(traceparent, tracestate),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    ) as span:
        yield Processing(span, transport.bus, pattern)
