"""Encrypted history: what the Temporal server stores of a task is ciphertext, the service
still runs it end to end, and the gateway's codec endpoint (the Temporal UI's remote codec)
decrypts it for an authorised caller."""

import base64
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes

from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.dev.stack import DevPorts, ui_args
from temporal_executor.gateway import GatewayServer
from temporal_executor.schemas.config import (
    EncryptionKeySettings,
    LocalPayloadStore,
    PayloadEncryptionSettings,
    PayloadStorageSettings,
    ScriptedTurn,
    Settings,
)
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from temporal_executor.tasks.payload_encryption import (
    ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    EncryptionError,
    encryption_codec,
    load_key,
    parse_key,
)
from temporal_executor.tasks.temporal_connection import connect_temporal, data_converter
from tests.harness import ServiceHarness, new_task_id, service_settings

OLD_KEY = bytes(range(32))
NEW_KEY = bytes(range(100, 132))
TOKEN = f"codec-token-{uuid.uuid4().hex}"
TOKEN_ENV = f"TE_TEST_CODEC_TOKEN_{uuid.uuid4().hex[:6].upper()}"
KEY_ENV = f"TE_TEST_PAYLOAD_KEY_{uuid.uuid4().hex[:6].upper()}"
# The scripted provider fails its first attempt with a message naming the model: the
# failure Temporal records must be encrypted too.
FLAKY_MODEL = "flaky-model-e2e"


def codec_of(*keys: tuple[str, bytes]) -> EncryptionCodec:
    return EncryptionCodec(list(keys))


def json_payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(text).encode())


# -- keys and the codec ------------------------------------------------------------------


def test_keys_parse_from_hex_and_base64() -> None:
    assert parse_key(OLD_KEY.hex(), "k") == OLD_KEY
    assert parse_key(base64.b64encode(OLD_KEY).decode() + "\n", "k") == OLD_KEY
    assert parse_key(base64.urlsafe_b64encode(NEW_KEY).decode(), "k") == NEW_KEY
    with pytest.raises(EncryptionError, match="16 bytes; AES-256 needs 32"):
        parse_key(base64.b64encode(bytes(16)).decode(), "k")
    with pytest.raises(EncryptionError, match="neither hex nor base64"):
        parse_key("not a key!", "k")


def test_keys_load_from_env_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, OLD_KEY.hex())
    key_file = tmp_path / "new.key"
    key_file.write_text(base64.b64encode(NEW_KEY).decode() + "\n")
    assert load_key(EncryptionKeySettings(id="old", env=KEY_ENV)) == OLD_KEY
    assert load_key(EncryptionKeySettings(id="new", file=str(key_file))) == NEW_KEY
    with pytest.raises(EncryptionError, match="NOT_SET_ANYWHERE is not set"):
        load_key(EncryptionKeySettings(id="x", env="NOT_SET_ANYWHERE"))
    with pytest.raises(EncryptionError, match="cannot read"):
        load_key(EncryptionKeySettings(id="x", file=str(tmp_path / "missing")))


def test_settings_need_keys_once_enabled() -> None:
    assert encryption_codec(PayloadEncryptionSettings()) is None  # off by default
    with pytest.raises(ValueError, match="needs at least one key"):
        PayloadEncryptionSettings(enabled=True)
    with pytest.raises(ValueError, match="exactly one of env, file"):
        EncryptionKeySettings(id="k", env="A", file="b")
    with pytest.raises(ValueError, match="duplicate ids"):
        PayloadEncryptionSettings(
            keys=[EncryptionKeySettings(id="k", env="A"), EncryptionKeySettings(id="k", env="B")]
        )
    with pytest.raises(EncryptionError, match="at least one key"):
        EncryptionCodec([])


async def test_codec_round_trip_and_rotation() -> None:
    old = codec_of(("k1", OLD_KEY))
    rotated = codec_of(("k2", NEW_KEY), ("k1", OLD_KEY))
    [sealed_old] = await old.encode([json_payload("attack at dawn")])
    assert sealed_old.metadata["encoding"] == ENCODING
    assert sealed_old.metadata[KEY_ID_METADATA] == b"k1"
    assert b"attack" not in sealed_old.SerializeToString()
    # After a rotation new payloads use the newest key and old ones still decode.
    [sealed_new] = await rotated.encode([json_payload("retreat")])
    assert sealed_new.metadata[KEY_ID_METADATA] == b"k2"
    assert await rotated.decode([sealed_old, sealed_new]) == [
        json_payload("attack at dawn"),
        json_payload("retreat"),
    ]
    # Plain payloads (a history from before encryption was on) pass through.
    assert await rotated.decode([json_payload("plain")]) == [json_payload("plain")]
    # A key that was dropped, a payload relabelled with another key, an altered payload.
    with pytest.raises(EncryptionError, match="key 'k2', which is not in"):
        await old.decode([sealed_new])
    relabelled = Payload()
    relabelled.CopyFrom(sealed_old)
    relabelled.metadata[KEY_ID_METADATA] = b"k2"
    with pytest.raises(EncryptionError, match="does not decrypt"):
        await rotated.decode([relabelled])


