"""Pieces both transports share: backoff, dead-letter headers, size checks, in-flight count."""

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporal_executor.bus.codec import EncodedMessage
from temporal_executor.bus.errors import TransportError
from temporal_executor.bus.transport import InboundMessage, MessageTooLarge

T = TypeVar("T")
log = logging.getLogger(__name__)

# Longest `dlq_error` kept: a header is no place for a whole traceback.
MAX_ERROR_CHARS = 2000


class Backoff:
    """Exponential backoff with jitter, for loops that must outlive a broker outage."""

    def __init__(self, initial: float = 0.2, maximum: float = 10.0) -> None:
        self._initial = initial
        self._maximum = maximum
        self._delay = initial

    def reset(self) -> None:
        self._delay = self._initial

    async def wait(self, stop: asyncio.Event) -> None:
        """Sleep for the next delay, or less if `stop` is set meanwhile."""
        delay = self._delay * random.uniform(0.8, 1.2)
        self._delay = min(self._delay * 2, self._maximum)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)


async def connecting(
    server: str,
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    transient: tuple[type[BaseException], ...],
    give_up_after: float,
    stop: asyncio.Event,
) -> T:
    """Retry `attempt` with backoff while `server` is unreachable (raises one of
    `transient`), up to `give_up_after` seconds; then a `TransportError` naming the server."""
    deadline = time.monotonic() + give_up_after
    backoff = Backoff()
    while True:
        try:
            return await attempt()
        except transient as exc:
            if time.monotonic() >= deadline:
                msg = f"{server}: cannot {what}: {exc}"
                raise TransportError(msg) from exc
            log.warning("%s: cannot %s (%s); retrying", server, what, exc)
            await backoff.wait(stop)


class InFlight:
    """Deliveries handed out and not yet acked, bounded by `limit` (consumers wait for room)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            msg = f"max_in_flight must be at least 1, not {limit}"
            raise ValueError(msg)
        self.limit = limit
        self.count = 0
        self._changed = asyncio.Event()

    @property
    def room(self) -> int:
        return max(self.limit - self.count, 0)

    def add(self, n: int = 1) -> None:
        self.count += n

    def remove(self, n: int = 1) -> None:
        self.count = max(self.count - n, 0)
        self._changed.set()

    async def wait_for_room(self, seconds: float, at_least: int = 1) -> bool:
        """True once there is room for `at_least` (at most `limit`); False after `seconds`."""
        wanted = min(at_least, self.limit)
        while self.room < wanted:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=seconds)
            except TimeoutError:
                return False
        return True


def dead_letter_headers(
    message: InboundMessage, reason: str, error: str
) -> list[tuple[str, bytes]]:
    """The original headers plus the contract's `dlq_*` headers."""
    added: list[tuple[str, str]] = [
        ("dlq_reason", reason),
        ("dlq_error", one_line(error)),
        ("dlq_source", message.source),
    ]
    if message.partition is not None:
        added.append(("dlq_partition", str(message.partition)))
    if message.offset is not None:
        added.append(("dlq_offset", str(message.offset)))
    return [*message.headers, *((name, value.encode("utf-8")) for name, value in added)]


def one_line(text: str) -> str:
    """Header-safe: one line (NATS headers end at CRLF), and not unboundedly long."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def check_size(destination: str, message: EncodedMessage, limit: int) -> None:
    size = len(message.value) + sum(len(k) + len(v) for k, v in message.headers)
    if message.key is not None:
        size += len(message.key)
    if size > limit:
        msg = f"message for {destination!r} is {size} bytes, over bus.max_message_bytes ({limit})"
        raise MessageTooLarge(msg)
