"""Vertex AI: Claude through the anthropic SDK's Vertex client and Gemini through
google-genai, each against a local server speaking that endpoint's wire format (and a
local Google token endpoint for Application Default Credentials). No network."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.config import ProviderSettings
from temporal_executor.schemas.conversation import ChatMessage, ToolCall, ToolSpec
from temporal_executor.schemas.event_types import EventType
from temporal_executor.worker.llm.anthropic_provider import AnthropicProvider
from temporal_executor.worker.llm.errors import (
    AuthenticationFailed,
    ContextTooLong,
    InvalidLlmRequest,
    LlmError,
    ModelNotFound,
    ProviderNotConfigured,
    ProviderUnavailable,
    RateLimited,
)
from temporal_executor.worker.llm.gemini_provider import GeminiProvider, to_gemini_schema
from tests.fakes.llm_servers import (
    ErrorReply,
    FakeGeminiServer,
    FakeGoogleTokenServer,
    FakeVertexAnthropicServer,
    RecordedRequest,
    Reply,
    ScriptItem,
    context_too_long,
    gemini_rate_limited,
    http_error,
    model_not_found,
    rate_limited,
    server_error,
    text,
    tool_calls,
    unauthorized,
)
from tests.harness import ONE_TOOL_CALL, ServiceHarness, new_task_id, service_settings, types
from tests.llm_wire import (
    CALCULATOR,
    SAVE_NOTE,
    Wire,
    assistant_turn,
    call_input,
    check_http_error,
    check_parallel_tool_calls_round_trip,
    check_text_reply,
    check_tool_call_round_trip,
    post,
    sdks_imported_by,
    tool_result,
    user,
)

TOKEN_ENV = "TE_TEST_VERTEX_TOKEN"
CLAUDE = "claude-sonnet-4-5@20250929"
GEMINI = "gemini-2.5-flash"
GEMINI_3 = "gemini-3-pro-preview"
KINDS = ["vertex_anthropic", "vertex_gemini"]

# What the SDKs would otherwise read from the environment of whoever runs the tests.
GOOGLE_ENV = (
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
    "CLOUD_ML_REGION",
    "ANTHROPIC_VERTEX_PROJECT_ID",
    "ANTHROPIC_VERTEX_BASE_URL",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_GENAI_API_VERSION",
)

VertexServer = FakeVertexAnthropicServer | FakeGeminiServer
VertexProvider = AnthropicProvider | GeminiProvider


@pytest.fixture(autouse=True)
def _clean_google_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in GOOGLE_ENV:
        monkeypatch.delenv(name, raising=False)


def new_server(kind: str, **options: Any) -> VertexServer:
    if kind == "vertex_anthropic":
        return FakeVertexAnthropicServer(**options)
    return FakeGeminiServer(**options)


def vertex_settings(kind: str, server: VertexServer, **extra: Any) -> ProviderSettings:
    fields: dict[str, Any] = {
        "name": f"my-{kind}",
        "kind": kind,
        "project": server.project,
        "region": server.region,
        "access_token_env": TOKEN_ENV,
        "base_url": server.base_url,
    }
    return ProviderSettings.model_validate({**fields, **extra})


def make_provider(settings: ProviderSettings) -> VertexProvider:
    if settings.kind == "vertex_anthropic":
        return AnthropicProvider(settings)
    return GeminiProvider(settings)


@pytest.fixture(params=KINDS)
async def wire(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Wire]:
    kind: str = request.param
    with new_server(kind) as server:
        monkeypatch.setenv(TOKEN_ENV, server.access_token)
        provider = make_provider(vertex_settings(kind, server))
        yield Wire(kind, server, provider, CLAUDE if kind == "vertex_anthropic" else GEMINI)
        await provider.aclose()


@pytest.fixture
async def gemini(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[FakeGeminiServer, GeminiProvider]]:
    with FakeGeminiServer() as server:
        monkeypatch.setenv(TOKEN_ENV, server.access_token)
        provider = GeminiProvider(vertex_settings("vertex_gemini", server))
        yield server, provider
        await provider.aclose()


async def closing(provider: VertexProvider, call: Any) -> Any:
    try:
        return await provider.complete(call)
    finally:
        await provider.aclose()


# -- both providers, one behaviour ------------------------------------------------------------


async def test_text_reply(wire: Wire) -> None:
    await check_text_reply(wire)

    request = wire.server.last_request
    assert request.header("authorization") == f"Bearer {wire.server.access_token}"
    assert f"/projects/test-project/locations/{wire.server.region}/publishers/" in request.path
    assert request.path.endswith(
        f"/models/{wire.model}:"
        + ("rawPredict" if wire.kind == "vertex_anthropic" else "generateContent")
    )


async def test_tool_call_round_trip(wire: Wire) -> None:
    await check_tool_call_round_trip(wire, system_prompt="Be brief.")


async def test_parallel_tool_calls_round_trip(wire: Wire) -> None:
    await check_parallel_tool_calls_round_trip(wire)


@pytest.mark.parametrize(
    ("reply", "error", "retry_after"),
    [
        (rate_limited("1"), RateLimited, 1.0),
        (rate_limited(None), RateLimited, None),
        (unauthorized(), AuthenticationFailed, None),
        (http_error(403, "Permission denied"), AuthenticationFailed, None),
        (model_not_found(), ModelNotFound, None),
        (server_error(500), ProviderUnavailable, None),
        (server_error(503), ProviderUnavailable, None),
        (context_too_long(), ContextTooLong, None),
        (http_error(400, "contents: bad"), InvalidLlmRequest, None),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
async def test_http_errors_map_to_one_error_model(
    wire: Wire, reply: ErrorReply, error: type[LlmError], retry_after: float | None
) -> None:
    await check_http_error(wire, reply, error, retry_after)


async def test_rate_limited_then_answered(wire: Wire) -> None:
    wire.server.enqueue(rate_limited("1"), text("now it works"))
    call = call_input(model=wire.model)

    with pytest.raises(RateLimited) as raised:
        await wire.provider.complete(call)
    result = await wire.provider.complete(call)  # what Temporal's next attempt does

    assert raised.value.retry_after == 1.0
    assert result.message.content == "now it works"


async def test_a_wrong_token_or_project_is_refused(
    wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "ya29.someone-elses-token")
    wrong_token = make_provider(vertex_settings(wire.kind, wire.server))
    monkeypatch.setenv(TOKEN_ENV, wire.server.access_token)
    wrong_project = make_provider(vertex_settings(wire.kind, wire.server, project="not-mine"))
    wire.server.enqueue(text("never reached"))

    with pytest.raises(AuthenticationFailed, match="HTTP 401"):
        await closing(wrong_token, call_input(model=wire.model))
    with pytest.raises(AuthenticationFailed, match=r"HTTP 403.*not-mine"):
        await closing(wrong_project, call_input(model=wire.model))

    assert wire.server.pending == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_an_unknown_model_is_refused_by_the_api(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with new_server(kind, models=[CLAUDE, GEMINI]) as server:
        monkeypatch.setenv(TOKEN_ENV, server.access_token)
        provider = make_provider(vertex_settings(kind, server))
        with pytest.raises(ModelNotFound, match=r"HTTP 404.*no-such-model"):
            await closing(provider, call_input(model="no-such-model"))


async def test_an_invalid_tool_name_is_refused_by_the_api(wire: Wire) -> None:
    bad = ToolSpec.model_construct(
        name="save note!", description="", parameters={"type": "object", "properties": {"a": {}}}
    )
    wire.server.enqueue(text("never reached"))

    with pytest.raises(InvalidLlmRequest, match=r"HTTP 400: .*name"):
        await wire.provider.complete(call_input(model=wire.model, tools=[bad]))


async def test_unanswered_tool_calls_are_refused_by_the_api(wire: Wire) -> None:
    call = ToolCall(id="call_1", name="calculator", arguments={})
    messages = [user("hi"), ChatMessage(role="assistant", tool_calls=[call]), user("and?")]
    wire.server.enqueue(text("never reached"))

    with pytest.raises(InvalidLlmRequest, match="HTTP 400"):
        await wire.provider.complete(call_input(*messages, model=wire.model, tools=[CALCULATOR]))


@pytest.mark.parametrize("kind", KINDS)
async def test_an_unreachable_endpoint_is_unavailable(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(TOKEN_ENV, "token")
    settings = ProviderSettings.model_validate(
        {
            "name": "down",
            "kind": kind,
            "project": "p",
            "region": "r",
            "access_token_env": TOKEN_ENV,
            "base_url": f"http://127.0.0.1:{port}" + ("/v1" if kind == "vertex_anthropic" else ""),
        }
    )

    with pytest.raises(ProviderUnavailable, match="down") as raised:
        await closing(make_provider(settings), call_input(model="m"))

    assert raised.value.retryable


@pytest.mark.parametrize(
    ("kind", "fields", "named"),
    [
        ("vertex_anthropic", {"project": "p"}, "CLOUD_ML_REGION"),
        ("vertex_anthropic", {"region": "r"}, "ANTHROPIC_VERTEX_PROJECT_ID"),
        (
            "vertex_anthropic",
            {"project": "p", "region": "r", "access_token_env": TOKEN_ENV},
            TOKEN_ENV,
        ),
        (
            "vertex_gemini",
            {"region": "r", "base_url": "http://127.0.0.1:9"},
            "GOOGLE_CLOUD_PROJECT",
        ),
        ("vertex_gemini", {"project": "p", "access_token_env": TOKEN_ENV}, TOKEN_ENV),
    ],
)
def test_missing_settings_name_what_to_set(
    kind: str, fields: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    settings = ProviderSettings.model_validate({"name": "v", "kind": kind, **fields})

    with pytest.raises(ProviderNotConfigured, match=named):
        make_provider(settings)


@pytest.mark.parametrize("kind", KINDS)
async def test_project_and_region_from_the_usual_environment(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with new_server(kind, project="env-project", region="europe-west4") as server:
        server.enqueue(text("hi"))
        monkeypatch.setenv(TOKEN_ENV, server.access_token)
        if kind == "vertex_anthropic":
            monkeypatch.setenv("ANTHROPIC_VERTEX_PROJECT_ID", "env-project")
            monkeypatch.setenv("CLOUD_ML_REGION", "europe-west4")
        else:
            monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "env-project")
            monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "europe-west4")
        settings = ProviderSettings.model_validate(
            {"name": "v", "kind": kind, "access_token_env": TOKEN_ENV, "base_url": server.base_url}
        )

        result = await closing(make_provider(settings), call_input(model="m"))

    assert result.message.content == "hi"
    assert "/projects/env-project/locations/europe-west4/" in server.last_request.path


@pytest.mark.parametrize("kind", KINDS)
async def test_application_default_credentials(
    kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A service account key file, as on a server; its token endpoint is ours.
    with (
        new_server(kind, access_token="ya29.from-adc") as server,
        FakeGoogleTokenServer(access_token="ya29.from-adc") as oauth,
    ):
        monkeypatch.setenv(
            "GOOGLE_APPLICATION_CREDENTIALS", str(oauth.credentials_file(tmp_path / "adc.json"))
        )
        server.enqueue(text("one"), text("two"))
        settings = vertex_settings(kind, server, access_token_env=None)
        provider = make_provider(settings)
        try:
            first = await provider.complete(call_input(model="m"))
            second = await provider.complete(call_input(model="m"))
        finally:
            await provider.aclose()

    assert (first.message.content, second.message.content) == ("one", "two")
    assert server.last_request.header("authorization") == "Bearer ya29.from-adc"
    assert len(oauth.requests) == 1  # the token is kept until it expires


@pytest.mark.parametrize("kind", KINDS)
async def test_no_credentials_fail_the_task_naming_them(
    kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with new_server(kind) as server:
        settings = vertex_settings(kind, server, access_token_env=None)

        with pytest.raises(
            AuthenticationFailed, match=r"Google credentials: .*missing\.json"
        ) as raised:
            await closing(make_provider(settings), call_input(model="m"))

    assert not raised.value.retryable
    assert server.requests == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "anthropic", "project": "p"}, "project not used by kind anthropic"),
        ({"kind": "openai", "region": "r", "access_token_env": "T"}, "region, access_token_env"),
        ({"kind": "vertex_gemini", "azure_ad_token_env": "T"}, "azure_ad_token_env not used"),
    ],
)
def test_settings_refuse_options_of_another_kind(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProviderSettings.model_validate({"name": "x", **fields})


# -- Claude on Vertex: what goes on the wire ----------------------------------------------------


async def test_vertex_anthropic_request(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeVertexAnthropicServer() as server:
        monkeypatch.setenv(TOKEN_ENV, server.access_token)
        server.enqueue(text("hello from Vertex"))
        provider = make_provider(vertex_settings("vertex_anthropic", server))
        call = call_input(model=CLAUDE, system_prompt="Be brief.", temperature=1.5, max_tokens=99)

        result = await closing(provider, call)

    body = server.last_request.body
    assert result.message.content == "hello from Vertex"
    assert "model" not in body  # it is in the path
    assert body["anthropic_version"]
    assert (body["system"], body["temperature"], body["max_tokens"]) == ("Be brief.", 1.0, 99)
    assert body["messages"] == [{"role": "user", "content": "What is 6 * 7?"}]


# -- Gemini: what goes on the wire ----------------------------------------------------------------


async def test_gemini_request_body(gemini: tuple[FakeGeminiServer, GeminiProvider]) -> None:
    server, provider = gemini
    server.enqueue(tool_calls(("calculator", {"expression": "1+1"}), ("save_note", {})), text("2"))
    first = call_input(
        user("Add 1 and 1"),
        model=GEMINI,
        tools=[CALCULATOR, SAVE_NOTE],
        system_prompt="Be brief.",
        temperature=1.2,
        max_tokens=256,
    )

    asked = await provider.complete(first)
    calc, note = asked.message.tool_calls
    await provider.complete(
        first.model_copy(
            update={
                "messages": [
                    *first.messages,
                    assistant_turn(asked),
                    tool_result(calc, "2"),
                    tool_result(note, "disk full", is_error=True),
                ]
            }
        )
    )

    body = server.last_request.body
    # Gemini gave no ids: ours are derived from the turn and position, and not sent back.
    assert (calc.id, note.id) == ("gemini-0-0", "gemini-0-1")
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}], "role": "user"}
    assert body["generationConfig"] == {"temperature": 1.2, "maxOutputTokens": 256}
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "calculator",
                    "description": "Evaluate an arithmetic expression.",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"expression": {"type": "STRING"}},
                        "required": ["expression"],
                    },
                },
                # No parameters at all: Gemini refuses an OBJECT without properties.
                {"name": "save_note", "description": "Save a note."},
            ]
        }
    ]
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Add 1 and 1"}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "calculator", "args": {"expression": "1+1"}},
                    "thoughtSignature": "skip_thought_signature_validator",
                },
                {"functionCall": {"name": "save_note", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "calculator", "response": {"output": "2"}}},
                {"functionResponse": {"name": "save_note", "response": {"error": "disk full"}}},
            ],
        },
    ]


async def test_gemini_ids_the_model_gives_go_back(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeGeminiServer(call_ids=True) as server:
        monkeypatch.setenv(TOKEN_ENV, server.access_token)
        provider = GeminiProvider(vertex_settings("vertex_gemini", server))
        server.enqueue(tool_calls(("calculator", {"expression": "2"})), text("ok"))
        first = call_input(model=GEMINI, tools=[CALCULATOR])
        try:
            asked = await provider.complete(first)
            [call] = asked.message.tool_calls
            # A history from elsewhere may lack the tool's name: found from the call's id.
            nameless = tool_result(call, "2").model_copy(update={"name": None})
            await provider.complete(
                first.model_copy(
                    update={"messages": [*first.messages, assistant_turn(asked), nameless]}
                )
            )
        finally:
            await provider.aclose()

    sent = server.last_request.body["contents"]
    assert call.id.startswith("fc-")
    assert sent[1]["parts"][0]["functionCall"]["id"] == call.id
    assert sent[2]["parts"][0]["functionResponse"] == {
        "id": call.id,
        "name": "calculator",
        "response": {"output": "2"},
    }


async def test_gemini_generated_ids_are_replay_safe(
    gemini: tuple[FakeGeminiServer, GeminiProvider],
) -> None:
    server, provider = gemini
    server.default = tool_calls(
        ("calculator", {"expression": "3"}), ("calculator", {"expression": "4"})
    )
    earlier = [
        user("a"),
        ChatMessage(role="assistant", content="first"),
        user("b"),
        ChatMessage(role="assistant", content="second"),
        user("c"),
    ]
    call = call_input(*earlier, model=GEMINI, tools=[CALCULATOR])

    once = await provider.complete(call)
    again = await provider.complete(call)

    assert [c.id for c in once.message.tool_calls] == ["gemini-2-0", "gemini-2-1"]
    assert once.message.tool_calls == again.message.tool_calls


async def test_gemini_3_needs_signed_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeGeminiServer() as server:
        monkeypatch.setenv(TOKEN_ENV, server.access_token)
        provider = GeminiProvider(vertex_settings("vertex_gemini", server))
        server.enqueue(tool_calls(("calculator", {"expression": "6 * 7"})), text("42"))
        first = call_input(model=GEMINI_3, tools=[CALCULATOR])
        try:
            asked = await provider.complete(first)
            [call] = asked.message.tool_calls
            answered = await provider.complete(
                first.model_copy(
                    update={
                        "messages": [
                            *first.messages,
                            assistant_turn(asked),
                            tool_result(call, "42"),
                        ]
                    }
                )
            )
        finally:
            await provider.aclose()
        unsigned = json.loads(server.last_request.raw)
        del unsigned["contents"][1]["parts"][0]["thoughtSignature"]
        status, refused = post_gemini(server, GEMINI_3, unsigned)

    assert answered.message.content == "42"
    assert status == 400
    assert "missing a thought_signature" in refused["error"]["message"]


def test_gemini_schema_keeps_what_gemini_can_say() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Args",
        "type": "object",
        "additionalProperties": False,
        "$defs": {
            "Unit": {"type": "string", "enum": ["cm", "in"], "title": "Unit"},
            "Point": {
                "type": "object",
                "properties": {"x": {"type": "number", "default": 0}},
                "required": ["x"],
            },
        },
        "properties": {
            "unit": {"$ref": "#/$defs/Unit", "description": "length unit"},
            "at": {"anyOf": [{"$ref": "#/$defs/Point"}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "level": {"type": "integer", "enum": [1, 2, 3]},
            "mode": {"const": "fast"},
            "note": {"type": ["string", "null"], "maxLength": 80},
            "extra": {"type": "object", "description": "anything"},
            "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        },
        "required": ["unit", "ghost"],
    }

    assert to_gemini_schema(schema) == {
        "type": "OBJECT",
        "properties": {
            "unit": {
                "type": "STRING",
                "description": "length unit",
                "enum": ["cm", "in"],
                "format": "enum",
            },
            "at": {
                "type": "OBJECT",
                "properties": {"x": {"type": "NUMBER"}},
                "required": ["x"],
                "nullable": True,
            },
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "min_items": 1},
            "level": {"type": "INTEGER", "description": "One of: 1, 2, 3."},
            "mode": {"enum": ["fast"], "format": "enum"},
            "note": {"type": "STRING", "max_length": 80, "nullable": True},
            "extra": {"description": "anything"},
            "either": {"any_of": [{"type": "STRING"}, {"type": "INTEGER"}]},
        },
        "required": ["unit"],
    }
    recursive = {"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}}}
    assert to_gemini_schema({"$ref": "#/$defs/N", **recursive})["type"] == "OBJECT"


async def test_gemini_accepts_sanitized_tools_and_refuses_raw_json_schema(
    gemini: tuple[FakeGeminiServer, GeminiProvider],
) -> None:
    server, provider = gemini
    raw = {
        "type": "object",
        "title": "Args",
        "additionalProperties": False,
        "properties": {"n": {"type": "integer", "title": "N"}, "opts": {"type": "object"}},
    }
    tool = ToolSpec(name="count", parameters=raw)
    server.enqueue(tool_calls(("count", {"n": 3})))

    asked = await provider.complete(call_input(model=GEMINI, tools=[tool]))
    sent = server.last_request.body["tools"][0]["functionDeclarations"][0]["parameters"]
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "tools": [{"functionDeclarations": [{"name": "count", "parameters": raw}]}],
    }
    status, refused = post_gemini(server, GEMINI, body)

    assert asked.message.tool_calls[0].arguments == {"n": 3}
    assert sent == {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}, "opts": {}}}
    assert status == 400
    assert 'Unknown name "additionalProperties"' in refused["error"]["message"]


async def test_gemini_retry_delay_in_the_body(
    gemini: tuple[FakeGeminiServer, GeminiProvider],
) -> None:
    server, provider = gemini
    server.enqueue(gemini_rate_limited("2.5s"))

    with pytest.raises(RateLimited, match="RESOURCE_EXHAUSTED") as raised:
        await provider.complete(call_input(model=GEMINI))

    assert raised.value.retry_after == 2.5


def raw_reply(body: dict[str, Any]) -> ErrorReply:
    """A 200 with a body of our own: Gemini's odd answers."""
    return ErrorReply(200, body=body)


