"""The gateway process: uvicorn serving the app in this event loop, until told to stop."""

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping

import uvicorn
from temporalio.client import Client

from temporal_executor.bus.factory import create_transport, enabled_buses
from temporal_executor.bus.transport import Transport
from temporal_executor.gateway._app import create_app
from temporal_executor.gateway._errors import CannotStart
from temporal_executor.gateway._streams import TaskStreams
from temporal_executor.schemas.config import GatewaySettings, Settings
from temporal_executor.schemas.task import BusName
from temporal_executor.tasks.service import TaskService

log = logging.getLogger(__name__)

# How long open responses get to finish once stopping (streams end at once, see `stop`).
GRACEFUL_SHUTDOWN_SECONDS = 5


class _PlainRecords(logging.Filter):
    """uvicorn adds an ANSI-coloured copy of some messages (`color_message`), which our log
    formatters would print as one more field."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


_PLAIN = _PlainRecords()
for _name in ("uvicorn.error", "uvicorn.access"):
    logging.getLogger(_name).addFilter(_PLAIN)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The process owns SIGTERM/SIGINT: they set one stop event for everything it runs
        # (`processes.stop_on_signals`); uvicorn must not take them over.
        yield


class GatewayServer:
    """The gateway on `gateway.host`:`gateway.port` (0: a free port, see `url`)."""

    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self._settings = settings
        # Serves while Temporal is away: connects in the background, 503 until then.
        self._tasks = TaskService(settings, client)
        self._transports: dict[BusName, Transport] = {}
        self._streams = TaskStreams(
            self._transports, settings.bus.default, self._tasks, source=settings.bus.source
        )
        self._server: _Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self.url = ""

    @property
    def stream_subscriptions(self) -> int:
        """Bus subscriptions its streams hold: one per destination, however many streams."""
        return self._streams.subscriptions

    @property
    def stream_followers(self) -> int:
        """Streams following those subscriptions (one with deltas counts twice)."""
        return self._streams.followers

    async def start(self) -> None:
        gateway = self._settings.gateway
        token = auth_token(gateway)
        sock = _listen(gateway.host, gateway.port)
        try:
            for bus in enabled_buses(self._settings.bus):
                self._transports[bus] = create_transport(bus, self._settings.bus)
                await self._transports[bus].start()
            self._tasks.connect_in_background()
            config = uvicorn.Config(
                create_app(self._settings, self._tasks, self._streams, token=token),
                log_config=None,
                lifespan="off",
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            )
            self._server = _Server(config)
            self._serving = asyncio.create_task(self._server.serve([sock]), name="gateway")
            while not self._server.started:
                if self._serving.done():
                    self._serving.result()  # raises what stopped it
                    msg = "the gateway stopped while starting"
                    raise CannotStart(msg)
                await asyncio.sleep(0.01)
        except BaseException:
            sock.close()
            await self._close_clients()
            raise
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        log.info("gateway listening", extra={"url": self.url, "bus": self._settings.bus.default})

    async def stop(self) -> None:
        # Streams (SSE, A2A) end first: otherwise uvicorn would wait for them to time out.
        await self._streams.end()
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            await self._serving
        await self._close_clients()
        log.info("gateway stopped")

    async def _close_clients(self) -> None:
        await self._tasks.close()
        for transport in self._transports.values():
            await transport.close()


async def run_gateway(
    settings: Settings, stop: asyncio.Event, client: Client | None = None
) -> None:
    server = GatewayServer(settings, client)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()


def auth_token(settings: GatewaySettings, env: Mapping[str, str] = os.environ) -> str | None:
    """The bearer token calls must send, from the variable config names; None: no auth."""
    if settings.auth_token_env is None:
        return None
    token = env.get(settings.auth_token_env, "").strip()
    if not token:
        msg = (
            f"gateway.auth_token_env is {settings.auth_token_env!r}, but that environment "
            "variable is not set: set it to the token callers must send, or remove the key"
        )
        raise CannotStart(msg)
    return token


def _listen(host: str, port: int) -> socket.socket:
    """Bind here rather than in uvicorn, which exits the process when it cannot."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        msg = f"gateway.host {host!r}: {exc}"
        raise CannotStart(msg) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        msg = f"the gateway cannot listen on {host}:{port}: {exc.strerror} (gateway.port)"
        raise CannotStart(msg) from exc
    sock.setblocking(False)
    return sock
