"""Streaming on the bus: `"stream": true` makes a task publish `agent.llm.delta` events on
their own destination, on both buses, while `agent.events` stays as it was; and a worker
killed mid-stream retries the turn as a new attempt, the task completing once."""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client

from temporal_executor.bus_client import describe, merged, print_until_done
from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.cloudevent import (
    SEQUENCE_EXTENSION,
    TASKID_EXTENSION,
    TRACEPARENT_EXTENSION,
    CloudEvent,
)
from temporal_executor.schemas.config import ScriptedTurn
from temporal_executor.schemas.event_types import TERMINAL_TYPES, EventType, workflow_id_for
from temporal_executor.schemas.events import LlmDelta
from temporal_executor.schemas.task import BusName
from tests.harness import (
    BUSES,
    DeltaWatcher,
    ServiceHarness,
    ServiceProcess,
    delta_of,
    new_task_id,
    service_settings,
    streamed_text,
    types,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def _stream_request(
    service: ServiceHarness, bus: BusName, task_id: str, model: str, **fields: object
) -> None:
    data = {
        "task_id": task_id,
        "user_message": f"hello from {task_id}",
        "model_config": {"provider": "scripted", "model": model},
        "stream": True,
        **fields,
    }
    await service.producers[bus].send(
        EventType.EXECUTION_REQUESTED,
        task_id,
        data,
        extensions={TRACEPARENT_EXTENSION: TRACEPARENT},
    )


@pytest.mark.parametrize("bus", BUSES)
async def test_a_streaming_task_publishes_deltas_on_their_own_destination(
    service: ServiceHarness, bus: BusName
) -> None:
    transport = service.producers[bus].transport
    task_id = new_task_id("stream")
    async with DeltaWatcher(transport) as deltas:
        await _stream_request(service, bus, task_id, "calculate")
        events = await service.watchers[bus].wait_for_end(task_id)
        final = [e for e in events if e.type == EventType.LLM_RESPONDED][-1]
        assert isinstance(final.data, dict)
        await deltas.wait_for_text(task_id, final.data["message"]["content"])
        streamed = deltas.of(task_id)

    # agent.events is as without streaming.
    assert types(events) == [
        EventType.EXECUTION_STARTED,
        EventType.LLM_RESPONDED,
        EventType.TOOL_COMPLETED,
        EventType.LLM_RESPONDED,
        EventType.EXECUTION_COMPLETED,
    ]
    workflow_id = workflow_id_for(task_id)
    for event in streamed:
        delta = delta_of(event)
        assert event.type == EventType.LLM_DELTA
        assert event.id == f"{workflow_id}/delta/{delta.iteration}/{delta.attempt}/{delta.index}"
        assert event.extension(TASKID_EXTENSION) == task_id
        assert event.extension(TRACEPARENT_EXTENSION) == TRACEPARENT
        assert event.extension(SEQUENCE_EXTENSION) is None
        assert (delta.task_id, delta.attempt) == (task_id, 1)
    # Turn 1 streamed its tool call's arguments, turn 2 its text.
    first = [delta_of(e) for e in streamed if delta_of(e).iteration == 1]
    second = [delta_of(e) for e in streamed if delta_of(e).iteration == 2]
    assert [d.index for d in first] == list(range(len(first)))
    arguments = "".join(d.tool_call.arguments for d in first if d.tool_call)
    assert json.loads(arguments) == {"expression": "6 * 7"}
    assert {d.tool_call.name for d in first if d.tool_call} == {"calculator"}
    assert "".join(d.text for d in second) == final.data["message"]["content"]
    # The destination: a topic of its own (Kafka), a subject per task (NATS).
    source = transport.deltas_destination(task_id)
    assert source != transport.events_destination(task_id)
    if bus == "nats":
        assert re.search(rf"agent\.deltas\.{task_id}$", source)


async def test_a_retried_call_streams_as_a_new_attempt(service: ServiceHarness) -> None:
    bus: BusName = "nats"
    task_id = new_task_id("stream-retry")
    async with DeltaWatcher(service.producers[bus].transport) as deltas:
        await _stream_request(service, bus, task_id, "flaky")
        events = await service.watchers[bus].wait_for_end(task_id)
        await deltas.wait_for_text(task_id, "steady words after a retry")
        streamed = deltas.of(task_id)

    assert events[-1].type == EventType.EXECUTION_COMPLETED
    # The first attempt failed before a word; the second streamed them all.
    assert {delta_of(e).attempt for e in streamed} == {2}


async def test_without_stream_there_are_no_deltas(service: ServiceHarness) -> None:
    bus: BusName = "kafka"
    task_id, streaming = new_task_id("no-stream"), new_task_id("stream-too")
    async with DeltaWatcher(service.producers[bus].transport) as deltas:
        await service.producers[bus].request(task_id)
        await _stream_request(service, bus, streaming, "one-turn")
        await service.watchers[bus].wait_for_end(task_id)
        await service.watchers[bus].wait_for_end(streaming)
        # Deltas of the task that streams arrive; none of the other.
        await deltas.wait_for_text(streaming, f"done: hello from {streaming}")
        assert deltas.of(task_id) == []


# -- a worker killed mid-stream ----------------------------------------------------------

# Streamed over ~10 s, so the kill lands mid-stream even on a loaded machine.
SLOW_TEXT = " ".join(f"word{i}" for i in range(24))


@pytest.fixture
async def bridge_only(
    embedded_stack: EmbeddedStack, temporal_client: Client, tmp_path: Path
) -> AsyncIterator[tuple[ServiceHarness, Path]]:
    settings = service_settings(embedded_stack, tmp_path / "notes", name=uuid.uuid4().hex[:8])
    settings.logging.format = "text"
    # The killed attempt is noticed this soon (its heartbeats stop); a loaded machine may
    # slow the next attempt, which the start-to-close timeout must not cut short.
    settings.executor.llm_heartbeat_timeout_seconds = 3
    settings.executor.llm_timeout_seconds = 30
    settings.executor.llm_max_attempts = 3
    scripted = settings.llm.provider("scripted")
    assert scripted is not None
    scripted.scripts["slow"] = [ScriptedTurn(text=SLOW_TEXT, chunk_delay_seconds=0.4)]
    harness = ServiceHarness(settings, temporal_client, bridge=True, worker=False)
    await harness.start()
    yield harness, ServiceProcess.write_config(settings, tmp_path / "config.yaml")
    await harness.stop()


@pytest.mark.parametrize("bus", BUSES)
async def test_worker_killed_mid_stream_the_turn_restreams_as_a_new_attempt(
    bridge_only: tuple[ServiceHarness, Path], bus: BusName
) -> None:
    harness, config = bridge_only
    worker = ServiceProcess("worker", config)
    await worker.start()
    task_id = new_task_id("stream-crash")
    try:
        async with DeltaWatcher(harness.producers[bus].transport) as deltas:
            await _stream_request(harness, bus, task_id, "slow")
            await deltas.wait_for_any(task_id)
            await worker.kill()
            await worker.start()
            events = await harness.watchers[bus].wait_for_end(task_id, timeout=90)
            await deltas.wait_for_text(task_id, SLOW_TEXT, attempt=2, timeout=60)
            streamed = deltas.of(task_id)
    finally:
        # Not checked: the exit code of a temporalio worker process at interpreter exit is
        # not this test's subject (it sometimes aborts there, after "worker stopped").
        await worker.terminate()
    assert types(events) == [
        EventType.EXECUTION_STARTED,
        EventType.LLM_RESPONDED,
        EventType.EXECUTION_COMPLETED,
    ], events[-1].data
    assert sum(e.type in TERMINAL_TYPES for e in events) == 1
    first = streamed_text(streamed, attempt=1)
    assert first
    assert SLOW_TEXT.startswith(first)
    assert first != SLOW_TEXT
    assert streamed_text(streamed, attempt=2) == SLOW_TEXT


# -- what `send --follow` prints -------------------------------------------------------


def _delta(iteration: int, attempt: int, index: int, text: str) -> CloudEvent:
    data = LlmDelta(task_id="t", iteration=iteration, attempt=attempt, index=index, text=text)
    return CloudEvent(
        id=f"agent-execution-t/delta/{iteration}/{attempt}/{index}",
        source="s",
        type=EventType.LLM_DELTA,
        data=data.model_dump(),
    )


def _event(event_type: str, sequence: int, **data: object) -> CloudEvent:
    return CloudEvent(
        id=f"agent-execution-t/{sequence}",
        source="s",
        type=event_type,
        data={"task_id": "t", **data},
        extensions={SEQUENCE_EXTENSION: str(sequence)},
    )


async def test_follow_prints_attempts_apart_and_skips_late_deltas() -> None:
    responded = _event(EventType.LLM_RESPONDED, 2, iteration=1, message={"content": "Hello world"})
    events = [
        _delta(1, 1, 0, "Hel"),
        _delta(1, 1, 0, "Hel"),  # redelivered: printed once
        _delta(1, 2, 0, "Hello "),
        _delta(1, 2, 1, "world"),
        responded,
        _delta(1, 2, 2, "late"),
        _event(EventType.EXECUTION_COMPLETED, 3, iterations=1, final_message="Hello world"),
    ]

    async def source() -> AsyncIterator[CloudEvent]:
        for event in events:
            yield event

    out = io.StringIO()
    terminal = await print_until_done(merged(source()), out)

    assert terminal is not None
    assert terminal.type == EventType.EXECUTION_COMPLETED
    assert out.getvalue().splitlines() == [
        "  Hel",
        "  (attempt 2: the text above is void)",
        "  Hello world",
        describe(responded),
        describe(events[-1]),
    ]


async def test_events_label_the_text_of_many_tasks_by_task() -> None:
    other = _delta(1, 1, 0, "Bonjour ").model_copy(
        update={
            "id": "agent-execution-u/delta/1/1/0",
            "data": {**_delta(1, 1, 0, "Bonjour ").data, "task_id": "u"},
        }
    )
    responded = _event(EventType.LLM_RESPONDED, 2, iteration=1, message={"content": "Hi there"})
    events = [_delta(1, 1, 0, "Hi "), other, _delta(1, 1, 1, "there"), responded]

    async def source() -> AsyncIterator[CloudEvent]:
        for event in events:
            yield event

    out = io.StringIO()
    await print_until_done(source(), out, stop_at_terminal=False, many_tasks=True)

    # Task t's line, interrupted by task u's, goes on on a line of its own.
    assert out.getvalue().splitlines() == [
        "  [t] Hi ",
        "  [u] Bonjour ",
        "  [t] there",
        describe(responded),
    ]
