"""A2A views of our tasks: an A2A `Task` from the status query, stream events from bus events.

The A2A task id is our task id. The context id is the one the first message named (or a
new one), carried in the request's `metadata` under `a2a` so that it travels with the task
(and shows on every bus event); a task that arrived on the bus or the REST API has its task
id as context id.

States: running -> working, awaiting_approval -> input-required, completed, failed, and
cancelled -> canceled; a new task is submitted until its first event. Every stream event
carries the bus event it was made from (CloudEvents JSON) in its metadata under
`cloudevent`, so an A2A client sees exactly what a bus subscriber sees.
"""

from datetime import datetime
from typing import Any

from a2a.helpers import new_data_part, new_text_part
from a2a.server.events import Event
from a2a.types.a2a_pb2 import (
    Artifact,
    Message,
    Part,
    Role,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)

from temporal_executor.gateway._hitl import PendingCall, approval_message
from temporal_executor.gateway._streams import cloudevent_json
from temporal_executor.schemas.cloudevent import TASKID_EXTENSION, CloudEvent
from temporal_executor.schemas.conversation import ToolCall
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from temporal_executor.schemas.task import AgentTaskInput
from temporal_executor.schemas.task import TaskStatus as OurStatus

A2A_METADATA = "a2a"
CLOUDEVENT_METADATA = "cloudevent"
FINAL_ARTIFACT = "final_message"
# kagent marks tool call and result DataParts with this metadata.
PART_TYPE = "type"

STATES: dict[str, TaskState] = {
    "running": TaskState.TASK_STATE_WORKING,
    "awaiting_approval": TaskState.TASK_STATE_INPUT_REQUIRED,
    "completed": TaskState.TASK_STATE_COMPLETED,
    "failed": TaskState.TASK_STATE_FAILED,
    "cancelled": TaskState.TASK_STATE_CANCELED,
}
TERMINAL_STATES = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_REJECTED,
    }
)
# Where a stream (and a blocking SendMessage) stops: the task ended or waits for a person.
PAUSE_STATES = TERMINAL_STATES | {TaskState.TASK_STATE_INPUT_REQUIRED}


def context_id_of(task: AgentTaskInput) -> str:
    a2a = task.request.metadata.get(A2A_METADATA)
    if isinstance(a2a, dict) and isinstance(a2a.get("context_id"), str):
        context_id: str = a2a["context_id"]
        return context_id
    return task.request.task_id


def a2a_task(status: OurStatus, task: AgentTaskInput) -> Task:
    """The task as GetTask shows it: from the workflow's `status` query and its input."""
    task_id, context_id = status.task_id, context_id_of(task)
    workflow_id = workflow_id_for(task_id)
    result = Task(
        id=task_id,
        context_id=context_id,
        status=TaskStatus(state=STATES[status.state]),
        history=[_request_message(task, context_id)],
    )
    text: str | None = None
    if status.state == "awaiting_approval":
        pending = [
            PendingCall(p.approval_id, p.tool_call, p.expires_at) for p in status.pending_approvals
        ]
        ids = ",".join(p.approval_id for p in pending)
        result.status.message.CopyFrom(
            approval_message(
                pending,
                message_id=f"{workflow_id}/{ids}",
                task_id=task_id,
                context_id=context_id,
            )
        )
    elif status.state == "completed":
        text = status.final_message or ""
        result.artifacts.append(final_artifact(text))
    elif status.state == "failed":
        text = status.error or "failed"
    elif status.state == "cancelled":
        text = "cancelled"
    if text is not None:
        result.status.message.CopyFrom(
            _agent_message(
                f"{workflow_id}/{status.state}", task_id, context_id, new_text_part(text)
            )
        )
    return result


def submitted_task(task: AgentTaskInput) -> Task:
    """A task Temporal has accepted and no worker has picked up yet."""
    context_id = context_id_of(task)
    return Task(
        id=task.request.task_id,
        context_id=context_id,
        status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
        history=[_request_message(task, context_id)],
    )


