"""Plain ASGI middleware (streams pass through untouched): bearer auth, A2A extension echo."""

import json

from starlette.authentication import AuthCredentials, SimpleUser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from temporal_executor.gateway._identity import Authenticator, Unauthenticated

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
    """Every other request must carry `Authorization: Bearer <credential>` that the
    `Authenticator` accepts; else 401. The caller's identity, when the credential names one,
    becomes the request's `user` (Starlette's and the A2A SDK's `ServerCallContext.user`)."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self._app = app
        self._authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self._app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, given = header.partition(b" ")
        try:
            if scheme.lower() != b"bearer":
                msg = "send a credential as `Authorization: Bearer <token>`"
                raise Unauthenticated(msg)
            caller = self._authenticator.caller(given.strip())
        except Unauthenticated as exc:
            await _unauthorized(send, str(exc))
            return
        if caller.identity is not None:
            scope = {
                **scope,
                "user": SimpleUser(caller.identity),
                "auth": AuthCredentials(["authenticated"]),
            }
        await self._app(scope, receive, send)


async def _unauthorized(send: Send, why: str) -> None:
    body = json.dumps({"status": 401, "error": "unauthorized", "message": why}).encode()
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


def caller_identity(scope: Scope) -> str | None:
    """The authenticated caller's identity (None: anonymous, or the shared token)."""
    user = scope.get("user")
    return user.display_name if isinstance(user, SimpleUser) else None


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
