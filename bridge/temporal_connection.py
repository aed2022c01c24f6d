"""Connecting to Temporal, the same way for the bridge, the worker and the CLI."""

import os

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from temporal_executor.schemas.config import TemporalSettings


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
