"""A2A ListTasks from Temporal's visibility API: one page of tasks is one page of workflows.

Tasks are the workflows of type `AgentExecutionWorkflow` (a task that continued as new
shows once, as its latest run). A state filter narrows the visibility query (running,
or how the workflow closed); working and input-required are both running workflows, told
apart by the status query, as is the context id, which travels in the task's input: those
filters apply to the page Temporal returned, so a page may hold fewer tasks than
`page_size` while `next_page_token` says more may follow. The page token is Temporal's,
base64url-encoded.
"""

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from a2a.types.a2a_pb2 import ListTasksRequest, ListTasksResponse, Task, TaskState
from a2a.utils.constants import DEFAULT_LIST_TASKS_PAGE_SIZE
from a2a.utils.errors import InvalidParamsError
from a2a.utils.task import apply_history_length, validate_history_length, validate_page_size
from temporalio.client import WorkflowExecution, WorkflowExecutionStatus

from temporal_executor.schemas.event_types import WORKFLOW_ID_PREFIX, WORKFLOW_TYPE
from temporal_executor.tasks.service import TaskService

Status = WorkflowExecutionStatus
# Which workflows can be in an A2A state (before the status query tells working from
# input-required).
_CLOSED_AS: dict[int, tuple[Status, ...]] = {
    TaskState.TASK_STATE_COMPLETED: (Status.COMPLETED,),
    TaskState.TASK_STATE_FAILED: (Status.FAILED, Status.TERMINATED, Status.TIMED_OUT),
    TaskState.TASK_STATE_CANCELED: (Status.CANCELED,),
    TaskState.TASK_STATE_WORKING: (Status.RUNNING,),
    TaskState.TASK_STATE_INPUT_REQUIRED: (Status.RUNNING,),
    TaskState.TASK_STATE_SUBMITTED: (Status.RUNNING,),
}
# Temporal's names for them in a visibility query.
_QUERY_NAMES = {
    Status.RUNNING: "Running",
    Status.COMPLETED: "Completed",
    Status.FAILED: "Failed",
    Status.CANCELED: "Canceled",
    Status.TERMINATED: "Terminated",
    Status.TIMED_OUT: "TimedOut",
}

View = Callable[[str], Awaitable[Task]]


def visibility_query(params: ListTasksRequest) -> str | None:
    """The visibility query for the request's filters; None when nothing can match."""
    clauses = [f"WorkflowType = '{WORKFLOW_TYPE}'", "ExecutionStatus != 'ContinuedAsNew'"]
    if params.status != TaskState.TASK_STATE_UNSPECIFIED:
        if params.status not in TaskState.values():
            raise InvalidParamsError(message=f"status {params.status} is not a task state")
        statuses = _CLOSED_AS.get(params.status)
        if statuses is None:  # rejected, auth-required: our tasks never are
            return None
        names = ", ".join(f"'{_QUERY_NAMES[s]}'" for s in statuses)
        clauses.append(f"ExecutionStatus IN ({names})")
    if params.HasField("status_timestamp_after"):
        after = params.status_timestamp_after.ToDatetime(tzinfo=UTC).isoformat()
        # A running task's last change is not in visibility: it may be after anything.
        clauses.append(f"(CloseTime > '{after}' OR ExecutionStatus = 'Running')")
    return " AND ".join(clauses)


async def list_tasks(tasks: TaskService, params: ListTasksRequest, view: View) -> ListTasksResponse:
    validate_history_length(params)
    page_size = params.page_size if params.HasField("page_size") else DEFAULT_LIST_TASKS_PAGE_SIZE
    validate_page_size(page_size)
    token = _decode_token(params.page_token)
    query = visibility_query(params)
    if query is None:
        return ListTasksResponse(next_page_token="", page_size=page_size, total_size=0)
    executions, next_token = await tasks.list_page(query, page_size, token)
    found = await asyncio.gather(*(_task(execution, view) for execution in executions))
    listed = [
        _shaped(task, params)
        for task in found
        if task is not None
        and (not params.context_id or task.context_id == params.context_id)
        and (
            params.status in (TaskState.TASK_STATE_UNSPECIFIED, task.status.state)
            or (
                params.status == TaskState.TASK_STATE_SUBMITTED
                and task.status.state == TaskState.TASK_STATE_WORKING
            )
        )
    ]
    listed.sort(key=lambda t: t.status.timestamp.ToDatetime(), reverse=True)
    filtered = bool(params.context_id) or params.status in (
        TaskState.TASK_STATE_WORKING,
        TaskState.TASK_STATE_INPUT_REQUIRED,
    )
    if filtered and not next_token and not token:
        total = len(listed)  # the whole of it was on this one page
    else:
        total = await tasks.count(query)
    return ListTasksResponse(
        tasks=listed,
        next_page_token=_encode_token(next_token),
        page_size=page_size,
        total_size=total,
    )


async def _task(execution: WorkflowExecution, view: View) -> Task | None:
    if not execution.id.startswith(WORKFLOW_ID_PREFIX):
        return None
    try:
        task = await view(execution.id.removeprefix(WORKFLOW_ID_PREFIX))
    except Exception:  # gone since (retention) or unreadable: not listed
        return None
    changed = execution.close_time or execution.start_time or datetime.now(UTC)
    task.status.timestamp.FromDatetime(changed)
    return task


def _shaped(task: Task, params: ListTasksRequest) -> Task:
    if not params.include_artifacts:
        task.ClearField("artifacts")
    return apply_history_length(task, params)


def _decode_token(token: str) -> bytes | None:
    if not token:
        return None
    try:
        return base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InvalidParamsError(
            message=f"page_token {token!r} is not one this agent gave"
        ) from None


def _encode_token(token: bytes | None) -> str:
    return base64.urlsafe_b64encode(token).decode("ascii").rstrip("=") if token else ""
