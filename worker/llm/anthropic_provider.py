"""Anthropic Messages API (plain, or streamed with `messages.stream`) through the official
SDK: Anthropic's own API (`kind: anthropic`) or Claude on Vertex AI (`kind: vertex_anthropic`,
the SDK's Vertex client: same messages, the model in the URL, a Google access token instead
of a key).

Imported only when config names such a provider (see `registry`), so a worker that does
not use it never loads the SDK.
"""

from typing import Any

import anthropic
from anthropic.types import (
    ContentBlockParam,
    Message,
    MessageParam,
    ToolParam,
    ToolResultBlockParam,
)

from temporal_executor.schemas.config import ProviderSettings
from temporal_executor.schemas.conversation import AssistantMessage, ChatMessage, ToolCall, Usage
from temporal_executor.schemas.task import LlmCallInput, LlmCallResult
from temporal_executor.worker.llm._http_errors import (
    error_for_status,
    transport_errors,
    unreachable,
)
from temporal_executor.worker.llm._provider_settings import (
    api_key_from_env,
    check_model,
    provider_label,
)
from temporal_executor.worker.llm._vertex import (
    access_token,
    raise_google_auth_error,
    require_project,
    vertex_project,
    vertex_region,
)
from temporal_executor.worker.llm.errors import InvalidLlmRequest, LlmError, ProviderUnavailable
from temporal_executor.worker.llm.streaming import DeltaSink

# Passed on every call: with the client's default timeout the SDK refuses (ValueError)
# non-streaming calls whose max_tokens it estimates could take over 10 minutes. The
# activity's start-to-close timeout is the real bound.
_TIMEOUT = anthropic.Timeout(600.0, connect=5.0)

# The HTTP libraries this SDK runs on (its async client's).
TRANSPORT_ERRORS = transport_errors("httpx2")


