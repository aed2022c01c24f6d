"""Gemini on Vertex AI (`kind: vertex_gemini`) through the google-genai SDK: `generateContent`,
or `streamGenerateContent` (server-sent events) when the call streams.

Imported only when config names such a provider (see `registry`): google-genai is a large
import that a worker without Gemini never pays for.

How the neutral conversation maps to `generateContent`:

- The system prompt is `system_instruction`; user messages are `user` contents; assistant
  messages are `model` contents holding text and `function_call` parts; the results of one
  turn's parallel calls are `function_response` parts of one `user` content, in order
  (Gemini wants as many responses as the turn had calls), each `{"output": text}` or
  `{"error": text}`.
- Gemini often gives no id to a function call. Such a call gets `gemini-<turn>-<n>` (the
  turn's position in the conversation and the call's within the turn), so a retried or
  replayed call yields the same ids; those ids are ours and are not sent back.
- Thinking models sign their function calls (`thought_signature`) and Gemini 3 refuses a
  history whose calls lack one. The neutral conversation does not keep signatures, so the
  placeholder Google documents for histories from elsewhere is sent instead; the model
  loses its earlier reasoning, not the calls and results.
- Tool parameters are JSON Schema; `FunctionDeclaration.parameters` takes Gemini's OpenAPI
  subset, which every Gemini version accepts: `to_gemini_schema` keeps what it can say
  (types, descriptions, enums of strings, nullability, local `$ref`s inlined) and drops
  the rest (`additionalProperties`, `title`, `$schema`, `default`, …).
"""

import base64
import json
from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from google.oauth2.credentials import Credentials

from temporal_executor.schemas.config import ProviderSettings
from temporal_executor.schemas.conversation import AssistantMessage, ChatMessage, ToolCall, Usage
from temporal_executor.schemas.task import LlmCallInput, LlmCallResult
from temporal_executor.worker.llm._http_errors import (
    error_for_status,
    transport_errors,
    unreachable,
)
from temporal_executor.worker.llm._provider_settings import (
    check_model,
    optional_max_tokens,
    provider_label,
)
from temporal_executor.worker.llm._vertex import (
    access_token,
    raise_google_auth_error,
    require_project,
    vertex_project,
    vertex_region,
)
from temporal_executor.worker.llm.errors import (
    InvalidLlmRequest,
    LlmError,
    ProviderNotConfigured,
    ProviderUnavailable,
)
from temporal_executor.worker.llm.streaming import DeltaSink

# The placeholder signature Google documents for function calls from another source.
SKIP_THOUGHT_SIGNATURE = base64.urlsafe_b64decode("skip_thought_signature_validator")
GENERATED_ID_PREFIX = "gemini-"

# The HTTP libraries this SDK runs on (its async client's).
TRANSPORT_ERRORS = transport_errors("httpx", "httpx2", "aiohttp")


