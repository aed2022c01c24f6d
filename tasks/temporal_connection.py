"""Connecting to Temporal, the same way for the bridge, the worker and the CLI."""

import asyncio
import dataclasses
import logging
import os
from datetime import timedelta

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.service import RPCError

from temporal_executor.schemas.config import Settings
from temporal_executor.tasks.payload_storage import external_storage
from temporal_executor.telemetry.tracing import temporal_interceptors

log = logging.getLogger(__name__)


def data_converter(settings: Settings) -> DataConverter:
    """How every process of the project turns values into Temporal payloads and back: the
    one place to extend (a payload codec goes in `payload_codec`; the SDK runs it before
    External Storage, so a payload is encoded before it leaves the process)."""
    return dataclasses.replace(
        # Every payload is a pydantic model from `schemas`.
        pydantic_data_converter,
        external_storage=external_storage(settings.payload_storage),
    )


async def connect_temporal(settings: Settings) -> Client:
    temporal = settings.temporal
    api_key = os.environ.get(temporal.api_key_env) if temporal.api_key_env else None
    return await Client.connect(
        temporal.host_port,
        namespace=temporal.namespace,
        api_key=api_key,
        tls=temporal.tls or bool(api_key),
        data_converter=data_converter(settings),
        # With tracing on: spans for starts, updates, workflows and activities, and the
        # trace context carried through Temporal (a worker gets it from this client too).
        interceptors=temporal_interceptors(),
    )


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
