"""Streams through the gateway: past events from the task, live ones from one shared bus
subscription per gateway process, deltas when asked, `Last-Event-ID` resume exact."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from temporal_executor.bus.transport import Transport
from temporal_executor.gateway import GatewayServer
from temporal_executor.gateway._streams import LLM_DELTA, deltas_destination
from temporal_executor.schemas.cloudevent import TASKID_EXTENSION, TRACEPARENT_EXTENSION, CloudEvent
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from temporal_executor.schemas.requests import ExecutionRequested
from temporal_executor.schemas.task import BusName
from tests.harness import BUSES, ServiceHarness, new_task_id
from tests.test_gateway import TIMEOUT, execute_body, gateway_settings, sse, wait_for_state


@contextlib.asynccontextmanager
async def gateway_on(service: ServiceHarness, bus: BusName) -> AsyncIterator[GatewayServer]:
    server = GatewayServer(gateway_settings(service, bus), service.client)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def delta(task_id: str, iteration: int, attempt: int, index: int, text: str) -> CloudEvent:
    workflow_id = workflow_id_for(task_id)
    return CloudEvent(
        id=f"{workflow_id}/delta/{iteration}/{attempt}/{index}",
        source="tests",
        type=LLM_DELTA,
        data={
            "task_id": task_id,
            "iteration": iteration,
            "attempt": attempt,
            "index": index,
            "text": text,
        },
        extensions={
            TASKID_EXTENSION: task_id,
            TRACEPARENT_EXTENSION: "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
        },
    )


async def publish_deltas(
    transport: Transport, task_id: str, *fragments: tuple[int, int, str]
) -> None:
    """`(iteration, attempt, text)` fragments, indexed per attempt, as the LLM activity does."""
    index: dict[tuple[int, int], int] = {}
    destination = deltas_destination(transport).replace(">", task_id)
    for iteration, attempt, text in fragments:
        at = index.get((iteration, attempt), 0)
        index[(iteration, attempt)] = at + 1
        await transport.publish(destination, delta(task_id, iteration, attempt, at, text))


async def until(holds: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while True:
            if holds():
                return
            await asyncio.sleep(0.05)


async def wait_for_subscriptions(server: GatewayServer, count: int) -> None:
    await until(lambda: server.stream_subscriptions >= count)


async def started_waiting(http: httpx.AsyncClient, model: str = "note") -> tuple[str, str]:
    """A task waiting for an approval: its id and the approval's."""
    task_id = new_task_id("stream")
    assert (
        await http.post("/api/v1/execute", json=execute_body(task_id, model))
    ).status_code == 202
    [pending] = (await wait_for_state(http, task_id, "awaiting_approval"))["pending_approvals"]
    return task_id, str(pending["approval_id"])


