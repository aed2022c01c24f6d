"""A2A with the a2a-sdk client: a turn's text streams as artifact updates, and ListTasks
pages through Temporal's visibility."""

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from a2a.client import Client
from a2a.helpers import get_message_text
from a2a.types.a2a_pb2 import (
    ListTasksRequest,
    Message,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskState,
)

from temporal_executor.gateway import GatewayServer
from temporal_executor.schemas.requests import ExecutionRequested
from tests.harness import ServiceHarness
from tests.test_a2a import INPUT_REQUIRED, a2a_client, collect, user_message, wait_for_a2a_state
from tests.test_gateway import TIMEOUT, gateway_settings
from tests.test_gateway_streams import (
    approve,
    publish_deltas,
    until,
)

COMPLETED = TaskState.TASK_STATE_COMPLETED


@pytest.fixture(scope="module")
async def gateway(service: ServiceHarness) -> AsyncIterator[GatewayServer]:
    server = GatewayServer(gateway_settings(service, "nats"), service.client)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(gateway: GatewayServer) -> AsyncIterator[Client]:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        found = await a2a_client(gateway, http)
        yield found
        await found.close()


async def test_subscribe_streams_the_turns_text_as_artifact_updates(
    service: ServiceHarness, gateway: GatewayServer, client: Client
) -> None:
    transport = service.producers["nats"].transport
    first = await collect(
        client.send_message(SendMessageRequest(message=user_message("note it", model="note")))
    )
    task_id = first[0].task.id
    await wait_for_a2a_state(client, task_id, INPUT_REQUIRED)
    following = asyncio.create_task(collect(client.subscribe(SubscribeToTaskRequest(id=task_id))))
    await until(lambda: gateway.stream_followers == 2)  # its events and deltas
    # The second turn streams: an attempt that fails half way, then one that succeeds.
    await publish_deltas(
        transport, task_id, (2, 1, "note"), (2, 1, " res"), (2, 2, "note"), (2, 2, " result")
    )
    await asyncio.sleep(1)  # let the gateway read them before the turn ends
    async with httpx.AsyncClient(base_url=gateway.url, timeout=TIMEOUT) as http:
        await approve(http, task_id)
    responses = await asyncio.wait_for(following, TIMEOUT)

    updates = [r.artifact_update for r in responses if r.HasField("artifact_update")]
    turn = [u for u in updates if u.artifact.artifact_id == "turn-2"]
    shown = [
        (get_message_text(Message(parts=u.artifact.parts)), u.append, u.last_chunk) for u in turn
    ]
    assert shown[:4] == [
        ("note", False, False),
        (" res", True, False),
        ("note", False, False),  # a new attempt replaces the void text
        (" result", True, False),
    ]
    [(text, append, last)] = shown[4:]
    assert (append, last) == (False, True)
    assert text.startswith("note result: saved")  # the turn's whole, authoritative text
    assert updates[-1].artifact.artifact_id == "final_message"
    assert responses[-1].status_update.status.state == COMPLETED


async def completed_in(client: Client, context_id: str, count: int) -> list[str]:
    ids = []
    for n in range(count):
        message = user_message(f"task {n}", model="one-turn")
        message.context_id = context_id
        responses = await collect(client.send_message(SendMessageRequest(message=message)))
        ids.append(responses[0].task.id)
    for task_id in ids:
        await wait_for_a2a_state(client, task_id, COMPLETED)
    return ids


async def test_list_tasks_by_context_with_paging(client: Client) -> None:
    context_id = f"ctx-{uuid.uuid4().hex}"
    ids = await completed_in(client, context_id, 3)
    listed: list[str] = []
    token = ""
    async with asyncio.timeout(TIMEOUT):
        while True:  # visibility is eventually consistent: the last task shows soon after
            listed, token = [], ""
            while True:
                page = await client.list_tasks(
                    ListTasksRequest(context_id=context_id, page_size=100, page_token=token)
                )
                listed += [t.id for t in page.tasks]
                token = page.next_page_token
                if not token:
                    break
            if len(listed) == 3:
                break
            await asyncio.sleep(0.2)
    assert sorted(listed) == sorted(ids)
    assert page.total_size == 3
    # Newest first, each as GetTask shows it, without artifacts unless asked.
    assert listed == ids[::-1]
    assert all(t.status.state == COMPLETED and not t.artifacts for t in page.tasks)
    assert all(t.context_id == context_id for t in page.tasks)
    with_artifacts = await client.list_tasks(
        ListTasksRequest(context_id=context_id, include_artifacts=True, history_length=0)
    )
    assert all(t.artifacts and not t.history for t in with_artifacts.tasks)


