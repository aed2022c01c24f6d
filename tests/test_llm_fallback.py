"""Provider fallbacks, end to end: a provider that stays down after all its attempts hands
the turn to the next of its `fallbacks`; one that refuses the request does not."""

from collections.abc import AsyncIterator

import pytest
from temporalio.client import Client

from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import FallbackTarget, ProviderSettings, ScriptedTurn
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from temporal_executor.schemas.events import LlmDelta
from tests.harness import (
    DeltaWatcher,
    ServiceHarness,
    data,
    new_task_id,
    service_settings,
    types,
)

DOWN = ScriptedTurn(error="unavailable")


def scripted(
    name: str, fallbacks: list[FallbackTarget], **scripts: ScriptedTurn
) -> ProviderSettings:
    return ProviderSettings(
        name=name,
        kind="scripted",
        scripts={model: [turn] for model, turn in scripts.items()},
        fallbacks=fallbacks,
    )


@pytest.fixture(scope="module")
async def service(
    embedded_stack: EmbeddedStack,
    temporal_client: Client,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ServiceHarness]:
    settings = service_settings(
        embedded_stack,
        tmp_path_factory.mktemp("notes"),
    )
    settings.llm.providers += [
        # Down on every attempt (5xx), rate limited on every attempt, or refusing the key.
        scripted(
            "primary",
            [
                FallbackTarget(provider="also-down"),
                FallbackTarget(provider="backup", model="spare"),
            ],
            down=DOWN,
            busy=ScriptedTurn(error="rate_limited", retry_after=0.2),
            locked=ScriptedTurn(error="authentication"),
        ),
        scripted("also-down", [], down=DOWN, busy=DOWN, locked=DOWN),
        scripted("backup", [], spare=ScriptedTurn(text="backup answered: {user_message}")),
        scripted("lonely", [FallbackTarget(provider="also-down")], down=DOWN),
    ]
    harness = ServiceHarness(settings, temporal_client)
    await harness.start()
    yield harness
    await harness.stop()


async def run_task(
    service: ServiceHarness, provider: str, model: str
) -> tuple[str, list[CloudEvent]]:
    task_id = new_task_id(provider)
    await service.producers["nats"].request(
        task_id, model_config={"provider": provider, "model": model}, tools=[]
    )
    return task_id, await service.watchers["nats"].wait_for_end(task_id)


@pytest.mark.parametrize("model", ["down", "busy"])
async def test_a_provider_that_stays_down_falls_back_in_order(
    service: ServiceHarness, model: str
) -> None:
    task_id, events = await run_task(service, "primary", model)

    assert types(events) == [
        EventType.EXECUTION_STARTED,
        EventType.LLM_RESPONDED,
        EventType.EXECUTION_COMPLETED,
    ]
    # The task is the primary's; the reply says who gave it.
    assert data(events[0])["model_config"]["provider"] == "primary"
    responded = data(events[1])
    assert (responded["provider"], responded["model"]) == ("backup", "spare")
    assert data(events[2])["final_message"] == f"backup answered: hello from {task_id}"
    # Each provider had all its attempts (llm_max_attempts is 2 here), in the fallback order.
    history = await service.client.get_workflow_handle(workflow_id_for(task_id)).fetch_history()
    llm_calls = {
        e.event_id
        for e in history.events
        if e.activity_task_scheduled_event_attributes.activity_type.name == "call_llm"
    }
    last_attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.activity_task_started_event_attributes.scheduled_event_id in llm_calls
    ]
    assert last_attempts == [2, 2, 1]


async def test_a_refusal_does_not_fall_back(service: ServiceHarness) -> None:
    _, events = await run_task(service, "primary", "locked")

    assert types(events) == [EventType.EXECUTION_STARTED, EventType.EXECUTION_FAILED]
    assert data(events[-1])["error"]["type"] == "authentication_failed"


async def test_when_every_fallback_is_down_the_task_fails_with_the_last_error(
    service: ServiceHarness,
) -> None:
    _, events = await run_task(service, "lonely", "down")

    assert types(events) == [EventType.EXECUTION_STARTED, EventType.EXECUTION_FAILED]
    error = data(events[-1])["error"]
    assert error["type"] == "provider_unavailable"
    assert "also-down" in error["message"]


def test_a_provider_cannot_fall_back_on_itself() -> None:
    with pytest.raises(ValueError, match="names itself in its fallbacks"):
        scripted("loop", [FallbackTarget(provider="loop")])


async def test_a_fallback_streams_as_a_later_attempt(service: ServiceHarness) -> None:
    task_id = new_task_id("fallback-stream")
    async with DeltaWatcher(service.producers["nats"].transport) as deltas:
        await service.producers["nats"].request(
            task_id, model_config={"provider": "primary", "model": "down"}, tools=[], stream=True
        )
        events = await service.watchers["nats"].wait_for_end(task_id)
        await deltas.wait_for_text(task_id, f"backup answered: hello from {task_id}")
        streamed = deltas.of(task_id)

    assert events[-1].type == EventType.EXECUTION_COMPLETED
    # Two attempts each on primary and also-down (llm_max_attempts), then backup's first:
    # its deltas do not reuse the ids of the attempts before it.
    assert {LlmDelta.model_validate(e.data).attempt for e in streamed} == {5}
