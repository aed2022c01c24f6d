"""Connecting to Temporal, the same way for the bridge, the worker and the CLI."""

import asyncio
import logging
import os

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from temporal_executor.schemas.config import Settings, TemporalSettings

log = logging.getLogger(__name__)


async def connect_temporal(settings: TemporalSettings) -> Client:
    api_key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
    return await Client.connect(
        settings.host_port,
        namespace=settings.namespace,
        api_key=api_key,
        tls=settings.tls or bool(api_key),
        # Every payload is a pydantic model from `schemas`.
        data_converter=pydantic_data_converter,
    )


async def connect_with_retry(settings: Settings, stop: asyncio.Event) -> Client | None:
    """Wait for Temporal at start rather than crash-looping; None if stopped first."""
    delay = settings.bridge.retry_initial_seconds
    while not stop.is_set():
        try:
            return await connect_temporal(settings.temporal)
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