async def test_gemini_odd_answers(gemini: tuple[FakeGeminiServer, GeminiProvider]) -> None:
    server, provider = gemini
    thinking = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"text": "let me think", "thought": True}, {"text": "42"}],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 2,
            "thoughtsTokenCount": 30,
            "totalTokenCount": 42,
        },
    }
    server.enqueue(
        raw_reply(thinking),
        raw_reply({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {}}),
        raw_reply(
            {
                "candidates": [
                    {"content": {"role": "model"}, "finishReason": "MALFORMED_FUNCTION_CALL"}
                ]
            }
        ),
        raw_reply(
            {"candidates": [{"content": {"role": "model", "parts": [{"text": "no usage"}]}}]}
        ),
    )
    call = call_input(model=GEMINI)

    thought = await provider.complete(call)
    with pytest.raises(InvalidLlmRequest, match="blocked"):
        await provider.complete(call)
    with pytest.raises(ProviderUnavailable, match="malformed function call"):
        await provider.complete(call)
    bare = await provider.complete(call)

    assert thought.message.content == "42"
    assert (thought.usage.input_tokens, thought.usage.output_tokens) == (10, 32)
    assert (bare.message.content, bare.usage.input_tokens) == ("no usage", 0)


def post_gemini(server: FakeGeminiServer, model: str, body: dict[str, Any]) -> tuple[int, Any]:
    resource = f"projects/{server.project}/locations/{server.region}/publishers/google/models"
    url = f"{server.url}/v1beta1/{resource}/{model}:generateContent"
    return post(url, body, {"authorization": f"Bearer {server.access_token}"})


