"""Feeds a transport's deliveries to the router: concurrently across tasks, in order within one.

Messages with the same ordering key (the Kafka key, which producers set to the task id,
or the NATS subject, which ends in it) are handled one after another; different keys run
concurrently, at most `max_in_flight` at once, and with fair tenants (`bridge.tenants`) at
most `tenants.max_in_flight` of one tenant (see `tenants`). A message is acknowledged only
once it is handled or dead-lettered. While Temporal or the bus is down the message is retried with
exponential backoff and not acknowledged, so nothing is lost and nothing is dead-lettered
for an outage. On stop, a message that would be retried is left unacknowledged instead, so
the bus delivers it again (to this bridge's successor) and stopping never waits for an
outage to end.
"""

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable
from typing import Any

from temporal_executor.bridge.router import Outcome, Router
from temporal_executor.bridge.tenants import TenantSlots, tenant_of
from temporal_executor.bus.errors import DeadLetterReason, RetryLater, TransportError
from temporal_executor.bus.instrumentation import processing
from temporal_executor.bus.transport import Delivery, InboundMessage, Transport
from temporal_executor.schemas.config import BridgeSettings
from temporal_executor.telemetry import metrics

log = logging.getLogger(__name__)

MAX_UNEXPECTED_FAILURES = 5
# A message waiting this long for its turn (its lane, its tenant, a slot) tells the bus it is
# still wanted, so JetStream does not redeliver it meanwhile (its ack wait is 30 s by default).
KEEP_ALIVE_SECONDS = 5.0


def ordering_key(message: InboundMessage) -> str:
    if message.key:
        return f"{message.source}\0{message.key!r}"
    return f"{message.source}\0{message.partition}"


class Dispatcher:
    def __init__(self, transport: Transport, router: Router, settings: BridgeSettings) -> None:
        self._transport = transport
        self._router = router
        self._settings = settings
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        tenants = settings.tenants
        self._tenant_key = tenants.key
        self._tenant_slots = TenantSlots(tenants.max_in_flight)
        # Messages read and not yet done: the slots, plus the read-ahead that lets other
        # tenants' messages past one tenant's flood.
        self._window = asyncio.Semaphore(window_size(settings))
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._in_flight = metrics.MESSAGES_IN_FLIGHT.labels(transport.bus)

    async def run(self) -> None:
        """Consume until this task is cancelled (or the transport closed), then drain."""
        try:
            async for delivery in self._transport.consume():
                await self._window.acquire()
                key = ordering_key(delivery.message)
                previous = self._lanes.get(key)
                task = asyncio.create_task(self._after(previous, delivery))
                self._lanes[key] = task
                self._tasks.add(task)
                self._in_flight.inc()
                task.add_done_callback(functools.partial(self._done, key=key))
        except asyncio.CancelledError:
            log.info("dispatcher stopping", extra={"in_flight": len(self._tasks)})
        finally:
            self._stopping.set()
            await self.drain()

    async def drain(self) -> None:
        """Let in-flight messages finish, so their acks happen before the transport closes."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[None], key: str) -> None:
        self._tasks.discard(task)
        self._in_flight.dec()
        self._window.release()
        if self._lanes.get(key) is task:
            del self._lanes[key]

    async def _after(self, previous: asyncio.Task[None] | None, delivery: Delivery) -> None:
        if previous is not None:
            # Wait for the key's earlier message; its outcome does not matter here.
            await self._keeping_alive(asyncio.gather(previous, return_exceptions=True), delivery)
        tenant = None
        if self._tenant_key is not None:
            tenant = tenant_of(self._transport, delivery.message, self._tenant_key)
            await self._keeping_alive(self._tenant_slots.acquire(tenant), delivery)
        try:
            await self._keeping_alive(self._slots.acquire(), delivery)
            try:
                await self._handle_until_done(delivery)
            finally:
                self._slots.release()
        finally:
            if tenant is not None:
                self._tenant_slots.release(tenant)

    async def _keeping_alive(self, waited: Awaitable[Any], delivery: Delivery) -> None:
        waiting: asyncio.Future[Any] = asyncio.ensure_future(waited)
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=KEEP_ALIVE_SECONDS)
                if done:
                    waiting.result()
                    return
                await delivery.keep_alive()
        except asyncio.CancelledError:
            waiting.cancel()
            raise

    async def _handle_until_done(self, delivery: Delivery) -> None:
        delay = self._settings.retry_initial_seconds
        unexpected_failures = 0
        last_error = ""
        while True:
            with processing(self._transport, delivery.message) as attempt:
                try:
                    if unexpected_failures >= MAX_UNEXPECTED_FAILURES:
                        reason = DeadLetterReason.INTERNAL_ERROR
                        await self._transport.dead_letter(delivery.message, reason, last_error)
                        outcome = (Outcome.DEAD_LETTERED, reason)
                    else:
                        outcome = await self._router.handle(self._transport, delivery.message)
                    await delivery.ack()
                    attempt.outcome(*outcome)
                    return
                except (RetryLater, TransportError) as exc:
                    attempt.retry(exc)
                    log.warning(
                        "dependency unavailable; will retry the message",
                        extra={"error": str(exc), "retry_in_seconds": round(delay, 2)},
                    )
                except Exception as exc:
                    # Probably a bug: retry a few times in case it is a passing fault, then
                    # dead-letter the message so it neither blocks its partition nor is lost.
                    attempt.retry(exc)
                    unexpected_failures += 1
                    last_error = f"{type(exc).__name__}: {exc}"
                    log.exception(
                        "unexpected error handling a message",
                        extra={"source": delivery.message.source},
                    )
            if await self._stop_requested_within(delay * random.uniform(0.8, 1.2), delivery):
                log.info(
                    "stopping: message left unacknowledged; the bus will deliver it again",
                    extra={"source": delivery.message.source},
                )
                return
            delay = min(delay * 2, self._settings.retry_max_seconds)

    async def _stop_requested_within(self, seconds: float, delivery: Delivery) -> bool:
        """Back off before the next attempt; True (at once) if the dispatcher is stopping."""
        if self._stopping.is_set():
            return True
        await delivery.keep_alive()
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True


def window_size(settings: BridgeSettings) -> int:
    """Messages a bridge reads before it has finished any: its transports' bound too."""
    read_ahead = settings.tenants.read_ahead if settings.tenants.key is not None else 0
    return settings.max_in_flight + read_ahead
