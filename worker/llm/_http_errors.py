"""HTTP failures of any provider mapped to the one `LlmError` model, by status code.

Both SDKs raise one exception class per status, but the decision (retry or not, and
when) depends only on the status, a couple of well-known error codes and the
`Retry-After` headers, so it is written once here and each provider module only
extracts those from its SDK's exception.
"""

import email.utils
import importlib
import math
import time
from collections.abc import Mapping

from temporal_executor.worker.llm.errors import (
    AuthenticationFailed,
    ContextTooLong,
    InvalidLlmRequest,
    LlmError,
    ModelNotFound,
    ProviderUnavailable,
    RateLimited,
)
from temporal_executor.worker.redaction import redact

_TRANSPORT_ERROR_CLASSES = {
    "httpx2": "TransportError",
    "httpx": "TransportError",
    "aiohttp": "ClientError",
}


def transport_errors(*libraries: str) -> tuple[type[Exception], ...]:
    """Connection errors and timeouts of the HTTP libraries an SDK runs on (`httpx2`,
    `httpx`, `aiohttp`), raised as they are, e.g. when a streamed response breaks off.

    Each provider names only its SDK's: importing the others would cost a worker memory
    for nothing (`httpx` brings `click` and `pygments`; tests/test_lean_imports.py)."""
    found: list[type[Exception]] = []
    for library in libraries:
        try:
            module = importlib.import_module(library)
        except ImportError:  # pragma: no cover - depends on what else is installed
            continue
        found.append(getattr(module, _TRANSPORT_ERROR_CLASSES[library]))
    return tuple(found)


# Provider error messages end up in events and logs; a whole HTML error page does not help.
_MAX_DETAIL_CHARS = 500


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait a response asks for: `retry-after-ms`, else `retry-after` (seconds or a date).

    Zero, negative or unreadable means no advice, as in both SDKs: the caller's retry
    policy then picks the delay.
    """
    millis = _number(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000 if millis > 0 else None
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _number(raw)
    if seconds is None:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        seconds = email.utils.mktime_tz(parsed) - time.time()
    return seconds if seconds > 0 else None


def error_for_status(
    label: str,
    status: int,
    detail: str,
    headers: Mapping[str, str],
    *,
    context_too_long: bool = False,
    model_not_found: bool = False,
) -> LlmError:
    """Map one HTTP error response; `label` names the provider, e.g. "anthropic provider 'x'"."""
    if len(detail) > _MAX_DETAIL_CHARS:
        detail = detail[:_MAX_DETAIL_CHARS] + "…"
    if status < 400:
        # An error event in a stream that had begun well (HTTP 200): the reply broke off
        # mid-way (the model overloaded, say); another attempt may finish it.
        return ProviderUnavailable(redact(f"{label}: the streamed reply failed: {detail}"))
    # A provider (or a proxy in front of it) may quote the request's credentials back.
    message = redact(f"{label}: HTTP {status}: {detail}")
    if status == 429:
        return RateLimited(message, retry_after=retry_after_seconds(headers))
    # Only these may succeed when sent again unchanged (the rule every Temporal LLM sample uses).
    if status in (408, 409) or status >= 500:
        return ProviderUnavailable(message, retry_after=retry_after_seconds(headers))
    if status in (401, 403):
        return AuthenticationFailed(message)
    if model_not_found or status == 404:
        return ModelNotFound(message)
    # 413: the request is too big for the API at all, which retrying cannot fix either.
    if context_too_long or status == 413:
        return ContextTooLong(message)
    return InvalidLlmRequest(message)


def unreachable(label: str, exc: Exception) -> ProviderUnavailable:
    """A connection error or timeout: no response at all, so worth another attempt."""
    return ProviderUnavailable(redact(f"{label}: {type(exc).__name__}: {exc}"))


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
