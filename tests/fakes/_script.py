"""The neutral script both fake LLM servers play, and their shared base (see `llm_servers`)."""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.fakes._json_http import HttpResponse, JsonHttpServer, RecordedRequest

# -- the script: neutral replies, rendered by each server in its API's shape -----------


@dataclass(frozen=True)
class FakeToolCall:
    name: str
    # A str is sent as the raw `arguments` string (OpenAI), e.g. to play invalid JSON.
    arguments: dict[str, Any] | str = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """A model reply: text and/or tool calls (several = parallel tool calls)."""

    text: str = ""
    tool_calls: tuple[FakeToolCall, ...] = ()
    # None: counted from the request and the reply, a word per token.
    input_tokens: int | None = None
    output_tokens: int | None = None
    # None: what the API would say (end_turn/tool_use, stop/tool_calls).
    stop_reason: str | None = None


ErrorKind = Literal[
    "rate_limited", "unauthorized", "model_not_found", "context_too_long", "server_error", "other"
]


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error; `kind` picks the API's real error body unless `body` is given."""

    status: int
    kind: ErrorKind = "other"
    message: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


ScriptItem = Reply | ErrorReply | Callable[[RecordedRequest], Reply | ErrorReply]


def text(
    content: str, *, input_tokens: int | None = None, output_tokens: int | None = None
) -> Reply:
    return Reply(text=content, input_tokens=input_tokens, output_tokens=output_tokens)


def tool_calls(*calls: tuple[str, dict[str, Any] | str] | FakeToolCall, text: str = "") -> Reply:
    """A reply calling tools: `tool_calls(("calculator", {"expression": "1+1"}), ...)`."""
    made = tuple(c if isinstance(c, FakeToolCall) else FakeToolCall(*c) for c in calls)
    return Reply(text=text, tool_calls=made)


def rate_limited(retry_after: str | None = "1", *, retry_after_ms: str | None = None) -> ErrorReply:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    if retry_after_ms is not None:
        headers["retry-after-ms"] = retry_after_ms
    return ErrorReply(429, "rate_limited", headers=headers)


def unauthorized() -> ErrorReply:
    return ErrorReply(401, "unauthorized")


def model_not_found() -> ErrorReply:
    return ErrorReply(404, "model_not_found")


def context_too_long() -> ErrorReply:
    return ErrorReply(400, "context_too_long")


def server_error(status: int = 500) -> ErrorReply:
    return ErrorReply(status, "server_error")


def http_error(
    status: int, message: str = "fake error", *, headers: dict[str, str] | None = None
) -> ErrorReply:
    return ErrorReply(status, "other", message=message, headers=headers or {})


# -- the servers ----------------------------------------------------------------------

# What both APIs accept as a tool name.
TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class Refused(Exception):
    """A request the real API would refuse, with the response it would give."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response.status)
        self.response = response


class ScriptedLlmServer(JsonHttpServer):
    """Validates each request (`validate`), then answers it with the next script item.

    `api_key` is the only key accepted; `models`, when given, the only models served;
    `default` is played once the script is used up.
    """

    def __init__(self, *, api_key: str, models: Iterable[str] | None) -> None:
        super().__init__()
        self.api_key = api_key
        self.models = set(models) if models is not None else None
        self.default: ScriptItem | None = None
        self._script: deque[ScriptItem] = deque()
        self._script_lock = threading.Lock()
        self._ids = itertools.count(1)

    def enqueue(self, *items: ScriptItem) -> None:
        """Add replies, played one per accepted request in order."""
        with self._script_lock:
            self._script.extend(items)

    def reset(self) -> None:
        """Forget the script, `default` and the recorded requests: a server reused by tests."""
        with self._script_lock:
            self._script.clear()
            self.default = None
        self.clear_requests()

    @property
    def pending(self) -> int:
        """Replies not played yet."""
        with self._script_lock:
            return len(self._script)

    def handle(self, request: RecordedRequest) -> HttpResponse:
        try:
            model = self.validate(request)
        except Refused as refused:
            return refused.response
        with self._script_lock:
            item = self._script.popleft() if self._script else self.default
        if item is None:
            msg = f"{type(self).__name__}: script used up ({len(self.requests)} requests)"
            return self.render_error(ErrorReply(500, "other", message=msg), model)
        played = item(request) if callable(item) else item
        if isinstance(played, ErrorReply):
            return self.render_error(played, model)
        return self.render_reply(played, request, model)

    def validate(self, request: RecordedRequest) -> str:
        """Refuse what the real API refuses (`Refused`); return the model."""
        raise NotImplementedError

    def render_reply(self, reply: Reply, request: RecordedRequest, model: str) -> HttpResponse:
        raise NotImplementedError

    def render_error(self, error: ErrorReply, model: str) -> HttpResponse:
        raise NotImplementedError

    def next_id(self) -> int:
        return next(self._ids)


# -- streaming: what the three APIs' server-sent events share --------------------------


def sse(data: Any, event: str | None = None, *, end: bytes = b"\n\n") -> bytes:
    """One server-sent event; `data` is sent as JSON unless it is a str."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}data: {payload}".encode() + end


def text_pieces(content: str) -> list[str]:
    """Text as models stream it: a word (with its spacing) at a time."""
    return re.findall(r"\s*\S+\s*", content) or ([content] if content else [])


def json_pieces(arguments: str, size: int = 10) -> list[str]:
    """A tool call's arguments JSON as models stream it: a few characters at a time."""
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


def streams(request: RecordedRequest) -> bool:
    """Whether the request asks for a streamed reply (Anthropic's and OpenAI's body flag)."""
    return isinstance(request.body, dict) and request.body.get("stream") is True


def _words(value: Any) -> int:
    return len(json.dumps(value).split())


def usage_of(reply: Reply, request: RecordedRequest) -> tuple[int, int]:
    body = request.body if isinstance(request.body, dict) else {}
    input_tokens = reply.input_tokens
    if input_tokens is None:
        input_tokens = _words(body.get("messages")) + _words(body.get("system", ""))
    output_tokens = reply.output_tokens
    if output_tokens is None:
        output_tokens = len(reply.text.split()) + sum(_words(c.arguments) for c in reply.tool_calls)
    return input_tokens, max(1, output_tokens)
