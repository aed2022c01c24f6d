"""Streamed LLM calls: every provider's streaming API through its real SDK against the
fake speaking its wire format (server-sent events), and the batching of fragments."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from temporal_executor.schemas.config import ProviderSettings, ScriptedTurn
from temporal_executor.worker.llm.anthropic_provider import AnthropicProvider
from temporal_executor.worker.llm.errors import (
    InvalidLlmRequest,
    ProviderUnavailable,
    RateLimited,
)
from temporal_executor.worker.llm.gemini_provider import GeminiProvider
from temporal_executor.worker.llm.openai_provider import OpenAIProvider
from temporal_executor.worker.llm.scripted_provider import ScriptedProvider
from temporal_executor.worker.llm.streaming import DeltaBatcher, Fragment
from tests.fakes._script import ScriptedLlmServer, sse
from tests.fakes.llm_servers import (
    ErrorReply,
    FakeAnthropicServer,
    FakeGeminiServer,
    FakeOpenAIServer,
    FakeVertexAnthropicServer,
    rate_limited,
    text,
    tool_calls,
)
from tests.llm_wire import CALCULATOR, SAVE_NOTE, call_input

KEY_ENV = "TE_TEST_STREAM_KEY"
KINDS = ["anthropic", "openai", "azure_openai", "vertex_anthropic", "vertex_gemini"]
MODELS = {
    "anthropic": "claude-sonnet-4-6",
    "openai": "gpt-4.1-mini",
    "azure_openai": "my-deployment",
    "vertex_anthropic": "claude-sonnet-4-5@20250929",
    "vertex_gemini": "gemini-2.5-flash",
}
ANSWER = "The answer to six times seven is forty-two, as anyone can check."


@dataclass
class Recorder:
    """A `DeltaSink` that keeps every fragment, in order."""

    fragments: list[tuple[str, ...]] = field(default_factory=list)

    def text(self, fragment: str) -> None:
        self.fragments.append(("text", fragment))

    def tool_call(self, call_id: str, name: str, arguments: str) -> None:
        self.fragments.append(("tool", call_id, name, arguments))

    @property
    def texts(self) -> list[str]:
        return [f[1] for f in self.fragments if f[0] == "text"]

    def arguments(self, call_id: str) -> str:
        return "".join(f[3] for f in self.fragments if f[0] == "tool" and f[1] == call_id)


@dataclass
class Wire:
    kind: str
    server: ScriptedLlmServer
    provider: AnthropicProvider | OpenAIProvider | GeminiProvider
    model: str


def _server(kind: str) -> ScriptedLlmServer:
    if kind == "anthropic":
        return FakeAnthropicServer()
    if kind in ("openai", "azure_openai"):
        return FakeOpenAIServer()
    if kind == "vertex_anthropic":
        return FakeVertexAnthropicServer()
    return FakeGeminiServer()


def _settings(kind: str, server: Any) -> ProviderSettings:
    fields: dict[str, Any] = {"name": f"my-{kind}", "kind": kind}
    if kind.startswith("vertex_"):
        fields |= {"project": server.project, "region": server.region}
        fields |= {"access_token_env": KEY_ENV, "base_url": server.base_url}
    elif kind == "azure_openai":
        fields |= {"api_key_env": KEY_ENV, "base_url": server.azure_endpoint}
        fields["api_version"] = "2024-10-21"
    else:
        fields |= {"api_key_env": KEY_ENV, "base_url": server.base_url}
    return ProviderSettings.model_validate(fields)


@pytest.fixture(params=KINDS)
async def wire(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Wire]:
    kind: str = request.param
    for name in (
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "ANTHROPIC_VERTEX_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    with _server(kind) as server:
        monkeypatch.setenv(KEY_ENV, server.api_key)
        settings = _settings(kind, server)
        provider: AnthropicProvider | OpenAIProvider | GeminiProvider
        if kind in ("anthropic", "vertex_anthropic"):
            provider = AnthropicProvider(settings)
        elif kind == "vertex_gemini":
            provider = GeminiProvider(settings)
        else:
            provider = OpenAIProvider(settings)
        yield Wire(kind, server, provider, MODELS[kind])
        await provider.aclose()


def _asked_to_stream(wire: Wire) -> None:
    request = wire.server.last_request
    if wire.kind == "vertex_gemini":
        assert request.path.endswith(":streamGenerateContent")
        assert request.query.get("alt") == "sse"
    elif wire.kind == "vertex_anthropic":
        assert request.path.endswith(":streamRawPredict")
        assert request.body["stream"] is True
    else:
        assert request.body["stream"] is True
    if wire.kind in ("openai", "azure_openai"):
        assert request.body["stream_options"] == {"include_usage": True}


async def test_text_streams_word_by_word_and_the_result_is_the_plain_one(wire: Wire) -> None:
    wire.server.enqueue(
        text(ANSWER, input_tokens=17, output_tokens=12),
        text(ANSWER, input_tokens=17, output_tokens=12),
    )
    deltas = Recorder()

    streamed = await wire.provider.complete(call_input(model=wire.model), deltas)
    _asked_to_stream(wire)
    plain = await wire.provider.complete(call_input(model=wire.model))

    assert len(deltas.texts) == len(ANSWER.split())
    assert "".join(deltas.texts) == ANSWER
    assert streamed == plain
    assert (streamed.usage.input_tokens, streamed.usage.output_tokens) == (17, 12)


async def test_tool_calls_stream_their_arguments_in_fragments(wire: Wire) -> None:
    arguments = {"expression": "6 * 7 + 1000 * 1000", "note": "the long way"}
    reply = tool_calls(("calculator", arguments), ("save_note", {"text": "hi"}), text="Let me see.")
    wire.server.enqueue(reply, reply)
    deltas = Recorder()
    call = call_input(model=wire.model, tools=[CALCULATOR, SAVE_NOTE])

    streamed = await wire.provider.complete(call, deltas)
    plain = await wire.provider.complete(call)

    assert "".join(deltas.texts) == "Let me see."
    first, second = streamed.message.tool_calls
    assert (first.name, first.arguments) == ("calculator", arguments)
    for made in (first, second):
        named = {f[2] for f in deltas.fragments if f[0] == "tool" and f[1] == made.id}
        assert named == {made.name}
        assert json.loads(deltas.arguments(made.id)) == made.arguments
    if wire.kind != "vertex_gemini":  # Gemini sends a call whole
        assert len([f for f in deltas.fragments if f[1] == first.id and f[3]]) > 1
    assert streamed.message.content == plain.message.content
    assert [(c.name, c.arguments) for c in streamed.message.tool_calls] == [
        (c.name, c.arguments) for c in plain.message.tool_calls
    ]
    assert streamed.usage == plain.usage


async def test_an_error_before_the_stream_maps_as_without_it(wire: Wire) -> None:
    wire.server.enqueue(rate_limited("2"))

    with pytest.raises(RateLimited) as raised:
        await wire.provider.complete(call_input(model=wire.model), Recorder())

    if wire.kind not in ("vertex_anthropic", "vertex_gemini"):  # Vertex's 429 has no header
        assert raised.value.retry_after == 2.0


async def test_a_stream_broken_mid_way_is_worth_another_attempt(wire: Wire) -> None:
    wire.server.enqueue(text(ANSWER), text(ANSWER))
    wire.server.break_stream_after = 4
    deltas = Recorder()

    with pytest.raises(ProviderUnavailable):
        await wire.provider.complete(call_input(model=wire.model), deltas)
    again = await wire.provider.complete(call_input(model=wire.model), Recorder())

    assert "".join(deltas.texts) != ANSWER  # what came before the break
    assert again.message.content == ANSWER


async def test_scripted_streams_text_and_arguments() -> None:
    turn = ScriptedTurn(
        text="Computing it now.",
        tool_calls=[{"name": "calculator", "arguments": {"expression": "6 * 7 * 100 / 3"}}],
    )
    provider = ScriptedProvider(ProviderSettings(name="s", kind="scripted", scripts={"m": [turn]}))
    deltas = Recorder()

    result = await provider.complete(call_input(model="m", tools=[CALCULATOR]), deltas)

    assert deltas.texts == ["Computing ", "it ", "now."]
    [call] = result.message.tool_calls
    assert json.loads(deltas.arguments(call.id)) == call.arguments
    assert len([f for f in deltas.fragments if f[0] == "tool"]) > 2


# -- batching ----------------------------------------------------------------------------


async def test_fragments_coalesce_between_emits_and_the_first_goes_at_once() -> None:
    batches: list[list[Fragment]] = []
    first_out = asyncio.Event()

    async def emit(batch: list[Fragment]) -> None:
        batches.append(batch)
        first_out.set()

    arrivals = 0

    def arrived() -> None:
        nonlocal arrivals
        arrivals += 1

    async with DeltaBatcher(emit, 3600, on_fragment=arrived) as sink:
        sink.text("Hel")
        await first_out.wait()
        # Within the interval: held, and merged by kind, in order.
        sink.text("lo, ")
        sink.text("world")
        sink.tool_call("c1", "calculator", "")
        sink.tool_call("c1", "calculator", '{"expr')
        sink.tool_call("c2", "save_note", '{"text": 1}')
        sink.tool_call("c1", "calculator", 'ession": "1"}')
        sink.text("!")

    assert arrivals == 8
    assert batches == [
        [Fragment(text="Hel")],
        [
            Fragment(text="lo, world"),
            Fragment(call_id="c1", name="calculator", arguments='{"expr'),
            Fragment(call_id="c2", name="save_note", arguments='{"text": 1}'),
            Fragment(call_id="c1", name="calculator", arguments='ession": "1"}'),
            Fragment(text="!"),
        ],
    ]


async def test_a_failing_emit_drops_its_batch_and_the_stream_goes_on() -> None:
    emitted: list[list[Fragment]] = []
    first_out = asyncio.Event()

    async def emit(batch: list[Fragment]) -> None:
        emitted.append(batch)
        if len(emitted) == 1:
            first_out.set()
            msg = "bus down"
            raise OSError(msg)

    async with DeltaBatcher(emit, 0) as sink:
        sink.text("a")
        await first_out.wait()
        sink.text("b")

    assert [b[0].text for b in emitted] == ["a", "b"]


def raw_stream(*events: dict[str, Any], end: bytes = b"\n\n") -> ErrorReply:
    """A 200 whose body is these server-sent events as they are: odd streams."""
    return ErrorReply(200, body=b"".join(sse(e, end=end) for e in events))


async def test_gemini_odd_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeGeminiServer() as server:
        monkeypatch.setenv(KEY_ENV, server.access_token)
        provider = GeminiProvider(_settings("vertex_gemini", server))
        thinking = {"role": "model", "parts": [{"text": "hmm", "thought": True}, {"text": "4"}]}
        server.enqueue(
            raw_stream(
                {"candidates": [{"content": thinking}]},
                {"candidates": [{"content": {"role": "model", "parts": [{"text": "2"}]}}]},
                {"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1}},
                end=b"\r\n\r\n",
            ),
            raw_stream({"promptFeedback": {"blockReason": "SAFETY"}}, end=b"\r\n\r\n"),
        )
        deltas = Recorder()
        try:
            answer = await provider.complete(call_input(model=MODELS["vertex_gemini"]), deltas)
            with pytest.raises(InvalidLlmRequest, match="blocked"):
                await provider.complete(call_input(model=MODELS["vertex_gemini"]), Recorder())
        finally:
            await provider.aclose()

    assert deltas.texts == ["4", "2"]  # the thought is not streamed
    assert answer.message.content == "42"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (3, 1)


async def test_openai_stream_without_choices_is_worth_another_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FakeOpenAIServer() as server:
        monkeypatch.setenv(KEY_ENV, server.api_key)
        provider = OpenAIProvider(_settings("openai", server))
        usage = {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}
        head = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        server.enqueue(raw_stream({**head, "choices": [], "usage": usage}))
        try:
            with pytest.raises(ProviderUnavailable, match="no choices"):
                await provider.complete(call_input(model="m"), Recorder())
        finally:
            await provider.aclose()


async def test_an_error_event_mid_stream_is_worth_another_attempt(wire: Wire) -> None:
    if wire.kind == "vertex_gemini":
        pytest.skip("Gemini ends a failing stream with an HTTP error, not an event")
    started: list[bytes]
    if wire.kind in ("anthropic", "vertex_anthropic"):
        message: dict[str, Any] = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": wire.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
        started = [
            sse({"type": "message_start", "message": message}, "message_start"),
            sse(
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                "error",
            ),
        ]
    else:
        chunk = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}],
        }
        failed = {"error": {"message": "The server had an error", "type": "server_error"}}
        started = [sse(chunk), sse(failed)]
    wire.server.enqueue(ErrorReply(200, body=b"".join(started)))

    with pytest.raises(ProviderUnavailable):
        await wire.provider.complete(call_input(model=wire.model), Recorder())


async def test_a_stuck_bus_does_not_hold_the_turn_back() -> None:
    stuck = asyncio.Event()

    async def emit(batch: list[Fragment]) -> None:
        await stuck.wait()  # never set: a bus that takes nothing

    batcher = DeltaBatcher(emit, 0)
    batcher.close_timeout_seconds = 0.01
    async with asyncio.timeout(10), batcher as sink:
        sink.text("lost")
    # Leaving returned: the fragment is dropped, the result goes on.
    assert batcher.fragments == 1
