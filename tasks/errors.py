"""The task service's errors. Each says what the caller should do about it.

Every way in maps them to its own answer: the bridge to ack / retry / dead-letter
(`bridge/router.py`), REST to HTTP statuses and A2A to its errors (`gateway/`).
"""


class TaskError(Exception):
    """Root of the task service's errors; `message` says what went wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(TaskError):
    """The request can never succeed as sent: fix it (the message says what is wrong)."""


class ApproverNotAllowed(TaskError):
    """The approver may not approve this tool (`approvals.tools`, `approvals.mcp_servers`,
    `bridge.allowed_approvers`): ask an allowed one, or change config."""


class TaskNotFound(TaskError):
    """No task has this id (never started, or gone with Temporal's retention): check the id."""


class TaskNotRunning(TaskError):
    """The task has finished: it can no longer be changed; nothing was."""


class UnknownApproval(TaskError):
    """The task is not waiting for this approval (any more): nothing changed."""


class StatusUnavailable(TaskError):
    """The workflow could not answer its status query (a bug or a broken start): see the
    worker's logs."""


class TemporalUnavailable(TaskError):
    """Temporal (or every worker) cannot be reached right now: retry later, unchanged."""


class InvalidSignature(TaskError):
    """An approval reply's signature is missing where config requires one, or does not
    prove the reply (wrong key, expired, another approval or event): nothing changed."""


class KeyConfigError(TaskError):
    """A key, secret or token that config names is missing or unreadable (raised at start,
    never per message): fix config or the file."""
