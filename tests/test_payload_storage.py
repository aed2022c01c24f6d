"""Conversations of any size (issue 12, point 3): with External Storage (a local directory,
or S3 on moto's server) a task whose tool results add up to well over Temporal's 2 MB
payload limit completes with every message, across continue-as-new; without it, the same
task fails with `payload_too_large` instead of hanging."""

import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory
from temporalio.converter import StorageDriverRetrieveContext, StorageDriverStoreContext

from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.dev.stack import with_local_payload_store
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import (
    LocalPayloadStore,
    McpServerSettings,
    PayloadStorageSettings,
    ProviderSettings,
    S3PayloadStore,
    Settings,
)
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from temporal_executor.tasks.payload_storage import LocalDirectoryDriver
from temporal_executor.tasks.temporal_connection import connect_temporal, data_converter

# The worker imports its MCP client when it starts; imported here already, that does not
# block the event loop (seconds on a busy machine) while the test publishes its request.
from temporal_executor.worker.tools import mcp_tools  # noqa: F401
from tests.conftest import S3_BUCKET
from tests.fakes.llm_servers import FakeOpenAIServer, tool_calls
from tests.fakes.llm_servers import text as text_reply
from tests.harness import ServiceHarness, new_task_id, service_settings

MCP_SERVER = Path(__file__).parent / "fakes" / "mcp_server.py"
RESULT_CHARS = 200_000
TOOL_TURNS = 14  # 14 x 200 kB: 2.8 MB of tool results
KEY_ENV = "STORAGE_TEST_OPENAI_KEY"
PROVIDER = "big-openai"
THRESHOLD = 256 * 1024


def storage_settings(store: str, tmp_path: Path, s3_endpoint: str | None) -> PayloadStorageSettings:
    if store == "local":
        return PayloadStorageSettings(
            store="local", local=LocalPayloadStore(directory=str(tmp_path / "payloads"))
        )
    if store == "s3":
        assert s3_endpoint is not None
        s3 = S3PayloadStore(bucket=S3_BUCKET, prefix=f"{tmp_path.name}/", endpoint_url=s3_endpoint)
        return PayloadStorageSettings(store="s3", s3=s3)
    return PayloadStorageSettings(store="none")


def big_task_settings(stack: EmbeddedStack, tmp_path: Path, model: FakeOpenAIServer) -> Settings:
    settings = service_settings(stack, tmp_path / "notes")
    settings.bus.max_message_bytes = 1024 * 1024  # an event carries one 200 kB result
    settings.executor.max_result_bytes = THRESHOLD
    settings.executor.max_iterations = TOOL_TURNS + 1
    # The least config allows: the task continues as new during its 14 turns.
    settings.executor.continue_as_new_after_events = 100
    settings.mcp_servers = [
        McpServerSettings(
            name="calc", transport="stdio", command=sys.executable, args=[str(MCP_SERVER)]
        )
    ]
    settings.llm.providers.append(
        ProviderSettings(name=PROVIDER, kind="openai", api_key_env=KEY_ENV, base_url=model.base_url)
    )
    return settings


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    """Asks for a 200 kB tool result 14 times, then answers."""
    with FakeOpenAIServer() as server:
        monkeypatch.setenv(KEY_ENV, server.api_key)
        server.enqueue(*[tool_calls(("calc__big", {"size": RESULT_CHARS}))] * TOOL_TURNS)
        server.enqueue(text_reply("read them all"))
        yield server


@dataclass
class BigTask:
    harness: ServiceHarness
    task_id: str
    events: list[CloudEvent]


@contextlib.asynccontextmanager
async def big_task(
    stack: EmbeddedStack, tmp_path: Path, model: FakeOpenAIServer, storage: PayloadStorageSettings
) -> AsyncIterator[BigTask]:
    settings = big_task_settings(stack, tmp_path, model)
    settings.payload_storage = storage
    harness = ServiceHarness(settings, await connect_temporal(settings))
    await harness.start()
    try:
        task_id = new_task_id("big")
        data = {
            "task_id": task_id,
            "user_message": "read 14 big results",
            "model_config": {"provider": PROVIDER, "model": "gpt-4o"},
        }
        await harness.producers["nats"].send(EventType.EXECUTION_REQUESTED, task_id, data)
        events = await harness.watchers["nats"].wait_for_end(task_id, timeout=180)
        yield BigTask(harness, task_id, events)
    finally:
        await harness.stop()


async def histories(task: BigTask) -> list[WorkflowHistory]:
    """Every run of the task's workflow, first to last."""
    client = task.harness.client
    handle = client.get_workflow_handle(workflow_id_for(task.task_id))
    runs = [await handle.fetch_history()]
    while (
        previous := runs[0]
        .events[0]
        .workflow_execution_started_event_attributes.continued_execution_run_id
    ):
        runs.insert(0, await client.get_workflow_handle(handle.id, run_id=previous).fetch_history())
    return runs


