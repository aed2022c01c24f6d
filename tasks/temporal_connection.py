"""Connecting to Temporal, the same way for the bridge, the worker and the CLI."""

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.service import GrpcCompression, RPCError, TLSConfig

from temporal_executor.schemas.config import Settings, TlsSettings
from temporal_executor.tasks.payload_storage import external_storage
from temporal_executor.telemetry.health import HEALTH, Check
from temporal_executor.telemetry.tracing import temporal_interceptors

log = logging.getLogger(__name__)


def data_converter(settings: Settings) -> DataConverter:
    """How every process of the project turns values into Temporal payloads and back: the
    one place to extend. Payloads are pydantic models from `schemas`; with
    `temporal.encryption` on they are encrypted, and failure messages and stack traces move
    into an encrypted payload too (Temporal keeps them in plain text otherwise). The SDK
    runs the codec before External Storage, so a payload is encrypted before it leaves the
    process."""
    encrypted: dict[str, Any] = {}
    if settings.temporal.encryption.enabled:
        # Imported here: `cryptography`'s bindings cost ~6 MB of RSS in a process that
        # does not encrypt (tests/test_lean_imports.py).
        from temporal_executor.tasks.payload_encryption import encryption_codec

        encrypted = {
            "payload_codec": encryption_codec(settings.temporal.encryption),
            "failure_converter_class": DefaultFailureConverterWithEncodedAttributes,
        }
    return dataclasses.replace(
        pydantic_data_converter,
        external_storage=external_storage(settings.payload_storage),
        **encrypted,
    )


async def connect_temporal(settings: Settings) -> Client:
    return await Client.connect(settings.temporal.host_port, **connect_options(settings))


def connect_options(settings: Settings) -> dict[str, Any]:
    """`Client.connect`'s arguments but the address: namespace, credentials, converter."""
    temporal = settings.temporal
    api_key = None
    if temporal.api_key_env is not None:
        api_key = os.environ.get(temporal.api_key_env)
        if not api_key:
            msg = f"temporal.api_key_env names {temporal.api_key_env!r}, which is not set"
            raise TemporalConfigError(msg)
    return {
        "namespace": temporal.namespace,
        "api_key": api_key,
        # An API key travels only over TLS (Temporal Cloud refuses it otherwise).
        "tls": tls_config(temporal.tls) or api_key is not None,
        "grpc_compression": (
            GrpcCompression.GZIP if temporal.grpc_compression == "gzip" else GrpcCompression.NONE
        ),
        "data_converter": data_converter(settings),
        # With tracing on: spans for starts, updates, workflows and activities, and the
        # trace context carried through Temporal (a worker gets it from this client too).
        "interceptors": temporal_interceptors(),
    }


class TemporalConfigError(Exception):
    """The Temporal connection settings cannot work (a credential or a file is missing)."""


def tls_config(tls: bool | TlsSettings) -> TLSConfig | bool:
    """What `Client.connect(tls=...)` takes: off, the system's CAs, or the configured files."""
    if isinstance(tls, bool):
        return tls
    return TLSConfig(
        server_root_ca_cert=_read(tls.ca_file),
        domain=tls.server_name,
        client_cert=_read(tls.cert_file),
        client_private_key=_read(tls.key_file),
    )


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        msg = f"temporal.tls: cannot read {path}: {exc}"
        raise TemporalConfigError(msg) from exc


async def temporal_problem(client: Client, host_port: str, seconds: float = 2.0) -> str | None:
    """None when Temporal answers now (readiness probes); else what is wrong."""
    try:
        await client.workflow_service.get_system_info(
            GetSystemInfoRequest(), retry=False, timeout=timedelta(seconds=seconds)
        )
    except RPCError as exc:
        return f"Temporal at {host_port}: {exc.status.name}: {exc.message}"
    return None


async def connect_with_retry(settings: Settings, stop: asyncio.Event) -> Client | None:
    """Wait for Temporal at start rather than crash-looping; None if stopped first."""
    delay = settings.bridge.retry_initial_seconds
    while not stop.is_set():
        try:
            return await connect_temporal(settings)
        except RuntimeError as exc:  # the SDK's connection failure
            log.warning(
                "Temporal unreachable; retrying",
                extra={"temporal": settings.temporal.host_port, "error": str(exc)},
            )
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            delay = min(delay * 2, settings.bridge.retry_max_seconds)
    return None


def readiness_checks(
    settings: Settings, client: Client, bus_checks: Mapping[str, Check]
) -> contextlib.ExitStack:
    """/readyz answers 200 while Temporal and each bus check answer; close to withdraw them."""
    checks = contextlib.ExitStack()
    timeout = settings.observability.readiness_timeout_seconds
    host_port = settings.temporal.host_port
    checks.enter_context(
        HEALTH.registered("temporal", lambda: temporal_problem(client, host_port, timeout))
    )
    for name, check in bus_checks.items():
        checks.enter_context(HEALTH.registered(name, check))
    return checks