def stream_events(event: CloudEvent, context_id: str) -> list[Event]:
    """The A2A stream events one bus event of a task becomes (none for an unknown type)."""
    data: dict[str, Any] = event.data if isinstance(event.data, dict) else {}
    task_id = event.extension(TASKID_EXTENSION) or str(data.get("task_id"))

    def message(*parts: Part) -> Message:
        return _agent_message(event.id, task_id, context_id, *parts)

    def status(state: TaskState, update: Message | None = None) -> TaskStatusUpdateEvent:
        update_event = TaskStatusUpdateEvent(
            task_id=task_id, context_id=context_id, status=TaskStatus(state=state)
        )
        if update is not None:
            update_event.status.message.CopyFrom(update)
        if event.time is not None:
            update_event.status.timestamp.FromDatetime(event.time)
        update_event.metadata.update({CLOUDEVENT_METADATA: cloudevent_json(event)})
        return update_event

    working = TaskState.TASK_STATE_WORKING
    match event.type:
        case EventType.EXECUTION_STARTED:
            return [status(working)]
        case EventType.LLM_RESPONDED:
            said: dict[str, Any] = data.get("message") or {}
            parts = [new_text_part(said["content"])] if said.get("content") else []
            parts += [
                _typed_part(
                    "function_call", {"id": c["id"], "name": c["name"], "args": c["arguments"]}
                )
                for c in said.get("tool_calls") or []
            ]
            return [status(working, message(*parts) if parts else None)]
        case EventType.TOOL_COMPLETED:
            outcome = (
                {"error": data["error"]} if data.get("error") else {"result": data.get("result")}
            )
            result = {"id": data.get("tool_call_id"), "name": data.get("name"), "response": outcome}
            return [status(working, message(_typed_part("function_response", result)))]
        case EventType.APPROVAL_REQUESTED:
            call = PendingCall(
                data["approval_id"],
                ToolCall.model_validate(data["tool_call"]),
                datetime.fromisoformat(data["expires_at"]) if data.get("expires_at") else None,
            )
            request = approval_message(
                [call], message_id=event.id, task_id=task_id, context_id=context_id
            )
            return [status(TaskState.TASK_STATE_INPUT_REQUIRED, request)]
        case EventType.APPROVAL_RESOLVED:
            return [status(working, message(new_text_part(_resolution(data))))]
        case EventType.EXECUTION_COMPLETED:
            final = str(data.get("final_message", ""))
            artifact = TaskArtifactUpdateEvent(
                task_id=task_id,
                context_id=context_id,
                artifact=final_artifact(final),
                last_chunk=True,
            )
            done = status(TaskState.TASK_STATE_COMPLETED, message(new_text_part(final)))
            return [artifact, done]
        case EventType.EXECUTION_FAILED:
            error = data.get("error") or {}
            text = f"{error.get('type', 'failed')}: {error.get('message', '')}"
            return [status(TaskState.TASK_STATE_FAILED, message(new_text_part(text)))]
        case EventType.EXECUTION_CANCELLED:
            text = f"cancelled: {data['reason']}" if data.get("reason") else "cancelled"
            return [status(TaskState.TASK_STATE_CANCELED, message(new_text_part(text)))]
    return []


def pauses(events: list[Event]) -> bool:
    """Whether these end a stream: the task ended or waits for input."""
    return any(
        isinstance(e, TaskStatusUpdateEvent) and e.status.state in PAUSE_STATES for e in events
    )


def final_artifact(text: str) -> Artifact:
    return Artifact(artifact_id=FINAL_ARTIFACT, name=FINAL_ARTIFACT, parts=[new_text_part(text)])


def _request_message(task: AgentTaskInput, context_id: str) -> Message:
    a2a = task.request.metadata.get(A2A_METADATA)
    message_id = a2a.get("message_id") if isinstance(a2a, dict) else None
    return Message(
        message_id=message_id or f"{workflow_id_for(task.request.task_id)}/request",
        task_id=task.request.task_id,
        context_id=context_id,
        role=Role.ROLE_USER,
        parts=[new_text_part(task.request.user_message)],
    )


def _agent_message(message_id: str, task_id: str, context_id: str, *parts: Part) -> Message:
    return Message(
        message_id=message_id,
        task_id=task_id,
        context_id=context_id,
        role=Role.ROLE_AGENT,
        parts=list(parts),
    )


def _typed_part(part_type: str, data: dict[str, Any]) -> Part:
    part = new_data_part(data)
    part.metadata.update({PART_TYPE: part_type})
    return part


def _resolution(data: dict[str, Any]) -> str:
    verdict = "approved" if data.get("approved") else "denied"
    text = f"{data.get('approval_id')} {verdict}"
    if data.get("timed_out"):
        text += " (no reply before the deadline)"
    elif data.get("approver"):
        text += f" by {data['approver']}"
    if data.get("reason"):
        text += f": {data['reason']}"
    return text