async def approve(http: httpx.AsyncClient, task_id: str) -> None:
    response = await http.post(
        f"/api/v1/approve/{workflow_id_for(task_id)}", json={"approved": True}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("bus", BUSES)
async def test_sse_with_deltas_on_one_shared_subscription(
    service: ServiceHarness, bus: BusName
) -> None:
    transport = service.producers[bus].transport
    async with (
        gateway_on(service, bus) as server,
        httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http,
    ):
        assert server.stream_subscriptions == 0
        task_id, _ = await started_waiting(http)
        path = f"/api/v1/events/{task_id}"
        with_deltas = asyncio.create_task(sse(http, f"{path}?deltas=true"))
        without = asyncio.create_task(sse(http, path))
        await wait_for_subscriptions(server, 2)  # the events and the deltas destinations
        fragments = [(2, 1, "note "), (2, 1, "res"), (2, 2, "note "), (2, 2, "result")]
        await publish_deltas(transport, task_id, *fragments)
        # Deltas of another task never reach this stream.
        await publish_deltas(transport, new_task_id("other"), (1, 1, "not yours"))
        await asyncio.sleep(1)  # let the gateway read them before the turn ends
        await approve(http, task_id)
        streamed = await asyncio.wait_for(with_deltas, TIMEOUT)
        plain = await asyncio.wait_for(without, TIMEOUT)
        assert server.stream_subscriptions == 2  # however many streams came and went

    deltas = [e for e in streamed if e["event"] == LLM_DELTA]
    assert [(d["data"]["data"]["attempt"], d["data"]["data"]["text"]) for d in deltas] == [
        (attempt, text) for _, attempt, text in fragments
    ]
    assert all("id" not in d for d in deltas)  # Last-Event-ID stays on the durable events
    assert deltas[0]["data"]["id"] == f"{workflow_id_for(task_id)}/delta/2/1/0"
    durable = [e for e in streamed if e["event"] != LLM_DELTA]
    assert [e["id"] for e in durable] == [e["id"] for e in plain]
    assert [e["event"] for e in plain] == [
        EventType.EXECUTION_STARTED,
        EventType.LLM_RESPONDED,
        EventType.APPROVAL_REQUESTED,
        EventType.APPROVAL_RESOLVED,
        EventType.TOOL_COMPLETED,
        EventType.LLM_RESPONDED,
        EventType.EXECUTION_COMPLETED,
    ]
    # The deltas came while the turn ran: after the approval, before the turn's response.
    kinds = [e["event"] for e in streamed]
    assert kinds.index(EventType.APPROVAL_REQUESTED) < kinds.index(LLM_DELTA)
    assert kinds.index(LLM_DELTA) < len(kinds) - kinds[::-1].index(EventType.LLM_RESPONDED)


@pytest.mark.parametrize("bus", BUSES)
async def test_many_subscribers_share_one_bus_subscription(
    service: ServiceHarness, bus: BusName
) -> None:
    async with (
        gateway_on(service, bus) as server,
        httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http,
    ):
        waiting = [await started_waiting(http) for _ in range(3)]
        streams = [
            asyncio.create_task(sse(http, f"/api/v1/events/{task_id}"))
            for task_id, _ in waiting
            for _ in range(8)  # 24 streams, 8 per task
        ]
        # A follower registers before the shared watch has opened (Kafka: a fetch away).
        await until(
            lambda: server.stream_followers == len(streams) and server.stream_subscriptions > 0
        )
        assert server.stream_subscriptions == 1
        for task_id, _ in waiting:
            await approve(http, task_id)
        found = await asyncio.wait_for(asyncio.gather(*streams), TIMEOUT)
        assert server.stream_subscriptions == 1
    for at, (task_id, _) in enumerate(waiting):
        for events in found[at * 8 : at * 8 + 8]:
            assert [e["data"]["taskid"] for e in events] == [task_id] * 7
            assert [int(e["data"]["sequence"]) for e in events] == list(range(1, 8))
            assert events[-1]["event"] == EventType.EXECUTION_COMPLETED


async def test_last_event_id_resume_mid_task_is_exact(service: ServiceHarness) -> None:
    async with (
        gateway_on(service, "nats") as server,
        httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http,
    ):
        task_id, _ = await started_waiting(http)
        path = f"/api/v1/events/{task_id}"
        first: list[dict[str, Any]] = []
        # A client that reads the first events and goes away while the task waits.
        async with http.stream("GET", path) as response:
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    first.append({"id": line.partition(":")[2].strip()})
                if len(first) == 2:
                    break
        resumed = asyncio.create_task(sse(http, path, headers={"Last-Event-ID": first[-1]["id"]}))
        await wait_for_subscriptions(server, 1)
        await approve(http, task_id)
        rest = await asyncio.wait_for(resumed, TIMEOUT)
    assert first[-1]["id"] == f"{workflow_id_for(task_id)}/2"
    # Past (3: the approval request) from the task, the rest live: no gap, no duplicate.
    assert [e["id"] for e in rest] == [f"{workflow_id_for(task_id)}/{n}" for n in range(3, 8)]


async def test_a_delta_id_as_last_event_id_replays_from_the_start(
    service: ServiceHarness,
) -> None:
    async with (
        gateway_on(service, "kafka") as server,
        httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http,
    ):
        task_id = new_task_id("delta-id")
        assert (await http.post("/api/v1/execute", json=execute_body(task_id))).status_code == 202
        await wait_for_state(http, task_id, "completed")
        headers = {"Last-Event-ID": f"{workflow_id_for(task_id)}/delta/1/1/2"}
        events = await sse(http, f"/api/v1/events/{task_id}", headers=headers)
    assert [int(e["data"]["sequence"]) for e in events] == [1, 2, 3]


@pytest.mark.skipif(
    "stream" not in ExecutionRequested.model_fields, reason="needs the bus side of streaming"
)
@pytest.mark.parametrize("bus", BUSES)
async def test_a_streaming_task_through_sse_end_to_end(
    service: ServiceHarness, bus: BusName
) -> None:
    async with (
        gateway_on(service, bus) as server,
        httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http,
    ):
        task_id = new_task_id("e2e")
        body = execute_body(task_id, "note", stream=True)
        assert (await http.post("/api/v1/execute", json=body)).status_code == 202
        await wait_for_state(http, task_id, "awaiting_approval")
        following = asyncio.create_task(sse(http, f"/api/v1/events/{task_id}?deltas=true"))
        await until(lambda: server.stream_followers == 2)
        await approve(http, task_id)
        streamed = await asyncio.wait_for(following, TIMEOUT)
    # The second turn's text came in fragments, then whole in its `agent.llm.responded`.
    fragments = [
        e["data"]["data"]
        for e in streamed
        if e["event"] == LLM_DELTA and e["data"]["data"]["iteration"] == 2
    ]
    [responded] = [
        e["data"]["data"]
        for e in streamed
        if e["event"] == EventType.LLM_RESPONDED and e["data"]["data"]["iteration"] == 2
    ]
    assert len(fragments) > 1
    # Deltas are best-effort (their own destination): the last may come after the task's end.
    assert responded["message"]["content"].startswith("".join(f["text"] for f in fragments))
    assert streamed[-1]["event"] == EventType.EXECUTION_COMPLETED