def test_dev_points_the_ui_at_the_codec_endpoint() -> None:
    settings = Settings()
    assert ui_args(settings, DevPorts(ui=18233)) == ["--ui-port", "18233"]
    settings.temporal.encryption = PayloadEncryptionSettings(
        enabled=True, keys=[EncryptionKeySettings(id="k", env=KEY_ENV)]
    )
    assert ui_args(settings, DevPorts(gateway=18080))[2:] == [
        "--ui-codec-endpoint",
        "http://127.0.0.1:18080/codec",
    ]


def test_converter_is_plain_pydantic_when_off() -> None:
    settings = Settings()
    assert data_converter(settings).payload_codec is None
    settings.temporal.encryption = PayloadEncryptionSettings(
        enabled=True, keys=[EncryptionKeySettings(id="k", env=KEY_ENV)]
    )
    with pytest.raises(EncryptionError, match="is not set"):
        data_converter(settings)  # a missing key stops the process at start


# -- a task on the real servers ------------------------------------------------------------


@pytest.fixture(scope="module")
def key_env() -> Iterator[str]:
    os.environ[KEY_ENV] = base64.b64encode(NEW_KEY).decode()
    os.environ[TOKEN_ENV] = TOKEN
    yield KEY_ENV
    del os.environ[KEY_ENV], os.environ[TOKEN_ENV]


@pytest.fixture(scope="module")
async def encrypted(
    embedded_stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory, key_env: str
) -> AsyncIterator[ServiceHarness]:
    tmp = tmp_path_factory.mktemp("encrypted")
    (tmp / "old.key").write_text(OLD_KEY.hex())
    settings = service_settings(embedded_stack, tmp)
    settings.temporal.encryption = PayloadEncryptionSettings(
        enabled=True,
        keys=[
            EncryptionKeySettings(id="k2", env=key_env),
            EncryptionKeySettings(id="k1", file=str(tmp / "old.key")),
        ],
    )
    settings.gateway = settings.gateway.model_copy(update={"port": 0, "auth_token_env": TOKEN_ENV})
    settings.bus.default = "nats"
    scripted = settings.llm.provider("scripted")
    assert scripted is not None
    scripted.scripts[FLAKY_MODEL] = [
        ScriptedTurn(error="unavailable", error_attempts=1, text="the plan: {user_message}")
    ]
    client = await connect_temporal(settings)
    assert client.data_converter.failure_converter_class is (
        DefaultFailureConverterWithEncodedAttributes
    )
    harness = ServiceHarness(settings, client)
    await harness.start()
    yield harness
    await harness.stop()


@pytest.fixture(scope="module")
async def encrypted_task(
    encrypted: ServiceHarness, temporal_client: Client
) -> tuple[str, str, WorkflowHistory]:
    """A task run to completion; its message text and its raw history as the server keeps it."""
    task_id = new_task_id("secret")
    message = f"the launch code is {uuid.uuid4().hex}"
    await encrypted.producers["nats"].request(task_id, FLAKY_MODEL, user_message=message)
    events = await encrypted.watchers["nats"].wait_for_end(task_id)
    assert events[-1].type == EventType.EXECUTION_COMPLETED
    assert isinstance(events[-1].data, dict)
    assert events[-1].data["final_message"] == f"the plan: {message}"
    # Read as anyone with access to the server would: a client without the keys.
    history = await temporal_client.get_workflow_handle(workflow_id_for(task_id)).fetch_history()
    return task_id, message, history


