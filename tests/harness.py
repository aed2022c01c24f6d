"""A running service (bridge + worker, in this process) on the real servers, and what a
test needs to talk to it the way users do: publish CloudEvents, read events and dead letters."""

import asyncio
import contextlib
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client

from temporal_executor.bridge.service import run_bridge
from temporal_executor.bus.factory import create_transport
from temporal_executor.bus.transport import InboundMessage, Transport, Watch
from temporal_executor.dev.embedded_stack import EmbeddedStack, EmbeddedStackError
from temporal_executor.schemas.cloudevent import TASKID_EXTENSION, CloudEvent
from temporal_executor.schemas.config import ContentMode, ScriptedTurn, Settings
from temporal_executor.schemas.event_types import TERMINAL_TYPES, EventType
from temporal_executor.schemas.events import LlmDelta
from temporal_executor.schemas.task import BusName
from temporal_executor.worker.service import run_worker

BUSES: tuple[BusName, ...] = ("kafka", "nats")
EVENT_TIMEOUT = 30.0

# Scripts of the scripted provider used by the end-to-end tests (model name -> turns).
SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "one-turn": [{"text": "done: {user_message}"}],
    "calculate": [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6 * 7"}}]},
        {"text": "the answer is {last_tool_result}"},
    ],
    "note": [
        {
            "tool_calls": [
                {"name": "save_note", "arguments": {"title": "t", "text": "{user_message}"}}
            ]
        },
        {"text": "note result: {last_tool_result}"},
    ],
    # Makes the same mistake until the task fails (`executor.max_tool_errors`, 3).
    "bad-arguments": [{"tool_calls": [{"name": "calculator", "arguments": {"formula": "1 + 1"}}]}]
    * 3
    + [{"text": "unreachable"}],
    "endless-tools": [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1 + 1"}}]}
    ]
    * 10,
    "unauthorised": [{"error": "authentication"}],
    # Its first attempt fails, the second answers: deltas of attempt 2 only.
    "flaky": [{"text": "steady words after a retry", "error": "unavailable", "error_attempts": 1}],
}


def service_settings(
    stack: EmbeddedStack,
    notes_dir: str | Path,
    *,
    approval_timeout_seconds: float = 12,
    name: str | None = None,
) -> Settings:
    """Settings for the servers of `stack`, with names of their own, so services in one
    session never share a queue, a topic, a stream or a consumer group."""
    # A stack may run only some servers (the benchmark's, one bus at a time); the others
    # get an address where nothing listens.
    temporal_address = stack.temporal_address
    kafka_bootstrap = _address_or(lambda: stack.kafka_bootstrap, "127.0.0.1:9")
    nats_url = _address_or(lambda: stack.nats_url, "nats://127.0.0.1:9")
    suffix = name or uuid.uuid4().hex[:8]
    settings = Settings()
    settings.temporal.host_port = temporal_address
    settings.temporal.task_queue = f"test-{suffix}"
    kafka = settings.bus.kafka
    kafka.bootstrap_servers = kafka_bootstrap
    kafka.consumer_group = f"bridge-{suffix}"
    for field in type(kafka.topics).model_fields:
        setattr(kafka.topics, field, f"{getattr(kafka.topics, field)}.{suffix}")
    nats = settings.bus.nats
    nats.url = nats_url
    nats.durable = f"bridge-{suffix}"
    for field in type(nats.subjects).model_fields:
        setattr(nats.subjects, field, f"{suffix}.{getattr(nats.subjects, field)}")
        setattr(nats.streams, field, f"{getattr(nats.streams, field)}_{suffix.upper()}")
    # Small, so a test can send a larger message through a producer with the default limit.
    settings.bus.max_message_bytes = 64 * 1024
    settings.executor.max_result_bytes = 16 * 1024
    # The local broker answers a group join only after half the session timeout.
    settings.bus.kafka.session_timeout_ms = 2000
    settings.bus.kafka.heartbeat_interval_ms = 500
    settings.bridge.retry_initial_seconds = 0.1
    settings.bridge.retry_max_seconds = 1
    settings.executor.approval_timeout_seconds = approval_timeout_seconds
    settings.executor.max_iterations = 4
    settings.executor.llm_max_attempts = 2
    settings.executor.tool_max_attempts = 2
    scripted = settings.llm.provider("scripted")
    assert scripted is not None
    scripted.scripts = {
        model: [ScriptedTurn.model_validate(turn) for turn in turns]
        for model, turns in SCRIPTS.items()
    }
    note_tool = next(tool for tool in settings.tools if tool.name == "save_note")
    note_tool.options = {"directory": str(notes_dir)}
    return settings


def _address_or(address: Callable[[], str], unreachable: str) -> str:
    try:
        return address()
    except EmbeddedStackError:
        return unreachable


