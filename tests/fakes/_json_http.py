"""A threaded HTTP server on 127.0.0.1 that hands every request to one Python method.

Real sockets and real HTTP/1.1 keep-alive, so the code under test runs its real client
stack; the server records every request it gets. A response with `chunks` streams them
(chunked transfer encoding), each written as it is made and `chunk_delay_seconds` apart,
the first `first_chunk_delay_seconds` after the request: what server-sent events need.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server read it."""

    method: str
    path: str
    query: dict[str, str]
    # Lower-case names.
    headers: dict[str, str]
    # The parsed JSON body; None when empty or not JSON (see `raw`).
    body: Any
    raw: bytes
    # When it was read (time.time()).
    received: float = 0.0

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class HttpResponse:
    status: int
    # Sent as JSON, unless str or bytes (sent as is).
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    # Streamed instead of `body`, one chunk at a time (server-sent events).
    chunks: Iterable[bytes] | None = None


class JsonHttpServer:
    """Subclasses implement `handle`; use as a context manager, or `start()`/`stop()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Streamed responses: the pause before the first chunk, and between the others.
        self.first_chunk_delay_seconds = 0.0
        self.chunk_delay_seconds = 0.0
        # Drop the connection after this many chunks of the next streamed response, as a
        # provider's front end or a network does mid-stream; None: send them all.
        self.break_stream_after: int | None = None
        # Per streamed response, seconds from reading the request to writing its first chunk:
        # the model's own time to first token, to compare what the service adds.
        self.first_chunk_latencies: list[float] = []

    def handle(self, request: RecordedRequest) -> HttpResponse:
        raise NotImplementedError

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`, once started."""
        if self._server is None:
            msg = f"{type(self).__name__} is not started"
            raise RuntimeError(msg)
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, refused ones included, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def last_request(self) -> RecordedRequest:
        requests = self.requests
        if not requests:
            msg = f"{type(self).__name__} has received no request"
            raise AssertionError(msg)
        return requests[-1]

    def start(self) -> Self:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            # How often the loop checks for shutdown: stopping waits up to this long.
            kwargs={"poll_interval": 0.005},
            name=f"{type(self).__name__}:{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        thread.join()
        # Handler threads block reading the next request of a keep-alive connection;
        # shutting their sockets down ends them, and server_close() then joins them.
        server.close_connections()
        server.server_close()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _first_chunk_written(self, latency: float) -> None:
        with self._lock:
            self.first_chunk_latencies.append(latency)

    def _record_and_handle(self, request: RecordedRequest) -> HttpResponse:
        with self._lock:
            self._requests.append(request)
        return self.handle(request)


class _Server(ThreadingHTTPServer):
    owner: JsonHttpServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        # Without it Nagle's algorithm and the client's delayed ACK stall every response
        # by ~40 ms (headers and body go out in separate writes).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._connections_lock:
            self._connections.add(sock)
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            # OSError: the client closed it already.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive, as real APIs: the SDKs reuse connections.
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the owner records requests."""

    def _serve(self) -> None:
        received = time.monotonic()
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = RecordedRequest(
            method=self.command,
            path=url.path,
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            raw=raw,
            received=time.time(),
        )
        try:
            response = self.server.owner._record_and_handle(request)
        except Exception as exc:  # a bug in a fake or a script: show it to the client
            response = HttpResponse(500, {"error": f"fake server failed: {exc!r}"})
        if response.chunks is not None:
            self._stream(response, received)
        else:
            self._send(response)

    def _stream(self, response: HttpResponse, received: float) -> None:
        owner = self.server.owner
        self.send_response(response.status)
        headers = {"content-type": "text/event-stream; charset=utf-8", **response.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        delay = owner.first_chunk_delay_seconds
        cut, owner.break_stream_after = owner.break_stream_after, None
        try:
            for n, chunk in enumerate(response.chunks or ()):
                if n == cut:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                time.sleep(delay)
                delay = owner.chunk_delay_seconds
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                if n == 0:
                    owner._first_chunk_written(time.monotonic() - received)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            # The client went away mid-stream (a killed worker): nothing more to say.
            self.close_connection = True

    def _send(self, response: HttpResponse) -> None:
        if isinstance(response.body, bytes):
            payload, content_type = response.body, "application/octet-stream"
        elif isinstance(response.body, str):
            payload, content_type = response.body.encode(), "text/plain; charset=utf-8"
        else:
            payload, content_type = json.dumps(response.body).encode(), "application/json"
        self.send_response(response.status)
        headers = {"content-type": content_type, **response.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
