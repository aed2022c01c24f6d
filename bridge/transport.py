"""The one interface between the service and a message bus.

Kafka (`kafka_transport`) and NATS JetStream (`nats_transport`) each implement
`Transport`; nothing else in the project imports aiokafka or nats. A transport owns
its CloudEvents binding, so callers hand it and get from it `CloudEvent` objects.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.task import BusName


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
        """Done with it (handled or dead-lettered): commit the offset / ack the message."""

    async def keep_alive(self) -> None:
        """Still working on it: stop the bus from redelivering it meanwhile."""


class Transport(Protocol):
    """A connection to one bus, for consuming, publishing and watching CloudEvents."""

    @property
    def bus(self) -> BusName: ...

    async def start(self) -> None:
        """Connect, and create missing topics or streams when config allows."""

    async def close(self) -> None:
        """Stop consuming, flush what was published, disconnect."""

    def decode(self, message: InboundMessage) -> CloudEvent:
        """Read a message in binary or structured mode; raises `DeadLetter` if it is not one."""
        ...

    async def publish(self, destination: str, event: CloudEvent) -> None:
        """Publish in the configured content mode, keyed by the event's `taskid` extension."""

    async def publish_raw(
        self, destination: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Publish bytes as they are (dead letters keep the original message unchanged)."""

    async def dead_letter(self, message: InboundMessage, reason: str, error: str) -> None:
        """Forward `message` unchanged to the dead-letter destination with the contract's headers."""

    def consume(self) -> AsyncIterator[Delivery]:
        """Deliveries from the inbound destinations (requests and approval replies), until closed."""
        ...

    def watch(self, destination: str, *, from_start: bool) -> AsyncIterator[InboundMessage]:
        """Read a destination without a consumer group (CLI `--follow`, `events`, tests)."""
        ...

    # Where things go on this bus (contract, "Names"). With `None` instead of a task id or
    # reason they name what `watch` reads to see all of them (NATS: a `>` wildcard).
    def requests_destination(self, task_id: str) -> str: ...
    def approval_replies_destination(self, task_id: str | None) -> str: ...
    def events_destination(self, task_id: str | None) -> str: ...
    def approvals_destination(self, task_id: str | None) -> str: ...
    def dead_letter_destination(self, reason: str | None) -> str: ...
