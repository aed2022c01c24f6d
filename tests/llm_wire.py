"""What every SDK provider does against the fake server of its wire format, written once.

`test_llm_providers.py` (Anthropic, OpenAI, Azure OpenAI) and `test_llm_vertex.py` (Claude
and Gemini on Vertex AI) each build `Wire`s their way and run these checks on them, adding
what is particular to their APIs.
"""

import json
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest

from temporal_executor.schemas.conversation import ChatMessage, ToolCall, ToolSpec
from temporal_executor.schemas.requests import ModelSelection
from temporal_executor.schemas.task import LlmCallInput, LlmCallResult
from temporal_executor.worker.llm.base import LlmProvider
from temporal_executor.worker.llm.errors import LlmError, ProviderUnavailable, RateLimited
from tests.fakes.llm_servers import ErrorReply, text, tool_calls

CLAUDE = "claude-sonnet-4-6"

CALCULATOR = ToolSpec(
    name="calculator",
    description="Evaluate an arithmetic expression.",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
)
SAVE_NOTE = ToolSpec(name="save_note", description="Save a note.")


@dataclass
class Wire:
    """One provider under test and the fake server it talks to (a `ScriptedLlmServer`)."""

    kind: str
    server: Any
    provider: LlmProvider
    model: str


def call_input(
    *messages: ChatMessage,
    model: str = CLAUDE,
    tools: list[ToolSpec] | None = None,
    system_prompt: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    task_id: str = "task-1",
) -> LlmCallInput:
    selection = ModelSelection(
        provider="p", model=model, temperature=temperature, max_tokens=max_tokens
    )
    return LlmCallInput(
        task_id=task_id,
        selection=selection,
        system_prompt=system_prompt,
        messages=list(messages) or [user("What is 6 * 7?")],
        tools=tools or [],
    )


def user(content: str) -> ChatMessage:
    return ChatMessage(role="user", content=content)


def assistant_turn(result: LlmCallResult) -> ChatMessage:
    message = result.message
    return ChatMessage(role="assistant", content=message.content, tool_calls=message.tool_calls)


def tool_result(call: ToolCall, content: str, *, is_error: bool = False) -> ChatMessage:
    return ChatMessage(
        role="tool", tool_call_id=call.id, name=call.name, content=content, is_error=is_error
    )


def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    """POST JSON to a fake as a client without an SDK would; (status, JSON answer)."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def sdks_imported_by(
    providers: list[dict[str, Any]], *, env: dict[str, str], refused: tuple[str, ...]
) -> dict[str, list[str]]:
    """Which of the `refused` SDKs a fresh interpreter tries to import as a registry of
    `providers` starts (`start`) and then creates each provider by name, and (where it can)
    has it complete a call. A fresh interpreter, since this test process has imported the
    SDKs already; their imports are recorded and refused there, as importing them costs
    about a second each."""
    script = textwrap.dedent(
        """
        import asyncio, json, os, sys
        from temporal_executor.schemas.config import LlmSettings
        from temporal_executor.schemas.conversation import ChatMessage
        from temporal_executor.schemas.requests import ModelSelection
        from temporal_executor.schemas.task import LlmCallInput
        from temporal_executor.worker.llm.registry import ProviderRegistry

        refused, providers, env = json.loads(sys.argv[1])
        attempted = set()

        class RefuseSdks:
            def find_spec(self, name, path=None, target=None):
                for sdk in refused:
                    if name == sdk or name.startswith(sdk + "."):
                        attempted.add(sdk)
                        raise ModuleNotFoundError(name)
                return None

        sys.meta_path.insert(0, RefuseSdks())
        os.environ.update(env)
        registry = ProviderRegistry(LlmSettings.model_validate({"providers": providers}))
        seen = {"start": sorted(attempted)}
        for name in [provider["name"] for provider in providers]:
            call = LlmCallInput(
                task_id="t", selection=ModelSelection(provider=name, model="echo"),
                messages=[ChatMessage(role="user", content="hi")],
            )
            try:
                asyncio.run(registry.get(name).complete(call))
            except ModuleNotFoundError:
                pass
            seen[name] = sorted(attempted)
        print(json.dumps(seen))
        """
    )
    argument = json.dumps([refused, providers, env])
    done = subprocess.run(
        [sys.executable, "-c", script, argument],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    seen: dict[str, list[str]] = json.loads(done.stdout)
    return seen


# -- the checks ----------------------------------------------------------------------------


async def check_text_reply(wire: Wire) -> None:
    wire.server.enqueue(text("42, of course.", input_tokens=17, output_tokens=4))

    result = await wire.provider.complete(call_input(model=wire.model))

    assert result.message.content == "42, of course."
    assert result.message.tool_calls == []
    assert (result.usage.input_tokens, result.usage.output_tokens) == (17, 4)
    assert (result.provider, result.model) == (f"my-{wire.kind}", wire.model)


async def check_tool_call_round_trip(wire: Wire, *, system_prompt: str | None = None) -> None:
    wire.server.enqueue(
        tool_calls(("calculator", {"expression": "6 * 7"}), text="Let me compute."),
        text("It is 42."),
    )
    first = call_input(
        user("What is 6 * 7?"), model=wire.model, tools=[CALCULATOR], system_prompt=system_prompt
    )

    asked = await wire.provider.complete(first)
    [call] = asked.message.tool_calls
    answered = await wire.provider.complete(
        first.model_copy(
            update={"messages": [*first.messages, assistant_turn(asked), tool_result(call, "42")]}
        )
    )

    assert asked.message.content == "Let me compute."
    assert (call.name, call.arguments) == ("calculator", {"expression": "6 * 7"})
    assert call.id
    assert answered.message.content == "It is 42."
    assert wire.server.pending == 0


async def check_parallel_tool_calls_round_trip(wire: Wire) -> None:
    wire.server.enqueue(
        tool_calls(("calculator", {"expression": "6 * 7"}), ("save_note", {"text": "hi"})),
        text("Done."),
    )
    first = call_input(model=wire.model, tools=[CALCULATOR, SAVE_NOTE])

    asked = await wire.provider.complete(first)
    results = [tool_result(c, f"result of {c.name}") for c in asked.message.tool_calls]
    answered = await wire.provider.complete(
        first.model_copy(update={"messages": [*first.messages, assistant_turn(asked), *results]})
    )

    assert [c.name for c in asked.message.tool_calls] == ["calculator", "save_note"]
    assert len({c.id for c in asked.message.tool_calls}) == 2
    # The fakes refuse results that do not answer every call of the previous turn.
    assert answered.message.content == "Done."


async def check_http_error(
    wire: Wire, reply: ErrorReply, error: type[LlmError], retry_after: float | None
) -> None:
    """The provider's HTTP error maps to `error` of the one error model, after one attempt."""
    wire.server.enqueue(reply, text("never reached"))

    with pytest.raises(LlmError) as raised:
        await wire.provider.complete(call_input(model=wire.model))

    assert type(raised.value) is error
    assert raised.value.retryable is (error in (RateLimited, ProviderUnavailable))
    assert raised.value.retry_after == retry_after
    assert f"my-{wire.kind}" in str(raised.value)
    assert f"HTTP {reply.status}" in str(raised.value)
    # Exactly one attempt: Temporal, not the SDK, retries.
    assert len(wire.server.requests) == 1
