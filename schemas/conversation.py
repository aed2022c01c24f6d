"""Provider-neutral conversation shapes shared by requests, events and activities."""

from typing import Any, Literal

from pydantic import BaseModel, Field

# Where a model's arguments that are not a JSON object are kept (`{"_raw": "<as sent>"}`),
# so the model is told what it sent instead of the task crashing.
RAW_ARGUMENTS_KEY = "_raw"


class ToolCall(BaseModel):
    """A tool call the model asked for."""

    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)

    def unreadable_arguments(self) -> str | None:
        """The arguments as the model sent them, when they were not a JSON object."""
        raw = self.arguments.get(RAW_ARGUMENTS_KEY)
        return raw if len(self.arguments) == 1 and isinstance(raw, str) else None


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


class AssistantMessage(BaseModel):
    """What the model said in one turn: text and/or tool calls."""

    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)


class ChatMessage(BaseModel):
    """One message of a conversation, as carried in `history` and kept by the workflow.

    `user` and `assistant` messages carry `content` (an assistant message may also carry
    `tool_calls`); a `tool` message answers the assistant's call `tool_call_id`.
    """

    role: Literal["user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False


class ToolSpec(BaseModel):
    """A tool as offered to the model: its name, description and JSON-schema arguments."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