class BusWatcher:
    """Reads every event, approval request and dead letter on one bus, sorted by task."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._raw: dict[str, list[InboundMessage]] = defaultdict(list)
        self.dead_letters: list[InboundMessage] = []
        self._changed = asyncio.Condition()
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        t = self.transport
        self._readers = [
            asyncio.create_task(self._read(t.watch(t.events_destination(None), from_start=False))),
            asyncio.create_task(
                self._read(t.watch(t.approvals_destination(None), from_start=False))
            ),
            asyncio.create_task(
                self._read(t.watch(t.dead_letter_destination(None), from_start=False), dead=True)
            ),
        ]
        # Give each watcher its first fetch so nothing published from here on is missed.
        await asyncio.sleep(0.5)

    async def stop(self) -> None:
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    async def _read(self, messages: AsyncIterator[InboundMessage], *, dead: bool = False) -> None:
        async for message in messages:
            async with self._changed:
                if dead:
                    self.dead_letters.append(message)
                else:
                    event = self.transport.decode(message)
                    self._raw[event.extension(TASKID_EXTENSION) or "?"].append(message)
                self._changed.notify_all()

    def raw_events(self, task_id: str) -> list[InboundMessage]:
        return list(self._raw[task_id])

    def events(self, task_id: str) -> list[CloudEvent]:
        """The task's events, deduplicated by id (delivery is at least once), in order."""
        unique = {e.id: e for e in map(self.transport.decode, self._raw[task_id])}
        return sorted(unique.values(), key=lambda e: int(e.extension("sequence") or 0))

    def approval_requests(self, task_id: str) -> list[CloudEvent]:
        approvals = self.transport.approvals_destination(task_id)
        return [self.transport.decode(m) for m in self._raw[task_id] if m.source == approvals]

    async def wait_for(
        self, task_id: str, event_type: str, *, timeout: float = EVENT_TIMEOUT
    ) -> CloudEvent:
        async with asyncio.timeout(timeout), self._changed:
            while True:
                found = [e for e in self.events(task_id) if e.type == event_type]
                if found:
                    return found[0]
                await self._changed.wait()

    async def wait_until(
        self,
        task_id: str,
        condition: Callable[[list[CloudEvent]], bool],
        *,
        timeout: float = EVENT_TIMEOUT,
    ) -> list[CloudEvent]:
        """The task's events, once they meet `condition`."""
        async with asyncio.timeout(timeout), self._changed:
            while not condition(self.events(task_id)):
                await self._changed.wait()
        return self.events(task_id)

    async def wait_for_end(
        self, task_id: str, *, timeout: float = EVENT_TIMEOUT
    ) -> list[CloudEvent]:
        async with asyncio.timeout(timeout), self._changed:
            while not any(e.type in TERMINAL_TYPES for e in self.events(task_id)):
                await self._changed.wait()
        return self.events(task_id)

    async def wait_for_dead_letter(
        self, needle: bytes, *, field: str = "value", timeout: float = EVENT_TIMEOUT
    ) -> InboundMessage:
        """The dead letter whose value contains `needle`, or (field="id") whose event id is it."""
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for message in self.dead_letters:
                    if _matches(message, needle, field):
                        return message
                await self._changed.wait()


def _matches(message: InboundMessage, needle: bytes, field: str) -> bool:
    if field == "id":
        header_id = message.header("ce_id") or message.header("ce-id")
        if header_id is not None:
            return header_id == needle
        return (
            b'"id": "' + needle + b'"' in message.value
            or b'"id":"' + needle + b'"' in message.value
        )
    return needle in message.value


class Producer:
    """Publishes what a user's service would: request, cancel and approval-reply events."""

    def __init__(self, transports: dict[ContentMode, Transport]) -> None:
        self._transports = transports

    @property
    def transport(self) -> Transport:
        return self._transports["binary"]

    async def send(
        self,
        event_type: str,
        task_id: str,
        data: Any,
        *,
        mode: ContentMode = "binary",
        extensions: dict[str, str] | None = None,
        event_id: str | None = None,
    ) -> CloudEvent:
        transport = self._transports[mode]
        event = CloudEvent(
            id=event_id or str(uuid.uuid4()),
            source="tests",
            type=event_type,
            data=data,
            extensions={TASKID_EXTENSION: task_id, **(extensions or {})},
        )
        if event_type == EventType.APPROVAL_REPLIED:
            destination = transport.approval_replies_destination(task_id)
        else:
            destination = transport.requests_destination(task_id)
        await transport.publish(destination, event)
        return event

    async def request(
        self, task_id: str, model: str = "one-turn", *, mode: ContentMode = "binary", **fields: Any
    ) -> CloudEvent:
        data = {
            "task_id": task_id,
            "user_message": f"hello from {task_id}",
            "model_config": {"provider": "scripted", "model": model},
            **fields,
        }
        return await self.send(EventType.EXECUTION_REQUESTED, task_id, data, mode=mode)

    async def approve(
        self, task_id: str, approval_id: str, approved: bool = True, **fields: Any
    ) -> None:
        data = {"task_id": task_id, "approval_id": approval_id, "approved": approved, **fields}
        await self.send(EventType.APPROVAL_REPLIED, task_id, data)


