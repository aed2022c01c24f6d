"""One error model for every provider.

Each SDK's exceptions map to one of these in the provider module; the LLM activity turns
them into `ApplicationError(type=error_type, non_retryable=not retryable,
next_retry_delay=retry_after)` so Temporal owns retries and every attempt is visible.
"""

from temporal_executor.worker.errors import WorkerError


class LlmError(WorkerError):
    error_type = "llm_error"


class RateLimited(LlmError):
    error_type = "rate_limited"
    retryable = True


class ProviderUnavailable(LlmError):
    """5xx, timeouts, connection errors."""

    error_type = "provider_unavailable"
    retryable = True


class AuthenticationFailed(LlmError):
    error_type = "authentication_failed"


class ModelNotFound(LlmError):
    error_type = "model_not_found"


class ContextTooLong(LlmError):
    error_type = "context_too_long"


class InvalidLlmRequest(LlmError):
    error_type = "invalid_request"


class ProviderNotConfigured(LlmError):
    error_type = "provider_not_configured"
