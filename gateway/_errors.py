"""Gateway errors, and the task service's errors as HTTP answers.

Each carries the HTTP status that tells the caller what to do next.
"""

from temporal_executor.tasks.errors import (
    ApproverNotAllowed,
    InvalidRequest,
    TaskError,
    TaskNotFound,
    TaskNotRunning,
    TemporalUnavailable,
    UnknownApproval,
)


class GatewayError(Exception):
    """Root of the gateway's own errors: `status` is the HTTP status, `code` a stable name."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidCodecRequest(GatewayError):
    """A codec call the gateway cannot answer: not Temporal payloads, or a payload no
    configured key decrypts (the message says which key it names)."""

    status = 400
    code = "invalid_request"


class PayloadTooLarge(GatewayError):
    """The body is over `bus.max_message_bytes`, the limit a bus request has too."""

    status = 413
    code = "payload_too_large"


class BusUnavailable(GatewayError):
    """The bus cannot be read right now (or does not carry this task's events): retry later."""

    status = 503
    code = "bus_unavailable"


class ShuttingDown(GatewayError):
    """This gateway is stopping: retry, and another instance (or this one restarted) answers."""

    status = 503
    code = "shutting_down"


class CannotStart(GatewayError):
    """The gateway cannot start as configured (port taken, token variable unset): fix config."""

    code = "cannot_start"


# The task service's errors over HTTP: (status, code); any other is a 500 `internal_error`.
_TASK_ERRORS: dict[type[TaskError], tuple[int, str]] = {
    InvalidRequest: (400, "invalid_request"),
    ApproverNotAllowed: (403, "forbidden"),
    TaskNotFound: (404, "task_not_found"),
    UnknownApproval: (409, "not_awaiting_approval"),
    TaskNotRunning: (409, "task_not_running"),
    TemporalUnavailable: (503, "temporal_unavailable"),
}


def http_answer(exc: TaskError | GatewayError) -> tuple[int, str]:
    """The HTTP status and error code of an error."""
    if isinstance(exc, GatewayError):
        return exc.status, exc.code
    return _TASK_ERRORS.get(type(exc), (500, "internal_error"))
