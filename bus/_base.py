"""The skeleton both transports share: closing, publishing, dead-lettering, consuming and
watching. Each bus (`bus/kafka`, `bus/nats`) fills in how it connects, sends and consumes."""

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

from temporal_executor.bus._common import check_size, connecting, dead_letter_headers
from temporal_executor.bus.codec import EncodedMessage
from temporal_executor.bus.instrumentation import publishing
from temporal_executor.bus.transport import Delivery, InboundMessage, MessageTooLarge, Watch
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import BusSettings
from temporal_executor.schemas.task import BusName

log = logging.getLogger(__name__)

T = TypeVar("T")
D = TypeVar("D", bound=Delivery)


class BaseTransport(ABC, Generic[D]):
    """A `Transport` whose consumer loops put deliveries of type `D` on `_queue` (None: the
    transport closed)."""

    # What to call the server in errors and logs, and which errors mean "not reachable yet".
    _transient: tuple[type[BaseException], ...] = ()

    def __init__(
        self, settings: BusSettings, *, max_in_flight: int, connect_timeout_seconds: float
    ) -> None:
        if max_in_flight < 1:
            msg = f"max_in_flight must be at least 1, not {max_in_flight}"
            raise ValueError(msg)
        self._settings = settings
        self._max_in_flight = max_in_flight
        self._connect_timeout = connect_timeout_seconds
        self._queue: asyncio.Queue[D | None] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._watches: set[Watch] = set()
        self._closed = False

    # -- what each bus fills in ------------------------------------------------------

    @property
    @abstractmethod
    def _server(self) -> str:
        """The server, as errors and logs name it (`Kafka at host:9092`)."""

    @abstractmethod
    def _encode(self, event: CloudEvent) -> EncodedMessage: ...

    @abstractmethod
    async def _send(
        self, destination: str, message: EncodedMessage, *, confirm: bool
    ) -> tuple[int, int] | None:
        """Put `message` on the bus; with `confirm`, return once the bus stored it, and say
        where when the bus does (Kafka: partition, offset)."""

    @property
    @abstractmethod
    def bus(self) -> BusName: ...

    @abstractmethod
    def requests_destination(self, task_id: str | None) -> str: ...

    @abstractmethod
    def approval_replies_destination(self, task_id: str | None) -> str: ...

    @abstractmethod
    def events_destination(self, task_id: str | None) -> str: ...

    @abstractmethod
    def approvals_destination(self, task_id: str | None) -> str: ...

    @abstractmethod
    def dead_letter_destination(self, reason: str | None) -> str: ...

    @abstractmethod
    def _start_consuming(self) -> None:
        """Start the consumer loops, once (called by every `consume()` until closed)."""

    @abstractmethod
    def _wanted(self, delivery: D) -> bool:
        """False for a delivery that was settled while it waited in the queue."""

    @abstractmethod
    async def _stop_consuming(self) -> None: ...

    @abstractmethod
    async def _disconnect(self) -> None:
        """Flush what is still buffered, then close the connection."""

    # -- lifecycle -------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        await self._stop_consuming()
        self._queue.put_nowait(None)
        for watch in list(self._watches):
            await watch.aclose()
        await self._disconnect()

    async def _connecting(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        return await connecting(
            self._server,
            what,
            attempt,
            transient=self._transient,
            give_up_after=self._connect_timeout,
            stop=self._stopping,
        )

    # -- publishing ------------------------------------------------------------------

    async def publish(self, destination: str, event: CloudEvent, *, confirm: bool = True) -> None:
        # A `send` span, whose context the event's `traceparent` carries; counted once stored.
        with publishing(self, destination, event) as sending:
            encoded = self._encode(sending.event)
            check_size(destination, encoded, self._settings.max_message_bytes)
            stored = await self._send(destination, encoded, confirm=confirm)
            if stored is not None:
                sending.stored(*stored)

    async def publish_raw(
        self, destination: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        await self._send(destination, EncodedMessage(key, value, headers), confirm=True)

    async def dead_letter(self, message: InboundMessage, reason: str, error: str) -> None:
        headers = dead_letter_headers(message, reason, error)
        destination = self.dead_letter_destination(reason)
        try:
            await self.publish_raw(destination, message.key, message.value, headers)
        except MessageTooLarge:
            # It cannot be forwarded whole; forward the record of it so the partition (or
            # the stream) moves on.
            omitted = [*headers, ("dlq_value_omitted", str(len(message.value)).encode())]
            await self.publish_raw(destination, message.key, b"", omitted)
        log.warning(
            "dead-lettered a message",
            extra={"source": message.source, "reason": reason, "error": error},
        )

    # -- consuming and watching ------------------------------------------------------

    async def consume(self) -> AsyncIterator[Delivery]:
        if not self._closed:
            self._start_consuming()
        while True:
            delivery = await self._queue.get()
            if delivery is None:
                self._queue.put_nowait(None)  # so every other iterator ends too
                return
            if self._wanted(delivery):
                yield delivery

    def _tracked(self, watch: Watch) -> Watch:
        """`watch`, closed with the transport (it calls `self._watches.discard` on close)."""
        self._watches.add(watch)
        return watch
