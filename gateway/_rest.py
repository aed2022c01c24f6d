"""The REST API of the executor this project descends from, served from the same tasks.

Paths take the workflow id (`agent-execution-<task_id>`), as the seed's did, or the bare
task id. Bodies are read as JSON whatever their `Content-Type` (the seed's own examples
send JSON with curl's default form type) and validated with the bus's models.
"""

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from temporal_executor.gateway._errors import PayloadTooLarge
from temporal_executor.gateway._middleware import caller_identity
from temporal_executor.gateway._models import (
    ApprovalApplied,
    ApprovalBody,
    CancelBody,
    CancelRequestedBody,
    ErrorBody,
    TaskAccepted,
    TaskStatusBody,
)
from temporal_executor.gateway._streams import TaskStreams, cloudevent_json
from temporal_executor.schemas.cloudevent import SEQUENCE_EXTENSION, CloudEvent
from temporal_executor.schemas.event_types import WORKFLOW_ID_PREFIX, workflow_id_for
from temporal_executor.schemas.requests import ExecutionRequested
from temporal_executor.tasks.errors import InvalidRequest
from temporal_executor.tasks.service import TaskService
from temporal_executor.tasks.validation import validated

M = TypeVar("M", bound=BaseModel)
PREFIX = "/api/v1"
# Models of request bodies, for the OpenAPI document (bodies are parsed by hand, see above).
REQUEST_MODELS: tuple[type[BaseModel], ...] = (ExecutionRequested, ApprovalBody, CancelBody)
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": what}
    for code, what in [
        (400, "invalid body"),
        (401, "missing or wrong bearer token (when `gateway.auth_token_env` is set)"),
        (404, "unknown task"),
        (503, "Temporal unreachable"),
    ]
}


class TaskRoutes:
    """The REST endpoints: each parses its body, asks the task service, and shapes the answer
    (errors become HTTP answers in `_app`)."""

    def __init__(self, tasks: TaskService, streams: TaskStreams, *, max_body_bytes: int) -> None:
        self._tasks = tasks
        self._streams = streams
        self._max_body_bytes = max_body_bytes

    def router(self) -> APIRouter:
        router = APIRouter(prefix=PREFIX, tags=["tasks"], responses=_ERRORS)
        router.add_api_route(
            "/execute",
            self.execute,
            methods=["POST"],
            status_code=202,
            response_model=TaskAccepted,
            summary="Start a task, as an agent.execution.requested event would",
            openapi_extra=_body_schema(ExecutionRequested),
            responses={
                200: {
                    "model": TaskAccepted,
                    "description": "a task with this id exists: nothing new",
                },
                413: {"model": ErrorBody, "description": "body over bus.max_message_bytes"},
            },
        )
        router.add_api_route(
            "/status/{workflow_id}",
            self.status,
            methods=["GET"],
            summary="The task's state, iteration, pending approvals and final message",
        )
        router.add_api_route(
            "/approve/{workflow_id}",
            self.approve,
            methods=["POST"],
            summary="Reply to the approval the task waits for, as a bus reply would",
            openapi_extra=_body_schema(ApprovalBody),
            responses={
                403: {
                    "model": ErrorBody,
                    "description": "the caller may not approve this tool (approvals.*)",
                },
                409: {"model": ErrorBody, "description": "not waiting for this approval, or ended"},
            },
        )
        router.add_api_route(
            "/cancel/{workflow_id}",
            self.cancel,
            methods=["POST"],
            status_code=202,
            summary="Ask for the task to be cancelled, as a cancel event would",
            openapi_extra=_body_schema(CancelBody, required=False),
            responses={409: {"model": ErrorBody, "description": "the task has ended"}},
        )
        router.add_api_route(
            "/events/{task_id}",
            self.events,
            methods=["GET"],
            summary="The task's events as Server-Sent Events, from its first to its last",
            response_class=EventSourceResponse,
            responses={
                200: {
                    "content": {"text/event-stream": {}},
                    "description": "`id` is the event id, `event` its type, `data` the CloudEvent "
                    "(JSON format); the stream ends after the task's terminal event. "
                    "`Last-Event-ID` resumes after that event. With `deltas=true` the model's "
                    "text streams too, as `agent.llm.delta` events (best-effort, no SSE `id`).",
                }
            },
        )
        return router

    async def execute(self, request: Request) -> JSONResponse:
        data = await _json_object(request, self._max_body_bytes)
        data.setdefault("task_id", f"task-{uuid.uuid4().hex}")
        transport = self._streams.default
        task = self._tasks.prepare(
            validated(ExecutionRequested, data),
            transport,
            traceparent=request.headers.get("traceparent"),
            tracestate=request.headers.get("tracestate"),
        )
        started = await self._tasks.start(task, transport)
        task_id = task.request.task_id
        workflow_id = workflow_id_for(task_id)
        accepted = TaskAccepted(
            task_id=task_id,
            workflow_id=workflow_id,
            started=started,
            status_url=f"{PREFIX}/status/{workflow_id}",
            events_url=f"{PREFIX}/events/{task_id}",
        )
        return JSONResponse(accepted.model_dump(), status_code=202 if started else 200)

    async def status(self, workflow_id: str) -> TaskStatusBody:
        task_id = _task_id(workflow_id)
        found = await self._tasks.status(task_id)
        return TaskStatusBody(**found.model_dump(), workflow_id=workflow_id_for(task_id))

    async def approve(self, workflow_id: str, request: Request) -> ApprovalApplied:
        task_id = _task_id(workflow_id)
        reply = await self._body(request, ApprovalBody)
        approval_id = await self._tasks.approve_waiting(
            task_id,
            approval_id=reply.approval_id,
            approved=reply.approved,
            # The authenticated caller, never a field of the body.
            approver=caller_identity(request.scope),
            reason=reply.reason,
            arguments=reply.arguments,
        )
        return ApprovalApplied(task_id=task_id, approval_id=approval_id, approved=reply.approved)

    async def cancel(self, workflow_id: str, request: Request) -> CancelRequestedBody:
        task_id = _task_id(workflow_id)
        reason = (await self._body(request, CancelBody, optional=True)).reason
        await self._tasks.running_status(task_id)  # 404 for an unknown task, 409 for an ended one
        await self._tasks.cancel(task_id, reason)
        return CancelRequestedBody(task_id=task_id)

    async def events(
        self, task_id: str, request: Request, deltas: bool = False
    ) -> EventSourceResponse:
        task_id = _task_id(task_id)
        task = await self._tasks.task_input(task_id)
        after = _sequence(request.headers.get("last-event-id"))
        # Opened here, so that a bus problem is a 503 rather than an empty stream; closed when
        # the stream ends, or after the response if it never started (the client left).
        opened = contextlib.AsyncExitStack()
        found = await opened.enter_async_context(
            self._streams.events(task_id, task.route, after=after, deltas=deltas)
        )
        return EventSourceResponse(
            _server_sent(found, opened), background=BackgroundTask(opened.aclose)
        )

    async def _body(self, request: Request, model: type[M], *, optional: bool = False) -> M:
        data = await _json_object(request, self._max_body_bytes, optional=optional)
        return validated(model, data)