# -- lazy imports ---------------------------------------------------------------------------------


def test_google_genai_is_imported_only_when_gemini_is_used() -> None:
    vertex = {"project": "p", "region": "r", "access_token_env": "TE_TOKEN"}
    providers = [
        {"name": "claude", "kind": "vertex_anthropic", **vertex},
        {"name": "gemini", "kind": "vertex_gemini", **vertex},
    ]
    seen = sdks_imported_by(
        providers, env={"TE_TOKEN": "token"}, refused=("anthropic", "google.genai")
    )

    assert seen == {
        "start": [],
        "claude": ["anthropic"],
        "gemini": ["anthropic", "google.genai"],
    }


# -- through the service: Temporal retries after the 429's Retry-After -------------------------


@pytest.fixture
async def gemini_service(
    embedded_stack: EmbeddedStack,
    temporal_client: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[ServiceHarness, FakeGeminiServer]]:
    with FakeGeminiServer() as server:
        monkeypatch.setenv(TOKEN_ENV, server.access_token)
        settings = service_settings(
            embedded_stack,
            tmp_path,
        )
        settings.llm.providers.append(vertex_settings("vertex_gemini", server, name="gemini"))
        harness = ServiceHarness(settings, temporal_client)
        await harness.start()
        try:
            yield harness, server
        finally:
            await harness.stop()


