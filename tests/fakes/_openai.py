"""A fake OpenAI Chat Completions API, as OpenAI and as Azure OpenAI serve it: plain, or
streamed (`"stream": true`: `chat.completion.chunk` server-sent events, a tool call's id and
name in its first chunk and its arguments in pieces after, then, with
`stream_options.include_usage`, a last chunk without choices holding the usage, and
`data: [DONE]`; Azure first sends a chunk of content filter results)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from typing import Any, NoReturn

from tests.fakes._json_http import HttpResponse, RecordedRequest
from tests.fakes._script import (
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

_AZURE_PATH = re.compile(r"/openai/deployments/([^/]+)/chat/completions")

_AZURE_ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)
_AZURE_BAD_TOKEN = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired."
)
_AZURE_NO_DEPLOYMENT = (
    "The API deployment for this resource does not exist. If you created the deployment within "
    "the last 5 minutes, please wait a moment and try again."
)


class FakeOpenAIServer(ScriptedLlmServer):
    """OpenAI: `POST /v1/chat/completions`, key as `Authorization: Bearer`.

    Azure: `POST /openai/deployments/{deployment}/chat/completions?api-version=...`, key
    in the `api-key` header or, when `entra_token` is given, that Microsoft Entra ID token
    as `Authorization: Bearer`; `models` then lists the deployments.
    """

    def __init__(
        self,
        *,
        api_key: str = "test-openai-key",
        models: Iterable[str] | None = None,
        entra_token: str | None = None,
    ) -> None:
        super().__init__(api_key=api_key, models=models)
        # Azure: a Microsoft Entra ID token accepted as `Authorization: Bearer` instead of a key.
        self.entra_token = entra_token

    @property
    def base_url(self) -> str:
        """`base_url` for `openai.AsyncOpenAI`."""
        return f"{self.url}/v1"

    @property
    def azure_endpoint(self) -> str:
        """`azure_endpoint` for `openai.AsyncAzureOpenAI`."""
        return self.url

    def validate(self, request: RecordedRequest) -> str:
        azure = _AZURE_PATH.fullmatch(request.path)
        if request.method != "POST" or (azure is None and request.path != "/v1/chat/completions"):
            message = f"Invalid URL ({request.method} {request.path})"
            raise Refused(_openai_error(404, message))
        if azure is not None:
            deployment = azure.group(1)
            self._check_azure(request, deployment)
        else:
            self._check_bearer(request)
        body = request.body
        if not isinstance(body, dict):
            raise Refused(_openai_error(400, "We could not parse the JSON body of your request."))
        if azure is None and not body.get("model"):
            raise Refused(_openai_error(400, "you must provide a model parameter"))
        _check_body(body)
        model = deployment if azure is not None else str(body["model"])
        if azure is None and self.models is not None and model not in self.models:
            raise Refused(self.render_error(ErrorReply(404, "model_not_found"), model))
        return model

    def render_reply(self, reply: Reply, request: RecordedRequest, model: str) -> HttpResponse:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text or None,
            "refusal": None,
            "annotations": [],
        }
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{self.next_id():024d}",
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": call.arguments
                        if isinstance(call.arguments, str)
                        else json.dumps(call.arguments),
                    },
                }
                for call in reply.tool_calls
            ]
        prompt_tokens, completion_tokens = usage_of(reply, request)
        body = {
            "id": f"chatcmpl-{self.next_id():024d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": reply.stop_reason
                    or ("tool_calls" if reply.tool_calls else "stop"),
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        headers = {"x-request-id": f"req_{self.next_id():024d}"}
        if streams(request):
            options = request.body.get("stream_options") or {}
            azure = _AZURE_PATH.fullmatch(request.path) is not None
            chunks = _chunks(body, usage=options.get("include_usage") is True, azure=azure)
            return HttpResponse(200, None, headers, chunks=chunks)
        return HttpResponse(200, body, headers)

    def render_error(self, error: ErrorReply, model: str) -> HttpResponse:
        if error.body is not None:
            return HttpResponse(error.status, error.body, error.headers)
        if error.kind == "rate_limited":
            message = (
                f"Rate limit reached for {model} in organization org-fake on requests per min "
                "(RPM): Limit 3, Used 3, Requested 1. Please try again in 1s. Visit "
                "https://platform.openai.com/account/rate-limits to learn more."
            )
            response = _openai_error(429, message, type_="requests", code="rate_limit_exceeded")
        elif error.kind == "unauthorized":
            response = _incorrect_key("sk-wrong")
        elif error.kind == "model_not_found":
            message = f"The model `{model}` does not exist or you do not have access to it."
            response = _openai_error(error.status, message, code="model_not_found")
        elif error.kind == "context_too_long":
            message = (
                "This model's maximum context length is 128000 tokens. However, your messages "
                "resulted in 215000 tokens. Please reduce the length of the messages."
            )
            response = _openai_error(
                error.status, message, param="messages", code="context_length_exceeded"
            )
        elif error.kind == "server_error":
            message = "The server had an error while processing your request. Sorry about that!"
            response = _openai_error(error.status, message, type_="server_error")
        else:
            kind = "server_error" if error.status >= 500 else "invalid_request_error"
            response = _openai_error(error.status, error.message or "fake error", type_=kind)
        if error.message is not None and error.kind != "other":
            response.body["error"]["message"] = error.message
        return HttpResponse(response.status, response.body, {**response.headers, **error.headers})

    def _check_bearer(self, request: RecordedRequest) -> None:
        authorization = request.header("authorization") or ""
        if not authorization.lower().startswith("bearer ") or not authorization[7:].strip():
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or "
                "as the password field (with blank username) if you're accessing the API from "
                "your browser and are prompted for a username. You can obtain an API key from "
                "https://platform.openai.com/account/api-keys."
            )
            raise Refused(_openai_error(401, message))
        key = authorization[7:].strip()
        if key != self.api_key:
            raise Refused(_incorrect_key(key))

    def _check_azure(self, request: RecordedRequest, deployment: str) -> None:
        if not request.query.get("api-version"):
            raise Refused(_azure_error(404, "404", "Resource not found"))
        authorization = request.header("authorization")
        if authorization is not None and request.header("api-key") is None:
            if self.entra_token is None or authorization != f"Bearer {self.entra_token}":
                raise Refused(_azure_error(401, "401", _AZURE_BAD_TOKEN))
        elif request.header("api-key") != self.api_key:
            raise Refused(_azure_error(401, "401", _AZURE_ACCESS_DENIED))
        if self.models is not None and deployment not in self.models:
            raise Refused(_azure_error(404, "DeploymentNotFound", _AZURE_NO_DEPLOYMENT))


def _chunks(completion: dict[str, Any], *, usage: bool, azure: bool) -> list[bytes]:
    """`completion` as Chat Completions streams it."""
    choice = completion["choices"][0]
    message = choice["message"]
    head = {k: completion[k] for k in ("id", "created", "model", "service_tier")}
    head |= {"object": "chat.completion.chunk", "system_fingerprint": "fp_fake"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = {
            **head,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage:
            data["usage"] = None
        return sse(data)

    out: list[bytes] = []
    if azure:
        filters = [{"prompt_index": 0, "content_filter_results": {}}]
        out.append(
            sse(
                {
                    "choices": [],
                    "created": 0,
                    "id": "",
                    "model": "",
                    "object": "",
                    "prompt_filter_results": filters,
                }
            )
        )
    out.append(chunk({"role": "assistant", "content": "", "refusal": None}))
    out.extend(chunk({"content": piece}) for piece in text_pieces(message["content"] or ""))
    for index, call in enumerate(message.get("tool_calls", [])):
        opened = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        out.append(chunk({"tool_calls": [opened]}))
        out.extend(
            chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            for piece in json_pieces(call["function"]["arguments"])
        )
    out.append(chunk({}, choice["finish_reason"]))
    if usage:
        out.append(sse({**head, "choices": [], "usage": completion["usage"]}))
    out.append(sse("[DONE]"))
    return out


def _openai_error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> HttpResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return HttpResponse(status, body, {"x-request-id": "req_fake"})


def _incorrect_key(key: str) -> HttpResponse:
    masked = f"{key[:3]}{'*' * max(0, len(key) - 7)}{key[-4:]}"
    message = (
        f"Incorrect API key provided: {masked}. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )
    return _openai_error(401, message, code="invalid_api_key")


def _azure_error(status: int, code: str, message: str) -> HttpResponse:
    return HttpResponse(status, {"error": {"code": code, "message": message}})


def _refuse(message: str, param: str | None, code: str | None = None) -> NoReturn:
    raise Refused(_openai_error(400, message, param=param, code=code))


def _check_body(body: dict[str, Any]) -> None:
    if "stream_options" in body and body.get("stream") is not True:
        _refuse(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        _refuse(
            "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got "
            f"{temperature} instead.",
            "temperature",
            "decimal_above_max_value",
        )
    _check_tools(body.get("tools", []))
    _check_messages(body.get("messages"))


def _check_tools(tools: list[dict[str, Any]]) -> None:
    for i, tool in enumerate(tools):
        param = f"tools[{i}].function.name"
        name = tool.get("function", {}).get("name")
        if not isinstance(name, str):
            missing = "missing_required_parameter"
            _refuse(f"Missing required parameter: '{param}'.", param, missing)
        if len(name) > 64:
            _refuse(
                f"Invalid '{param}': string too long. Expected a string with maximum length 64, "
                f"but got a string with length {len(name)} instead.",
                param,
                "string_above_max_length",
            )
        if not re.fullmatch(r"[a-zA-Z0-9_-]+", name):
            _refuse(
                f"Invalid '{param}': string does not match pattern. Expected a string that "
                "matches the pattern '^[a-zA-Z0-9_-]+$'.",
                param,
                "invalid_value",
            )


def _check_messages(messages: Any) -> None:
    """Each assistant `tool_calls` answered by the `tool` messages right after it."""
    if messages is None:
        missing = "missing_required_parameter"
        _refuse("Missing required parameter: 'messages'.", "messages", missing)
    if not messages:
        _refuse(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead.",
            "messages",
            "empty_array",
        )
    open_calls: list[str] = []
    answered: set[str] = set()
    asked_at = 0
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not open_calls:
                _refuse(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{i}].role",
                )
            if call_id not in open_calls:
                _refuse(
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in 'tool_calls' "
                    "of previous message.",
                    f"messages.[{i}].tool_call_id",
                )
            answered.add(call_id)
            continue
        _check_answered(open_calls, answered, asked_at)
        open_calls, answered = [], set()
        if role == "assistant" and "tool_calls" in message:
            if not message["tool_calls"]:
                _refuse(
                    f"Invalid 'messages[{i}].tool_calls': empty array. Expected an array with "
                    "minimum length 1, but got an empty array instead.",
                    f"messages[{i}].tool_calls",
                    "empty_array",
                )
            open_calls = [call["id"] for call in message["tool_calls"]]
            asked_at = i
    _check_answered(open_calls, answered, asked_at)


def _check_answered(open_calls: list[str], answered: set[str], asked_at: int) -> None:
    missing = [call_id for call_id in open_calls if call_id not in answered]
    if missing:
        _refuse(
            "An assistant message with 'tool_calls' must be followed by tool messages responding "
            "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
            f"{', '.join(missing)}",
            f"messages.[{asked_at}].role",
        )
