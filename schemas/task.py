"""Inputs and outputs of the agent workflow, its activities, signals, updates and queries.

One model in and one out for each, so fields can be added compatibly.
"""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from temporal_executor.schemas.conversation import (
    AssistantMessage,
    ChatMessage,
    ToolCall,
    ToolSpec,
    Usage,
)
from temporal_executor.schemas.events import ErrorInfo
from temporal_executor.schemas.requests import ExecutionRequested, ModelSelection

BusName = Literal["kafka", "nats"]


class EventRoute(BaseModel):
    """Where a task's events go, and what ties them to the request that started it."""

    bus: BusName
    events_destination: str
    approvals_destination: str
    approval_replies_destination: str
    # Where `agent.llm.delta` events go; None (tasks started before streaming): nowhere.
    deltas_destination: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None


class ApprovalPolicy(BaseModel):
    """Which of a task's tools need a human's approval, and what happens when nobody answers."""

    tools: list[str] = Field(default_factory=list)
    # Who may approve each tool's calls (groups expanded); a tool not here: anyone.
    approvers: dict[str, list[str]] = Field(default_factory=dict)
    timeout_seconds: float = 3600
    approve_on_timeout: bool = False


class AgentTaskInput(BaseModel):
    """Workflow input. The `carried_*` fields are set only when the task continues as new."""

    request: ExecutionRequested
    route: EventRoute
    carried_sequence: int = 0
    carried_iteration: int = 0
    carried_messages: list[ChatMessage] | None = None
    carried_usage: Usage = Field(default_factory=Usage)
    carried_mistakes_in_a_row: int = 0


TaskState = Literal["running", "awaiting_approval", "completed", "failed", "cancelled"]


class PendingApproval(BaseModel):
    approval_id: str
    tool_call: ToolCall
    expires_at: datetime
    # Who may answer it (from the task's plan); None: anyone.
    approvers: list[str] | None = None

    def allows(self, approver: str | None) -> bool:
        return self.approvers is None or approver in self.approvers


class TaskStatus(BaseModel):
    """Answer of the workflow's `status` query."""

    task_id: str
    state: TaskState
    iteration: int
    pending_approvals: list[PendingApproval] = Field(default_factory=list)
    final_message: str | None = None
    error: str | None = None


class ApprovalDecision(BaseModel):
    """Input of the workflow's `resolve_approval` update: one reply to one approval."""

    approval_id: str
    approved: bool
    approver: str | None = None
    reason: str | None = None
    arguments: dict[str, Any] | None = None


class ApprovalOutcome(BaseModel):
    """Result of `resolve_approval`: whether this reply decided the approval."""

    applied: bool
    detail: str = ""


class TaskResult(BaseModel):
    """Workflow result: how the task ended."""

    task_id: str
    state: Literal["completed", "failed", "cancelled"]
    final_message: str | None = None
    iterations: int = 0
    usage: Usage = Field(default_factory=Usage)
    error_type: str | None = None


class LlmCallInput(BaseModel):
    task_id: str
    selection: ModelSelection
    system_prompt: str | None = None
    messages: list[ChatMessage]
    tools: list[ToolSpec] = Field(default_factory=list)
    # Streaming: call the provider's streaming API and publish `agent.llm.delta` events to
    # `route.deltas_destination` as fragments arrive (never through the workflow's history).
    stream: bool = False
    iteration: int = 0
    # Added to the activity's attempt in the deltas' `attempt`: a fallback call (a new
    # activity, counting attempts from 1 again) must not reuse the ids of earlier attempts.
    attempt_offset: int = 0
    route: EventRoute | None = None
    # The request's `metadata`: the scripted provider's `tck` model plays the A2A TCK's
    # scenario named by the A2A message id the gateway keeps there.
    metadata: dict[str, Any] = Field(default_factory=dict)


class LlmCallResult(BaseModel):
    message: AssistantMessage
    usage: Usage = Field(default_factory=Usage)
    provider: str
    model: str
    truncated: bool = False


class ToolCallInput(BaseModel):
    task_id: str
    tool_call: ToolCall


class ToolCallResult(BaseModel):
    result: Any = None
    error: str | None = None
    truncated: bool = False


class TaskPlan(BaseModel):
    """What the worker's config makes of a request: resolved once per task by an activity,
    so the workflow itself reads no config and stays deterministic."""

    selection: ModelSelection
    # Tried in order when the LLM call with `selection` stays rate limited or unavailable
    # after all its attempts (config's `llm.providers[].fallbacks` of the selected provider).
    fallbacks: list[ModelSelection] = Field(default_factory=list)
    tools: list[ToolSpec]
    approval: ApprovalPolicy
    max_iterations: int
    llm_timeout_seconds: float
    llm_max_attempts: int
    # Absent from plans of tasks started before LLM calls heartbeat.
    llm_heartbeat_timeout_seconds: float = 10
    tool_timeout_seconds: float
    # Tools whose activity has a start-to-close of its own (a tool's `timeout_seconds`; an
    # MCP server's, plus the wait for its connection); the others get tool_timeout_seconds.
    tool_timeouts: dict[str, float] = Field(default_factory=dict)
    tool_max_attempts: int
    publish_timeout_seconds: float
    continue_as_new_after_events: int
    # What the workflow checks its LLM call input and continue-as-new input against, to
    # fail with `payload_too_large` rather than have Temporal refuse the command forever.
    # None (plans of tasks started before the check): not checked.
    max_payload_bytes: int | None = None
    # What plans recorded before these fields are read with (no budget, as then).
    max_tool_errors: int = 3
    max_parallel_tools: int = 8
    max_total_tokens: int | None = None
    # Publish `agent.llm.delta` events (the request's `stream`, else config's default).
    stream: bool = False
    # A problem with the request that config reveals (an unknown tool): fail the task.
    error: ErrorInfo | None = None


class PublishInput(BaseModel):
    """One outbound event, fully determined by the workflow so a retry publishes the same bytes."""

    route: EventRoute
    event_type: str
    event_id: str
    task_id: str
    sequence: int
    time: datetime
    data: dict[str, Any]


class PublishBatch(BaseModel):
    """Events a workflow produced back to back, published in order by one activity."""

    events: list[PublishInput]


class PublishedQuery(BaseModel):
    """The workflow's `published` query: this run's events with a sequence over `after`."""

    after: int = 0


class PublishedEvents(BaseModel):
    events: list[PublishInput]