async def test_a_task_on_gemini_waits_out_a_rate_limit(
    gemini_service: tuple[ServiceHarness, FakeGeminiServer],
) -> None:
    service, server = gemini_service
    times: list[float] = []

    def at(item: Reply | ErrorReply) -> ScriptItem:
        def played(_: RecordedRequest) -> Reply | ErrorReply:
            times.append(time.monotonic())
            return item

        return played

    server.enqueue(
        at(rate_limited("1")),
        at(tool_calls(("calculator", {"expression": "6 * 7"}))),
        at(text("6 * 7 = 42")),
    )
    task_id = new_task_id("gemini")

    await service.producers["nats"].request(
        task_id, model_config={"provider": "gemini", "model": GEMINI}, tools=["calculator"]
    )
    events = await service.watchers["nats"].wait_for_end(task_id)

    assert types(events) == ONE_TOOL_CALL
    responded = [e.data for e in events if e.type == EventType.LLM_RESPONDED]
    assert all(isinstance(d, dict) and d["provider"] == "gemini" for d in responded)
    assert isinstance(events[-1].data, dict)
    assert events[-1].data["final_message"] == "6 * 7 = 42"
    assert len(times) == 3
    assert times[1] - times[0] >= 0.9  # Temporal waited as the 429 asked


# -- Gemini without an endpoint of its own: project from the credentials ------------------------


