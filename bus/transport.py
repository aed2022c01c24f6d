"""The one interface between the service and a message bus.

Kafka (`bus/kafka/`) and NATS JetStream (`bus/nats/`) each implement
`Transport` (on the skeleton in `bus/_base.py`); nothing else in the project imports
aiokafka or nats (tests/test_architecture.py holds that). A transport owns
its CloudEvents binding, so callers hand it and get from it `CloudEvent` objects.
"""

from abc import abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from temporal_executor.bus.errors import BusError
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.task import BusName


class MessageTooLarge(BusError):
    """The bus will never take this message (over `bus.max_message_bytes` or the server's
    limit): retrying does not help; shrink it or give up."""


@dataclass(frozen=True)
class InboundMessage:
    """A message exactly as it arrived, so it can be dead-lettered unchanged."""

    source: str  # the topic or subject it arrived on
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    partition: int | None = None  # Kafka only
    offset: int | None = None  # Kafka only

    def header(self, name: str) -> bytes | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)


class Delivery(Protocol):
    """One consumed message and the means to settle it."""

    @property
    def message(self) -> InboundMessage: ...

    async def ack(self) -> None:
        """Done with it (handled or dead-lettered): commit the offset / ack the message.

        Kafka commits acked offsets in batches (the contiguous prefix of each partition);
        NATS acks the message. Never raises for a bus failure: a lost ack only means the
        message is delivered again, which handling tolerates.
        """

    async def keep_alive(self) -> None:
        """Still working on it: stop the bus from redelivering it meanwhile."""


class Watch(AsyncIterator[InboundMessage]):
    """Messages on one destination, read without a consumer group, until closed.

    Its position (the start, or the end) is fixed by `start()`, which `async with` calls, so
    whatever is published after that is seen::

        async with transport.watch(destination, from_start=False) as messages:
            await transport.publish(destination, event)
            async for message in messages:
                ...

    Iterating without `async with` starts it on the first `__anext__` (too late to be sure of
    seeing a message published before that) and then needs `aclose()`. It also ends when its
    transport closes.
    """

    _started = False
    _closed = False

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self._start()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._started:
                await self._close()

    async def __anext__(self) -> InboundMessage:
        await self.start()
        if self._closed:
            raise StopAsyncIteration
        message = await self._next()
        if message is None:
            raise StopAsyncIteration
        return message

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abstractmethod
    async def _start(self) -> None:
        """Subscribe and fix the position before returning."""

    @abstractmethod
    async def _next(self) -> InboundMessage | None:
        """The next message; None once closed."""

    @abstractmethod
    async def _close(self) -> None:
        """Unsubscribe; a pending `_next` then returns None."""


class Transport(Protocol):
    """A connection to one bus, for consuming, publishing and watching CloudEvents."""

    @property
    def bus(self) -> BusName: ...

    async def start(self) -> None:
        """Connect, and create missing topics or streams when config allows."""

    async def close(self) -> None:
        """Stop consuming, commit what was acked, flush what was published, disconnect.

        To finish in-flight work first: stop taking deliveries from `consume()`, wait until
        the deliveries held are acked, then close. Deliveries not acked by then are not
        committed, so the bus redelivers them later. Open watches end.
        """

    async def check(self) -> str | None:
        """None when the bus answers now (readiness probes); else what is wrong."""
        ...

    def decode(self, message: InboundMessage) -> CloudEvent:
        """Read a message in binary or structured mode; raises `DeadLetter` if it is not one."""
        ...

    async def publish(self, destination: str, event: CloudEvent, *, confirm: bool = True) -> None:
        """Publish in the configured content mode, keyed by the event's `taskid` extension.

        Returns once the bus has stored it. Raises `MessageTooLarge` for a message over
        `bus.max_message_bytes` (or the server's limit), `TransportError` when the bus fails.
        With `confirm=False` it returns once the client has queued the message, and a
        failure to store it is only logged: for events that something else publishes again.
        """

    async def publish_raw(
        self, destination: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Publish bytes as they are (dead letters keep the original message unchanged)."""

    async def dead_letter(self, message: InboundMessage, reason: str, error: str) -> None:
        """Forward `message` unchanged to the dead-letter destination, adding `dlq_*` headers."""

    def consume(self) -> AsyncIterator[Delivery]:
        """Deliveries from the inbound destinations (requests, approval replies).

        The caller may stop iterating (cancel) and still `ack` deliveries it holds;
        `close()` then commits those acks before disconnecting.
        """
        ...

    def watch(self, destination: str, *, from_start: bool) -> Watch:
        """Read a destination without a consumer group (CLI `--follow`, `events`, tests).

        Use `async with` (see `Watch`) so that messages published right after are seen.
        """
        ...

    # Where things go on this bus (contract, "Names"). With `None` instead of a task id or
    # reason they name what `watch` reads to see all of them (NATS: a `>` wildcard).
    def requests_destination(self, task_id: str | None) -> str: ...
    def approval_replies_destination(self, task_id: str | None) -> str: ...
    def events_destination(self, task_id: str | None) -> str: ...
    def approvals_destination(self, task_id: str | None) -> str: ...
    def deltas_destination(self, task_id: str | None) -> str: ...
    def dead_letter_destination(self, reason: str | None) -> str: ...
