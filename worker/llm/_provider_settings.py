"""What every provider reads from its `ProviderSettings` the same way: key, models, name."""

import os

from temporal_executor.schemas.config import ProviderSettings
from temporal_executor.schemas.requests import ModelSelection
from temporal_executor.worker.llm.errors import ModelNotFound, ProviderNotConfigured
from temporal_executor.worker.redaction import remember


def provider_label(settings: ProviderSettings) -> str:
    """How errors name a provider: its kind and its configured name."""
    return f"{settings.kind} provider {settings.name!r}"


def api_key_from_env(settings: ProviderSettings, default_env: str) -> str:
    """The API key from the variable `api_key_env` names (else the SDK's usual one).

    Read here rather than left to the SDK, so a missing key fails naming the variable
    config points at, and an SDK never silently picks up some other credential.
    """
    return secret_from_env(settings, settings.api_key_env or default_env, "api_key_env")


def secret_from_env(settings: ProviderSettings, env: str, key: str) -> str:
    """The value of variable `env`, which config's `llm.providers[].<key>` names."""
    value = os.environ.get(env, "").strip()
    if not value:
        msg = (
            f"{provider_label(settings)}: environment variable {env} is not set "
            f"(llm.providers[].{key} names it)"
        )
        raise ProviderNotConfigured(msg)
    return remember(value)


def check_model(settings: ProviderSettings, model: str) -> None:
    """Refuse a model outside the provider's allowlist (`models`; empty allows any)."""
    if settings.models and model not in settings.models:
        allowed = ", ".join(settings.models)
        msg = (
            f"{provider_label(settings)}: model {model!r} is not in its allowlist "
            f"(llm.providers[].models: {allowed})"
        )
        raise ModelNotFound(msg)


def optional_max_tokens(settings: ProviderSettings, selection: ModelSelection) -> int | None:
    """The request's `max_tokens`, else config's default, but only where config sets it:
    APIs that need no limit get none, since one too low starves reasoning models."""
    if selection.max_tokens is None and "default_max_tokens" in settings.model_fields_set:
        return settings.default_max_tokens
    return selection.max_tokens
