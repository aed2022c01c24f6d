"""A fake Anthropic Messages API: `POST /v1/messages`, plain or streamed (`"stream": true`:
server-sent events `message_start`, `content_block_start|delta|stop` with `text_delta` and
`input_json_delta` fragments, `ping`, `message_delta` with the usage, `message_stop`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, NoReturn

from tests.fakes._json_http import HttpResponse, RecordedRequest
from tests.fakes._script import (
    TOOL_NAME,
    ErrorReply,
    Refused,
    Reply,
    ScriptedLlmServer,
    json_pieces,
    sse,
    streams,
    text_pieces,
    usage_of,
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class FakeAnthropicServer(ScriptedLlmServer):
    """The key may come as `x-api-key` or as `Authorization: Bearer` (what the 2.x SDK sends)."""

    def __init__(
        self, *, api_key: str = "test-anthropic-key", models: Iterable[str] | None = None
    ) -> None:
        super().__init__(api_key=api_key, models=models)

    @property
    def base_url(self) -> str:
        """The SDK's `base_url` (it appends `/v1/messages`)."""
        return self.url

    def validate(self, request: RecordedRequest) -> str:
        if request.method != "POST" or request.path != "/v1/messages":
            raise Refused(self._error(404, "Not Found"))
        self._check_key(request)
        if not request.header("anthropic-version"):
            raise Refused(self._error(400, "anthropic-version: header is required"))
        body = request.body
        if not isinstance(body, dict):
            msg = "There was an error parsing the body of your request, ensure it is valid JSON."
            raise Refused(self._error(400, msg))
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                raise Refused(self._error(400, f"{name}: Field required"))
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            msg = "max_tokens: Input should be greater than or equal to 1"
            raise Refused(self._error(400, msg))
        temperature = body.get("temperature")
        if temperature is not None and not 0 <= temperature <= 1:
            raise Refused(self._error(400, "temperature: Input should be less than or equal to 1"))
        _check_tools(body.get("tools", []))
        _check_messages(body["messages"])
        model = str(body["model"])
        if self.models is not None and model not in self.models:
            raise Refused(self._error(404, f"model: {model}"))
        return model

    def render_reply(self, reply: Reply, request: RecordedRequest, model: str) -> HttpResponse:
        content: list[dict[str, Any]] = []
        if reply.text:
            content.append({"type": "text", "text": reply.text})
        for call in reply.tool_calls:
            arguments = call.arguments
            if isinstance(arguments, str):  # Anthropic always sends an object
                arguments = json.loads(arguments)
            content.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_{self.next_id():024d}",
                    "name": call.name,
                    "input": arguments,
                }
            )
        input_tokens, output_tokens = usage_of(reply, request)
        body = {
            "id": f"msg_{self.next_id():024d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": reply.stop_reason or ("tool_use" if reply.tool_calls else "end_turn"),
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "service_tier": "standard",
            },
        }
        if streams(request):
            return HttpResponse(200, None, self._headers(), chunks=_events(body))
        return HttpResponse(200, body, self._headers())

    def render_error(self, error: ErrorReply, model: str) -> HttpResponse:
        if error.body is not None:
            return HttpResponse(error.status, error.body, {**self._headers(), **error.headers})
        messages = {
            "rate_limited": "This request would exceed your organization's rate limit of 50 "
            "requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
            "unauthorized": "invalid x-api-key",
            "model_not_found": f"model: {model}",
            "context_too_long": "prompt is too long: 215000 tokens > 200000 maximum",
            "server_error": "Overloaded" if error.status == 529 else "Internal server error",
        }
        message = error.message or messages.get(error.kind, "fake error")
        return self._error(error.status, message, error.headers)

    def _check_key(self, request: RecordedRequest) -> None:
        key = request.header("x-api-key")
        authorization = request.header("authorization") or ""
        if key is None and authorization.lower().startswith("bearer "):
            key = authorization[len("bearer ") :]
        if key is None:
            raise Refused(self._error(401, "x-api-key header is required"))
        if key != self.api_key:
            raise Refused(self._error(401, "invalid x-api-key"))

    def _error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> HttpResponse:
        error_type = _ERROR_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        request_id = f"req_{self.next_id():024d}"
        body = {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": request_id,
        }
        return HttpResponse(status, body, {**self._headers(request_id), **(headers or {})})

    def _headers(self, request_id: str | None = None) -> dict[str, str]:
        return {"request-id": request_id or f"req_{self.next_id():024d}"}


def _events(message: dict[str, Any]) -> list[bytes]:
    """`message` as the Messages API streams it."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [sse({"type": "message_start", "message": start}, "message_start")]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            opened: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": t} for t in text_pieces(block["text"])]
        else:
            opened = {**block, "input": {}}
            # The first fragment is empty, as the API sends it.
            pieces = ["", *json_pieces(json.dumps(block["input"]))]
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
        events.append(
            sse(
                {"type": "content_block_start", "index": index, "content_block": opened},
                "content_block_start",
            )
        )
        if index == 0:
            events.append(sse({"type": "ping"}, "ping"))
        events.extend(
            sse({"type": "content_block_delta", "index": index, "delta": d}, "content_block_delta")
            for d in deltas
        )
        events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    final = {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {k: v for k, v in usage.items() if k != "service_tier"},
    }
    events.append(sse(final, "message_delta"))
    events.append(sse({"type": "message_stop"}, "message_stop"))
    return events


def _refuse(message: str) -> NoReturn:
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    raise Refused(HttpResponse(400, body))


def _check_tools(tools: Any) -> None:
    if not isinstance(tools, list):
        _refuse("tools: Input should be a valid list")
    for i, tool in enumerate(tools):
        name = tool.get("name") if isinstance(tool, dict) else None
        if not isinstance(name, str) or not re.fullmatch(TOOL_NAME, name):
            _refuse(f"tools.{i}.custom.name: String should match pattern '{TOOL_NAME}'")
        if "input_schema" not in tool:
            _refuse(f"tools.{i}.custom.input_schema: Field required")


def _check_messages(messages: Any) -> None:
    """Roles, non-empty content, and each `tool_use` answered in the very next message."""
    if not isinstance(messages, list) or not messages:
        _refuse("messages: at least one message is required")
    open_uses: list[str] = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant"):
            _refuse(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        last_assistant = role == "assistant" and i == len(messages) - 1
        if not blocks or (content == "" and not last_assistant):
            _refuse(
                f"messages.{i}: all messages must have non-empty content except for the "
                "optional final assistant message"
            )
        if isinstance(content, list) and any(
            b.get("type") == "text" and not b.get("text") for b in content
        ):
            _refuse("messages: text content blocks must be non-empty")
        results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
        missing = [use for use in open_uses if use not in results]
        if missing:
            _unanswered(i - 1, missing)
        for j, block in enumerate(blocks):
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in open_uses:
                _refuse(
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                    f"blocks: {block.get('tool_use_id')}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
        open_uses = [b["id"] for b in blocks if b.get("type") == "tool_use"]
    if open_uses:
        _unanswered(len(messages) - 1, open_uses)


def _unanswered(index: int, ids: list[str]) -> NoReturn:
    _refuse(
        f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately "
        f"after: {', '.join(ids)}. Each `tool_use` block must have a corresponding "
        "`tool_result` block in the next message."
    )
