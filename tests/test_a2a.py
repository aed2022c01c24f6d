"""A2A over real HTTP: the a2a-sdk client, from the agent card on, drives tasks through the
gateway in front of the session's service, approvals included (kagent's HITL extension)."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from a2a.client import Client, ClientConfig, create_client
from a2a.helpers import get_data_parts, get_message_text
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskState,
)
from a2a.utils.errors import (
    InvalidParamsError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from google.protobuf.json_format import MessageToDict

from temporal_executor.gateway import HITL_EXTENSION_URI, GatewayServer
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from tests.harness import ServiceHarness, new_task_id
from tests.test_gateway import gateway_settings

TIMEOUT = 30.0
WORKING = TaskState.TASK_STATE_WORKING
INPUT_REQUIRED = TaskState.TASK_STATE_INPUT_REQUIRED


@pytest.fixture(scope="module")
async def a2a_gateway(service: ServiceHarness) -> AsyncIterator[GatewayServer]:
    server = GatewayServer(gateway_settings(service), service.client)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http(a2a_gateway: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    # A client that asks for the HITL extension, as kagent's UI does.
    headers = {"A2A-Extensions": HITL_EXTENSION_URI}
    async with httpx.AsyncClient(timeout=TIMEOUT, headers=headers) as client:
        yield client


async def a2a_client(
    gateway: GatewayServer, http: httpx.AsyncClient, *, streaming: bool = True
) -> Client:
    """A client built the way a user builds one: from the agent card at the gateway's URL."""
    return await create_client(gateway.url, ClientConfig(streaming=streaming, httpx_client=http))


def user_message(text: str, *, model: str | None = None, task_id: str = "", **meta: Any) -> Message:
    message = Message(
        message_id=new_task_id("msg"),
        role=Role.ROLE_USER,
        parts=[Part(text=text)],
        task_id=task_id,
    )
    if model:
        meta["model_config"] = {"provider": "scripted", "model": model}
    if meta:
        message.metadata.update(meta)
    return message


async def collect(stream: AsyncIterator[StreamResponse]) -> list[StreamResponse]:
    async with asyncio.timeout(TIMEOUT):
        return [response async for response in stream]


def states(responses: list[StreamResponse]) -> list[TaskState]:
    found: list[TaskState] = []
    for response in responses:
        if response.HasField("task"):
            found.append(response.task.status.state)
        elif response.HasField("status_update"):
            found.append(response.status_update.status.state)
    return found


async def wait_for_a2a_state(client: Client, task_id: str, state: TaskState) -> Task:
    async with asyncio.timeout(TIMEOUT):
        while True:
            task = await client.get_task(GetTaskRequest(id=task_id))
            if task.status.state == state:
                return task
            await asyncio.sleep(0.1)


def hitl_payload(message: Message) -> dict[str, Any]:
    assert HITL_EXTENSION_URI in message.extensions
    payload: dict[str, Any] = MessageToDict(message.metadata)[HITL_EXTENSION_URI]
    return payload


async def test_agent_card(a2a_gateway: GatewayServer, http: httpx.AsyncClient) -> None:
    card = (await http.get(f"{a2a_gateway.url}/.well-known/agent-card.json")).json()
    assert card["name"] == "temporal-executor"
    [interface] = card["supportedInterfaces"]
    assert interface == {
        "url": f"{a2a_gateway.url}/a2a",
        "protocolBinding": "JSONRPC",
        "protocolVersion": "1.0",
    }
    assert card["capabilities"]["streaming"] is True
    [extension] = card["capabilities"]["extensions"]
    assert extension["uri"] == HITL_EXTENSION_URI
    assert "securitySchemes" not in card


