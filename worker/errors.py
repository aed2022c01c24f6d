"""Worker errors. Each says whether a retry may help; activities turn them into
`ApplicationError`s whose `type` is the `error.type` of `agent.execution.failed`."""


class WorkerError(Exception):
    """Root of the worker's errors."""

    error_type = "internal_error"
    retryable = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigurationError(WorkerError):
    """The task names something config lacks (provider, model, tool): fail the task."""

    error_type = "configuration_error"


class ToolError(WorkerError):
    """A tool failed; the model is told and may try again differently."""

    error_type = "tool_error"


class InvalidToolArguments(ToolError):
    error_type = "invalid_tool_arguments"
