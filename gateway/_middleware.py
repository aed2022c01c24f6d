"""Plain ASGI middleware (streams pass through untouched): bearer auth, A2A extension echo."""

import hmac
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Open without a token: liveness and readiness probes, Prometheus metrics, the API
# docs, and the agent card (A2A discovery is public; the card says which scheme the rest
# needs).
OPEN_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        "/.well-known/agent-card.json",
    }
)


class BearerAuth:
    """Every other request must carry `Authorization: Bearer <token>`; else 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._authorised(scope):
            await self._app(scope, receive, send)
            return
        body = json.dumps(
            {
                "status": 401,
                "error": "unauthorized",
                "message": "send the gateway's token as `Authorization: Bearer <token>`",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="temporal-executor"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _authorised(self, scope: Scope) -> bool:
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, given = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)


class EchoExtensions:
    """Tell an A2A client which of the extensions it asked for (`A2A-Extensions`) are on."""

    def __init__(self, app: ASGIApp, supported: frozenset[str]) -> None:
        self._app = app
        self._supported = supported

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        asked = b",".join(v for k, v in scope["headers"] if k == b"a2a-extensions").decode()
        active = sorted({uri.strip() for uri in asked.split(",")} & self._supported)
        if not active:
            await self._app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    *message.get("headers", []),
                    (b"a2a-extensions", ",".join(active).encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, send_with_header)