def encrypted_payloads(history: WorkflowHistory) -> list[dict[str, Any]]:
    """Every payload of the history, in the JSON form the Temporal UI sends a codec, but
    those the SDK writes unencoded and that hold nothing of a task: a marker's own details
    (a patch id; a local activity's id, type and times; its result is ours) and the
    search attribute naming the patches."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "metadata" in node and "data" in node:
                found.append(node)
                return
            for key, value in node.items():
                if key == "markerRecordedEventAttributes":
                    walk(value["details"].get("result"))
                elif key != "searchAttributes":
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(history.to_json_dict())
    return found


async def test_history_holds_no_message_text(
    encrypted_task: tuple[str, str, WorkflowHistory],
) -> None:
    _, message, history = encrypted_task
    raw = history.to_json()
    assert message not in raw
    assert "launch code" not in raw
    # The failed first LLM attempt is recorded, its message and stack trace encrypted.
    assert "scripted unavailable error" not in raw
    assert "Encoded failure" in raw
    payloads = encrypted_payloads(history)
    assert payloads
    encoding = base64.b64encode(ENCODING).decode()
    plain = [p for p in payloads if p["metadata"].get("encoding") != encoding]
    assert not plain, plain
    assert {p["metadata"][KEY_ID_METADATA] for p in payloads} == {base64.b64encode(b"k2").decode()}


async def test_history_decodes_with_the_codec(
    encrypted_task: tuple[str, str, WorkflowHistory], encrypted: ServiceHarness
) -> None:
    task_id, message, history = encrypted_task
    codec = codec_of(("k3", bytes(32)), ("k2", NEW_KEY))  # rotated since: k2 still reads it
    decoded = await codec.decode(
        [json_format.ParseDict(p, Payload()) for p in encrypted_payloads(history)]
    )
    text = b"".join(p.data for p in decoded)
    assert message.encode() in text
    assert b"scripted unavailable error" in text  # the failure's message
    # The service's own client reads results and queries as before.
    handle = encrypted.client.get_workflow_handle(workflow_id_for(task_id))
    status = await handle.query("status")
    assert status["final_message"] == f"the plan: {message}"


# -- the codec endpoint of the gateway ----------------------------------------------------


@pytest.fixture(scope="module")
async def codec_gateway(encrypted: ServiceHarness) -> AsyncIterator[httpx.AsyncClient]:
    server = GatewayServer(encrypted.settings, encrypted.client)
    await server.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        yield http
    await server.stop()


async def test_codec_endpoint_decodes_history_for_authorised_callers(
    codec_gateway: httpx.AsyncClient, encrypted_task: tuple[str, str, WorkflowHistory]
) -> None:
    task_id, message, history = encrypted_task
    body = {"payloads": encrypted_payloads(history)}
    refused = await codec_gateway.post("/codec/decode", json=body)
    assert refused.status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}", "X-Namespace": "default"}
    response = await codec_gateway.post("/codec/decode", json=body, headers=auth)
    assert response.status_code == 200, response.text
    decoded = response.json()["payloads"]
    assert len(decoded) == len(body["payloads"])
    text = b"".join(base64.b64decode(p.get("data", "")) for p in decoded)
    assert message.encode() in text
    assert all(p["metadata"]["encoding"] != base64.b64encode(ENCODING).decode() for p in decoded)
    # The gateway's own client reads the encrypted task as any other.
    status = await codec_gateway.get(f"/api/v1/status/{task_id}", headers=auth)
    assert status.status_code == 200, status.text
    assert status.json()["final_message"] == f"the plan: {message}"


async def test_codec_endpoint_round_trip_cors_and_errors(
    codec_gateway: httpx.AsyncClient,
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    plain = json_format.MessageToDict(json_payload("hello"))
    encoded = await codec_gateway.post("/codec/encode", json={"payloads": [plain]}, headers=auth)
    assert encoded.status_code == 200, encoded.text
    [sealed] = encoded.json()["payloads"]
    assert sealed["metadata"][KEY_ID_METADATA] == base64.b64encode(b"k2").decode()
    decoded = await codec_gateway.post("/codec/decode", json={"payloads": [sealed]}, headers=auth)
    assert decoded.json() == {"payloads": [plain]}
    # The Temporal UI's browser asks first, without the token.
    preflight = await codec_gateway.options(
        "/codec/decode",
        headers={
            "Origin": "http://localhost:8233",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:8233"
    bad = await codec_gateway.post("/codec/decode", content=b"{oops", headers=auth)
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_request"
    sealed["metadata"][KEY_ID_METADATA] = base64.b64encode(b"gone").decode()
    unknown = await codec_gateway.post("/codec/decode", json={"payloads": [sealed]}, headers=auth)
    assert unknown.status_code == 400
    assert "'gone'" in unknown.json()["message"]
    huge = await codec_gateway.post(
        "/codec/encode", content=b" " * (8 * 1024 * 1024 + 1), headers=auth
    )
    assert huge.status_code == 413


# -- with External Storage: encrypted before it leaves the process -------------------------


@pytest.fixture(scope="module")
async def encrypted_and_stored(
    embedded_stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory, key_env: str
) -> AsyncIterator[tuple[ServiceHarness, Path]]:
    tmp = tmp_path_factory.mktemp("encrypted-stored")
    settings = service_settings(embedded_stack, tmp)
    settings.bus.default = "nats"
    settings.temporal.encryption = PayloadEncryptionSettings(
        enabled=True, keys=[EncryptionKeySettings(id="k2", env=key_env)]
    )
    store = tmp / "payloads"
    settings.payload_storage = PayloadStorageSettings(
        store="local", threshold_bytes=1024, local=LocalPayloadStore(directory=str(store))
    )
    harness = ServiceHarness(settings, await connect_temporal(settings))
    await harness.start()
    yield harness, store
    await harness.stop()


async def test_stored_payloads_are_encrypted_first(
    encrypted_and_stored: tuple[ServiceHarness, Path], temporal_client: Client
) -> None:
    service, store = encrypted_and_stored
    task_id = new_task_id("stored")
    secret = uuid.uuid4().hex
    message = f"the vault code is {secret}; " * 100  # over the 1 KiB threshold
    await service.producers["nats"].request(task_id, user_message=message)
    events = await service.watchers["nats"].wait_for_end(task_id)
    assert events[-1].type == EventType.EXECUTION_COMPLETED
    assert isinstance(events[-1].data, dict)
    assert events[-1].data["final_message"] == f"done: {message}"
    stored = [path.read_bytes() for path in store.rglob("*") if path.is_file()]
    assert stored, "large payloads went to the store"
    assert not any(secret.encode() in blob for blob in stored)
    history = await temporal_client.get_workflow_handle(workflow_id_for(task_id)).fetch_history()
    assert secret not in history.to_json()
