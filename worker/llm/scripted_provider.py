"""A provider that plays scripts instead of calling a model: demos, tests and benchmarks.

`settings.scripts[model]` is a list of `ScriptedTurn`s. Which turn answers a call is
worked out from the call alone: turn i answers a conversation that already holds i
assistant messages. So a retried or replayed call gets the same reply, and nothing is
kept in memory between calls (except attempt counts outside Temporal, see `_attempt`).

Three scripts are built in, used unless config defines a script of the same name:
`echo` answers "You said: {user_message}"; `demo` calls `calculator` and `save_note`
(those of them the task offers), then answers with the last tool result; `tck` plays the
A2A TCK's scenarios (`_tck_script`).

Streaming, the reply is played as fragments: the text word by word, each tool call's
arguments JSON in pieces, `chunk_delay_seconds` apart.

Placeholders, filled in text and in tool-call argument strings: `{user_message}` is the
task's message (the last user message, which is the first one unless the request
carried history) and `{last_tool_result}` the content of the last tool message.
"""

import asyncio
import json
import re
from typing import Any

from temporalio import activity

from temporal_executor.schemas.config import ProviderSettings, ScriptedTurn
from temporal_executor.schemas.conversation import AssistantMessage, ChatMessage, ToolCall, Usage
from temporal_executor.schemas.task import LlmCallInput, LlmCallResult
from temporal_executor.worker.llm._provider_settings import check_model, provider_label
from temporal_executor.worker.llm._tck_script import message_id, tck_script
from temporal_executor.worker.llm.errors import (
    AuthenticationFailed,
    ContextTooLong,
    InvalidLlmRequest,
    LlmError,
    ModelNotFound,
    ProviderUnavailable,
    RateLimited,
)
from temporal_executor.worker.llm.streaming import DeltaSink

ERRORS: dict[str, type[LlmError]] = {
    "rate_limited": RateLimited,
    "unavailable": ProviderUnavailable,
    "authentication": AuthenticationFailed,
    "model_not_found": ModelNotFound,
    "context_too_long": ContextTooLong,
    "invalid_request": InvalidLlmRequest,
}

BUILT_IN_MODELS = ("demo", "echo", "tck")

# The reply once a script has run out and has no text-only turn to repeat.
FINAL_TEXT = "Done."

_DEMO_CALLS: list[dict[str, Any]] = [
    {"name": "calculator", "arguments": {"expression": "6 * 7"}},
    {"name": "save_note", "arguments": {"title": "demo", "text": "{user_message}"}},
]


class ScriptedProvider:
    def __init__(self, settings: ProviderSettings) -> None:
        self._settings = settings
        self._label = provider_label(settings)
        # Attempts per (task, model, turn), only used when not running in an activity.
        self._attempts: dict[tuple[str, str, int], int] = {}

    async def complete(self, call: LlmCallInput, deltas: DeltaSink | None = None) -> LlmCallResult:
        model = call.selection.model
        check_model(self._settings, model)
        script = self._script(call, {tool.name for tool in call.tools})
        index = sum(1 for message in call.messages if message.role == "assistant")
        turn = _turn(script, index)
        if turn.error is not None and self._fails(call, index, turn.error_attempts):
            msg = f"{self._label}: scripted {turn.error} error (model {model!r}, turn {index})"
            raise ERRORS[turn.error](msg, retry_after=turn.retry_after)
        values = _placeholders(call.messages)
        message = AssistantMessage(
            content=_fill(turn.text, values),
            tool_calls=[
                self._tool_call(spec, index, position, values)
                for position, spec in enumerate(turn.tool_calls)
            ],
        )
        if deltas is not None:
            await _play(message, deltas, turn.chunk_delay_seconds)
        return LlmCallResult(
            message=message,
            usage=_usage(call, message),
            provider=self._settings.name,
            model=model,
        )

    async def aclose(self) -> None:
        """Nothing to close: no client."""

    def _script(self, call: LlmCallInput, offered: set[str]) -> list[ScriptedTurn]:
        model = call.selection.model
        script = self._settings.scripts.get(model)
        if script:
            return script
        if model == "echo":
            return [ScriptedTurn(text="You said: {user_message}")]
        if model == "demo":
            return _demo_script(offered)
        if model == "tck":
            return tck_script(message_id(call.metadata), offered)
        known = ", ".join(sorted({*self._settings.scripts, *BUILT_IN_MODELS}))
        msg = f"{self._label}: no script for model {model!r} (scripts: {known})"
        raise ModelNotFound(msg)

    def _fails(self, call: LlmCallInput, index: int, error_attempts: int | None) -> bool:
        return error_attempts is None or self._attempt(call, index) <= error_attempts

    def _attempt(self, call: LlmCallInput, index: int) -> int:
        # In an activity Temporal counts attempts, across worker restarts and processes;
        # elsewhere (unit tests) count calls here.
        if activity.in_activity():
            return activity.info().attempt
        key = (call.task_id, call.selection.model, index)
        self._attempts[key] = self._attempts.get(key, 0) + 1
        return self._attempts[key]

    def _tool_call(
        self, spec: dict[str, Any], index: int, position: int, values: dict[str, str]
    ) -> ToolCall:
        name, arguments = spec.get("name"), spec.get("arguments", {})
        if not isinstance(name, str) or not isinstance(arguments, dict):
            msg = (
                f"{self._label}: turn {index} tool_calls[{position}] must be "
                f'{{"name": str, "arguments": {{...}}}}, got {spec!r}'
            )
            raise InvalidLlmRequest(msg)
        filled: dict[str, Any] = _fill_value(arguments, values)
        # Derived from the position in the conversation, so a retry yields the same ids.
        return ToolCall(id=f"call_{index}_{position}", name=name, arguments=filled)


