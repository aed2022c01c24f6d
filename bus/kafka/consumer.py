"""The Kafka consume loop: a group consumer, out-of-order acks, batched commits, backpressure.

Deliveries may be handled concurrently and acked in any order; each partition's offset is
committed only up to its first unacked message (`_kafka_offsets`), in batches: at most every
`commit_interval_ms`, and whenever the consumer idles. At most `max_in_flight` deliveries
are unacked at once; when no room opens for a whole poll interval every partition is
paused, and the consumer keeps polling so it stays in its group. On a rebalance, revoked
partitions commit what is acked and are forgotten; a later ack of theirs is ignored and the
next owner handles the message again.
Broker errors are logged and retried with backoff; the loop ends only when stopped.
"""

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from temporal_executor.bus._common import Backoff, InFlight
from temporal_executor.bus.kafka.offsets import OffsetTracker, PartitionOffsets, TopicPartitionKey
from temporal_executor.bus.kafka.watch import inbound
from temporal_executor.bus.transport import InboundMessage
from temporal_executor.schemas.config import KafkaSettings
from temporal_executor.telemetry import metrics

log = logging.getLogger(__name__)

POLL_MS = 200


class KafkaDelivery:
    def __init__(
        self, message: InboundMessage, offsets: PartitionOffsets, loop: "KafkaConsumerLoop"
    ) -> None:
        self._message = message
        self._offsets = offsets
        self._loop = loop

    @property
    def message(self) -> InboundMessage:
        return self._message

    @property
    def stale(self) -> bool:
        """Its partition was revoked before it was handed out: the next owner has it."""
        return self._offsets.revoked

    async def ack(self) -> None:
        # Only bookkeeping here; the loop commits in batches.
        self._loop.ack(self._offsets, self._message.offset)

    async def keep_alive(self) -> None:
        """Nothing to do: Kafka does not redeliver while the consumer stays in its group."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, loop: "KafkaConsumerLoop") -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._loop.on_revoked({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        names = sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)
        log.info("kafka partitions assigned: %s", names)


class KafkaConsumerLoop:
    """Runs until `stop` is set, putting deliveries on `queue`; then commits and leaves."""

    def __init__(
        self,
        settings: KafkaSettings,
        client_kwargs: dict[str, Any],
        in_flight: InFlight,
        queue: "asyncio.Queue[KafkaDelivery | None]",
        stop: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._client_kwargs = client_kwargs
        self._in_flight = in_flight
        self._queue = queue
        self._stop = stop
        self._offsets = OffsetTracker()
        self._consumer: Any = None
        self._last_commit = 0.0

    def ack(self, offsets: PartitionOffsets, offset: int | None) -> None:
        if offset is not None and not offsets.revoked and offsets.ack(offset):
            self._in_flight.remove()

    async def run(self) -> None:
        consumer = await self._start_consumer()
        if consumer is None:
            return
        backoff = Backoff()
        try:
            while not self._stop.is_set():
                try:
                    await self._poll(consumer)
                    backoff.reset()
                except KafkaError as exc:
                    log.warning("kafka consumer: %s; retrying", exc)
                    await backoff.wait(self._stop)
                except Exception:
                    log.exception("kafka consumer: unexpected error; retrying")
                    await backoff.wait(self._stop)
            await self._commit(consumer)
        finally:
            self._consumer = None
            await consumer.stop()  # leaves the group, so the partitions move on at once
            self._in_flight.remove(self._offsets.revoke_all())

    async def _start_consumer(self) -> Any:
        topics = self._settings.topics
        backoff = Backoff()
        while not self._stop.is_set():
            consumer = AIOKafkaConsumer(
                group_id=self._settings.consumer_group,
                enable_auto_commit=False,
                # A new group starts at the beginning: requests sent before the bridge
                # first ran are not skipped.
                auto_offset_reset="earliest",
                fetch_max_wait_ms=self._settings.fetch_max_wait_ms,
                session_timeout_ms=self._settings.session_timeout_ms,
                heartbeat_interval_ms=self._settings.heartbeat_interval_ms,
                **self._client_kwargs,
            )
            consumer.subscribe(
                [topics.requests, topics.approval_replies], listener=_Rebalance(self)
            )
            try:
                await consumer.start()
            except KafkaError as exc:
                await consumer.stop()
                log.warning("kafka consumer cannot start (%s); retrying", exc)
                await backoff.wait(self._stop)
                continue
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer
            return consumer
        return None

    async def _poll(self, consumer: Any) -> None:
        room = await self._room(consumer)
        # Polls even when paused, to stay in the group (max_poll_interval_ms). Paused, it
        # returns at most one record, of a partition assigned since the pause; it is handed
        # out like any other, since aiokafka has moved past it.
        batches: dict[Any, list[Any]] = await consumer.getmany(
            timeout_ms=POLL_MS if room else 0, max_records=max(room, 1)
        )
        for tp, records in batches.items():
            offsets = self._offsets.partition((tp.topic, tp.partition))
            for record in records:
                offsets.delivered(record.offset)
                self._in_flight.add()
                self._queue.put_nowait(KafkaDelivery(inbound(record), offsets, self))
        due = time.monotonic() - self._last_commit >= self._settings.commit_interval_ms / 1000
        if due or not batches:
            await self._commit(consumer)
            self._record_lag(consumer)

    def _record_lag(self, consumer: Any) -> None:
        for tp in consumer.assignment():
            offsets = self._offsets.get((tp.topic, tp.partition))
            highwater = consumer.highwater(tp)
            if offsets is None or highwater is None or offsets.next_unfinished is None:
                continue  # nothing read from it yet: the lag is not known
            lag = max(highwater - offsets.next_unfinished, 0)
            metrics.KAFKA_CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)

    async def _room(self, consumer: Any) -> int:
        """How many more deliveries may go out; pauses every partition while none may."""
        room = self._in_flight.room
        # Pausing makes aiokafka drop what it prefetched for those partitions (in reference
        # cycles, kept until a full GC) and fetch it again on resume: under a burst that was
        # megabytes of record sets. Room usually opens within one RPC, so wait for it first.
        if room == 0 and await self._in_flight.wait_for_room(seconds=POLL_MS / 1000):
            room = self._in_flight.room
        if room == 0:
            consumer.pause(*consumer.assignment())
        elif paused := consumer.paused():
            consumer.resume(*paused)
        return room

    async def _commit(self, consumer: Any, keys: set[TopicPartitionKey] | None = None) -> None:
        self._last_commit = time.monotonic()
        assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        offsets = self._offsets.to_commit(assigned if keys is None else keys & assigned)
        if not offsets:
            return
        try:
            await consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced meanwhile; the new owner re-reads from the last commit,
            # and handling a message twice is harmless downstream.
            log.warning("kafka commit lost to a rebalance: %s", exc)
            return
        except KafkaError as exc:
            log.warning("kafka commit failed (%s); will retry", exc)
            return
        self._offsets.committed(offsets)

    async def on_revoked(self, keys: set[TopicPartitionKey]) -> None:
        if self._consumer is not None:
            await self._commit(self._consumer, keys)
        self._in_flight.remove(self._offsets.revoke(keys))
        for topic, partition in keys:
            with contextlib.suppress(KeyError):  # another member reports it now
                metrics.KAFKA_CONSUMER_LAG.remove(topic, str(partition))
        if keys:
            log.info("kafka partitions revoked: %s", sorted(f"{t}/{p}" for t, p in keys))
