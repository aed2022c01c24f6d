"""What both Vertex AI providers read the same way: project, region, credentials, auth errors.

Project and region come from config (`project`, `region`), else from the variables the
Google tools and SDKs use. Credentials are Application Default Credentials (a service
account key in GOOGLE_APPLICATION_CREDENTIALS, workload identity, the metadata server,
`gcloud auth application-default login`), resolved by the SDK on the first request; or,
with `access_token_env`, an OAuth 2 access token read from that variable when the provider
is created (a token expires, typically after an hour: meant for tests and short jobs).
"""

import os
from typing import NoReturn

from temporal_executor.schemas.config import ProviderSettings
from temporal_executor.worker.llm._provider_settings import provider_label, secret_from_env
from temporal_executor.worker.llm.errors import (
    AuthenticationFailed,
    LlmError,
    ProviderNotConfigured,
    ProviderUnavailable,
)


def vertex_project(settings: ProviderSettings, *envs: str) -> str | None:
    """`project` from config, else the first of `envs` that is set."""
    return settings.project or _first_env(envs)


def vertex_region(settings: ProviderSettings, *envs: str, default: str | None = None) -> str:
    """`region` from config, else the first of `envs` that is set, else `default`."""
    region = settings.region or _first_env(envs) or default
    if region is None:
        msg = (
            f"{provider_label(settings)}: set region in llm.providers[] "
            f"(or the environment variable {' or '.join(envs)})"
        )
        raise ProviderNotConfigured(msg)
    return region


def require_project(settings: ProviderSettings, project: str | None, *envs: str) -> str:
    if project is None:
        msg = (
            f"{provider_label(settings)}: set project in llm.providers[] "
            f"(or the environment variable {' or '.join(envs)})"
        )
        raise ProviderNotConfigured(msg)
    return project


def access_token(settings: ProviderSettings) -> str | None:
    """The access token `access_token_env` names; None: Application Default Credentials."""
    if settings.access_token_env is None:
        return None
    return secret_from_env(settings, settings.access_token_env, "access_token_env")


def map_google_auth_error(label: str, exc: Exception) -> LlmError | None:
    """google-auth's failures to find or refresh credentials; None for any other exception.

    A transport error (the token endpoint or metadata server unreachable) and a refresh
    error google-auth marks retryable may pass; anything else (no credentials, a revoked
    key) needs a person.
    """
    try:
        from google.auth import exceptions
    except ImportError:  # pragma: no cover - google-auth comes with google-genai
        return None
    if not isinstance(exc, exceptions.GoogleAuthError):
        return None
    message = f"{label}: Google credentials: {type(exc).__name__}: {exc}"
    if isinstance(exc, exceptions.TransportError) or getattr(exc, "retryable", False):
        return ProviderUnavailable(message)
    return AuthenticationFailed(message)


def raise_google_auth_error(label: str, exc: Exception) -> NoReturn:
    """Raise `exc` as the error its google-auth failure maps to, or else unchanged."""
    mapped = map_google_auth_error(label, exc)
    if mapped is None:
        raise exc
    raise mapped from exc


def _first_env(envs: tuple[str, ...]) -> str | None:
    return next((value for env in envs if (value := os.environ.get(env, "").strip())), None)