# Arguments JSON is streamed in pieces of this many characters, as models write it.
ARGUMENTS_PIECE = 12


async def _play(message: AssistantMessage, deltas: DeltaSink, delay: float) -> None:
    for word in re.findall(r"\s*\S+\s*", message.content):
        await asyncio.sleep(delay)
        deltas.text(word)
    for call in message.tool_calls:
        arguments = json.dumps(call.arguments)
        deltas.tool_call(call.id, call.name, "")
        for start in range(0, len(arguments), ARGUMENTS_PIECE):
            await asyncio.sleep(delay)
            deltas.tool_call(call.id, call.name, arguments[start : start + ARGUMENTS_PIECE])


def _demo_script(offered: set[str]) -> list[ScriptedTurn]:
    # Like a real model, only call tools the task offers.
    calls = [call for call in _DEMO_CALLS if call["name"] in offered]
    if not calls:
        return [ScriptedTurn(text="You said: {user_message}. No tools needed: 6 * 7 = 42.")]
    return [
        ScriptedTurn(text="Let me work that out and keep a note of it.", tool_calls=calls),
        ScriptedTurn(
            text="All done. The last tool replied: {last_tool_result} "
            "(scripted reply: no model was called; configure a provider to use a real one)"
        ),
    ]


def _turn(script: list[ScriptedTurn], index: int) -> ScriptedTurn:
    if index < len(script):
        return script[index]
    # Past the end: settle on a final answer rather than calling tools forever.
    final = [t for t in script if not t.tool_calls and t.error is None]
    return final[-1] if final else ScriptedTurn(text=FINAL_TEXT)


def _placeholders(messages: list[ChatMessage]) -> dict[str, str]:
    users = [m.content for m in messages if m.role == "user"]
    tools = [m.content for m in messages if m.role == "tool"]
    return {
        "{user_message}": users[-1] if users else "",
        "{last_tool_result}": tools[-1] if tools else "",
    }


def _fill(text: str, values: dict[str, str]) -> str:
    # Plain replacement, not str.format: scripts may hold other braces (JSON, code).
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def _fill_value(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _fill(value, values)
    if isinstance(value, dict):
        return {key: _fill_value(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill_value(item, values) for item in value]
    return value


def _usage(call: LlmCallInput, reply: AssistantMessage) -> Usage:
    """Words as tokens: rough, but it grows with the conversation as real usage does."""
    prompt = [call.system_prompt or "", *(m.content for m in call.messages)]
    prompt.extend(str(c.arguments) for m in call.messages for c in m.tool_calls)
    output = [reply.content, *(str(c.arguments) for c in reply.tool_calls)]
    return Usage(
        input_tokens=sum(len(text.split()) for text in prompt),
        output_tokens=max(1, sum(len(text.split()) for text in output)),
    )