async def _server_sent(
    events: AsyncIterator[CloudEvent], opened: contextlib.AsyncExitStack
) -> AsyncIterator[ServerSentEvent]:
    """The events as Server-Sent Events; closes `opened` at the end."""
    try:
        async for event in events:
            # A delta has no SSE id, so a reconnecting client's `Last-Event-ID` stays the
            # last durable event: it resumes from the task's own record.
            durable = event.extension(SEQUENCE_EXTENSION) is not None
            yield ServerSentEvent(
                data=json.dumps(cloudevent_json(event), ensure_ascii=False),
                event=event.type,
                id=event.id if durable else None,
            )
    finally:
        await opened.aclose()


def request_schemas() -> dict[str, Any]:
    """Component schemas of the request bodies, for the OpenAPI document."""
    components: dict[str, Any] = {}
    for model in REQUEST_MODELS:
        schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    execute = components[ExecutionRequested.__name__]
    # Over HTTP the gateway picks a task id when the body has none.
    execute["required"] = [name for name in execute["required"] if name != "task_id"]
    execute["properties"]["task_id"]["description"] = "default: a new id, `task-<32 hex>`"
    return components


def _body_schema(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": ref}}}}


async def _json_object(request: Request, limit: int, *, optional: bool = False) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        msg = f"{declared} bytes exceeds the {limit}-byte limit"
        raise PayloadTooLarge(msg)
    raw = await request.body()
    if len(raw) > limit:
        msg = f"{len(raw)} bytes exceeds the {limit}-byte limit"
        raise PayloadTooLarge(msg)
    if optional and not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        msg = f"the body is not JSON: {exc}"
        raise InvalidRequest(msg) from None
    if not isinstance(data, dict):
        msg = f"the body must be a JSON object, got {type(data).__name__}"
        raise InvalidRequest(msg)
    return data


def _task_id(path: str) -> str:
    """`agent-execution-<task_id>` or `<task_id>` -> `<task_id>`."""
    return path.removeprefix(WORKFLOW_ID_PREFIX) or path


def _sequence(event_id: str | None) -> int:
    """The sequence in an event id `<workflow id>/<sequence>`; 0 for none."""
    tail = (event_id or "").rpartition("/")[2]
    return int(tail) if tail.isdigit() and "/delta/" not in (event_id or "") else 0