def data(event: CloudEvent) -> dict[str, Any]:
    assert isinstance(event.data, dict)
    return event.data


def stored_objects(store: str, tmp_path: Path, s3_endpoint: str | None) -> int:
    if store == "local":
        return sum(1 for p in (tmp_path / "payloads").rglob("*") if p.is_file())
    listing = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
        Bucket=S3_BUCKET, Prefix=f"{tmp_path.name}/"
    )
    return int(listing.get("KeyCount", 0))


def is_reference(event: HistoryEvent, field: Callable[[HistoryEvent], Any]) -> bool:
    return any(p.external_payloads for p in field(event).payloads)


@pytest.mark.parametrize("store", ["local", "s3"])
async def test_a_conversation_over_2_mb_completes_with_every_message(
    embedded_stack: EmbeddedStack,
    tmp_path: Path,
    model: FakeOpenAIServer,
    s3_endpoint: str,
    store: str,
) -> None:
    storage = storage_settings(store, tmp_path, s3_endpoint)
    async with big_task(embedded_stack, tmp_path, model, storage) as task:
        runs = await histories(task)

    assert [e.type for e in task.events][-1] == EventType.EXECUTION_COMPLETED
    completed = [data(e) for e in task.events if e.type == EventType.TOOL_COMPLETED]
    assert [len(c["result"]) for c in completed] == [RESULT_CHARS] * TOOL_TURNS
    # The model's last call had the whole conversation: every result, whole.
    messages = model.last_request.body["messages"]
    assert [len(m["content"]) for m in messages if m["role"] == "tool"] == [
        RESULT_CHARS
    ] * TOOL_TURNS
    # It continued as new, its input (the conversation so far) kept out of history...
    assert len(runs) > 1
    started = [run.events[0] for run in runs[1:]]
    assert all(
        is_reference(e, lambda e: e.workflow_execution_started_event_attributes.input)
        for e in started
    )
    # ... as was every payload over the threshold: no event in history holds one.
    largest = max(e.ByteSize() for run in runs for e in run.events)
    assert largest < THRESHOLD + 4096
    assert stored_objects(store, tmp_path, s3_endpoint) > 0


async def test_without_storage_an_oversized_conversation_fails_and_does_not_hang(
    embedded_stack: EmbeddedStack, tmp_path: Path, model: FakeOpenAIServer
) -> None:
    storage = storage_settings("none", tmp_path, None)
    async with big_task(embedded_stack, tmp_path, model, storage) as task:
        events = task.events

    failed = events[-1]
    assert failed.type == EventType.EXECUTION_FAILED
    assert data(failed)["error"]["type"] == "payload_too_large"
    assert "payload_storage" in data(failed)["error"]["message"]
    # It stopped before the first call whose conversation is over 2 MB: the 12th, with 11
    # results of 200 kB.
    assert len(model.requests) == 11


# -- configuration and the local driver, without servers ------------------------------


def test_the_dev_stack_keeps_large_payloads_in_its_data_directory(tmp_path: Path) -> None:
    dev = with_local_payload_store(Settings(), tmp_path)
    assert dev.payload_storage.store == "local"
    assert dev.payload_storage.local.directory == str(tmp_path / "payloads")

    chosen = Settings(payload_storage=storage_settings("s3", tmp_path, "http://s3.local"))
    assert with_local_payload_store(chosen, tmp_path) == chosen


def test_config_chooses_the_store() -> None:
    assert data_converter(Settings()).external_storage is None
    with pytest.raises(ValueError, match=r"payload_storage\.s3\.bucket is required"):
        PayloadStorageSettings(store="s3")
    settings = Settings(payload_storage=PayloadStorageSettings(store="local", threshold_bytes=10))
    storage = data_converter(settings).external_storage
    assert storage is not None
    assert storage.payload_size_threshold == 10
    assert [d.name() for d in storage.drivers] == ["local-directory"]


async def test_a_local_payload_changed_on_disk_is_refused(tmp_path: Path) -> None:
    driver = LocalDirectoryDriver(LocalPayloadStore(directory=str(tmp_path)))
    payload = Payload(metadata={"encoding": b"json/plain"}, data=b'"' + b"x" * 1000 + b'"')
    (claim,) = await driver.store(StorageDriverStoreContext(), [payload])
    assert await driver.retrieve(StorageDriverRetrieveContext(), [claim]) == [payload]

    (tmp_path / claim.claim_data["path"]).write_bytes(b"tampered")

    with pytest.raises(ValueError, match="does not match its reference"):
        await driver.retrieve(StorageDriverRetrieveContext(), [claim])
