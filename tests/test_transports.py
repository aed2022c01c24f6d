"""The Transport contract on the real servers: one test class, run on Kafka and on NATS.

Every test gets topics, streams, subjects and a consumer group of its own (a uuid suffix),
so tests never see each other's messages.
"""

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from temporal_executor.bus.errors import DeadLetter, DeadLetterReason
from temporal_executor.bus.kafka.transport import KafkaTransport
from temporal_executor.bus.nats.transport import NatsTransport
from temporal_executor.bus.transport import Delivery, InboundMessage, MessageTooLarge, Transport
from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import BusSettings, ContentMode
from temporal_executor.schemas.task import BusName

TIMEOUT = 10.0  # for what must arrive; what must not arrive is given QUIET seconds
QUIET = 0.5


def unique_settings(bus: BusName, address: str, mode: ContentMode = "binary") -> BusSettings:
    suffix = uuid.uuid4().hex[:8]
    settings = BusSettings(default=bus, content_mode=mode)
    kafka = settings.kafka
    kafka.bootstrap_servers = address
    kafka.consumer_group = f"test-{suffix}"
    kafka.fetch_max_wait_ms = 20
    kafka.commit_interval_ms = 50
    # The broker holds a group join for about half the session timeout.
    kafka.session_timeout_ms, kafka.heartbeat_interval_ms = 1000, 250
    for field in type(kafka.topics).model_fields:
        setattr(kafka.topics, field, f"{getattr(kafka.topics, field)}.{suffix}")
    nats = settings.nats
    nats.url = address
    nats.durable = f"test-{suffix}"
    for field in type(nats.subjects).model_fields:
        setattr(nats.subjects, field, f"{suffix}.{getattr(nats.subjects, field)}")
        setattr(nats.streams, field, f"{getattr(nats.streams, field)}_{suffix.upper()}")
    return settings


def make_transport(bus: BusName, settings: BusSettings, max_in_flight: int = 16) -> Transport:
    if bus == "kafka":
        return KafkaTransport(settings, max_in_flight=max_in_flight, connect_timeout_seconds=5)
    return NatsTransport(settings, max_in_flight=max_in_flight, connect_timeout_seconds=5)


def event(task_id: str, n: int, **data: Any) -> CloudEvent:
    return CloudEvent(
        id=f"{task_id}/{n}",
        source="tests",
        type="agent.execution.requested",
        data={"task_id": task_id, "n": n, **data},
        extensions={"taskid": task_id, "sequence": str(n)},
    )


def same_event(decoded: CloudEvent, sent: CloudEvent) -> bool:
    """Equal but for `partitionkey`, which the Kafka binding adds from the message key."""
    extensions = {k: v for k, v in decoded.extensions.items() if k != "partitionkey"}
    return decoded.model_copy(update={"extensions": extensions}) == sent


class Inbox:
    """`consume()` pumped into a queue, so a test can wait for deliveries with timeouts."""

    def __init__(self, transport: Transport) -> None:
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._pump = asyncio.create_task(self._run(transport.consume()))

    async def _run(self, deliveries: AsyncIterator[Delivery]) -> None:
        async for delivery in deliveries:
            self._queue.put_nowait(delivery)

    async def take(self, n: int) -> list[Delivery]:
        return [await asyncio.wait_for(self._queue.get(), TIMEOUT) for _ in range(n)]

    async def quiet(self) -> bool:
        """True if nothing more arrives within QUIET seconds."""
        try:
            await asyncio.wait_for(self._queue.get(), QUIET)
        except TimeoutError:
            return True
        return False

    async def until_quiet(self) -> list[Delivery]:
        """Everything that arrives until QUIET seconds pass without (at least one)."""
        received = await self.take(1)
        while True:
            try:
                received.append(await asyncio.wait_for(self._queue.get(), QUIET))
            except TimeoutError:
                return received

    async def close(self) -> None:
        self._pump.cancel()
        await asyncio.gather(self._pump, return_exceptions=True)


class Opened:
    """What a test opens, closed at teardown even when the test fails first."""

    def __init__(self, bus: BusName) -> None:
        self.bus = bus
        self._transports: list[Transport] = []
        self._inboxes: list[Inbox] = []

    async def transport(self, settings: BusSettings, max_in_flight: int = 16) -> Transport:
        transport = make_transport(self.bus, settings, max_in_flight)
        self._transports.append(transport)
        await transport.start()
        return transport

    def inbox(self, transport: Transport) -> Inbox:
        inbox = Inbox(transport)
        self._inboxes.append(inbox)
        return inbox

    async def close(self) -> None:
        for inbox in self._inboxes:
            await inbox.close()
        for transport in self._transports:
            await transport.close()  # again is fine


async def next_message(watch: AsyncIterator[InboundMessage]) -> InboundMessage:
    return await asyncio.wait_for(anext(watch), TIMEOUT)


