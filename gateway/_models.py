"""Bodies of the REST API. Requests reuse the bus's models (`ExecutionRequested`)."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from temporal_executor.schemas.task import TaskStatus


class ApprovalBody(BaseModel):
    """`POST /api/v1/approve/...`: the fields of an `agent.tool.approval.replied` event but
    `approver`, which is the authenticated caller (a body's `approver` is ignored)."""

    model_config = ConfigDict(extra="ignore")

    approved: bool
    # Which approval; default: the one the task is waiting for.
    approval_id: str | None = Field(default=None, min_length=1)
    reason: str | None = None
    # Edited tool arguments to run the tool with instead.
    arguments: dict[str, Any] | None = None


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    reason: str | None = None


class TaskAccepted(BaseModel):
    """The answer to `execute`: the task's id, whether or not this request started it."""

    task_id: str
    workflow_id: str
    # False: a task with this id exists or existed, and nothing new started (202 vs 200).
    started: bool
    status_url: str
    events_url: str


class TaskStatusBody(TaskStatus):
    """The workflow's `status` query, with the workflow's id."""

    workflow_id: str


class ApprovalApplied(BaseModel):
    task_id: str
    approval_id: str
    approved: bool


class CancelRequestedBody(BaseModel):
    task_id: str
    cancel_requested: bool = True


class ErrorBody(BaseModel):
    """Every error: the HTTP status, a stable code, and what went wrong."""

    status: int
    error: str
    message: str


class Health(BaseModel):
    status: str
    detail: str | None = None
