"""Outbound event data: what result subscribers and approval bots read from the bus."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from temporal_executor.schemas.conversation import AssistantMessage, ToolCall, Usage
from temporal_executor.schemas.requests import ModelSelection


class TaskEventData(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    task_id: str
    # The request's metadata, echoed on every event so subscribers can correlate.
    metadata: dict[str, Any] = Field(default_factory=dict)


class ExecutionStarted(TaskEventData):
    workflow_id: str
    llm: ModelSelection = Field(alias="model_config")


class LlmResponded(TaskEventData):
    iteration: int
    message: AssistantMessage
    usage: Usage
    provider: str | None = None
    model: str | None = None
    truncated: bool = False


class ApprovalRequested(TaskEventData):
    approval_id: str
    tool_call: ToolCall
    reply_to: str
    expires_at: datetime


class ApprovalResolved(TaskEventData):
    approval_id: str
    approved: bool
    approver: str | None = None
    reason: str | None = None
    timed_out: bool = False


class ToolCompleted(TaskEventData):
    tool_call_id: str
    name: str
    result: Any = None
    error: str | None = None
    truncated: bool = False


class ExecutionCompleted(TaskEventData):
    final_message: str
    iterations: int
    usage: Usage


class ErrorInfo(BaseModel):
    type: str
    message: str


class ExecutionFailed(TaskEventData):
    error: ErrorInfo
    iterations: int


class ExecutionCancelled(TaskEventData):
    reason: str | None = None
