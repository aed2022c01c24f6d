"""LLM providers: the real SDKs against local servers speaking their wire formats, the
scripted provider, and the registry that creates them lazily."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from temporal_executor.schemas.config import LlmSettings, ProviderSettings, ScriptedTurn
from temporal_executor.schemas.conversation import ChatMessage, ToolCall, ToolSpec
from temporal_executor.schemas.task import LlmCallResult
from temporal_executor.worker.llm._http_errors import retry_after_seconds
from temporal_executor.worker.llm._tck_script import tck_script
from temporal_executor.worker.llm.anthropic_provider import AnthropicProvider
from temporal_executor.worker.llm.base import LlmProvider
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
from temporal_executor.worker.llm.openai_provider import OpenAIProvider
from temporal_executor.worker.llm.registry import ProviderRegistry
from temporal_executor.worker.llm.scripted_provider import ScriptedProvider
from tests.fakes.llm_servers import (
    ErrorReply,
    FakeAnthropicServer,
    FakeOpenAIServer,
    FakeToolCall,
    context_too_long,
    http_error,
    model_not_found,
    rate_limited,
    server_error,
    text,
    tool_calls,
    unauthorized,
)
from tests.llm_wire import (
    CALCULATOR,
    CLAUDE,
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

KEY_ENV = "TE_TEST_LLM_KEY"
GPT = "gpt-4.1-mini"

# -- the SDK providers against the fakes -------------------------------------------------


def settings_for(
    kind: str, server: FakeAnthropicServer | FakeOpenAIServer, **extra: Any
) -> ProviderSettings:
    if isinstance(server, FakeOpenAIServer) and kind == "azure_openai":
        return ProviderSettings(
            name=f"my-{kind}",
            kind="azure_openai",
            api_key_env=KEY_ENV,
            base_url=server.azure_endpoint,
            api_version="2024-10-21",
            **extra,
        )
    return ProviderSettings(
        name=f"my-{kind}", kind=kind, api_key_env=KEY_ENV, base_url=server.base_url, **extra
    )


def make_provider(settings: ProviderSettings) -> AnthropicProvider | OpenAIProvider:
    if settings.kind == "anthropic":
        return AnthropicProvider(settings)
    return OpenAIProvider(settings)


@pytest.fixture(scope="module", params=["anthropic", "openai", "azure_openai"])
async def shared_wire(request: pytest.FixtureRequest) -> AsyncIterator[Wire]:
    # One server and client per kind for the module: building an SDK client costs ~25 ms.
    kind: str = request.param
    server = FakeAnthropicServer() if kind == "anthropic" else FakeOpenAIServer()
    with server, pytest.MonkeyPatch.context() as env:
        env.setenv(KEY_ENV, server.api_key)
        provider = make_provider(settings_for(kind, server))
        yield Wire(kind, server, provider, CLAUDE if kind == "anthropic" else GPT)
        await provider.aclose()


@pytest.fixture
def wire(shared_wire: Wire, monkeypatch: pytest.MonkeyPatch) -> Wire:
    shared_wire.server.reset()
    monkeypatch.setenv(KEY_ENV, shared_wire.server.api_key)
    return shared_wire


@pytest.fixture
def anthropic_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer() as server:
        monkeypatch.setenv(KEY_ENV, server.api_key)
        yield server


@pytest.fixture
def openai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        monkeypatch.setenv(KEY_ENV, server.api_key)
        yield server


@pytest.fixture
async def anthropic(anthropic_server: FakeAnthropicServer) -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(settings_for("anthropic", anthropic_server))
    yield provider
    await provider.aclose()


@pytest.fixture
async def openai_provider(openai_server: FakeOpenAIServer) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(settings_for("openai", openai_server))
    yield provider
    await provider.aclose()


async def test_text_reply(wire: Wire) -> None:
    await check_text_reply(wire)
    assert len(wire.server.requests) == 1


async def test_tool_call_round_trip(wire: Wire) -> None:
    await check_tool_call_round_trip(wire)


async def test_parallel_tool_calls_round_trip(wire: Wire) -> None:
    await check_parallel_tool_calls_round_trip(wire)


@pytest.mark.parametrize(
    ("reply", "error", "retry_after"),
    [
        (rate_limited("1"), RateLimited, 1.0),
        (rate_limited(None, retry_after_ms="1500"), RateLimited, 1.5),
        (rate_limited(None), RateLimited, None),
        (unauthorized(), AuthenticationFailed, None),
        (http_error(403, "no access"), AuthenticationFailed, None),
        (model_not_found(), ModelNotFound, None),
        (server_error(500), ProviderUnavailable, None),
        (server_error(503), ProviderUnavailable, None),
        (http_error(408, "timeout"), ProviderUnavailable, None),
        (context_too_long(), ContextTooLong, None),
        (http_error(400, "messages.0.content: bad"), InvalidLlmRequest, None),
        (http_error(422, "unprocessable"), InvalidLlmRequest, None),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
async def test_http_errors_map_to_one_error_model(
    wire: Wire, reply: ErrorReply, error: type[LlmError], retry_after: float | None
) -> None:
    await check_http_error(wire, reply, error, retry_after)


async def test_overloaded_anthropic_is_unavailable(
    anthropic: AnthropicProvider, anthropic_server: FakeAnthropicServer
) -> None:
    anthropic_server.enqueue(server_error(529))

    with pytest.raises(ProviderUnavailable, match="HTTP 529: Overloaded"):
        await anthropic.complete(call_input())


async def test_a_wrong_key_is_refused(wire: Wire, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-not-the-right-key")
    provider = make_provider(settings_for(wire.kind, wire.server))
    wire.server.enqueue(text("never reached"))

    try:
        with pytest.raises(AuthenticationFailed, match="HTTP 401") as raised:
            await provider.complete(call_input(model=wire.model))
    finally:
        await provider.aclose()

    assert not raised.value.retryable
    assert wire.server.pending == 1


@pytest.mark.parametrize("kind", ["anthropic", "openai", "azure_openai"])
def test_a_missing_key_names_the_variable(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with FakeOpenAIServer() as server:
        settings = settings_for(kind, server)

    with pytest.raises(ProviderNotConfigured, match=KEY_ENV):
        make_provider(settings)


def test_azure_needs_endpoint_and_api_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "key")
    settings = ProviderSettings(name="az", kind="azure_openai", api_key_env=KEY_ENV)

    with pytest.raises(ProviderNotConfigured, match="base_url and api_version"):
        OpenAIProvider(settings)


async def test_an_invalid_tool_name_is_refused_by_the_api(wire: Wire) -> None:
    # ToolSpec validates names; model_construct skips that, as a bug elsewhere might.
    bad = ToolSpec.model_construct(
        name="save note!", description="", parameters={"type": "object", "properties": {}}
    )
    wire.server.enqueue(text("never reached"))

    with pytest.raises(InvalidLlmRequest, match=r"HTTP 400: .*name"):
        await wire.provider.complete(call_input(model=wire.model, tools=[bad]))


async def test_unanswered_tool_calls_are_refused_by_the_api(wire: Wire) -> None:
    # What a wrong conversion (a dropped tool result) would look like to the real API.
    call = ToolCall(id="call_1", name="calculator", arguments={})
    messages = [user("hi"), ChatMessage(role="assistant", tool_calls=[call]), user("and?")]
    wire.server.enqueue(text("never reached"))

    with pytest.raises(InvalidLlmRequest, match="call_1"):
        await wire.provider.complete(call_input(*messages, model=wire.model, tools=[CALCULATOR]))


@pytest.mark.parametrize("kind", ["anthropic", "openai", "azure_openai"])
async def test_an_unknown_model_is_refused_by_the_api(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = FakeAnthropicServer(models=[CLAUDE]) if kind == "anthropic" else None
    with known or FakeOpenAIServer(models=[GPT]) as server:
        monkeypatch.setenv(KEY_ENV, server.api_key)
        provider = make_provider(settings_for(kind, server))
        try:
            with pytest.raises(ModelNotFound, match="HTTP 404"):
                await provider.complete(call_input(model="no-such-model"))
        finally:
            await provider.aclose()


async def test_an_unreachable_server_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(KEY_ENV, "key")
    for kind in ("anthropic", "openai"):
        base_url = f"http://127.0.0.1:{port}" + ("/v1" if kind == "openai" else "")
        provider = make_provider(
            ProviderSettings(name="down", kind=kind, api_key_env=KEY_ENV, base_url=base_url)
        )
        try:
            with pytest.raises(ProviderUnavailable, match="down") as raised:
                await provider.complete(call_input())
        finally:
            await provider.aclose()
        assert raised.value.retryable


async def test_the_model_allowlist_is_checked_before_any_request(wire: Wire) -> None:
    provider = make_provider(settings_for(wire.kind, wire.server, models=["only-this"]))
    try:
        with pytest.raises(ModelNotFound, match="allowlist"):
            await provider.complete(call_input(model=wire.model))
    finally:
        await provider.aclose()

    assert wire.server.requests == []


# -- what each SDK puts on the wire ----------------------------------------------------------


async def test_anthropic_request_body(
    anthropic: AnthropicProvider, anthropic_server: FakeAnthropicServer
) -> None:
    anthropic_server.enqueue(tool_calls(("calculator", {"expression": "1+1"})), text("2"))
    first = call_input(
        user("Add 1 and 1"), tools=[CALCULATOR], system_prompt="Be brief.", temperature=0.3
    )

    asked = await anthropic.complete(first)
    [call] = asked.message.tool_calls
    await anthropic.complete(
        first.model_copy(
            update={
                "messages": [
                    *first.messages,
                    assistant_turn(asked),
                    tool_result(call, "boom", is_error=True),
                ]
            }
        )
    )

    request = anthropic_server.last_request
    assert request.path == "/v1/messages"
    assert request.header("authorization") == f"Bearer {anthropic_server.api_key}"
    assert request.header("anthropic-version")
    body = request.body
    assert body["model"] == CLAUDE
    assert body["system"] == "Be brief."
    assert body["max_tokens"] == 4096  # the provider's default_max_tokens
    assert body["temperature"] == 0.3
    assert body["tools"] == [
        {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression.",
            "input_schema": CALCULATOR.parameters,
        }
    ]
    assert body["messages"] == [
        {"role": "user", "content": "Add 1 and 1"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": call.id, "name": "calculator", "input": call.arguments}
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "boom", "is_error": True}
            ],
        },
    ]


async def test_anthropic_max_tokens_and_temperature_from_the_request(
    anthropic: AnthropicProvider, anthropic_server: FakeAnthropicServer
) -> None:
    anthropic_server.enqueue(text("ok"), text("ok"))

    await anthropic.complete(call_input(max_tokens=64_000, temperature=1.5))
    first = anthropic_server.last_request.body
    await anthropic.complete(call_input())
    second = anthropic_server.last_request.body

    # 64k would make the SDK demand streaming unless the provider passes its own timeout.
    assert first["max_tokens"] == 64_000
    # Anthropic's range is 0..1; the request's may go up to 2.
    assert first["temperature"] == 1.0
    assert "temperature" not in second
    assert "system" not in second
    assert "tools" not in second


async def test_anthropic_merges_consecutive_tool_results(
    anthropic: AnthropicProvider, anthropic_server: FakeAnthropicServer
) -> None:
    anthropic_server.enqueue(text("ok"))
    calls = [ToolCall(id=f"toolu_{i}", name="calculator", arguments={"n": i}) for i in range(3)]
    messages = [
        user("go"),
        ChatMessage(role="assistant", content="Three at once.", tool_calls=calls),
        *(tool_result(c, str(c.arguments["n"])) for c in calls),
        ChatMessage(role="assistant", content=""),  # an empty reply: dropped
        user("thanks"),
    ]

    await anthropic.complete(call_input(*messages, tools=[CALCULATOR]))

    sent = anthropic_server.last_request.body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user", "user"]
    assert sent[1]["content"][0] == {"type": "text", "text": "Three at once."}
    assert [b["tool_use_id"] for b in sent[2]["content"]] == ["toolu_0", "toolu_1", "toolu_2"]
    assert "is_error" not in sent[2]["content"][0]


async def test_openai_request_body(
    openai_provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.enqueue(tool_calls(("calculator", {"expression": "1+1"})), text("2"))
    first = call_input(
        user("Add 1 and 1"),
        model=GPT,
        tools=[CALCULATOR],
        system_prompt="Be brief.",
        temperature=1.2,
    )

    asked = await openai_provider.complete(first)
    [call] = asked.message.tool_calls
    await openai_provider.complete(
        first.model_copy(
            update={
                "messages": [
                    *first.messages,
                    assistant_turn(asked),
                    tool_result(call, "boom", is_error=True),
                ]
            }
        )
    )

    request = openai_server.last_request
    assert request.path == "/v1/chat/completions"
    assert request.header("authorization") == f"Bearer {openai_server.api_key}"
    body = request.body
    assert body["model"] == GPT
    assert body["temperature"] == 1.2
    assert "max_completion_tokens" not in body  # no limit unless asked for
    assert "max_tokens" not in body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "calculator",
                "description": "Evaluate an arithmetic expression.",
                "parameters": CALCULATOR.parameters,
            },
        }
    ]
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add 1 and 1"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "1+1"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "Error: boom"},
    ]


async def test_openai_max_completion_tokens(openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue(text("a"), text("b"), text("c"))
    implicit = OpenAIProvider(settings_for("openai", openai_server))
    explicit = OpenAIProvider(settings_for("openai", openai_server, default_max_tokens=300))
    try:
        await implicit.complete(call_input(model=GPT, max_tokens=50))
        from_request = openai_server.last_request.body
        await explicit.complete(call_input(model=GPT))
        from_config = openai_server.last_request.body
        await implicit.complete(call_input(model=GPT))
        unlimited = openai_server.last_request.body
    finally:
        await implicit.aclose()
        await explicit.aclose()

    assert from_request["max_completion_tokens"] == 50
    assert from_config["max_completion_tokens"] == 300
    assert "max_completion_tokens" not in unlimited


async def test_openai_keeps_unreadable_arguments(
    openai_provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    raw = '{"expression": "6 * 7"'  # cut short
    openai_server.enqueue(
        tool_calls(FakeToolCall("calculator", raw), FakeToolCall("save_note", "")), text("ok")
    )
    first = call_input(model=GPT, tools=[CALCULATOR, SAVE_NOTE])

    asked = await openai_provider.complete(first)
    broken, empty = asked.message.tool_calls
    results = [tool_result(c, "error: bad arguments", is_error=True) for c in (broken, empty)]
    await openai_provider.complete(
        first.model_copy(update={"messages": [*first.messages, assistant_turn(asked), *results]})
    )

    assert broken.arguments == {"_raw": raw}
    assert empty.arguments == {}
    # Sent back exactly as the model wrote them.
    sent = openai_server.last_request.body["messages"][1]["tool_calls"]
    assert [c["function"]["arguments"] for c in sent] == [raw, "{}"]


async def test_azure_request(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer(api_key="azure-key", models=["my-deployment"]) as server:
        monkeypatch.setenv(KEY_ENV, server.api_key)
        provider = OpenAIProvider(settings_for("azure_openai", server))
        server.enqueue(text("hello from azure"))
        try:
            result = await provider.complete(call_input(model="my-deployment"))
        finally:
            await provider.aclose()

    request = server.last_request
    assert result.message.content == "hello from azure"
    assert request.path == "/openai/deployments/my-deployment/chat/completions"
    assert request.query == {"api-version": "2024-10-21"}
    assert request.header("api-key") == "azure-key"
    assert request.header("authorization") is None


# -- the fakes refuse what the real APIs refuse, with their bodies ------------------------------


def test_fake_anthropic_refuses_like_the_api() -> None:
    with FakeAnthropicServer() as server:
        url = f"{server.url}/v1/messages"
        good = {"x-api-key": server.api_key, "anthropic-version": "2023-06-01"}
        message = {"model": CLAUDE, "messages": [{"role": "user", "content": "hi"}]}

        no_max_tokens = post(url, message, good)
        no_key = post(url, {**message, "max_tokens": 10}, {"anthropic-version": "2023-06-01"})
        wrong_key = post(url, {**message, "max_tokens": 10}, {**good, "x-api-key": "nope"})
        server.enqueue(text("hi"))
        accepted = post(url, {**message, "max_tokens": 10}, good)

    assert no_max_tokens == (
        400,
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
            "request_id": no_max_tokens[1]["request_id"],
        },
    )
    assert no_key[0] == 401
    assert no_key[1]["error"] == {
        "type": "authentication_error",
        "message": "x-api-key header is required",
    }
    assert wrong_key[1]["error"]["type"] == "authentication_error"
    assert accepted[0] == 200
    assert accepted[1]["type"] == "message"
    assert accepted[1]["stop_reason"] == "end_turn"
    assert accepted[1]["content"] == [{"type": "text", "text": "hi"}]


def test_fake_openai_refuses_like_the_api() -> None:
    with FakeOpenAIServer() as server:
        url = f"{server.url}/v1/chat/completions"
        good = {"authorization": f"Bearer {server.api_key}"}
        body = {"model": GPT, "messages": [{"role": "user", "content": "hi"}]}
        bad_tool = {"type": "function", "function": {"name": "a b", "parameters": {}}}

        no_key = post(url, body, {})
        wrong_key = post(url, body, {"authorization": "Bearer sk-wrong-key-123"})
        bad_name = post(url, {**body, "tools": [bad_tool]}, good)
        azure_no_key = post(
            f"{server.url}/openai/deployments/d/chat/completions?api-version=2024-10-21", body, {}
        )

    assert no_key[0] == 401
    assert no_key[1]["error"]["message"].startswith("You didn't provide an API key.")
    assert wrong_key[1]["error"]["code"] == "invalid_api_key"
    assert bad_name == (
        400,
        {
            "error": {
                "message": "Invalid 'tools[0].function.name': string does not match pattern. "
                "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                "type": "invalid_request_error",
                "param": "tools[0].function.name",
                "code": "invalid_value",
            }
        },
    )
    assert azure_no_key[0] == 401
    assert azure_no_key[1]["error"]["code"] == "401"


async def test_a_script_item_may_depend_on_the_request(
    openai_provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.enqueue(lambda request: text(f"you sent {len(request.body['messages'])}"))
    openai_server.default = text("again")

    first = await openai_provider.complete(call_input(model=GPT))
    second = await openai_provider.complete(call_input(model=GPT))

    assert (first.message.content, second.message.content) == ("you sent 1", "again")


def test_retry_after_headers() -> None:
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "0"}) is None  # "no advice", as in the SDKs
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None
    in_a_minute = retry_after_seconds({"retry-after": "Fri, 01 Jan 2100 00:00:00 GMT"})
    assert in_a_minute is not None
    assert in_a_minute > 0


# -- the scripted provider ----------------------------------------------------------------------


def scripted(**scripts: list[ScriptedTurn]) -> ScriptedProvider:
    return ScriptedProvider(ProviderSettings(name="script", kind="scripted", scripts=scripts))


async def test_scripted_plays_turns_by_conversation_position() -> None:
    provider = scripted(
        m=[
            ScriptedTurn(
                text="Saving.",
                tool_calls=[{"name": "save_note", "arguments": {"text": "{user_message}"}}],
            ),
            ScriptedTurn(text="Saved: {last_tool_result}"),
        ]
    )
    first = call_input(user("remember {this}"), model="m")

    asked = await provider.complete(first)
    again = await provider.complete(first)  # a retry: same input, same reply
    [call] = asked.message.tool_calls
    answered = await provider.complete(
        first.model_copy(
            update={"messages": [*first.messages, assistant_turn(asked), tool_result(call, "ok!")]}
        )
    )

    assert asked == again
    assert call == ToolCall(id="call_0_0", name="save_note", arguments={"text": "remember {this}"})
    assert answered.message.content == "Saved: ok!"
    assert answered.message.tool_calls == []
    assert answered.usage.input_tokens > asked.usage.input_tokens > 0


async def test_scripted_past_the_end() -> None:
    tool_turn = ScriptedTurn(tool_calls=[{"name": "calculator", "arguments": {}}])
    provider = scripted(
        ends_with_text=[ScriptedTurn(text="first"), tool_turn],
        only_tools=[tool_turn],
    )
    done = [user("x"), ChatMessage(role="assistant", content="a"), user("y")]
    twice_done = [*done, ChatMessage(role="assistant", content="b"), user("z")]

    repeated = await provider.complete(call_input(*twice_done, model="ends_with_text"))
    final = await provider.complete(call_input(*done, model="only_tools"))

    assert repeated.message.content == "first"
    assert (final.message.content, final.message.tool_calls) == ("Done.", [])


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("rate_limited", RateLimited),
        ("unavailable", ProviderUnavailable),
        ("authentication", AuthenticationFailed),
        ("model_not_found", ModelNotFound),
        ("context_too_long", ContextTooLong),
        ("invalid_request", InvalidLlmRequest),
    ],
)
async def test_scripted_errors(kind: Any, error: type[LlmError]) -> None:
    provider = scripted(m=[ScriptedTurn(error=kind, retry_after=2.5)])

    with pytest.raises(error, match=kind) as raised:
        await provider.complete(call_input(model="m"))

    assert raised.value.retry_after == 2.5


async def test_scripted_error_healed_by_a_retry() -> None:
    provider = scripted(m=[ScriptedTurn(text="finally", error="rate_limited", error_attempts=2)])
    call = call_input(model="m", task_id="heals")

    for _ in range(2):
        with pytest.raises(RateLimited):
            await provider.complete(call)
    result = await provider.complete(call)
    with pytest.raises(RateLimited):  # attempts are counted per task
        await provider.complete(call.model_copy(update={"task_id": "other"}))

    assert result.message.content == "finally"


async def test_scripted_built_in_echo() -> None:
    result = await scripted().complete(call_input(user("hello there"), model="echo"))

    assert result.message.content == "You said: hello there"
    assert result.usage.output_tokens == 4


async def test_scripted_built_in_demo_calls_the_offered_tools() -> None:
    provider = scripted()
    first = call_input(user("note this"), model="demo", tools=[CALCULATOR, SAVE_NOTE])

    asked = await provider.complete(first)
    results = [tool_result(c, f"{c.name} ok") for c in asked.message.tool_calls]
    answered = await provider.complete(
        first.model_copy(update={"messages": [*first.messages, assistant_turn(asked), *results]})
    )
    only_calculator = await provider.complete(first.model_copy(update={"tools": [CALCULATOR]}))
    no_tools = await provider.complete(first.model_copy(update={"tools": []}))

    assert asked.message.tool_calls == [
        ToolCall(id="call_0_0", name="calculator", arguments={"expression": "6 * 7"}),
        ToolCall(id="call_0_1", name="save_note", arguments={"title": "demo", "text": "note this"}),
    ]
    assert answered.message.tool_calls == []
    assert "save_note ok" in answered.message.content
    assert [c.name for c in only_calculator.message.tool_calls] == ["calculator"]
    assert no_tools.message.tool_calls == []
    assert "note this" in no_tools.message.content


async def test_scripted_built_in_tck_plays_the_scenario_the_a2a_message_id_names() -> None:
    provider = scripted()

    async def reply(message_id: str, *, tools: list[ToolSpec] | None = None) -> LlmCallResult:
        call = call_input(user("TCK artifact test"), model="tck", tools=tools or [])
        meta = {"a2a": {"context_id": "c", "message_id": message_id}} if message_id else {}
        return await provider.complete(call.model_copy(update={"metadata": meta}))

    text = await reply("tck-artifact-text-1a2b")
    default = await reply("tck-complete-task-1a2b")
    no_id = await reply("")
    file_url = await reply("tck-artifact-file-url-1a2b")
    asks = await reply("tck-input-required-1a2b", tools=[SAVE_NOTE])
    cannot_ask = await reply("tck-input-required-1a2b", tools=[CALCULATOR])

    assert text.message.content == "Generated text content"
    assert default.message.content == no_id.message.content == "Hello from TCK"
    assert "file artifacts" in file_url.message.content
    assert [c.name for c in asks.message.tool_calls] == ["save_note"]
    assert cannot_ask.message.tool_calls == []
    answered = await provider.complete(
        call_input(
            user("TCK prerequisite task creation"),
            assistant_turn(asks),
            tool_result(asks.message.tool_calls[0], "a person denied this tool call: later"),
            model="tck",
        ).model_copy(update={"metadata": {"a2a": {"message_id": "tck-input-required-1a2b"}}})
    )
    assert answered.message.content == "Hello from TCK"


def test_scripted_tck_resubscription_task_writes_slowly() -> None:
    [turn] = tck_script("test-resubscribe-message-id-9", set())

    # Streamed word by word: the TCK needs the task alive for 2 x TCK_STREAMING_TIMEOUT (2 s
    # by default) to subscribe to it again.
    assert turn.chunk_delay_seconds * len(turn.text.split()) >= 4


async def test_scripted_config_overrides_built_ins_and_unknown_models_fail() -> None:
    provider = scripted(demo=[ScriptedTurn(text="mine")])

    result = await provider.complete(call_input(model="demo"))
    with pytest.raises(ModelNotFound, match="no script for model 'nope'"):
        await provider.complete(call_input(model="nope"))

    assert result.message.content == "mine"


async def test_scripted_malformed_tool_call() -> None:
    provider = scripted(m=[ScriptedTurn(tool_calls=[{"tool": "calculator"}])])

    with pytest.raises(InvalidLlmRequest, match=r"tool_calls\[0\]"):
        await provider.complete(call_input(model="m"))


# -- the registry -----------------------------------------------------------------------------


def registry_with(*providers: ProviderSettings) -> ProviderRegistry:
    return ProviderRegistry(LlmSettings(providers=list(providers)))


async def test_registry_creates_each_provider_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "key")
    registry = registry_with(
        ProviderSettings(name="claude", kind="anthropic", api_key_env=KEY_ENV),
        ProviderSettings(name="gpt", kind="openai", api_key_env=KEY_ENV),
    )

    assert registry.created == []
    claude: LlmProvider = registry.get("claude")
    gpt = registry.get("gpt")
    assert registry.get("claude") is claude
    assert isinstance(claude, AnthropicProvider)
    assert isinstance(gpt, OpenAIProvider)
    assert registry.created == ["claude", "gpt"]

    await registry.aclose()

    assert claude.client.is_closed()
    assert gpt.client.is_closed()
    assert registry.created == []
    assert registry.get("claude") is not claude
    await registry.aclose()


async def test_registry_unknown_provider_and_default_scripted() -> None:
    registry = registry_with()

    with pytest.raises(ProviderNotConfigured, match="'nope' is not configured"):
        registry.get("nope")
    result = await registry.get("scripted").complete(call_input(user("hi"), model="echo"))

    assert result.message.content == "You said: hi"


async def test_registry_model_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    registry = registry_with(
        ProviderSettings(name="claude", kind="anthropic", api_key_env=KEY_ENV, models=[CLAUDE]),
        ProviderSettings(name="s", kind="scripted", models=["echo"]),
    )

    registry.check_model("claude", CLAUDE)  # no client needed, so no key either
    with pytest.raises(ModelNotFound, match="claude-opus"):
        registry.check_model("claude", "claude-opus-4-7")
    with pytest.raises(ProviderNotConfigured):
        registry.check_model("nope", CLAUDE)
    with pytest.raises(ModelNotFound):
        await registry.get("s").complete(call_input(model="demo"))
    with pytest.raises(ProviderNotConfigured, match=KEY_ENV):
        registry.get("claude")
    assert registry.created == ["s"]


def test_registry_imports_an_sdk_only_when_its_provider_is_used() -> None:
    providers = [
        {"name": "scripted", "kind": "scripted"},
        {"name": "claude", "kind": "anthropic", "api_key_env": "TE_KEY"},
        {"name": "gpt", "kind": "openai", "api_key_env": "TE_KEY"},
    ]
    seen = sdks_imported_by(providers, env={"TE_KEY": "key"}, refused=("anthropic", "openai"))

    assert seen == {
        "start": [],
        "scripted": [],
        "claude": ["anthropic"],
        "gpt": ["anthropic", "openai"],
    }


# -- Azure OpenAI with Microsoft Entra ID -----------------------------------------------------

ENTRA_ENV = "TE_TEST_ENTRA_TOKEN"


def entra_settings(server: FakeOpenAIServer, **auth: Any) -> ProviderSettings:
    return ProviderSettings.model_validate(
        {
            "name": "az",
            "kind": "azure_openai",
            "base_url": server.azure_endpoint,
            "api_version": "2024-10-21",
            **auth,
        }
    )


async def test_azure_entra_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer(models=["my-deployment"], entra_token="entra-token") as server:
        monkeypatch.setenv(ENTRA_ENV, "entra-token")
        # A key the SDK would pick up by itself if it were not told which credential to use.
        monkeypatch.setenv("AZURE_OPENAI_API_KEY", server.api_key)
        provider = OpenAIProvider(entra_settings(server, azure_ad_token_env=ENTRA_ENV))
        server.enqueue(text("hello, Entra"))
        try:
            result = await provider.complete(call_input(model="my-deployment"))
        finally:
            await provider.aclose()

    request = server.last_request
    assert result.message.content == "hello, Entra"
    assert request.path == "/openai/deployments/my-deployment/chat/completions"
    assert request.header("authorization") == "Bearer entra-token"
    assert request.header("api-key") is None


async def test_azure_a_wrong_entra_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer(entra_token="entra-token") as server:
        monkeypatch.setenv(ENTRA_ENV, "expired-token")
        provider = OpenAIProvider(entra_settings(server, azure_ad_token_env=ENTRA_ENV))
        server.enqueue(text("never reached"))
        try:
            with pytest.raises(AuthenticationFailed, match=r"HTTP 401: Unauthorized\. Access"):
                await provider.complete(call_input(model="d"))
        finally:
            await provider.aclose()

    assert server.pending == 1


def test_azure_entra_token_variable_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENTRA_ENV, raising=False)
    with FakeOpenAIServer() as server:
        settings = entra_settings(server, azure_ad_token_env=ENTRA_ENV)

    with pytest.raises(ProviderNotConfigured, match=f"{ENTRA_ENV} is not set.*azure_ad_token_env"):
        OpenAIProvider(settings)


def test_azure_token_provider_needs_azure_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if azure-identity were not installed: None in sys.modules fails the import.
    monkeypatch.setitem(sys.modules, "azure.identity.aio", None)
    with FakeOpenAIServer() as server:
        settings = entra_settings(server, azure_ad_token_provider="default_azure_credential")

    with pytest.raises(ProviderNotConfigured, match=r"pip install azure-identity"):
        OpenAIProvider(settings)


def test_azure_takes_one_credential() -> None:
    with pytest.raises(ValueError, match="at most one of api_key_env, azure_ad_token_env"):
        ProviderSettings(name="az", kind="azure_openai", api_key_env="K", azure_ad_token_env="T")
