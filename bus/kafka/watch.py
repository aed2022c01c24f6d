"""Reading a Kafka topic without a consumer group: every partition, from the start or the end."""

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError

from temporal_executor.bus.errors import TransportError
from temporal_executor.bus.transport import InboundMessage, Watch

log = logging.getLogger(__name__)

POLL_MS = 200
METADATA_ATTEMPTS = 20


def inbound(record: Any) -> InboundMessage:
    """An aiokafka `ConsumerRecord` as the rest of the code sees it."""
    topic: str = record.topic
    key: bytes | None = record.key
    value: bytes | None = record.value
    headers: tuple[tuple[str, bytes], ...] = tuple(record.headers or ())
    partition: int = record.partition
    offset: int = record.offset
    return InboundMessage(
        source=topic,
        key=key,
        value=value or b"",  # a tombstone has no value
        headers=headers,
        partition=partition,
        offset=offset,
    )


class KafkaWatch(Watch):
    def __init__(
        self,
        client_kwargs: dict[str, Any],
        topic: str,
        *,
        from_start: bool,
        fetch_max_wait_ms: int,
        on_close: Callable[[Watch], None],
    ) -> None:
        self._client_kwargs = client_kwargs
        self._topic = topic
        self._from_start = from_start
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._on_close = on_close
        self._consumer: Any = None
        self._buffer: deque[InboundMessage] = deque()
        # Held around each poll, so closing waits for it rather than stopping the consumer
        # under a running `getmany`.
        self._polling = asyncio.Lock()

    async def _start(self) -> None:
        consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            **self._client_kwargs,
        )
        self._consumer = consumer
        try:
            await consumer.start()
            partitions = await self._partitions(consumer)
            consumer.assign(partitions)
            if self._from_start:
                await consumer.seek_to_beginning(*partitions)
            else:
                await consumer.seek_to_end(*partitions)
            # Seeking only requests an offset reset; asking for the position waits for it,
            # so "the end" is the end now, not whenever the first fetch happens.
            for partition in partitions:
                await consumer.position(partition)
        except BaseException as exc:
            await self.aclose()
            if isinstance(exc, KafkaError):
                msg = f"cannot watch Kafka topic {self._topic!r}: {exc}"
                raise TransportError(msg) from exc
            raise

    async def _partitions(self, consumer: Any) -> list[Any]:
        for _ in range(METADATA_ATTEMPTS):
            await consumer.topics()  # refreshes metadata
            found: set[int] | None = consumer.partitions_for_topic(self._topic)
            if found:
                return [TopicPartition(self._topic, p) for p in sorted(found)]
            await asyncio.sleep(0.1)
        msg = f"Kafka topic {self._topic!r} does not exist"
        raise TransportError(msg)

    async def _next(self) -> InboundMessage | None:
        while not self._buffer:
            async with self._polling:
                if self._closed:
                    return None
                try:
                    batches: dict[Any, list[Any]] = await self._consumer.getmany(timeout_ms=POLL_MS)
                except ConsumerStoppedError:
                    return None
                except KafkaError as exc:
                    log.warning("watching %s: %s; retrying", self._topic, exc)
                    await asyncio.sleep(POLL_MS / 1000)
                    continue
            for records in batches.values():
                self._buffer.extend(inbound(record) for record in records)
        return self._buffer.popleft()

    async def _close(self) -> None:
        self._on_close(self)
        async with self._polling:
            if self._consumer is not None:
                await self._consumer.stop()
