"""Bus-layer errors. Each subclass says what to do with the message that caused it."""


class BusError(Exception):
    """Root of the bus layer's errors."""


class DeadLetter(BusError):
    """The message can never be handled: dead-letter it with `reason`, then acknowledge it."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class RetryLater(BusError):
    """A dependency (Temporal, the bus) is unavailable: keep the message, back off, retry."""


class TransportError(BusError):
    """The bus failed in a way a retry may fix (connection lost, broker unavailable)."""


class TransportConfigError(TransportError):
    """The transport's security settings cannot work (a credential missing, refused, a
    certificate that does not load): fix config; retrying will not help."""


class DeadLetterReason:
    """The `dlq_reason` header values; on NATS also the last token of the DLQ subject."""

    INVALID_CLOUDEVENT = "invalid-cloudevent"
    UNKNOWN_TYPE = "unknown-type"
    INVALID_DATA = "invalid-data"
    TOO_LARGE = "too-large"
    UNKNOWN_APPROVAL = "unknown-approval"
    TASK_NOT_RUNNING = "task-not-running"
    APPROVER_NOT_ALLOWED = "approver-not-allowed"
    # An approval reply without the valid signature config requires (contract v1.1).
    INVALID_SIGNATURE = "invalid-signature"
    # The bridge failed on this message several times for a reason it could not classify.
    INTERNAL_ERROR = "internal-error"