def test_gemini_takes_the_project_of_the_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with FakeGoogleTokenServer(access_token="t", project="key-project") as oauth:
        monkeypatch.setenv(
            "GOOGLE_APPLICATION_CREDENTIALS", str(oauth.credentials_file(tmp_path / "k.json"))
        )
        provider = GeminiProvider(ProviderSettings(name="g", kind="vertex_gemini"))
        provider.client.close()

    assert oauth.requests == []  # a token is asked for only by the first call
    assert provider.client._api_client.project == "key-project"


@pytest.mark.parametrize(
    ("credentials", "error"),
    [
        # A user's credentials carry no project.
        (
            {
                "type": "authorized_user",
                "client_id": "c",
                "client_secret": "s",
                "refresh_token": "r",
            },
            ProviderNotConfigured,
        ),
        (None, AuthenticationFailed),
    ],
)
def test_gemini_without_project_or_credentials_names_the_problem(
    credentials: dict[str, str] | None,
    error: type[LlmError],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    path = tmp_path / "adc.json"
    if credentials is not None:
        path.write_text(json.dumps(credentials), encoding="utf-8")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))

    with pytest.raises(error, match="vertex_gemini provider 'g'"):
        GeminiProvider(ProviderSettings(name="g", kind="vertex_gemini"))


async def test_gemini_default_max_tokens_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeGeminiServer() as server:
        monkeypatch.setenv(TOKEN_ENV, server.access_token)
        server.enqueue(text("a"), text("b"))
        implicit = GeminiProvider(vertex_settings("vertex_gemini", server))
        explicit = GeminiProvider(vertex_settings("vertex_gemini", server, default_max_tokens=300))
        await closing(implicit, call_input(model=GEMINI))
        unlimited = server.last_request.body
        await closing(explicit, call_input(model=GEMINI))
        from_config = server.last_request.body

    assert "maxOutputTokens" not in unlimited.get("generationConfig", {})
    assert from_config["generationConfig"] == {"maxOutputTokens": 300}


async def test_gemini_needs_the_tool_name_of_a_result(
    gemini: tuple[FakeGeminiServer, GeminiProvider],
) -> None:
    _, provider = gemini
    orphan = ChatMessage(role="tool", tool_call_id="call_x", content="42")

    with pytest.raises(InvalidLlmRequest, match="names no tool"):
        await provider.complete(call_input(user("hi"), orphan, model=GEMINI))
