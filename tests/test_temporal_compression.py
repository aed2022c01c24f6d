"""`temporal.grpc_compression`: what every process's Temporal client sends, both modes
against the real server (the choice only moves memory and CPU, docs/performance.md)."""

import uuid

import pytest
from temporalio.service import GrpcCompression

from temporal_executor.schemas.config import Settings, TemporalSettings
from temporal_executor.tasks.temporal_connection import connect_temporal


def test_requests_are_not_compressed_unless_asked() -> None:
    assert Settings().temporal.grpc_compression == "none"


@pytest.mark.parametrize(
    ("mode", "expected"), [("none", GrpcCompression.NONE), ("gzip", GrpcCompression.GZIP)]
)
async def test_each_mode_reaches_the_client_and_talks_to_temporal(
    temporal_address: str, mode: str, expected: GrpcCompression
) -> None:
    temporal = TemporalSettings.model_validate(
        {"host_port": temporal_address, "grpc_compression": mode}
    )
    client = await connect_temporal(Settings(temporal=temporal))
    assert client.service_client.config.grpc_compression == expected
    # A start carries a payload: the server reads it in this mode and gives it back.
    handle = await client.start_workflow(
        "NotRegistered",
        {"mode": mode},
        id=f"compression-{uuid.uuid4().hex[:8]}",
        task_queue=f"compression-{uuid.uuid4().hex[:8]}",
    )
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert b'"mode"' in started.input.payloads[0].data
    await handle.terminate()


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="grpc_compression"):
        TemporalSettings.model_validate({"grpc_compression": "zstd"})
