"""Request published → `agent.execution.started` / `completed` received by a subscriber."""

import asyncio
import contextlib
import time
import uuid

from bench.load import request_event
from temporal_executor.bus.transport import InboundMessage, Transport
from temporal_executor.schemas.cloudevent import TASKID_EXTENSION
from temporal_executor.schemas.event_types import EventType

TIMEOUT = 120.0


class EventClock:
    """Watches a bus's events and notes when each task's started/completed arrived."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self.started: dict[str, float] = {}
        self.completed: dict[str, float] = {}
        self._done: dict[str, asyncio.Event] = {}
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> "EventClock":
        self._reader = asyncio.create_task(self._read())
        await self._ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        t = self._transport
        async with t.watch(t.events_destination(None), from_start=False) as messages:
            self._ready.set()
            async for message in messages:
                self._note(message, time.time())

    def _note(self, message: InboundMessage, received: float) -> None:
        event = self._transport.decode(message)
        task_id = event.extension(TASKID_EXTENSION) or ""
        if event.type == EventType.EXECUTION_STARTED:
            self.started.setdefault(task_id, received)
        elif event.type in (EventType.EXECUTION_COMPLETED, EventType.EXECUTION_FAILED):
            self.completed.setdefault(task_id, received)
            self._event(task_id).set()

    def _event(self, task_id: str) -> asyncio.Event:
        return self._done.setdefault(task_id, asyncio.Event())

    async def wait_done(self, task_id: str) -> None:
        await asyncio.wait_for(self._event(task_id).wait(), TIMEOUT)


Samples = tuple[list[float], list[float]]


def _samples(clock: EventClock, sent: dict[str, float]) -> Samples:
    started = [(clock.started[t] - s) * 1000 for t, s in sent.items() if t in clock.started]
    completed = [(clock.completed[t] - s) * 1000 for t, s in sent.items() if t in clock.completed]
    return started, completed


async def light_load(transport: Transport, clock: EventClock, k: int) -> Samples:
    """One request at a time, each after the previous one's task completed."""
    sent: dict[str, float] = {}
    prefix = f"l{uuid.uuid4().hex[:6]}"
    for i in range(k):
        task_id = f"{prefix}-{i}"
        event = request_event(task_id)
        sent[task_id] = time.time()
        await transport.publish(transport.requests_destination(task_id), event)
        await clock.wait_done(task_id)
    return _samples(clock, sent)


async def sustained(transport: Transport, clock: EventClock, rate: float, k: int) -> Samples:
    """`k` requests at a steady `rate` per second, then until all of them completed."""
    sent: dict[str, float] = {}
    prefix = f"s{uuid.uuid4().hex[:6]}"
    began = time.monotonic()
    publishes: list[asyncio.Task[None]] = []
    for i in range(k):
        delay = began + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task_id = f"{prefix}-{i}"
        sent[task_id] = time.time()
        destination = transport.requests_destination(task_id)
        publish = transport.publish(destination, request_event(task_id))
        publishes.append(asyncio.create_task(publish))
    await asyncio.gather(*publishes)
    for task_id in sent:
        await clock.wait_done(task_id)
    return _samples(clock, sent)
