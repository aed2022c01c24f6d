"""HTTP details of A2A around the SDK's JSON-RPC endpoint: media types, card caching."""

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from a2a.server.request_handlers.response_helpers import build_error_response
from a2a.utils.errors import ContentTypeNotSupportedError
from fastapi import Request
from fastapi.responses import JSONResponse, Response

# How long a client may keep the card (the spec asks for Cache-Control with max-age).
CARD_MAX_AGE_SECONDS = 300

Endpoint = Callable[[Request], Awaitable[Response]]


def json_only(endpoint: Endpoint) -> Endpoint:
    """The JSON-RPC endpoint, answering a body declared as anything but JSON with the A2A
    error for it (the SDK would try to parse it and answer a parse error)."""

    async def handle(request: Request) -> Response:
        declared = request.headers.get("content-type", "application/json")
        media_type = declared.partition(";")[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            message = f"the body must be application/json, not {media_type or 'untyped'}"
            error = ContentTypeNotSupportedError(message=message)
            return JSONResponse(build_error_response(None, error))
        return await endpoint(request)

    return handle


def cached_card(request: Request, card: dict[str, Any], modified: datetime) -> Response:
    """The card with the caching headers the spec asks for; 304 when the client has it."""
    body = json.dumps(card, separators=(",", ":"), sort_keys=True).encode()
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {
        "Cache-Control": f"public, max-age={CARD_MAX_AGE_SECONDS}",
        "ETag": etag,
        "Last-Modified": format_datetime(modified.replace(microsecond=0), usegmt=True),
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
