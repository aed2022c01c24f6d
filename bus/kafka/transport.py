"""The Kafka transport (aiokafka). Nothing outside `bus/kafka/` imports aiokafka.

Topics per the contract's "Names" (`bus.kafka.topics`), created at `start()` when missing.
Publishing waits for `acks="all"`. Consuming (`consumer.py`) starts with the first
`consume()`, so a process that only publishes (the worker, the CLI) never joins the group.
"""

import asyncio
import functools
import logging
import os
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from temporal_executor.bus._base import BaseTransport
from temporal_executor.bus._common import InFlight
from temporal_executor.bus._tls import ssl_context
from temporal_executor.bus.codec import EncodedMessage, decode_kafka, encode_kafka
from temporal_executor.bus.errors import TransportConfigError, TransportError
from temporal_executor.bus.kafka.consumer import KafkaConsumerLoop, KafkaDelivery
from temporal_executor.bus.kafka.watch import KafkaWatch
from temporal_executor.bus.transport import InboundMessage, MessageTooLarge, Watch
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import BusSettings
from temporal_executor.schemas.task import BusName

log = logging.getLogger(__name__)

# No linger: a task publishes its events one after another, so waiting for more records
# only delays each one (5 ms cost ~6 ms per event on the embedded broker). Under load the
# producer still batches what accumulates while a request is in flight.
LINGER_MS = 0
TOPIC_ALREADY_EXISTS = 36
CLOSE_TIMEOUT_SECONDS = 10.0