class AnthropicProvider:
    def __init__(self, settings: ProviderSettings) -> None:
        self._settings = settings
        self._label = provider_label(settings)
        self._client = _make_client(settings)

    @property
    def client(self) -> anthropic.AsyncAnthropic | anthropic.AsyncAnthropicVertex:
        return self._client

    async def complete(self, call: LlmCallInput, deltas: DeltaSink | None = None) -> LlmCallResult:
        selection = call.selection
        check_model(self._settings, selection.model)
        extra_body: dict[str, Any] = {}
        if selection.temperature is not None:
            # The 2.x SDK no longer has a `temperature` argument; the API still reads the
            # field, whose range there is 0..1 while a request may say up to 2 (OpenAI's range).
            extra_body["temperature"] = min(selection.temperature, 1.0)
        params: dict[str, Any] = {
            "model": selection.model,
            "max_tokens": selection.max_tokens or self._settings.default_max_tokens,
            "messages": to_anthropic_messages(call.messages),
            "system": call.system_prompt or anthropic.omit,
            "tools": [_tool(spec.name, spec.description, spec.parameters) for spec in call.tools]
            or anthropic.omit,
            "extra_body": extra_body or None,
            "timeout": _TIMEOUT,
        }
        try:
            if deltas is None:
                reply: Message = await self._client.messages.create(**params)
            else:
                reply = await self._streamed(params, deltas)
        except anthropic.APIError as exc:
            # Not chained: the SDK's error holds the whole response, credentials it
            # quotes included; the mapped one says what matters, redacted.
            raise map_anthropic_error(self._label, exc) from None
        except TRANSPORT_ERRORS as exc:
            # The connection broke while the reply streamed (the SDK passes that on as is).
            raise unreachable(self._label, exc) from None
        except Exception as exc:
            # On Vertex the SDK resolves Application Default Credentials on the first request.
            raise_google_auth_error(self._label, exc)
        return LlmCallResult(
            message=_assistant_message(reply),
            usage=_usage(reply),
            provider=self._settings.name,
            model=selection.model,
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def _streamed(self, params: dict[str, Any], deltas: DeltaSink) -> Message:
        """The reply through server-sent events, each fragment to `deltas` as it comes."""
        calls: dict[int, tuple[str, str]] = {}  # content block index -> tool_use id, name
        async with self._client.messages.stream(**params) as stream:
            async for event in stream:
                if event.type == "content_block_start" and event.content_block.type == "tool_use":
                    block = event.content_block
                    calls[event.index] = (block.id, block.name)
                    deltas.tool_call(block.id, block.name, "")
                elif event.type == "content_block_delta":
                    if event.delta.type == "text_delta":
                        deltas.text(event.delta.text)
                    elif event.delta.type == "input_json_delta" and event.index in calls:
                        call_id, name = calls[event.index]
                        deltas.tool_call(call_id, name, event.delta.partial_json)
            return await stream.get_final_message()


def _make_client(
    settings: ProviderSettings,
) -> anthropic.AsyncAnthropic | anthropic.AsyncAnthropicVertex:
    # Temporal owns retries (max_retries=0), so every attempt is visible in the history.
    if settings.kind != "vertex_anthropic":
        return anthropic.AsyncAnthropic(
            api_key=api_key_from_env(settings, "ANTHROPIC_API_KEY"),
            base_url=settings.base_url,
            max_retries=0,
        )
    project_envs = ("ANTHROPIC_VERTEX_PROJECT_ID", "GOOGLE_CLOUD_PROJECT")
    project = require_project(settings, vertex_project(settings, *project_envs), *project_envs)
    return anthropic.AsyncAnthropicVertex(
        project_id=project,
        region=vertex_region(settings, "CLOUD_ML_REGION", "GOOGLE_CLOUD_LOCATION"),
        # None: Application Default Credentials, resolved and refreshed by the SDK.
        access_token=access_token(settings),
        # None: the region's endpoint, or ANTHROPIC_VERTEX_BASE_URL.
        base_url=settings.base_url,
        max_retries=0,
    )


def to_anthropic_messages(messages: list[ChatMessage]) -> list[MessageParam]:
    """Neutral messages to the Messages API's `messages`.

    A `tool` message becomes a `tool_result` block in a user message; results of one
    assistant turn's parallel calls go in one user message, which the API requires (each
    `tool_use` needs its result in the very next message).
    """
    out: list[MessageParam] = []
    # The results list of the user message being filled, while tool messages follow each other.
    results: list[ToolResultBlockParam] | None = None
    for message in messages:
        if message.role == "tool":
            if results is None:
                results = []
                out.append({"role": "user", "content": results})
            results.append(_tool_result(message))
            continue
        results = None
        if message.role == "assistant":
            blocks: list[ContentBlockParam] = []
            if message.content:
                blocks.append({"type": "text", "text": message.content})
            blocks.extend(
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in message.tool_calls
            )
            # The API refuses empty content; an empty reply carries nothing to keep.
            if blocks:
                out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": "user", "content": message.content})
    return out


def map_anthropic_error(label: str, exc: anthropic.APIError) -> LlmError:
    if isinstance(exc, anthropic.APIStatusError):
        detail = exc.api_message or exc.message
        return error_for_status(
            label,
            exc.status_code,
            detail,
            exc.response.headers,
            # The API's wording ("prompt is too long: N tokens > M maximum") is the only signal.
            context_too_long=exc.status_code == 400 and "prompt is too long" in detail.lower(),
            model_not_found=exc.type == "not_found_error",
        )
    if isinstance(exc, anthropic.APIConnectionError):
        return unreachable(label, exc)
    # A response the SDK could not read as a Message: the provider's fault, maybe passing.
    return ProviderUnavailable(f"{label}: {type(exc).__name__}: {exc.message}")


def _tool(name: str, description: str, parameters: dict[str, Any]) -> ToolParam:
    tool: ToolParam = {"name": name, "input_schema": parameters}
    if description:
        tool["description"] = description
    return tool


def _tool_result(message: ChatMessage) -> ToolResultBlockParam:
    if not message.tool_call_id:
        msg = "a tool message has no tool_call_id; Anthropic needs it to match the tool_use"
        raise InvalidLlmRequest(msg)
    block: ToolResultBlockParam = {
        "type": "tool_result",
        "tool_use_id": message.tool_call_id,
        "content": message.content,
    }
    if message.is_error:
        block["is_error"] = True
    return block


def _assistant_message(reply: Message) -> AssistantMessage:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in reply.content:
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_use":
            calls.append(ToolCall(id=block.id, name=block.name, arguments=dict(block.input)))
    return AssistantMessage(content="".join(texts), tool_calls=calls)


def _usage(reply: Message) -> Usage:
    usage = reply.usage
    # Cached prompt tokens are reported apart from `input_tokens`; the total is their sum.
    cached = (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
    return Usage(input_tokens=usage.input_tokens + cached, output_tokens=usage.output_tokens)