class GeminiProvider:
    def __init__(self, settings: ProviderSettings) -> None:
        self._settings = settings
        self._label = provider_label(settings)
        token = access_token(settings)
        # google-auth has no type hints; a bare token never refreshes (it has no expiry).
        credentials = Credentials(token=token) if token else None  # type: ignore[no-untyped-call]
        project = vertex_project(settings, "GOOGLE_CLOUD_PROJECT")
        if settings.base_url is not None:
            # With its own endpoint the SDK does not look the project up in the credentials.
            project = require_project(settings, project, "GOOGLE_CLOUD_PROJECT")
        try:
            self._client = genai.Client(
                vertexai=True,
                # None: the project of Application Default Credentials.
                project=project,
                location=vertex_region(
                    settings, "GOOGLE_CLOUD_LOCATION", "CLOUD_ML_REGION", default="global"
                ),
                # None: Application Default Credentials, resolved and refreshed by the SDK.
                credentials=credentials,
                http_options=types.HttpOptions(
                    # None: the region's endpoint.
                    base_url=settings.base_url,
                    # One attempt: Temporal owns retries, so every attempt is in the history.
                    retry_options=types.HttpRetryOptions(attempts=1),
                ),
            )
        except ValueError as exc:
            # E.g. no project in config, the environment or the credentials.
            msg = f"{self._label}: {exc}"
            raise ProviderNotConfigured(msg) from exc
        except Exception as exc:
            # Without a project the SDK reads Application Default Credentials right away.
            raise_google_auth_error(self._label, exc)

    @property
    def client(self) -> genai.Client:
        return self._client

    async def complete(self, call: LlmCallInput, deltas: DeltaSink | None = None) -> LlmCallResult:
        selection = call.selection
        check_model(self._settings, selection.model)
        max_tokens = optional_max_tokens(self._settings, selection)
        declarations = [
            types.FunctionDeclaration(
                name=spec.name,
                description=spec.description or None,
                parameters=gemini_parameters(spec.parameters),
            )
            for spec in call.tools
        ]
        config = types.GenerateContentConfig(
            system_instruction=call.system_prompt or None,
            temperature=selection.temperature,
            max_output_tokens=max_tokens,
            tools=[types.Tool(function_declarations=declarations)] if declarations else None,
            # The SDK may call Python functions itself; the workflow runs the tools.
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        turn = sum(1 for message in call.messages if message.role == "assistant")
        contents = to_gemini_contents(call.messages)
        try:
            if deltas is None:
                reply = await self._client.aio.models.generate_content(
                    model=selection.model, contents=contents, config=config
                )
            else:
                reply = await self._streamed(selection.model, contents, config, turn, deltas)
        except genai_errors.APIError as exc:
            # Not chained: the SDK's error holds the whole response, credentials it
            # quotes included; the mapped one says what matters, redacted.
            raise map_gemini_error(self._label, exc) from None
        except TRANSPORT_ERRORS as exc:
            raise unreachable(self._label, exc) from None
        except Exception as exc:
            raise_google_auth_error(self._label, exc)
        return LlmCallResult(
            message=self._assistant_message(reply, turn),
            usage=_usage(reply),
            provider=self._settings.name,
            model=selection.model,
        )

    async def aclose(self) -> None:
        await self._client.aio.aclose()
        self._client.close()

    async def _streamed(
        self,
        model: str,
        contents: list[types.Content],
        config: types.GenerateContentConfig,
        turn: int,
        deltas: DeltaSink,
    ) -> types.GenerateContentResponse:
        """The reply as a stream of partial responses, each fragment to `deltas` as it comes,
        merged into one response: the parts in order, the last finish reason and usage.

        Gemini sends a function call whole, in one part, so its fragment is all its arguments.
        """
        parts: list[types.Part] = []
        last: types.GenerateContentResponse | None = None
        finish: types.FinishReason | None = None
        usage: types.GenerateContentResponseUsageMetadata | None = None
        answered = False
        calls = 0
        stream = await self._client.aio.models.generate_content_stream(
            model=model, contents=contents, config=config
        )
        async for chunk in stream:
            last, usage = chunk, chunk.usage_metadata or usage
            if not chunk.candidates:
                continue
            answered = True
            candidate = chunk.candidates[0]
            finish = candidate.finish_reason or finish
            for part in candidate.content.parts or [] if candidate.content else []:
                parts.append(part)
                call = part.function_call
                if part.text and not part.thought:
                    deltas.text(part.text)
                elif call is not None and call.name:
                    # The id `_assistant_message` gives it, when Gemini gives none.
                    call_id = call.id or f"{GENERATED_ID_PREFIX}{turn}-{calls}"
                    deltas.tool_call(call_id, call.name, json.dumps(call.args or {}))
                    calls += 1
        if not answered:
            # No candidates at all: the prompt was blocked (`prompt_feedback` says why).
            return last or types.GenerateContentResponse()
        return types.GenerateContentResponse(
            candidates=[
                types.Candidate(
                    content=types.Content(role="model", parts=parts), finish_reason=finish
                )
            ],
            usage_metadata=usage,
        )

    def _assistant_message(
        self, reply: types.GenerateContentResponse, turn: int
    ) -> AssistantMessage:
        if not reply.candidates:
            feedback = reply.prompt_feedback
            reason = feedback.block_reason if feedback else None
            msg = f"{self._label}: the prompt was blocked ({reason or 'no candidates'})"
            raise InvalidLlmRequest(msg)
        candidate = reply.candidates[0]
        parts = candidate.content.parts if candidate.content and candidate.content.parts else []
        if not parts and candidate.finish_reason == types.FinishReason.MALFORMED_FUNCTION_CALL:
            # The model wrote a call Gemini could not parse: another attempt may do better.
            msg = f"{self._label}: the model produced a malformed function call"
            raise ProviderUnavailable(msg)
        texts: list[str] = []
        calls: list[ToolCall] = []
        for part in parts:
            if part.text and not part.thought:
                texts.append(part.text)
            elif part.function_call is not None and part.function_call.name:
                call = part.function_call
                calls.append(
                    ToolCall(
                        id=call.id or f"{GENERATED_ID_PREFIX}{turn}-{len(calls)}",
                        name=call.name,
                        arguments=dict(call.args or {}),
                    )
                )
        return AssistantMessage(content="".join(texts), tool_calls=calls)


def to_gemini_contents(messages: list[ChatMessage]) -> list[types.Content]:
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    turns: list[tuple[str, list[types.Part]]] = []
    # The parts of the user turn being filled with function responses.
    responses: list[types.Part] | None = None
    for message in messages:
        if message.role == "tool":
            if responses is None:
                responses = []
                turns.append(("user", responses))
            responses.append(_function_response(message, names))
            continue
        responses = None
        if message.role == "assistant":
            parts: list[types.Part] = []
            if message.content:
                parts.append(types.Part(text=message.content))
            parts.extend(
                types.Part(
                    function_call=types.FunctionCall(
                        id=_sent_id(call.id), name=call.name, args=call.arguments
                    ),
                    # Only the first call of a turn carries the turn's signature.
                    thought_signature=SKIP_THOUGHT_SIGNATURE if position == 0 else None,
                )
                for position, call in enumerate(message.tool_calls)
            )
            # Gemini refuses a content without parts; an empty reply carries nothing to keep.
            if parts:
                turns.append(("model", parts))
        else:
            turns.append(("user", [types.Part(text=message.content)]))
    return [types.Content(role=role, parts=parts) for role, parts in turns]


def _function_response(message: ChatMessage, names: dict[str, str]) -> types.Part:
    name = message.name or names.get(message.tool_call_id or "")
    if not name:
        msg = "a tool message names no tool and answers no known call; Gemini needs the name"
        raise InvalidLlmRequest(msg)
    key = "error" if message.is_error else "output"
    return types.Part(
        function_response=types.FunctionResponse(
            id=_sent_id(message.tool_call_id), name=name, response={key: message.content}
        )
    )


def _sent_id(call_id: str | None) -> str | None:
    """Gemini's own call ids go back to it; the ones made up here do not."""
    if call_id is None or call_id.startswith(GENERATED_ID_PREFIX):
        return None
    return call_id


# JSON Schema keywords Gemini's Schema has under another name, and those it has as they are.
_RENAMED = {
    "minItems": "min_items",
    "maxItems": "max_items",
    "minLength": "min_length",
    "maxLength": "max_length",
    "minProperties": "min_properties",
    "maxProperties": "max_properties",
}
_KEPT = ("description", "format", "pattern", "minimum", "maximum")
_TYPES = ("string", "number", "integer", "boolean", "array", "object")
_MAX_REF_DEPTH = 8


def gemini_parameters(parameters: dict[str, Any]) -> types.Schema | None:
    """A tool's parameters; None for a tool without any, which Gemini wants left out
    (it refuses an OBJECT without properties)."""
    if not parameters.get("properties"):
        return None
    return types.Schema.model_validate(to_gemini_schema(parameters))


def to_gemini_schema(schema: Any, root: Any = None, refs: int = 0) -> dict[str, Any]:
    """JSON Schema to Gemini's OpenAPI-subset `Schema`, as snake_case keys.

    `refs` counts the `$ref`s expanded on the way here, so a recursive schema ends.
    """
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if refs >= _MAX_REF_DEPTH:
            return {}
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        return to_gemini_schema({**_resolve_ref(root, ref), **siblings}, root, refs + 1)
    nullable = False
    kind = schema.get("type")
    if isinstance(kind, list):
        nullable = "null" in kind
        kind = next((k for k in kind if k != "null"), None)
    variants = [v for v in schema.get("anyOf") or schema.get("oneOf") or [] if isinstance(v, dict)]
    nullable = nullable or any(v.get("type") == "null" for v in variants)
    variants = [v for v in variants if v.get("type") != "null"]
    if len(variants) == 1:
        # `X | None`: that one variant, nullable, with this schema's description.
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf", "type")}
        one = to_gemini_schema({**variants[0], **rest}, root, refs)
        return {**one, "nullable": True} if nullable else one
    out: dict[str, Any] = {}
    if variants:
        out["any_of"] = [to_gemini_schema(v, root, refs) for v in variants]
    if kind in _TYPES:
        out["type"] = str(kind).upper()
    out.update({key: schema[key] for key in _KEPT if key in schema})
    out.update({new: schema[old] for old, new in _RENAMED.items() if old in schema})
    _enum(schema, out)
    properties = schema.get("properties")
    if isinstance(properties, dict) and properties:
        out["properties"] = {
            name: to_gemini_schema(value, root, refs) for name, value in properties.items()
        }
        required = [name for name in schema.get("required", []) if name in properties]
        if required:
            out["required"] = required
    elif out.get("type") == "OBJECT":
        # A free-form object: Gemini refuses an OBJECT without properties, so say nothing
        # of its type and let the description tell the model.
        del out["type"]
    if isinstance(schema.get("items"), dict):
        out["items"] = to_gemini_schema(schema["items"], root, refs)
    if nullable:
        out["nullable"] = True
    return out


def _enum(schema: dict[str, Any], out: dict[str, Any]) -> None:
    values = schema.get("enum")
    if "const" in schema:
        values = [schema["const"]]
    if not isinstance(values, list) or not values:
        return
    if all(isinstance(v, str) for v in values):
        # Gemini's enums are strings only.
        out["enum"] = values
        out.setdefault("format", "enum")
        return
    allowed = ", ".join(json.dumps(v) for v in values)
    out["description"] = f"{out.get('description', '')} One of: {allowed}.".strip()


def _resolve_ref(root: Any, ref: str) -> dict[str, Any]:
    """A local reference (`#/$defs/Name`); anything else resolves to an empty schema."""
    if not ref.startswith("#/"):
        return {}
    node: Any = root
    for part in ref[2:].split("/"):
        if not isinstance(node, dict):
            return {}
        node = node.get(part.replace("~1", "/").replace("~0", "~"))
    return node if isinstance(node, dict) else {}


def map_gemini_error(label: str, exc: genai_errors.APIError) -> LlmError:
    detail = exc.message or str(exc)
    headers = _headers(exc)
    delay = _retry_info_delay(exc.details)
    if delay is not None and "retry-after" not in headers:
        # Gemini says when to come back in the body (google.rpc.RetryInfo), not a header.
        headers["retry-after"] = delay
    status = exc.status or ""
    return error_for_status(
        label,
        exc.code,
        f"{status}: {detail}" if status else detail,
        headers,
        context_too_long=exc.code == 400 and "exceeds the maximum number of tokens" in detail,
        model_not_found=status == "NOT_FOUND",
    )


def _headers(exc: genai_errors.APIError) -> dict[str, str]:
    headers = getattr(exc.response, "headers", None)
    if headers is None:
        return {}
    return {str(name).lower(): str(value) for name, value in headers.items()}


def _retry_info_delay(details: Any) -> str | None:
    """`retryDelay` ("30s") of a google.rpc.RetryInfo in the error body, as seconds."""
    error = details.get("error", details) if isinstance(details, dict) else {}
    items = error.get("details") if isinstance(error, dict) else None
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = str(item.get("retryDelay", ""))
            if delay.endswith("s"):
                return delay[:-1]
    return None


def _usage(reply: types.GenerateContentResponse) -> Usage:
    usage = reply.usage_metadata
    if usage is None:
        return Usage()
    # Thinking is billed as output; tool-use prompt tokens (built-in tools) as input.
    return Usage(
        input_tokens=(usage.prompt_token_count or 0) + (usage.tool_use_prompt_token_count or 0),
        output_tokens=(usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0),
    )