async def test_list_tasks_pages_and_filters_by_state(client: Client) -> None:
    context_id = f"ctx-{uuid.uuid4().hex}"
    await completed_in(client, context_id, 2)
    first = await client.list_tasks(ListTasksRequest(status=COMPLETED, page_size=1))
    assert len(first.tasks) <= 1
    assert first.next_page_token  # at least the two above
    assert first.page_size == 1
    assert first.total_size >= 2
    second = await client.list_tasks(
        ListTasksRequest(status=COMPLETED, page_size=1, page_token=first.next_page_token)
    )
    assert {t.id for t in first.tasks}.isdisjoint(t.id for t in second.tasks)
    none = await client.list_tasks(ListTasksRequest(status=TaskState.TASK_STATE_REJECTED))
    assert (list(none.tasks), none.next_page_token, none.total_size) == ([], "", 0)
    working = await client.list_tasks(
        ListTasksRequest(status=TaskState.TASK_STATE_WORKING, context_id=context_id)
    )
    assert list(working.tasks) == []


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"pageSize": 0}, "page size"),
        ({"pageSize": -1}, "page size"),
        ({"pageSize": 101}, "page size"),
        ({"historyLength": -1}, "history"),
        ({"pageToken": "not a token!"}, "page_token"),
        ({"pageToken": base64.urlsafe_b64encode(b"garbage").decode()}, "page_token"),
    ],
)
async def test_list_tasks_errors(gateway: GatewayServer, params: dict[str, Any], says: str) -> None:
    body = {"jsonrpc": "2.0", "id": "1", "method": "ListTasks", "params": params}
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        response = await http.post(f"{gateway.url}/a2a/", json=body, headers={"A2A-Version": "1.0"})
    error = response.json()["error"]
    assert error["code"] == -32602, error
    assert says in error["message"].lower()


async def test_the_card_caches_and_non_json_is_refused(gateway: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=TIMEOUT) as http:
        card = await http.get("/.well-known/agent-card.json")
        assert "max-age" in card.headers["cache-control"]
        assert card.headers["last-modified"].endswith("GMT")
        again = await http.get(
            "/.well-known/agent-card.json", headers={"If-None-Match": card.headers["etag"]}
        )
        assert again.status_code == 304
        refused = await http.post(
            "/a2a", content=b"{}", headers={"content-type": "text/plain", "A2A-Version": "1.0"}
        )
    assert refused.json()["error"]["code"] == -32005


@pytest.mark.skipif(
    "stream" not in ExecutionRequested.model_fields, reason="needs the bus side of streaming"
)
async def test_a_streaming_message_shows_the_text_as_it_grows(client: Client) -> None:
    first = await collect(
        client.send_message(SendMessageRequest(message=user_message("note", model="note")))
    )
    task_id = first[0].task.id
    reply = user_message("approve", task_id=task_id)
    second = await collect(client.send_message(SendMessageRequest(message=reply)))
    turn = [
        r.artifact_update
        for r in second
        if r.HasField("artifact_update") and r.artifact_update.artifact.artifact_id == "turn-2"
    ]
    assert len(turn) > 2
    assert (turn[0].append, turn[1].append) == (False, True)
    assert turn[-1].last_chunk
    assert not turn[-1].append
    # Deltas are best-effort (their own destination): the last may come after the turn's end.
    grown = "".join(get_message_text(Message(parts=u.artifact.parts)) for u in turn[:-1])
    whole = get_message_text(Message(parts=turn[-1].artifact.parts))
    assert whole.startswith("note result: saved")
    assert whole.startswith(grown)
    assert second[-1].status_update.status.state == COMPLETED
