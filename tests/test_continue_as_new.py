"""A task whose history would outgrow Temporal's limits continues as new and loses nothing."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.gateway import GatewayServer
from temporal_executor.schemas.config import ScriptedTurn
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from tests.harness import ServiceHarness, new_task_id, service_settings, types
from tests.test_gateway import TIMEOUT, gateway_settings, sse

TOOL_TURNS = 12


@pytest.fixture
async def small_history_service(
    embedded_stack: EmbeddedStack, temporal_client: Client, tmp_path: Path
) -> AsyncIterator[ServiceHarness]:
    settings = service_settings(
        embedded_stack,
        tmp_path,
    )
    settings.executor.continue_as_new_after_events = 100
    settings.executor.max_iterations = TOOL_TURNS + 1
    scripted = settings.llm.provider("scripted")
    assert scripted is not None
    scripted.scripts["long"] = [
        ScriptedTurn.model_validate(
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": f"{n} * 2"}}]}
        )
        for n in range(TOOL_TURNS)
    ] + [ScriptedTurn(text="results so far: {last_tool_result}")]
    harness = ServiceHarness(settings, temporal_client)
    await harness.start()
    yield harness
    await harness.stop()


async def test_long_task_continues_as_new_without_losing_messages(
    small_history_service: ServiceHarness,
) -> None:
    service = small_history_service
    task_id = new_task_id("long")
    await service.producers["nats"].request(task_id, "long")
    events = await service.watchers["nats"].wait_for_end(task_id, timeout=90)
    assert events[-1].type == EventType.EXECUTION_COMPLETED
    assert isinstance(events[-1].data, dict)
    # The scripted model picks its turn by counting assistant messages: had the new run
    # lost the conversation, it would have started the script over and never finished.
    assert events[-1].data["iterations"] == TOOL_TURNS + 1
    assert events[-1].data["final_message"] == f"results so far: {(TOOL_TURNS - 1) * 2}"
    assert types(events).count(EventType.TOOL_COMPLETED) == TOOL_TURNS
    assert types(events).count(EventType.EXECUTION_STARTED) == 1
    sequences = [int(e.extension("sequence") or 0) for e in events]
    assert sequences == list(range(1, len(events) + 1))
    runs = [
        w async for w in service.client.list_workflows(f'WorkflowId = "{workflow_id_for(task_id)}"')
    ]
    assert len(runs) >= 2, "the task should have continued as new at least once"


async def test_the_gateway_replays_every_run_of_a_continued_task(
    small_history_service: ServiceHarness,
) -> None:
    service = small_history_service
    task_id = new_task_id("long-sse")
    await service.producers["nats"].request(task_id, "long")
    on_bus = await service.watchers["nats"].wait_for_end(task_id, timeout=90)
    server = GatewayServer(gateway_settings(service, "nats"), service.client)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
            path = f"/api/v1/events/{task_id}"
            everything = await sse(http, path)
            middle = on_bus[len(on_bus) // 2].id
            rest = await sse(http, path, headers={"Last-Event-ID": middle})
    finally:
        await server.stop()
    # Every run's events from the task itself (the bus was not read from its start).
    assert [e["id"] for e in everything] == [e.id for e in on_bus]
    assert [e["id"] for e in rest] == [e.id for e in on_bus[len(on_bus) // 2 + 1 :]]