class ServiceHarness:
    def __init__(
        self, settings: Settings, client: Client, *, bridge: bool = True, worker: bool = True
    ) -> None:
        self.settings = settings
        self.client = client
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._with_bridge = bridge
        self._with_worker = worker
        self.watchers: dict[BusName, BusWatcher] = {}
        self.producers: dict[BusName, Producer] = {}
        self._transports: list[Transport] = []

    async def start(self) -> None:
        for bus in BUSES:
            by_mode: dict[ContentMode, Transport] = {}
            for mode in ("binary", "structured"):
                bus_settings = self.settings.bus.model_copy(
                    update={"content_mode": mode, "max_message_bytes": 1024 * 1024}
                )
                transport = create_transport(bus, bus_settings)
                await transport.start()
                self._transports.append(transport)
                by_mode[mode] = transport
            self.producers[bus] = Producer(by_mode)
            self.watchers[bus] = BusWatcher(by_mode["binary"])
            await self.watchers[bus].start()
        if self._with_worker:
            self._tasks.append(
                asyncio.create_task(run_worker(self.settings, self._stop, self.client))
            )
        if self._with_bridge:
            self._tasks.append(
                asyncio.create_task(run_bridge(self.settings, self._stop, self.client))
            )

    async def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 20)
        for watcher in self.watchers.values():
            await watcher.stop()
        for transport in self._transports:
            await transport.close()


def new_task_id(prefix: str = "task") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def types(events: list[CloudEvent]) -> list[str]:
    return [e.type for e in events]


def data(event: CloudEvent) -> dict[str, Any]:
    """The data of an event of ours: always a JSON object."""
    assert isinstance(event.data, dict)
    return event.data


# The event types of a task whose model calls one tool and then answers.
ONE_TOOL_CALL = [
    EventType.EXECUTION_STARTED,
    EventType.LLM_RESPONDED,
    EventType.TOOL_COMPLETED,
    EventType.LLM_RESPONDED,
    EventType.EXECUTION_COMPLETED,
]
# The same when that call needs an approval, and gets it.
ONE_APPROVED_TOOL_CALL = [
    *ONE_TOOL_CALL[:2],
    EventType.APPROVAL_REQUESTED,
    EventType.APPROVAL_RESOLVED,
    *ONE_TOOL_CALL[2:],
]


class ServiceProcess:
    """`temporal-executor bridge|worker` as a real process, to be killed with SIGKILL."""

    def __init__(self, role: str, config_path: Path) -> None:
        self.role = role
        self.config_path = config_path
        self.process: asyncio.subprocess.Process | None = None

    @staticmethod
    def write_config(settings: Settings, path: Path) -> Path:
        path.write_text(yaml.safe_dump(settings.model_dump(mode="json")), encoding="utf-8")
        return path

    async def start(self) -> None:
        log = self.config_path.with_suffix(f".{self.role}.log").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "temporal_executor",
            "--config",
            str(self.config_path),
            self.role,
            stdout=log,
            stderr=log,
        )
        log.close()

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    async def terminate(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.terminate()
        return await asyncio.wait_for(self.process.wait(), 30)


class DeltaWatcher:
    """Every `agent.llm.delta` on one bus, by task (use as `async with`)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._by_task: dict[str, list[CloudEvent]] = {}
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "DeltaWatcher":
        watch = self._transport.watch(self._transport.deltas_destination(None), from_start=False)
        await watch.start()
        self._reader = asyncio.create_task(self._read(watch))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._reader is not None
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _read(self, watch: Watch) -> None:
        try:
            async for message in watch:
                event = self._transport.decode(message)
                async with self._changed:
                    task = event.extension(TASKID_EXTENSION) or "?"
                    self._by_task.setdefault(task, []).append(event)
                    self._changed.notify_all()
        finally:
            await watch.aclose()

    def of(self, task_id: str) -> list[CloudEvent]:
        unique = {e.id: e for e in self._by_task.get(task_id, [])}
        return sorted(unique.values(), key=lambda e: (delta_of(e).attempt, delta_of(e).index))

    async def wait_for_text(
        self, task_id: str, text: str, *, attempt: int | None = None, timeout: float = EVENT_TIMEOUT
    ) -> None:
        async with asyncio.timeout(timeout), self._changed:
            while text not in streamed_text(self.of(task_id), attempt=attempt):
                await self._changed.wait()

    async def wait_for_any(self, task_id: str) -> None:
        async with asyncio.timeout(EVENT_TIMEOUT * 2), self._changed:
            while not self.of(task_id):
                await self._changed.wait()


def delta_of(event: CloudEvent) -> LlmDelta:
    return LlmDelta.model_validate(event.data)


def streamed_text(deltas: list[CloudEvent], *, attempt: int | None = None) -> str:
    return "".join(
        delta_of(e).text for e in deltas if attempt is None or delta_of(e).attempt == attempt
    )
