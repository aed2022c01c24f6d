"""Gateway errors. Each carries the HTTP status that tells the caller what to do next."""


class GatewayError(Exception):
    """Root of the gateway's errors: `status` is the HTTP status, `code` a stable name."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(GatewayError):
    """The request can never succeed as sent: fix it (the message says what is wrong)."""

    status = 400
    code = "invalid_request"


class Forbidden(GatewayError):
    """Authenticated, but this caller may not do this (an approver config does not allow)."""

    status = 403
    code = "forbidden"


class TaskNotFound(GatewayError):
    """No task has this id (never started, or gone with Temporal's retention)."""

    status = 404
    code = "task_not_found"


class NotAwaitingApproval(GatewayError):
    """The task exists but is not waiting for this approval (any more): nothing changed."""

    status = 409
    code = "not_awaiting_approval"


class TaskNotRunning(GatewayError):
    """The task has finished: it can no longer be changed."""

    status = 409
    code = "task_not_running"


class PayloadTooLarge(GatewayError):
    """The body is over `bus.max_message_bytes`, the limit a bus request has too."""

    status = 413
    code = "payload_too_large"


class TemporalUnavailable(GatewayError):
    """Temporal (or every worker) cannot be reached right now: retry later."""

    status = 503
    code = "temporal_unavailable"


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
