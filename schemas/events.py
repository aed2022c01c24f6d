"""Outbound event data: what result subscribers and approval bots read from the bus."""

from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from temporal_executor.schemas.conversation import AssistantMessage, ToolCall, Usage
from temporal_executor.schemas.event_types import EventType
from temporal_executor.schemas.requests import ModelSelection

# On `agent.llm.responded` and every terminal event (contract v1.1).
TotalUsage = Annotated[
    Usage,
    Field(default_factory=Usage, description="The task's usage so far, every turn included."),
]


class TaskEventData(BaseModel):
    """The data of an event a task publishes; each subclass is the data of one type."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)
    event_type: ClassVar[EventType]

    task_id: str
    # The request's metadata, echoed on every event so subscribers can correlate.
    metadata: dict[str, Any] = Field(default_factory=dict)


class ExecutionStarted(TaskEventData):
    event_type = EventType.EXECUTION_STARTED

    workflow_id: str
    llm: ModelSelection = Field(alias="model_config")


class LlmResponded(TaskEventData):
    event_type = EventType.LLM_RESPONDED

    iteration: int
    message: AssistantMessage
    usage: Usage = Field(description="This turn's usage.")
    total_usage: TotalUsage
    provider: str | None = None
    model: str | None = None
    truncated: bool = False


class ToolCallFragment(BaseModel):
    """A piece of a tool call as the model writes it: `arguments` is the next part of the
    arguments' JSON text; concatenated in `index` order they make the whole."""

    id: str
    name: str
    arguments: str = ""


class LlmDelta(BaseModel):
    """Data of `agent.llm.delta`: the next fragment of a turn being written.

    Best effort: a fragment may be missing. An event with a higher `attempt` for the same
    `iteration` voids the text of earlier attempts; `agent.llm.responded` is the record.
    """

    task_id: str
    iteration: int
    # 1, 2, … per LLM call attempt of the iteration (a retry or a fallback starts a new one).
    attempt: int
    # 0, 1, … within the attempt.
    index: int
    text: str = ""
    tool_call: ToolCallFragment | None = None


class ApprovalRequested(TaskEventData):
    event_type = EventType.APPROVAL_REQUESTED

    approval_id: str
    tool_call: ToolCall
    reply_to: str
    expires_at: datetime


class ApprovalResolved(TaskEventData):
    event_type = EventType.APPROVAL_RESOLVED

    approval_id: str
    approved: bool
    approver: str | None = None
    reason: str | None = None
    timed_out: bool = False


class ToolCompleted(TaskEventData):
    event_type = EventType.TOOL_COMPLETED

    tool_call_id: str
    name: str
    result: Any = None
    error: str | None = None
    truncated: bool = False


class ExecutionCompleted(TaskEventData):
    event_type = EventType.EXECUTION_COMPLETED

    final_message: str
    iterations: int
    usage: Usage = Field(description="The task's usage, every turn included (as total_usage).")
    total_usage: TotalUsage


class ErrorInfo(BaseModel):
    type: str
    message: str


class ExecutionFailed(TaskEventData):
    event_type = EventType.EXECUTION_FAILED

    error: ErrorInfo
    iterations: int
    total_usage: TotalUsage


class ExecutionCancelled(TaskEventData):
    event_type = EventType.EXECUTION_CANCELLED

    reason: str | None = None
    total_usage: TotalUsage
