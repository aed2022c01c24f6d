"""The remote codec the Temporal UI and CLI call to show encrypted payloads in the clear.

Protocol (Temporal's "codec server"): `POST <endpoint>/encode` and `POST <endpoint>/decode`,
each with `{"payloads": [...]}` (payloads in protobuf's JSON form, bytes in base64) and
answering the same shape. Served only when `temporal.encryption` is on, behind the
gateway's bearer auth: whoever may call it reads every task, as the Temporal UI would show
it without encryption.
"""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from temporal_executor.gateway._errors import InvalidCodecRequest, PayloadTooLarge
from temporal_executor.tasks.payload_encryption import EncryptionCodec, EncryptionError

CODEC_PATH = "/codec"
# Temporal's own limit on one payload is 2 MB; the UI sends an event's payloads at once.
MAX_BODY_BYTES = 8 * 1024 * 1024
# The Temporal UI sends these with its codec calls; CORS must allow them.
CODEC_REQUEST_HEADERS = ("Authorization", "Content-Type", "X-Namespace")


def codec_router(codec: EncryptionCodec, *, max_body_bytes: int = MAX_BODY_BYTES) -> APIRouter:
    router = APIRouter(prefix=CODEC_PATH, tags=["codec"])

    @router.post("/encode", summary="Encrypt payloads (Temporal remote codec protocol)")
    async def encode(request: Request) -> JSONResponse:
        payloads = await _payloads(request, max_body_bytes)
        return _answer(await codec.encode(payloads))

    @router.post("/decode", summary="Decrypt payloads (Temporal remote codec protocol)")
    async def decode(request: Request) -> JSONResponse:
        payloads = await _payloads(request, max_body_bytes)
        try:
            return _answer(await codec.decode(payloads))
        except EncryptionError as exc:
            raise InvalidCodecRequest(str(exc)) from exc

    return router


async def _payloads(request: Request, max_body_bytes: int) -> list[Payload]:
    body = await request.body()
    if len(body) > max_body_bytes:
        msg = f"body is {len(body)} bytes; the limit is {max_body_bytes}"
        raise PayloadTooLarge(msg)
    try:
        return list(json_format.Parse(body, Payloads()).payloads)
    except json_format.ParseError as exc:
        msg = f'expected {{"payloads": [...]}} of Temporal payloads in JSON: {exc}'
        raise InvalidCodecRequest(msg) from exc


def _answer(payloads: list[Payload]) -> JSONResponse:
    content: dict[str, Any] = json_format.MessageToDict(Payloads(payloads=payloads))
    content.setdefault("payloads", [])
    return JSONResponse(content)