class KafkaTransport(BaseTransport[KafkaDelivery]):
    _transient = (KafkaError,)

    def __init__(
        self,
        settings: BusSettings,
        *,
        max_in_flight: int = 64,
        connect_timeout_seconds: float = 30.0,
    ) -> None:
        super().__init__(
            settings, max_in_flight=max_in_flight, connect_timeout_seconds=connect_timeout_seconds
        )
        self._kafka = settings.kafka
        self._in_flight = InFlight(max_in_flight)
        self._producer: Any = None
        self._consume_task: asyncio.Task[None] | None = None

    @property
    def bus(self) -> BusName:
        return "kafka"

    @property
    def _server(self) -> str:
        return f"Kafka at {self._kafka.bootstrap_servers}"

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._kafka.create_topics:
            await self._connecting("create topics", self._create_topics)
        self._producer = await self._connecting("start producer", self._start_producer)

    async def _stop_consuming(self) -> None:
        if self._consume_task is not None:
            try:
                await asyncio.wait_for(self._consume_task, CLOSE_TIMEOUT_SECONDS)
            except TimeoutError:
                log.warning("kafka consumer did not stop in time; cancelled")

    async def _disconnect(self) -> None:
        if self._producer is not None:
            await self._producer.stop()  # sends what is still buffered first

    def _client_kwargs(self) -> dict[str, Any]:
        kafka = self._kafka
        kwargs: dict[str, Any] = {
            "bootstrap_servers": kafka.bootstrap_servers,
            "client_id": kafka.client_id,
            "security_protocol": kafka.security_protocol,
        }
        if kafka.security_protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_context"] = ssl_context(kafka.tls, "bus.kafka.tls")
        if kafka.sasl_mechanism is not None:
            kwargs["sasl_mechanism"] = kafka.sasl_mechanism
            kwargs["sasl_plain_username"] = _env(kafka.sasl_username_env, "sasl_username_env")
            kwargs["sasl_plain_password"] = _env(kafka.sasl_password_env, "sasl_password_env")
        return kwargs

    async def _create_topics(self) -> None:
        # Explicitly, before anything asks for metadata: brokers that auto-create topics on
        # a metadata request would otherwise create them with their default partitions.
        topics = self._kafka.topics
        names = [topics.requests, topics.approval_replies, topics.events, topics.approvals]
        names.extend([topics.dlq, topics.deltas])
        admin = AIOKafkaAdminClient(**self._client_kwargs())
        try:
            await admin.start()
            response = await admin.create_topics(
                [
                    NewTopic(
                        name,
                        self._kafka.topic_partitions,
                        self._kafka.topic_replication_factor,
                        topic_configs=self._topic_configs(name),
                    )
                    for name in names
                ]
            )
        finally:
            await admin.close()
        for topic, code, message in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                msg = f"cannot create Kafka topic {topic!r}: error {code} {message}"
                raise TransportError(msg)

    def _topic_configs(self, topic: str) -> dict[str, str]:
        if topic != self._kafka.topics.deltas:
            return {}
        # Deltas are live only: keep them briefly (an existing topic is left as it is).
        return {"retention.ms": str(self._settings.deltas_retention_seconds * 1000)}

    async def _start_producer(self) -> Any:
        producer = AIOKafkaProducer(
            acks="all",
            enable_idempotence=self._kafka.idempotent_producer,
            linger_ms=LINGER_MS,
            # Room for a dead letter: the original message plus the dlq_* headers.
            max_request_size=self._settings.max_message_bytes + 64 * 1024,
            **self._client_kwargs(),
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def check(self) -> str | None:
        if self._producer is None:
            return "not connected"
        client = self._producer.client
        brokers = sorted(client.cluster.brokers(), key=lambda broker: broker.nodeId)
        for broker in brokers:
            if await client.ready(broker.nodeId):
                return None
        return f"no broker of {self._kafka.bootstrap_servers} answers"

    # -- names -----------------------------------------------------------------------

    def requests_destination(self, task_id: str | None) -> str:
        return self._kafka.topics.requests

    def approval_replies_destination(self, task_id: str | None) -> str:
        return self._kafka.topics.approval_replies

    def events_destination(self, task_id: str | None) -> str:
        return self._kafka.topics.events

    def approvals_destination(self, task_id: str | None) -> str:
        return self._kafka.topics.approvals

    def deltas_destination(self, task_id: str | None) -> str:
        return self._kafka.topics.deltas

    def dead_letter_destination(self, reason: str | None) -> str:
        return self._kafka.topics.dlq

    # -- publishing ------------------------------------------------------------------

    def decode(self, message: InboundMessage) -> CloudEvent:
        return decode_kafka(message)

    def _encode(self, event: CloudEvent) -> EncodedMessage:
        return encode_kafka(event, self._settings.content_mode)

    async def _send(
        self, destination: str, message: EncodedMessage, *, confirm: bool
    ) -> tuple[int, int] | None:
        """Where the broker stored it (partition, offset); None when not confirmed."""
        key, value, headers = message.key, message.value, message.headers
        if self._producer is None:
            msg = "KafkaTransport.start() was not called (or close() was)"
            raise TransportError(msg)
        try:
            # Queued in the producer's batch; the future resolves when the broker stored it.
            delivery = await self._producer.send(destination, value=value, key=key, headers=headers)
            if confirm:
                stored = await delivery
                return stored.partition, stored.offset
        except MessageSizeTooLargeError as exc:
            msg = f"Kafka rejected a {len(value)}-byte message for {destination!r}: {exc}"
            raise MessageTooLarge(msg) from exc
        except KafkaError as exc:
            msg = f"publishing to Kafka topic {destination!r} failed: {exc}"
            raise TransportError(msg) from exc
        delivery.add_done_callback(functools.partial(_log_if_undelivered, destination))
        return None

    # -- consuming -------------------------------------------------------------------

    def _start_consuming(self) -> None:
        if self._consume_task is None:
            loop = KafkaConsumerLoop(
                self._kafka, self._client_kwargs(), self._in_flight, self._queue, self._stopping
            )
            self._consume_task = asyncio.create_task(loop.run(), name="kafka-consume")

    def _wanted(self, delivery: KafkaDelivery) -> bool:
        return not delivery.stale

    # -- watching --------------------------------------------------------------------

    def watch(self, destination: str, *, from_start: bool) -> Watch:
        return self._tracked(
            KafkaWatch(
                self._client_kwargs(),
                destination,
                from_start=from_start,
                fetch_max_wait_ms=self._kafka.fetch_max_wait_ms,
                on_close=self._watches.discard,
            )
        )


def _env(name: str | None, key: str) -> str:
    if name is None:
        msg = f"bus.kafka.sasl_mechanism is set but bus.kafka.{key} is not"
        raise TransportConfigError(msg)
    value = os.environ.get(name)
    if value is None:
        msg = f"bus.kafka.{key} names {name!r}, which is not set in the environment"
        raise TransportConfigError(msg)
    return value


def _log_if_undelivered(destination: str, delivery: "asyncio.Future[Any]") -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        log.warning(
            "an unconfirmed publish was not delivered",
            extra={"destination": destination, "error": repr(delivery.exception())},
        )
