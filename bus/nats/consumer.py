"""The NATS consume loops: a durable pull consumer per inbound stream, fetched in batches.

Each consumer (`<durable>-requests`, `<durable>-approval-replies`) acks explicitly, with
`ack_wait` from config and `max_ack_pending` = `max_in_flight`. Its loop fetches small
batches with a short timeout, so stopping is prompt, and holds at most `max_in_flight`
unacked messages. The bound is per stream, like `max_ack_pending`: a shared one would let
the idle stream's fetch, which waits out its timeout, take the slot the busy stream needs.
nats-py reconnects by itself; meanwhile fetches fail, are logged and retried with backoff.
On stop, messages fetched but not acked are nak'ed so JetStream redelivers them now rather
than after `ack_wait`.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from temporal_executor.bus._common import Backoff, InFlight
from temporal_executor.bus.nats.watch import inbound
from temporal_executor.bus.transport import InboundMessage
from temporal_executor.schemas.config import NatsSettings
from temporal_executor.telemetry import metrics

log = logging.getLogger(__name__)

FETCH_BATCH = 32
# While deliveries are in flight, a fetch waits for room for this many: slots free one
# ack at a time, and a fetch per freed slot cost a JetStream request and reply per message.
FETCH_BATCH_MIN = 8
FETCH_TIMEOUT_SECONDS = 0.25
STOP_TIMEOUT_SECONDS = 5.0
# How often each consumer's pending count is read from JetStream for the metrics.
PENDING_REPORT_SECONDS = 5.0


class NatsDelivery:
    def __init__(self, msg: Msg, in_flight: InFlight, loops: "NatsConsumerLoops") -> None:
        self._msg = msg
        self._in_flight = in_flight
        self._loops = loops
        self._message = inbound(msg)
        self.done = False

    @property
    def message(self) -> InboundMessage:
        return self._message

    async def ack(self) -> None:
        if self._settle():
            await self._send(self._msg.ack, "ack")

    async def nak(self) -> None:
        if self._settle():
            await self._send(self._msg.nak, "nak")

    async def keep_alive(self) -> None:
        if not self.done:
            await self._send(self._msg.in_progress, "in-progress")

    def _settle(self) -> bool:
        if self.done:
            return False
        self.done = True
        self._in_flight.remove()
        self._loops.settled(self)
        return True

    async def _send(self, action: Callable[[], Awaitable[None]], name: str) -> None:
        try:
            await action()
        except nats.errors.Error as exc:
            # JetStream redelivers it after ack_wait; handling it again is harmless.
            log.warning("nats %s of %s failed: %r", name, self._msg.subject, exc)


class NatsConsumerLoops:
    """One fetch loop per inbound stream, feeding `queue` until `stop()`."""

    def __init__(
        self,
        settings: NatsSettings,
        js: JetStreamContext,
        max_in_flight: int,
        queue: "asyncio.Queue[NatsDelivery | None]",
    ) -> None:
        self._settings = settings
        self._js = js
        self._max_in_flight = max_in_flight
        self._queue = queue
        self._stopping = asyncio.Event()
        self._unsettled: set[NatsDelivery] = set()
        streams, subjects = settings.streams, settings.subjects
        self._tasks = [
            asyncio.create_task(
                self._run(stream, prefix, suffix, InFlight(max_in_flight)), name=f"nats-{suffix}"
            )
            for stream, prefix, suffix in (
                (streams.requests, subjects.requests, "requests"),
                (streams.approval_replies, subjects.approval_replies, "approval-replies"),
            )
        ]
        consumers = [
            (streams.requests, f"{settings.durable}-requests"),
            (streams.approval_replies, f"{settings.durable}-approval-replies"),
        ]
        self._reporting = asyncio.create_task(self._report_pending(consumers), name="nats-pending")

    async def _report_pending(self, consumers: list[tuple[str, str]]) -> None:
        """JetStream's count of each consumer's pending messages, for the metrics."""
        while not self._stopping.is_set():
            for stream, durable in consumers:
                try:
                    info = await self._js.consumer_info(stream, durable)
                except (nats.errors.Error, OSError, TimeoutError):
                    continue  # not created yet, or reconnecting: report it next time
                metrics.JETSTREAM_PENDING.labels(stream, durable).set(info.num_pending or 0)
                metrics.JETSTREAM_ACK_PENDING.labels(stream, durable).set(info.num_ack_pending or 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), PENDING_REPORT_SECONDS)

    def settled(self, delivery: NatsDelivery) -> None:
        self._unsettled.discard(delivery)

    async def stop(self) -> None:
        self._stopping.set()
        await asyncio.gather(self._reporting, return_exceptions=True)
        # Each loop notices within one fetch timeout; cancelling a fetch instead would
        # leave what it received waiting for ack_wait.
        _, pending = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for delivery in list(self._unsettled):
            await delivery.nak()

    async def _run(self, stream: str, prefix: str, suffix: str, in_flight: InFlight) -> None:
        durable = f"{self._settings.durable}-{suffix}"
        backoff = Backoff()
        sub: JetStreamContext.PullSubscription | None = None
        while not self._stopping.is_set():
            try:
                if sub is None:
                    sub = await self._subscribe(stream, prefix, durable)
                await self._fetch(sub, in_flight)
                backoff.reset()
            except TimeoutError:  # nats-py raises its own and the builtin one
                continue  # nothing to fetch (or reconnecting): ask again
            except (nats.errors.Error, OSError) as exc:
                if self._stopping.is_set():
                    break
                log.warning("nats consumer %s: %r; retrying", durable, exc)
                await backoff.wait(self._stopping)
            except Exception:
                log.exception("nats consumer %s: unexpected error; retrying", durable)
                await backoff.wait(self._stopping)
        if sub is not None:
            try:
                await sub.unsubscribe()
            except nats.errors.Error as exc:
                log.debug("nats consumer %s unsubscribe: %r", durable, exc)

    async def _subscribe(
        self, stream: str, prefix: str, durable: str
    ) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._settings.ack_wait_seconds,
            max_ack_pending=self._max_in_flight,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=f"{prefix}.>",
        )
        # Creates the consumer, or updates what may change on one (ack_wait, ...).
        await self._js.add_consumer(stream, config)
        return await self._js.pull_subscribe_bind(durable=durable, stream=stream)

    async def _fetch(self, sub: JetStreamContext.PullSubscription, in_flight: InFlight) -> None:
        if not await in_flight.wait_for_room(seconds=FETCH_TIMEOUT_SECONDS):
            return
        if in_flight.count:
            # Busy: the deliveries in flight keep the bridge working meanwhile.
            await in_flight.wait_for_room(FETCH_TIMEOUT_SECONDS, at_least=FETCH_BATCH_MIN)
        batch = min(in_flight.room, FETCH_BATCH)
        in_flight.add(batch)  # held while fetching, so acks meanwhile do not overfill
        received: list[Msg] = []
        try:
            received = await sub.fetch(batch=batch, timeout=FETCH_TIMEOUT_SECONDS)
        finally:
            in_flight.remove(batch - len(received))
        for msg in received:
            delivery = NatsDelivery(msg, in_flight, self)
            self._unsettled.add(delivery)
            self._queue.put_nowait(delivery)
