"""Reading a NATS subject without a durable consumer: an ordered consumer, all or new."""

import asyncio
import logging
from collections.abc import Callable

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from temporal_executor.bus.errors import TransportError
from temporal_executor.bus.transport import InboundMessage, Watch

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2


def inbound(msg: Msg) -> InboundMessage:
    headers = tuple((name, value.encode("utf-8")) for name, value in (msg.headers or {}).items())
    return InboundMessage(source=msg.subject, key=None, value=msg.data, headers=headers)


class NatsWatch(Watch):
    def __init__(
        self,
        js: JetStreamContext,
        subject: str,
        stream: str | None,
        *,
        from_start: bool,
        on_close: Callable[[Watch], None],
    ) -> None:
        self._js = js
        self._subject = subject
        self._stream = stream
        self._from_start = from_start
        self._on_close = on_close
        self._sub: JetStreamContext.PushSubscription | None = None
        # Held around each wait, so closing waits for it rather than unsubscribing under it.
        self._polling = asyncio.Lock()

    async def _start(self) -> None:
        # The consumer exists on the server once `subscribe` returns, so with deliver
        # policy "new" everything published from then on is delivered.
        try:
            self._sub = await self._js.subscribe(
                self._subject,
                stream=self._stream,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL if self._from_start else DeliverPolicy.NEW,
            )
        except nats.js.errors.NotFoundError as exc:
            msg = f"cannot watch NATS subject {self._subject!r}: no JetStream stream stores it"
            raise TransportError(msg) from exc
        except nats.errors.Error as exc:  # the JetStream errors derive from it too
            msg = f"cannot watch NATS subject {self._subject!r}: {exc!r}"
            raise TransportError(msg) from exc

    async def _next(self) -> InboundMessage | None:
        while True:
            async with self._polling:
                if self._closed or self._sub is None:
                    return None
                try:
                    msg = await self._sub.next_msg(timeout=POLL_SECONDS)
                except nats.errors.TimeoutError:
                    continue
                except nats.errors.ConnectionClosedError:
                    return None
            return inbound(msg)

    async def _close(self) -> None:
        self._on_close(self)
        async with self._polling:
            if self._sub is not None:
                try:
                    await self._sub.unsubscribe()
                except nats.errors.Error as exc:
                    log.debug("unsubscribing a watch of %s: %s", self._subject, exc)
