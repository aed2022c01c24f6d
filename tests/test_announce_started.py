"""The bridge announces `agent.execution.started` as soon as Temporal accepted the start;
the workflow publishes the same event later. Subscribers see two copies of one event."""

from typing import Any

import pytest

from temporal_executor.schemas.event_types import EventType, workflow_id_for
from temporal_executor.schemas.requests import ExecutionRequested, ModelSelection
from temporal_executor.schemas.task import AgentTaskInput, BusName, EventRoute
from temporal_executor.tasks.announcer import started_announcement
from tests.harness import BUSES, ServiceHarness, new_task_id, types

ROUTE = EventRoute(
    bus="nats",
    events_destination="agent.events.t",
    approvals_destination="agent.approvals.t",
    approval_replies_destination="agent.approval-replies.t",
)


def _comparable(event: Any) -> tuple[Any, ...]:
    """Everything but `time`, which says when each copy was made."""
    return (event.id, event.source, event.type, event.subject, event.data, event.extensions)


@pytest.mark.parametrize("bus", BUSES)
async def test_started_is_announced_by_the_bridge_and_repeated_by_the_workflow(
    service: ServiceHarness, bus: BusName
) -> None:
    task_id = new_task_id()
    await service.producers[bus].request(task_id, "one-turn", metadata={"tenant": "acme"})
    watcher = service.watchers[bus]
    events = await watcher.wait_for_end(task_id)
    assert types(events) == [
        EventType.EXECUTION_STARTED,
        EventType.LLM_RESPONDED,
        EventType.EXECUTION_COMPLETED,
    ]
    copies = [
        e
        for e in map(watcher.transport.decode, watcher.raw_events(task_id))
        if e.type == EventType.EXECUTION_STARTED
    ]
    assert len(copies) == 2
    assert _comparable(copies[0]) == _comparable(copies[1])
    assert copies[0].id == f"{workflow_id_for(task_id)}/1"
    assert copies[0].data == {
        "task_id": task_id,
        "workflow_id": workflow_id_for(task_id),
        "model_config": {
            "provider": "scripted",
            "model": "one-turn",
            "temperature": None,
            "max_tokens": None,
        },
        "metadata": {"tenant": "acme"},
    }


@pytest.mark.parametrize("bus", BUSES)
async def test_a_request_without_model_config_is_announced_by_its_workflow_only(
    service: ServiceHarness, bus: BusName
) -> None:
    task_id = new_task_id()
    await service.producers[bus].send(
        EventType.EXECUTION_REQUESTED, task_id, {"task_id": task_id, "user_message": "hi"}
    )
    watcher = service.watchers[bus]
    # Config's default model (the demo script) waits for an approval: cancel it there.
    await watcher.wait_for(task_id, EventType.APPROVAL_REQUESTED)
    await service.producers[bus].send(EventType.CANCEL_REQUESTED, task_id, {"task_id": task_id})
    await watcher.wait_for_end(task_id)
    started = [
        e
        for e in map(watcher.transport.decode, watcher.raw_events(task_id))
        if e.type == EventType.EXECUTION_STARTED
    ]
    assert len(started) == 1


def test_a_continued_task_is_not_announced_again() -> None:
    request = ExecutionRequested(
        task_id="t", user_message="hi", llm=ModelSelection(provider="scripted", model="m")
    )
    assert started_announcement(AgentTaskInput(request=request, route=ROUTE)) is not None
    carried = AgentTaskInput(request=request, route=ROUTE, carried_sequence=7)
    assert started_announcement(carried) is None
