"""The NATS JetStream transport (nats-py). Nothing outside `bus/nats/` imports nats.

Streams and subjects per the contract's "Names" (`bus.nats`), streams created at `start()`
when missing. Publishing goes through JetStream, so it returns once the stream stored the
message. Consuming (`consumer.py`) starts with the first `consume()`. nats-py reconnects
by itself, forever; the consume loops log and back off meanwhile.
"""

import asyncio
import logging
import os
import ssl
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from temporal_executor.bus._base import BaseTransport
from temporal_executor.bus._tls import ssl_context
from temporal_executor.bus.codec import EncodedMessage, decode_nats, encode_nats
from temporal_executor.bus.errors import TransportConfigError, TransportError
from temporal_executor.bus.nats.consumer import NatsConsumerLoops, NatsDelivery
from temporal_executor.bus.nats.watch import NatsWatch
from temporal_executor.bus.transport import InboundMessage, MessageTooLarge, Watch
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import BusSettings, NatsSettings, TlsSettings
from temporal_executor.schemas.task import BusName

log = logging.getLogger(__name__)

CLIENT_NAME = "temporal-executor"
CONNECT_ATTEMPT_SECONDS = 10.0


class NatsTransport(BaseTransport[NatsDelivery]):
    _transient = (OSError, nats.errors.Error)

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
        self._nats = settings.nats
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._consumers: NatsConsumerLoops | None = None
        self._refusal: Exception | None = None  # why the server last turned us away

    @property
    def bus(self) -> BusName:
        return "nats"

    @property
    def _server(self) -> str:
        return f"NATS at {self._nats.url}"

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._nc = await self._connecting("connect", self._connect)
        self._js = self._nc.jetstream()
        if self._nats.create_streams:
            await self._connecting("create streams", self._create_streams)

    async def _stop_consuming(self) -> None:
        if self._consumers is not None:
            await self._consumers.stop()

    async def _disconnect(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.drain()  # flushes pending publishes and acks, then closes
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("nats drain: %s", exc)
                await self._nc.close()

    async def _connect(self) -> NatsClient:
        # nats-py applies max_reconnect_attempts to the first connection too, where -1 would
        # retry forever inside `connect`; so connect with few attempts (`_connecting` retries
        # until its deadline), and only then reconnect forever: the consume loops wait it out.
        options = connect_options(self._nats)
        try:
            # nats-py can hang after a failed TLS handshake: bound each attempt.
            async with asyncio.timeout(CONNECT_ATTEMPT_SECONDS):
                nc = await nats.connect(
                    self._nats.url,
                    name=CLIENT_NAME,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=1,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    **options,
                )
        except (nats.errors.Error, TimeoutError) as exc:
            # nats-py reports why a server turned it away to `error_cb` and raises "no
            # servers available": a refused login or TLS handshake is config, not an outage.
            cause, self._refusal = self._refusal, None
            if cause is not None:
                msg = f"NATS at {self._nats.url} refused the connection: {cause}"
                raise TransportConfigError(msg) from exc
            raise
        nc.options["max_reconnect_attempts"] = -1
        return nc

    async def _on_error(self, exc: Exception) -> None:
        if _is_refusal(exc):
            self._refusal = exc
        log.warning("nats: %r", exc)

    async def _on_disconnected(self) -> None:
        if not self._closed:
            log.warning("nats: disconnected from %s; reconnecting", self._nats.url)

    async def _on_reconnected(self) -> None:
        log.info("nats: reconnected")

    def _streams(self) -> list[tuple[str, str]]:
        streams, subjects = self._nats.streams, self._nats.subjects
        return [
            (streams.requests, subjects.requests),
            (streams.approval_replies, subjects.approval_replies),
            (streams.events, subjects.events),
            (streams.approvals, subjects.approvals),
            (streams.dlq, subjects.dlq),
            (streams.deltas, subjects.deltas),
        ]

    def _max_age(self, stream: str) -> float | None:
        # Deltas are live only: keep them briefly (an existing stream is left as it is).
        if stream == self._nats.streams.deltas:
            return float(self._settings.deltas_retention_seconds)
        return None

    async def _create_streams(self) -> None:
        js = self._jetstream()
        for name, prefix in self._streams():
            try:
                await js.stream_info(name)
                continue
            except nats.js.errors.NotFoundError:
                pass
            try:
                await js.add_stream(
                    name=name, subjects=[f"{prefix}.>"], max_age=self._max_age(name)
                )
            except nats.js.errors.BadRequestError as exc:
                msg = f"cannot create JetStream stream {name!r} on {prefix}.>: {exc}"
                raise TransportError(msg) from exc
            log.info("created JetStream stream %s on %s.>", name, prefix)

    async def check(self) -> str | None:
        if self._nc is None or not self._nc.is_connected:
            return f"not connected to {self._nats.url}"
        try:
            await self._nc.flush(timeout=2)  # a PING answered by the server
        except (nats.errors.Error, TimeoutError) as exc:
            return f"{self._nats.url} does not answer: {exc!r}"
        return None

    def _connection(self) -> NatsClient:
        if self._nc is None:
            msg = "NatsTransport.start() was not called"
            raise TransportError(msg)
        return self._nc

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            msg = "NatsTransport.start() was not called"
            raise TransportError(msg)
        return self._js

    # -- names -----------------------------------------------------------------------

    def _subject(self, prefix: str, token: str | None) -> str:
        return f"{prefix}.{token if token is not None else '>'}"

    def requests_destination(self, task_id: str | None) -> str:
        return self._subject(self._nats.subjects.requests, task_id)

    def approval_replies_destination(self, task_id: str | None) -> str:
        return self._subject(self._nats.subjects.approval_replies, task_id)

    def events_destination(self, task_id: str | None) -> str:
        return self._subject(self._nats.subjects.events, task_id)

    def approvals_destination(self, task_id: str | None) -> str:
        return self._subject(self._nats.subjects.approvals, task_id)

    def deltas_destination(self, task_id: str | None) -> str:
        return self._subject(self._nats.subjects.deltas, task_id)

    def dead_letter_destination(self, reason: str | None) -> str:
        return self._subject(self._nats.subjects.dlq, reason)

    def _stream_of(self, subject: str) -> str | None:
        """Our stream that stores `subject`; None lets JetStream look it up."""
        for name, prefix in self._streams():
            if subject.startswith(f"{prefix}."):
                return name
        return None

    # -- publishing ------------------------------------------------------------------

    def decode(self, message: InboundMessage) -> CloudEvent:
        return decode_nats(message)

    def _encode(self, event: CloudEvent) -> EncodedMessage:
        return encode_nats(event, self._settings.content_mode)

    async def _send(
        self, destination: str, message: EncodedMessage, *, confirm: bool
    ) -> tuple[int, int] | None:
        # The key is ignored: NATS messages have none (the subject carries the task id).
        # Returns None: a stream has no partitions or offsets.
        value, header_map = message.value, _header_map(message.headers)
        try:
            if confirm:
                await self._jetstream().publish(destination, value, headers=header_map)
            else:
                # A core NATS publish: the stream stores it all the same, with no reply to
                # wait for.
                await self._connection().publish(destination, value, headers=header_map)
        except nats.errors.MaxPayloadError as exc:
            msg = f"NATS rejected a {len(value)}-byte message for {destination!r} (max_payload)"
            raise MessageTooLarge(msg) from exc
        except nats.js.errors.NoStreamResponseError as exc:
            msg = f"no JetStream stream stores subject {destination!r}"
            raise TransportError(msg) from exc
        except (nats.errors.Error, TimeoutError) as exc:
            msg = f"publishing to NATS subject {destination!r} failed: {exc!r}"
            raise TransportError(msg) from exc
        return None

    # -- consuming -------------------------------------------------------------------

    def _start_consuming(self) -> None:
        if self._consumers is None:
            self._consumers = NatsConsumerLoops(
                self._nats, self._jetstream(), self._max_in_flight, self._queue
            )

    def _wanted(self, delivery: NatsDelivery) -> bool:
        return not delivery.done  # nak'ed at close

    # -- watching --------------------------------------------------------------------

    def watch(self, destination: str, *, from_start: bool) -> Watch:
        return self._tracked(
            NatsWatch(
                self._jetstream(),
                destination,
                self._stream_of(destination),
                from_start=from_start,
                on_close=self._watches.discard,
            )
        )


def _header_map(headers: list[tuple[str, bytes]]) -> dict[str, str] | None:
    # nats-py takes one string per header name; these came from NATS or from our codec.
    return {name: raw.decode("utf-8", "backslashreplace") for name, raw in headers} or None


def connect_options(settings: NatsSettings) -> dict[str, Any]:
    """The security part of `nats.connect`'s arguments: TLS and one kind of credentials."""
    options: dict[str, Any] = {}
    if isinstance(settings.tls, TlsSettings):
        options["tls"] = ssl_context(settings.tls, "bus.nats.tls")
        if settings.tls.server_name is not None:
            options["tls_hostname"] = settings.tls.server_name
    elif settings.tls:
        options["tls"] = ssl_context(TlsSettings(), "bus.nats.tls")
    if settings.user is not None:
        options["user"] = settings.user
        options["password"] = _env(settings.password_env, "password_env")
    if settings.token_env is not None:
        options["token"] = _env(settings.token_env, "token_env")
    if settings.nkey_seed_file is not None:
        options["nkeys_seed"] = _existing(settings.nkey_seed_file, "nkey_seed_file")
    if settings.creds_file is not None:
        options["user_credentials"] = _existing(settings.creds_file, "creds_file")
    return options


def _env(name: str | None, key: str) -> str:
    value = os.environ.get(name or "")
    if not value:
        msg = f"bus.nats.{key} names {name!r}, which is not set in the environment"
        raise TransportConfigError(msg)
    return value


def _existing(path: str, key: str) -> str:
    if not Path(path).is_file():
        msg = f"bus.nats.{key}: no file at {path}"
        raise TransportConfigError(msg)
    return path


def _is_refusal(error: Exception) -> bool:
    if isinstance(error, ssl.SSLError):  # an untrusted server, a missing client certificate
        return True
    text = str(error).lower()
    return "authorization violation" in text or "authentication" in text