async def test_a2a_task_with_an_approval_streams_to_completion(
    service: ServiceHarness, a2a_gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    client = await a2a_client(a2a_gateway, http)
    first = await collect(
        client.send_message(
            SendMessageRequest(message=user_message("remember the milk", model="note"))
        )
    )
    assert first[0].HasField("task")
    task = first[0].task
    assert task.status.state == TaskState.TASK_STATE_SUBMITTED
    assert task.context_id  # chosen by the gateway: the message named none
    assert get_message_text(task.history[0]) == "remember the milk"
    assert states(first)[-1] == INPUT_REQUIRED
    assert WORKING in states(first)
    paused = first[-1].status_update
    assert (paused.task_id, paused.context_id) == (task.id, task.context_id)

    # The pause speaks kagent's HITL extension: metadata, a DataPart, and prose.
    request = hitl_payload(paused.status.message)
    assert request["type"] == "tool_approval_request"
    [tool] = request["tools"]
    assert (tool["id"], tool["name"]) == ("approval-1-1", "save_note")
    assert tool["args"] == {"title": "t", "text": "remember the milk"}
    assert get_data_parts(paused.status.message.parts) == [request]
    assert '"approve"' in get_message_text(paused.status.message)
    # ... and carries the bus event it was made from.
    carried = MessageToDict(paused.metadata)["cloudevent"]
    on_bus = await service.watchers["kafka"].wait_for(task.id, EventType.APPROVAL_REQUESTED)
    assert (carried["id"], carried["type"], carried["data"]) == (
        on_bus.id,
        on_bus.type,
        on_bus.data,
    )
    assert (await client.get_task(GetTaskRequest(id=task.id))).status.state == INPUT_REQUIRED

    reply = Message(
        message_id=new_task_id("msg"),
        role=Role.ROLE_USER,
        task_id=task.id,
        context_id=task.context_id,
        extensions=[HITL_EXTENSION_URI],
        parts=[Part(text="approved")],
    )
    reply.metadata.update(
        {
            HITL_EXTENSION_URI: {
                "type": "tool_approval_response",
                "approvals": [{"id": tool["id"], "approved": True}],
            }
        }
    )
    second = await collect(client.send_message(SendMessageRequest(message=reply)))
    assert states(second)[0] == WORKING
    assert states(second)[-1] == TaskState.TASK_STATE_COMPLETED
    updates = [r.artifact_update.artifact for r in second if r.HasField("artifact_update")]
    # (with streaming, the turn's text comes first as artifact `turn-2`)
    [artifact] = [a for a in updates if a.artifact_id == "final_message"]
    assert get_message_text(Message(parts=artifact.parts)).startswith("note result: saved 17")

    done = await client.get_task(GetTaskRequest(id=task.id))
    assert done.status.state == TaskState.TASK_STATE_COMPLETED
    assert done.context_id == task.context_id
    assert [get_message_text(Message(parts=a.parts)) for a in done.artifacts] == [
        get_message_text(Message(parts=artifact.parts))
    ]
    # The stream was the bus's events, one by one.
    streamed = [
        MessageToDict(r.status_update.metadata)["cloudevent"]["id"]
        for r in [*first, *second]
        if r.HasField("status_update")
    ]
    events = await service.watchers["kafka"].wait_for_end(task.id)
    assert streamed == [e.id for e in events]
    # The A2A context travels with the task, on every bus event.
    assert events[0].data["metadata"]["a2a"]["context_id"] == task.context_id
    await client.close()


async def test_blocking_send_and_a_plain_text_denial(
    a2a_gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    client = await a2a_client(a2a_gateway, http, streaming=False)
    [response] = await collect(
        client.send_message(
            SendMessageRequest(message=user_message("save it", model="note", tools=["save_note"]))
        )
    )
    task = response.task
    assert task.status.state == INPUT_REQUIRED
    assert hitl_payload(task.status.message)["tools"][0]["name"] == "save_note"

    deny = user_message("deny: not today", task_id=task.id)
    [response] = await collect(client.send_message(SendMessageRequest(message=deny)))
    assert response.task.status.state == TaskState.TASK_STATE_COMPLETED
    final = get_message_text(response.task.status.message)
    assert "denied" in final
    assert "not today" in final

    # The task has ended: it takes no more messages.
    with pytest.raises(UnsupportedOperationError, match="has completed: it takes no more"):
        await collect(client.send_message(SendMessageRequest(message=deny)))
    await client.close()


async def test_a_follow_up_message_denies_the_call_and_reaches_the_model(
    service: ServiceHarness, a2a_gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    # A2A continues a task in input-required with a message; ours waits for an approval, so
    # words that are no decision deny it, and the model reads them as the reason.
    client = await a2a_client(a2a_gateway, http, streaming=False)
    request = SendMessageRequest(
        message=user_message("x", model="note"),
        configuration=SendMessageConfiguration(return_immediately=True),
    )
    [response] = await collect(client.send_message(request))
    assert response.task.status.state == TaskState.TASK_STATE_SUBMITTED
    task_id = response.task.id
    await wait_for_a2a_state(client, task_id, INPUT_REQUIRED)
    # A message with nothing to read decides nothing: the approval still waits.
    silent = Message(
        message_id=new_task_id("msg"),
        role=Role.ROLE_USER,
        task_id=task_id,
        parts=[Part(raw=b"\x00", media_type="application/octet-stream")],
    )
    with pytest.raises(InvalidParamsError, match="waiting for approval"):
        await collect(client.send_message(SendMessageRequest(message=silent)))
    assert (await client.get_task(GetTaskRequest(id=task_id))).status.state == INPUT_REQUIRED

    follow_up = user_message("use the other folder instead", task_id=task_id)
    [response] = await collect(client.send_message(SendMessageRequest(message=follow_up)))

    assert response.task.status.state == TaskState.TASK_STATE_COMPLETED
    resolved = await service.watchers["kafka"].wait_for(task_id, EventType.APPROVAL_RESOLVED)
    assert resolved.data["approved"] is False
    assert resolved.data["reason"] == "use the other folder instead"
    tool = await service.watchers["kafka"].wait_for(task_id, EventType.TOOL_COMPLETED)
    assert "use the other folder instead" in tool.data["error"]
    await client.close()


async def test_the_tck_model_plays_the_scenario_of_the_message_id(
    a2a_gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    client = await a2a_client(a2a_gateway, http, streaming=False)

    def tck_message(prefix: str, *, task_id: str = "") -> Message:
        message = user_message("TCK artifact test", model="tck", task_id=task_id)
        message.message_id = new_task_id(prefix)
        return message

    [text] = await collect(
        client.send_message(SendMessageRequest(message=tck_message("tck-artifact-text")))
    )
    [paused] = await collect(
        client.send_message(SendMessageRequest(message=tck_message("tck-input-required")))
    )
    follow_up = tck_message("tck-complete-task", task_id=paused.task.id)
    [done] = await collect(client.send_message(SendMessageRequest(message=follow_up)))

    [artifact] = text.task.artifacts
    assert text.task.status.state == TaskState.TASK_STATE_COMPLETED
    assert get_message_text(Message(parts=artifact.parts)) == "Generated text content"
    assert paused.task.status.state == INPUT_REQUIRED
    assert done.task.status.state == TaskState.TASK_STATE_COMPLETED
    assert get_message_text(done.task.status.message) == "Hello from TCK"
    await client.close()


async def test_subscribe_then_approve_over_rest(
    a2a_gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    client = await a2a_client(a2a_gateway, http)
    first = await collect(
        client.send_message(SendMessageRequest(message=user_message("subscribed", model="note")))
    )
    task = first[0].task
    subscription = client.subscribe(SubscribeToTaskRequest(id=task.id))
    # The first event is the task as it is; the gateway watches the bus from before it.
    snapshot = await asyncio.wait_for(anext(subscription), TIMEOUT)
    assert snapshot.task.status.state == INPUT_REQUIRED
    approve = await http.post(
        f"{a2a_gateway.url}/api/v1/approve/{workflow_id_for(task.id)}", json={"approved": True}
    )
    assert approve.status_code == 200, approve.text
    followed = await collect(subscription)
    assert states(followed)[0] == WORKING
    assert states(followed)[-1] == TaskState.TASK_STATE_COMPLETED
    with pytest.raises(UnsupportedOperationError, match="has completed"):
        await collect(client.subscribe(SubscribeToTaskRequest(id=task.id)))
    await client.close()


async def test_a_failing_task_ends_failed(
    a2a_gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    client = await a2a_client(a2a_gateway, http)
    message = user_message("fail", model="unauthorised")
    streamed = await collect(client.send_message(SendMessageRequest(message=message)))
    assert states(streamed)[-1] == TaskState.TASK_STATE_FAILED
    assert get_message_text(streamed[-1].status_update.status.message).startswith(
        "authentication_failed: "
    )
    task = await client.get_task(GetTaskRequest(id=streamed[0].task.id))
    assert task.status.state == TaskState.TASK_STATE_FAILED
    assert not task.artifacts
    await client.close()


async def test_cancel_and_unknown_tasks(
    a2a_gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    client = await a2a_client(a2a_gateway, http)
    first = await collect(
        client.send_message(SendMessageRequest(message=user_message("cancel me", model="note")))
    )
    task_id = first[0].task.id
    cancelled = await client.cancel_task(CancelTaskRequest(id=task_id))
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    with pytest.raises(TaskNotCancelableError):
        await client.cancel_task(CancelTaskRequest(id=task_id))
    missing = new_task_id("missing")
    with pytest.raises(TaskNotFoundError):
        await client.get_task(GetTaskRequest(id=missing))
    with pytest.raises(TaskNotFoundError):
        await client.cancel_task(CancelTaskRequest(id=missing))
    message = user_message("approve", task_id=missing)
    with pytest.raises(TaskNotFoundError):
        await collect(client.send_message(SendMessageRequest(message=message)))
    elsewhere = user_message("approve", task_id=task_id)
    elsewhere.context_id = "another-context"
    with pytest.raises(InvalidParamsError, match="is not the context"):
        await collect(client.send_message(SendMessageRequest(message=elsewhere)))
    await client.close()


async def test_the_extension_is_echoed_when_asked_for(
    a2a_gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "nope"}}
    headers = {"A2A-Version": "1.0"}
    response = await http.post(f"{a2a_gateway.url}/a2a", json=body, headers=headers)
    assert response.headers["a2a-extensions"] == HITL_EXTENSION_URI
    assert response.json()["error"]["message"].startswith("no task 'nope'")
    async with httpx.AsyncClient(timeout=TIMEOUT) as plain:
        response = await plain.post(f"{a2a_gateway.url}/a2a", json=body, headers=headers)
    assert "a2a-extensions" not in response.headers


async def test_a_task_from_the_bus_is_an_a2a_task_too(
    service: ServiceHarness, a2a_gateway: GatewayServer, http: httpx.AsyncClient
) -> None:
    task_id = new_task_id("bus")
    await service.producers["nats"].request(task_id)
    await service.watchers["nats"].wait_for_end(task_id)
    client = await a2a_client(a2a_gateway, http)
    task: Task = await client.get_task(GetTaskRequest(id=task_id))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task.context_id == task_id
    assert get_message_text(task.status.message) == f"done: hello from {task_id}"
    await client.close()


@pytest.mark.parametrize(
    ("method", "params", "code", "says"),
    [
        ("GetExtendedAgentCard", {}, -32004, "no extended agent card"),
        (
            "CreateTaskPushNotificationConfig",
            {"taskId": "t", "url": "https://example.com/hook"},
            -32003,
            "Push Notification",
        ),
        (
            "SendMessage",
            {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"data": {"a": 1}}]}},
            -32005,
            "only text parts",
        ),
        (
            "SendMessage",
            {
                "message": {
                    "messageId": "m",
                    "role": "ROLE_USER",
                    "parts": [{"text": "hi"}],
                    "metadata": {"max_iterations": 0},
                }
            },
            -32602,
            "max_iterations",
        ),
    ],
)
async def test_json_rpc_errors(
    a2a_gateway: GatewayServer,
    http: httpx.AsyncClient,
    method: str,
    params: dict[str, Any],
    code: int,
    says: str,
) -> None:
    body = {"jsonrpc": "2.0", "id": "1", "method": method, "params": params}
    response = await http.post(f"{a2a_gateway.url}/a2a", json=body, headers={"A2A-Version": "1.0"})
    assert response.status_code == 200
    error = response.json()["error"]
    assert error["code"] == code, error
    assert says in error["message"]
