"""The task service's errors: Temporal's RPC errors classified once, and every error
answered by each way in as docs/architecture.md's table says."""

import pytest
from temporalio.service import RPCError, RPCStatusCode

from temporal_executor.bridge.router import DEAD_LETTER_REASONS
from temporal_executor.bus.errors import DeadLetterReason
from temporal_executor.gateway._errors import http_answer
from temporal_executor.tasks import errors
from temporal_executor.tasks.service import classify_rpc_error

RETRY = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.ABORTED,
    RPCStatusCode.INTERNAL,
    RPCStatusCode.UNKNOWN,
    RPCStatusCode.CANCELLED,
    RPCStatusCode.UNAUTHENTICATED,
    RPCStatusCode.PERMISSION_DENIED,
}


@pytest.mark.parametrize(
    "code", [c for c in RPCStatusCode if c != RPCStatusCode.OK], ids=lambda c: c.name
)
def test_rpc_errors_are_classified_once(code: RPCStatusCode) -> None:
    found = classify_rpc_error(RPCError("boom", code, b""), "t-1")
    if code in RETRY:
        assert type(found) is errors.TemporalUnavailable
        assert code.name in found.message
    elif code == RPCStatusCode.NOT_FOUND:
        assert type(found) is errors.TaskNotFound
        assert found.message == "no task 't-1' (workflow agent-execution-t-1)"
    elif code == RPCStatusCode.FAILED_PRECONDITION:
        assert type(found) is errors.TaskNotRunning
    else:
        assert type(found) is errors.InvalidRequest
        assert found.message == "Temporal refused: boom"


def _task_errors() -> list[type[errors.TaskError]]:
    return [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.TaskError)
        and cls is not errors.TaskError
    ]


# What REST answers (status, code) and what the bridge dead-letters with (None: it does not).
ANSWERS: list[tuple[type[errors.TaskError], int, str, str | None]] = [
    (errors.InvalidRequest, 400, "invalid_request", DeadLetterReason.INVALID_DATA),
    (errors.ApproverNotAllowed, 403, "forbidden", DeadLetterReason.APPROVER_NOT_ALLOWED),
    (errors.TaskNotFound, 404, "task_not_found", DeadLetterReason.TASK_NOT_RUNNING),
    (errors.TaskNotRunning, 409, "task_not_running", DeadLetterReason.TASK_NOT_RUNNING),
    (errors.UnknownApproval, 409, "not_awaiting_approval", DeadLetterReason.UNKNOWN_APPROVAL),
    # Never asked on the bus: a bug there, retried then dead-lettered internal-error.
    (errors.StatusUnavailable, 500, "internal_error", None),
    # The bridge keeps the message and retries (`RetryLater`), never dead-letters it.
    (errors.TemporalUnavailable, 503, "temporal_unavailable", None),
    # Bus replies only (HTTP and A2A callers are authenticated instead).
    (errors.InvalidSignature, 500, "internal_error", DeadLetterReason.INVALID_SIGNATURE),
    # Raised at start (a key file config names), never for a message or a call.
    (errors.KeyConfigError, 500, "internal_error", None),
]


@pytest.mark.parametrize(("error", "status", "code", "reason"), ANSWERS)
def test_each_way_in_answers_each_error(
    error: type[errors.TaskError], status: int, code: str, reason: str | None
) -> None:
    assert http_answer(error("x")) == (status, code)
    assert DEAD_LETTER_REASONS.get(error) == reason


def test_every_task_error_is_in_the_table() -> None:
    assert set(_task_errors()) == {row[0] for row in ANSWERS}
