"""/metrics, /healthz and /readyz for the bridge and the worker, on `observability.port`.

A small HTTP/1.1 server on the process's event loop (the gateway serves the same paths
from its own app): it needs no web framework, so a bridge does not import one.
"""

import asyncio
import json
import logging
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from temporal_executor.telemetry.health import HEALTH, HealthChecks
from temporal_executor.telemetry.temporal_sdk import exposition

log = logging.getLogger(__name__)

READ_TIMEOUT_SECONDS = 10.0
MAX_HEADER_BYTES = 16 * 1024


class TelemetryServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        checks: HealthChecks = HEALTH,
        readiness_timeout: float = 2.0,
    ) -> None:
        self._host = host
        self._port = port
        self._checks = checks
        self._readiness_timeout = readiness_timeout
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        log.info("serving /metrics, /healthz and /readyz", extra={"url": self.url})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path = _request_line(head)
            status, content_type, body = await self._answer(method, path)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # not a request we answer: drop the connection
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _answer(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        path = path.split("?", 1)[0]
        if path == "/metrics":
            # Off the event loop: it reads the Temporal SDK's metrics over loopback HTTP.
            body = await asyncio.to_thread(exposition)
            return "200 OK", CONTENT_TYPE_LATEST, body
        if path == "/healthz":
            return "200 OK", "application/json", _json({"status": "ok"})
        if path == "/readyz":
            problems = await self._checks.problems(self._readiness_timeout)
            if problems:
                unready = {"status": "unavailable", "detail": "; ".join(problems)}
                return "503 Service Unavailable", "application/json", _json(unready)
            return "200 OK", "application/json", _json({"status": "ready"})
        return "404 Not Found", "text/plain", b"not found: /metrics, /healthz, /readyz\n"


def _request_line(head: bytes) -> tuple[str, str]:
    if len(head) > MAX_HEADER_BYTES:
        msg = "request head too large"
        raise ValueError(msg)
    method, path, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
    return method, path


def _json(body: dict[str, Any]) -> bytes:
    return (json.dumps(body) + "\n").encode()
