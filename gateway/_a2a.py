"""The A2A protocol (v1.0, as the a2a-sdk speaks it) on top of Temporal and the bus.

Nothing about a task is kept in this process: GetTask is the workflow's status query,
streams are the task's bus events, approvals are the workflow update a bus reply makes.
So any number of gateways serve the same tasks, and a restart loses nothing.

- SendMessage / SendStreamingMessage without a task id start a task: the text parts are
  the user message; `model_config`, `system_prompt`, `tools`, `require_approval` and
  `max_iterations` may come in the message's (or the request's) metadata, as in a bus
  request. The stream (and a blocking SendMessage) runs until the task ends or waits for
  an approval (`input-required`, see `_hitl`).
- The same with the task id of a task in `input-required` answers its approval.
- CancelTask cancels and waits (up to `bridge.rpc_timeout_seconds`) for the task to end.
- SubscribeToTask: the task as it is now, then its events until it ends or pauses.
- SendStreamingMessage asks the task for deltas (`stream`), and it and SubscribeToTask show
  each turn's text as it grows, as artifact updates (`_a2a_deltas`).
- ListTasks: Temporal's visibility (`_a2a_list`).
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, NoReturn

from a2a.helpers import get_message_text
from a2a.server.context import ServerCallContext
from a2a.server.events import Event
from a2a.server.request_handlers import RequestHandler
from a2a.types.a2a_pb2 import (
    AgentCard,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
)
from a2a.utils.errors import (
    A2AError,
    ContentTypeNotSupportedError,
    InternalError,
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from a2a.utils.proto_utils import validate_proto_required_fields
from a2a.utils.task import apply_history_length, validate_history_length
from google.protobuf.json_format import MessageToDict

from temporal_executor.gateway._a2a_deltas import TurnArtifacts
from temporal_executor.gateway._a2a_list import list_tasks
from temporal_executor.gateway._a2a_views import (
    A2A_METADATA,
    a2a_task,
    context_id_of,
    pauses,
    stream_events,
    submitted_task,
)
from temporal_executor.gateway._errors import GatewayError
from temporal_executor.gateway._hitl import PendingCall, UnreadableReply, decisions
from temporal_executor.gateway._streams import TaskStreams
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.event_types import TERMINAL_TYPES, EventType
from temporal_executor.schemas.requests import ExecutionRequested
from temporal_executor.tasks.errors import (
    ApproverNotAllowed,
    InvalidRequest,
    TaskError,
    TaskNotFound,
    TaskNotRunning,
    UnknownApproval,
)
from temporal_executor.tasks.service import TERMINAL_STATES, TaskService
from temporal_executor.tasks.validation import validated

# Request fields a message's metadata may set, as a bus request's data does.
REQUEST_FIELDS = (
    "model_config",
    "system_prompt",
    "tools",
    "require_approval",
    "max_iterations",
    "stream",
)


class TaskRequestHandler(RequestHandler):
    def __init__(
        self, tasks: TaskService, streams: TaskStreams, *, cancel_wait_seconds: float
    ) -> None:
        self._tasks = tasks
        self._streams = streams
        self._cancel_wait = cancel_wait_seconds

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task:
        validate_proto_required_fields(params)
        validate_history_length(params)
        with _as_a2a_errors():
            return apply_history_length(await self._view(params.id), params)

    async def on_list_tasks(
        self, params: ListTasksRequest, context: ServerCallContext
    ) -> ListTasksResponse:
        with _as_a2a_errors():
            return await list_tasks(self._tasks, params, self._view)

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task:
        validate_proto_required_fields(params)
        task_id = params.id
        reason = (
            MessageToDict(params.metadata).get("reason") if params.HasField("metadata") else None
        )
        with _as_a2a_errors():
            task = await self._tasks.task_input(task_id)
            async with self._streams.events(task_id, task.route) as events:
                try:
                    await self._tasks.running_status(task_id)
                    await self._tasks.cancel(task_id, str(reason) if reason else None)
                except TaskNotRunning as exc:
                    raise TaskNotCancelableError(message=exc.message) from exc
                # Answer with the task cancelled, unless cancelling takes long.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._cancel_wait):
                        async for event in events:
                            if event.type in TERMINAL_TYPES:
                                break
            return await self._view(task_id)

    async def on_message_send(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> Task | Message:
        validate_proto_required_fields(params)
        validate_history_length(params.configuration)
        task_id: str | None = None
        with _as_a2a_errors():
            async with contextlib.aclosing(self._run(params, context, streaming=False)) as run:
                async for event in run:
                    if isinstance(event, Task):
                        task_id = event.id
                        if params.configuration.return_immediately:
                            return apply_history_length(event, params.configuration)
            if task_id is None:  # pragma: no cover - `_run` yields the task first or raises
                raise InternalError(message="no task")
            return apply_history_length(await self._view(task_id), params.configuration)

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        validate_proto_required_fields(params)
        validate_history_length(params.configuration)
        with _as_a2a_errors():
            async with contextlib.aclosing(self._run(params, context, streaming=True)) as run:
                async for event in run:
                    if isinstance(event, Task):
                        event = apply_history_length(event, params.configuration)
                    yield event

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        validate_proto_required_fields(params)
        with _as_a2a_errors():
            task = await self._tasks.task_input(params.id)
            async with self._streams.events(params.id, task.route, deltas=True) as events:
                status = await self._tasks.status(params.id)
                if status.state in TERMINAL_STATES:
                    msg = f"task {params.id} has {status.state}: there is nothing to follow"
                    raise UnsupportedOperationError(message=msg)
                yield a2a_task(status, task)
                turns = TurnArtifacts(params.id, context_id_of(task))
                async for item in self._follow(events, context_id_of(task), set(), turns):
                    yield item

    async def _run(
        self, params: SendMessageRequest, context: ServerCallContext, *, streaming: bool
    ) -> AsyncGenerator[Event, None]:
        """The task first (started, or resumed with an approval), then its stream events;
        `streaming` asks the task for its text as it comes, and follows it."""
        message = params.message
        if message.task_id:
            async for event in self._answer(message, context, streaming=streaming):
                yield event
            return
        transport = self._streams.default
        task = self._tasks.prepare(
            _request(params, message, streaming=streaming),
            transport,
            traceparent=context.state.get("headers", {}).get("traceparent"),
        )
        task_id, context_id = task.request.task_id, context_id_of(task)
        async with self._streams.events(task_id, task.route, deltas=streaming) as events:
            await self._tasks.start(task, transport)
            yield submitted_task(task)
            turns = TurnArtifacts(task_id, context_id) if streaming else None
            async for event in self._follow(events, context_id, set(), turns):
                yield event

    async def _answer(
        self, message: Message, context: ServerCallContext, *, streaming: bool
    ) -> AsyncGenerator[Event, None]:
        """A message on an existing task: the reply to the approval it waits for."""
        task_id = message.task_id
        task = await self._tasks.task_input(task_id)
        context_id = context_id_of(task)
        if message.context_id and message.context_id != context_id:
            msg = f"context {message.context_id} is not the context {context_id} of task {task_id}"
            raise InvalidParamsError(message=msg)
        status = await self._tasks.status(task_id)
        if status.state in TERMINAL_STATES:
            msg = f"task {task_id} has {status.state}: it takes no more messages"
            raise UnsupportedOperationError(message=msg)
        if status.state != "awaiting_approval":
            raise InvalidParamsError(message=f"task {task_id} is not waiting for input")
        pending = [
            PendingCall(p.approval_id, p.tool_call, p.expires_at) for p in status.pending_approvals
        ]
        try:
            found = decisions(message, pending)
        except UnreadableReply as exc:
            raise InvalidParamsError(message=str(exc)) from exc
        # The authenticated caller (gateway.tokens, gateway.jwt), never the message's metadata.
        user = context.user
        approver = user.user_name if user.is_authenticated else None
        async with self._streams.events(task_id, task.route, deltas=streaming) as events:
            for decision in found:
                await self._tasks.approve_waiting(
                    task_id,
                    approval_id=decision.approval_id,
                    approved=decision.approved,
                    approver=approver,
                    reason=decision.reason,
                )
            yield await self._view(task_id)
            resolved = {d.approval_id for d in found}
            turns = TurnArtifacts(task_id, context_id) if streaming else None
            async for event in self._follow(events, context_id, resolved, turns):
                yield event

    async def _follow(
        self,
        events: AsyncIterator[CloudEvent],
        context_id: str,
        resolved: set[str],
        turns: TurnArtifacts | None,
    ) -> AsyncGenerator[Event, None]:
        async for event in events:
            if turns is not None:
                for update in turns.updates(event):
                    yield update
            data = event.data if isinstance(event.data, dict) else {}
            if event.type == EventType.APPROVAL_REQUESTED and data.get("approval_id") in resolved:
                continue  # a late redelivery of the request just answered
            produced = stream_events(event, context_id)
            for item in produced:
                yield item
            if pauses(produced):
                return

    async def _view(self, task_id: str) -> Task:
        task = await self._tasks.task_input(task_id)  # first: an unknown task ends here
        return a2a_task(await self._tasks.status(task_id), task)

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        _no_push()

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        _no_push()

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        _no_push()

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        _no_push()

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        raise UnsupportedOperationError(message="there is no extended agent card")


def _request(
    params: SendMessageRequest, message: Message, *, streaming: bool
) -> ExecutionRequested:
    text = get_message_text(message).strip()
    if not text:
        if any(not part.HasField("text") for part in message.parts):
            kinds = {part.media_type or part.WhichOneof("content") or "?" for part in message.parts}
            msg = (
                f"only text parts are understood (the user message), not {', '.join(sorted(kinds))}"
            )
            raise ContentTypeNotSupportedError(message=msg)
        raise InvalidParamsError(message="the message has no text part: it is the user message")
    given = {**_metadata(params), **_metadata(message)}
    data: dict[str, Any] = {"stream": streaming}
    data |= {key: given[key] for key in REQUEST_FIELDS if key in given}
    data |= {
        "task_id": str(uuid.uuid4()),
        "user_message": text,
        "metadata": {
            A2A_METADATA: {
                "context_id": message.context_id or str(uuid.uuid4()),
                "message_id": message.message_id,
            }
        },
    }
    try:
        return validated(ExecutionRequested, data)
    except InvalidRequest as exc:
        raise InvalidParamsError(message=exc.message) from None


def _metadata(holder: Message | SendMessageRequest) -> dict[str, Any]:
    return MessageToDict(holder.metadata) if holder.HasField("metadata") else {}


def _no_push() -> NoReturn:
    raise PushNotificationNotSupportedError


@contextlib.contextmanager
def _as_a2a_errors() -> Iterator[None]:
    """Task service and gateway errors as the A2A errors a client understands (no HTTP
    status here: JSON-RPC answers 200 with an error object)."""
    try:
        yield
    except A2AError:
        raise
    except TaskNotFound as exc:
        raise TaskNotFoundError(message=exc.message) from exc
    except (InvalidRequest, ApproverNotAllowed, UnknownApproval) as exc:
        raise InvalidParamsError(message=exc.message) from exc
    except TaskNotRunning as exc:
        raise UnsupportedOperationError(message=exc.message) from exc
    except (TaskError, GatewayError) as exc:
        raise InternalError(message=exc.message) from exc
