"""Inbound event data: what producers and approval bots put on the bus."""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from temporal_executor.schemas.conversation import ChatMessage

TaskId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,200}$")]


class InboundModel(BaseModel):
    # Unknown fields are ignored so producers can send newer fields to older bridges.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, serialize_by_alias=True)


class ModelSelection(InboundModel):
    """The request's `model_config`: which provider and model run the task."""

    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)


class ExecutionRequested(InboundModel):
    """Data of `agent.execution.requested`.

    `task_id` defaults to the event's id (the bridge fills it before validation).
    `model_config` defaults to the provider and model that config names as default.
    """

    task_id: TaskId
    user_message: str = Field(min_length=1)
    llm: ModelSelection | None = Field(default=None, alias="model_config")
    system_prompt: str | None = None
    tools: list[str] | None = None
    require_approval: bool | list[str] = False
    max_iterations: int | None = Field(default=None, ge=1)
    max_tool_errors: int | None = Field(
        default=None,
        ge=1,
        description="Fail the task after this many mistaken tool calls in a row (arguments "
        "not JSON or not fitting the tool, a tool it may not call, input the tool rejects); "
        "until then each goes back to the model. At most config's executor.max_tool_errors.",
    )
    max_total_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Token budget (input + output, all turns): the turn that crosses it is "
        "the last, and the task fails with budget_exceeded. Replaces config's "
        "executor.max_total_tokens.",
    )
    history: list[ChatMessage] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Also publish `agent.llm.delta` events as the model writes; None: config decides.
    stream: bool | None = None


class CancelRequested(InboundModel):
    """Data of `agent.execution.cancel.requested`."""

    task_id: TaskId
    reason: str | None = None


class ApprovalReplied(InboundModel):
    """Data of `agent.tool.approval.replied`, sent by an approval bot or a person."""

    task_id: TaskId
    approval_id: str = Field(min_length=1)
    approved: bool
    approver: str | None = None
    reason: str | None = None
    arguments: dict[str, Any] | None = None