@pytest.fixture(
    params=[
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("nats", marks=pytest.mark.nats),
    ]
)
def bus(request: pytest.FixtureRequest) -> BusName:
    name: BusName = request.param
    return name


@pytest.fixture
def settings(bus: BusName, request: pytest.FixtureRequest) -> BusSettings:
    address: str = request.getfixturevalue("kafka_bootstrap" if bus == "kafka" else "nats_url")
    return unique_settings(bus, address)


@pytest.fixture
async def opened(bus: BusName) -> AsyncIterator[Opened]:
    opened = Opened(bus)
    yield opened
    await opened.close()


@pytest.fixture
async def transport(opened: Opened, settings: BusSettings) -> Transport:
    return await opened.transport(settings)


class TestTransport:
    async def test_publishes_binary_and_structured_and_consumes_both(
        self, bus: BusName, settings: BusSettings, opened: Opened, transport: Transport
    ) -> None:
        structured_mode = settings.model_copy(update={"content_mode": "structured"})
        structured = await opened.transport(structured_mode)
        sent = [event("t-modes", 1), event("t-modes", 2)]
        await transport.publish(transport.requests_destination("t-modes"), sent[0])
        await structured.publish(structured.requests_destination("t-modes"), sent[1])

        binary, whole = [d.message for d in await opened.inbox(transport).take(2)]

        assert binary.header("ce_id" if bus == "kafka" else "ce-id") == b"t-modes/1"
        assert whole.header("content-type") == b"application/cloudevents+json"
        assert json.loads(whole.value)["id"] == "t-modes/2"
        assert same_event(transport.decode(binary), sent[0])
        assert same_event(transport.decode(whole), sent[1])
        if bus == "kafka":
            assert binary.key == whole.key == b"t-modes"
            assert binary.partition is not None
            assert binary.offset is not None
        else:
            assert binary.source == transport.requests_destination("t-modes")

    async def test_the_deltas_destination_keeps_its_events_briefly(
        self, bus: BusName, settings: BusSettings, opened: Opened
    ) -> None:
        settings.deltas_retention_seconds = 120
        await opened.transport(settings)  # creates the topics or streams

        if bus == "nats":
            nc = await nats.connect(settings.nats.url)
            try:
                js = nc.jetstream()
                deltas = await js.stream_info(settings.nats.streams.deltas)
                events = await js.stream_info(settings.nats.streams.events)
            finally:
                await nc.close()
            assert deltas.config.max_age == 120
            assert not events.config.max_age  # the durable record: kept (0 is no limit)
        else:
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
            await admin.start()
            try:
                topics = settings.kafka.topics
                [response] = await admin.describe_configs(
                    [
                        ConfigResource(ConfigResourceType.TOPIC, topics.deltas),
                        ConfigResource(ConfigResourceType.TOPIC, topics.events),
                    ]
                )
            finally:
                await admin.close()
            retention = {
                resource[3]: {entry[0]: entry[1] for entry in resource[4]}.get("retention.ms")
                for resource in response.resources
            }
            assert retention[settings.kafka.topics.deltas] == "120000"
            assert retention[settings.kafka.topics.events] != "120000"

    async def test_hand_written_messages_in_either_mode_decode(
        self, bus: BusName, opened: Opened, transport: Transport
    ) -> None:
        destination = transport.requests_destination("t-hand")
        document = {"specversion": "1.0", "id": "h-1", "source": "cli", "type": "x", "data": {}}
        await transport.publish_raw(destination, b"t-hand", json.dumps(document).encode(), [])
        prefix = "ce_" if bus == "kafka" else "ce-"
        attributes = {"specversion": "1.0", "id": "h-2", "source": "cli", "type": "x"}
        headers = [(f"{prefix}{k}", v.encode()) for k, v in attributes.items()]
        await transport.publish_raw(destination, b"t-hand", b'{"a": [1]}', headers)

        deliveries = await opened.inbox(transport).take(2)
        structured, binary = [transport.decode(d.message) for d in deliveries]

        assert (structured.id, structured.data) == ("h-1", {})
        assert (binary.id, binary.data) == ("h-2", {"a": [1]})

    async def test_out_of_order_acks_commit_only_the_contiguous_prefix(
        self, bus: BusName, settings: BusSettings, opened: Opened, transport: Transport
    ) -> None:
        sent = [event("t-acks", n) for n in range(1, 5)]
        for each in sent:
            await transport.publish(transport.requests_destination("t-acks"), each)
        first = await opened.inbox(transport).take(4)
        assert [transport.decode(d.message).id for d in first] == [e.id for e in sent]

        for i in (3, 0, 1):  # acks 4, 1, 2; 3 stays unacked
            await first[i].ack()
        await transport.close()
        second = await opened.transport(settings)  # same group / durable consumer
        again = await opened.inbox(second).until_quiet()

        # 1 and 2 are done; 3 comes again. Kafka commits offsets, so 4, past the gap,
        # comes again too; JetStream acks each message, so it does not.
        expected = ["t-acks/3", "t-acks/4"] if bus == "kafka" else ["t-acks/3"]
        assert [second.decode(d.message).id for d in again] == expected

    async def test_at_most_max_in_flight_unacked(
        self, settings: BusSettings, opened: Opened
    ) -> None:
        bounded = await opened.transport(settings, max_in_flight=2)
        for n in range(1, 4):
            await bounded.publish(bounded.requests_destination("t-bound"), event("t-bound", n))
        inbox = opened.inbox(bounded)

        held = await inbox.take(2)
        assert await inbox.quiet()
        await held[0].ack()
        (third,) = await inbox.take(1)

        assert bounded.decode(third.message).id == "t-bound/3"

    async def test_dead_letter_keeps_the_message_and_adds_headers(
        self, bus: BusName, opened: Opened, transport: Transport
    ) -> None:
        original = [("x-origin", b"test"), ("x-attempt", b"1")]
        value = b"\x00 not a CloudEvent"
        await transport.publish_raw(
            transport.requests_destination("t-dlq"), b"k-1", value, original
        )
        (delivery,) = await opened.inbox(transport).take(1)
        with pytest.raises(DeadLetter) as unreadable:
            transport.decode(delivery.message)
        reason = unreadable.value.reason
        assert reason == DeadLetterReason.INVALID_CLOUDEVENT

        async with transport.watch(transport.dead_letter_destination(None), from_start=True) as dlq:
            await transport.dead_letter(delivery.message, reason, "line one\nline two")
            dead = await next_message(dlq)
        await delivery.ack()

        assert dead.value == value
        assert dead.headers[: len(original)] == tuple(original)
        assert dead.header("dlq_reason") == reason.encode()
        assert dead.header("dlq_error") == b"line one line two"
        assert dead.header("dlq_source") == delivery.message.source.encode()
        if bus == "kafka":
            assert dead.key == b"k-1"
            assert dead.header("dlq_partition") == str(delivery.message.partition).encode()
            assert dead.header("dlq_offset") == str(delivery.message.offset).encode()
        else:
            assert dead.source == transport.dead_letter_destination(reason)

    async def test_watch_from_start_and_from_end(self, transport: Transport) -> None:
        everything = transport.events_destination(None)
        before, after = event("t-watch", 1), event("t-watch", 2)
        await transport.publish(transport.events_destination("t-watch"), before)

        async with transport.watch(everything, from_start=True) as from_start:
            assert same_event(transport.decode(await next_message(from_start)), before)
        async with transport.watch(everything, from_start=False) as from_end:
            # Ready once entered: published right after, it is seen; what came before is not.
            await transport.publish(transport.events_destination("t-watch"), after)
            assert same_event(transport.decode(await next_message(from_end)), after)

    async def test_publish_over_the_size_limit_is_refused(
        self, settings: BusSettings, opened: Opened
    ) -> None:
        small = await opened.transport(settings.model_copy(update={"max_message_bytes": 1024}))

        with pytest.raises(MessageTooLarge, match="max_message_bytes"):
            await small.publish(small.events_destination("t-big"), event("t-big", 1, x="y" * 2000))

    async def test_close_ends_consume(self, transport: Transport) -> None:
        deliveries = transport.consume()
        ended = asyncio.create_task(anext(deliveries, None))
        await asyncio.sleep(0)

        await transport.close()

        assert await asyncio.wait_for(ended, TIMEOUT) is None


@pytest.mark.nats
async def test_nats_consumer_carries_on_after_a_server_restart(tmp_path: Path) -> None:
    # A server of its own, to restart; JetStream keeps its streams in the data directory.
    # (Not run on the Kafka broker: its in-memory storage forgets the topics on restart.)
    env = {name: value for name, value in os.environ.items() if name != "NATS_URL"}
    async with EmbeddedStack(("nats",), data_dir=tmp_path, env=env) as stack:
        opened = Opened("nats")
        try:
            transport = await opened.transport(unique_settings("nats", stack.nats_url))
            destination = transport.requests_destination("t-restart")
            inbox = opened.inbox(transport)
            await transport.publish(destination, event("t-restart", 1))
            (before,) = await inbox.take(1)
            await before.ack()

            await stack.stop_server("nats")
            await asyncio.sleep(QUIET)  # the fetch loops fail meanwhile, and keep going
            await stack.start_server("nats")
            await transport.publish(destination, event("t-restart", 2))  # once reconnected
            (after,) = await inbox.take(1)
            await after.ack()
            started = time.monotonic()
            await transport.close()

            assert transport.decode(after.message).id == "t-restart/2"
            assert time.monotonic() - started < 2
        finally:
            await opened.close()
