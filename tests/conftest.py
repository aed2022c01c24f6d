"""Shared fixtures, grouped by subject. Add yours as a new group below; keep each small."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from temporal_executor.dev.embedded_stack import EmbeddedStack
from tests.harness import ServiceHarness, service_settings

# -- Real servers: one embedded stack for the whole session ---------------------------
# Temporal (headless), NATS JetStream and a Kafka-compatible broker on free ports. Set
# TEMPORAL_ADDRESS, NATS_URL or KAFKA_BOOTSTRAP_SERVERS to use an external server instead.


@pytest.fixture(scope="session")
async def embedded_stack() -> AsyncIterator[EmbeddedStack]:
    async with EmbeddedStack(("temporal", "nats", "kafka"), headless=True) as stack:
        yield stack


@pytest.fixture(scope="session")
def temporal_address(embedded_stack: EmbeddedStack) -> str:
    return embedded_stack.temporal_address


@pytest.fixture(scope="session")
def nats_url(embedded_stack: EmbeddedStack) -> str:
    return embedded_stack.nats_url


@pytest.fixture(scope="session")
def kafka_bootstrap(embedded_stack: EmbeddedStack) -> str:
    return embedded_stack.kafka_bootstrap


@pytest.fixture(scope="session")
async def temporal_client(temporal_address: str) -> Client:
    return await Client.connect(temporal_address, data_converter=pydantic_data_converter)


# -- The service: bridge + worker in this process, on the session's servers -----------


@pytest.fixture(scope="session")
async def service(
    embedded_stack: EmbeddedStack,
    temporal_client: Client,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ServiceHarness]:
    settings = service_settings(
        embedded_stack,
        tmp_path_factory.mktemp("notes"),
    )
    harness = ServiceHarness(settings, temporal_client)
    await harness.start()
    yield harness
    await harness.stop()


# -- An S3-compatible server (moto's) for External Storage ----------------------------

S3_BUCKET = "temporal-executor-tests"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 on a free port, with a bucket `S3_BUCKET`; AWS variables point at it, so
    this process and the worker processes it starts find credentials the usual way."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "test-key")
        env.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=S3_BUCKET)
        yield endpoint
    server.stop()
