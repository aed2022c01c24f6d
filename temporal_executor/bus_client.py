"""What a producer, a subscriber and an approval bot do on the bus, for the CLI.

`send`, `approve` and `follow` use the same transports as the service, so what they put
on the bus is exactly what a user's own producer would.
"""

import asyncio
import getpass
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from temporal_executor.bus.transport import Transport
from temporal_executor.schemas.cloudevent import TASKID_EXTENSION, CloudEvent
from temporal_executor.schemas.event_types import TERMINAL_TYPES, EventType
from temporal_executor.schemas.requests import ApprovalReplied, CancelRequested, ExecutionRequested

CLI_SOURCE = "temporal-executor/cli"


def request_event(request: ExecutionRequested) -> CloudEvent:
    data = request.model_dump(mode="json", by_alias=True, exclude_none=True)
    return _event(EventType.EXECUTION_REQUESTED, request.task_id, data)


def approval_reply_event(reply: ApprovalReplied) -> CloudEvent:
    return _event(
        EventType.APPROVAL_REPLIED, reply.task_id, reply.model_dump(mode="json", exclude_none=True)
    )


def cancel_event(cancel: CancelRequested) -> CloudEvent:
    return _event(
        EventType.CANCEL_REQUESTED,
        cancel.task_id,
        cancel.model_dump(mode="json", exclude_none=True),
    )


def _event(event_type: EventType, task_id: str, data: dict[str, Any]) -> CloudEvent:
    return CloudEvent(
        id=str(uuid.uuid4()),
        source=CLI_SOURCE,
        type=event_type,
        time=datetime.now(UTC),
        data=data,
        extensions={TASKID_EXTENSION: task_id},
    )


def default_approver() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name anywhere (KeyError before Python 3.13)
        return "cli"


async def task_events(
    transport: Transport, task_id: str | None, messages: AsyncIterator[Any]
) -> AsyncIterator[CloudEvent]:
    """Decoded events of one task (or all), skipping what is not a CloudEvent."""
    async for message in messages:
        try:
            event = transport.decode(message)
        except Exception:
            continue
        if task_id is None or event.extension(TASKID_EXTENSION) == task_id:
            yield event


async def merged(*sources: AsyncIterator[CloudEvent]) -> AsyncIterator[CloudEvent]:
    """The items of several iterators as they come (a task's events and its deltas)."""
    queue: asyncio.Queue[CloudEvent | BaseException] = asyncio.Queue()

    async def pump(source: AsyncIterator[CloudEvent]) -> None:
        try:
            async for item in source:
                await queue.put(item)
        except Exception as exc:
            await queue.put(exc)

    pumps = [asyncio.create_task(pump(source)) for source in sources]
    try:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


class StreamedText:
    """Prints a turn's `agent.llm.delta` text as it grows, on one indented line per attempt.

    Deltas of a turn whose `agent.llm.responded` was printed already are late: skipped.
    Following many tasks at once (`labelled`), each line starts with its task id, and a
    task's text that another task's interrupted goes on on a new line.
    """

    def __init__(self, out: TextIO, *, labelled: bool = False) -> None:
        self._out = out
        self._labelled = labelled
        self._open: tuple[str, int, int] | None = None  # (task, iteration, attempt) printing
        self._responded: dict[str, int] = {}  # per task, the last iteration printed whole

    def delta(self, data: dict[str, Any]) -> None:
        task = str(data.get("task_id", ""))
        iteration, attempt = int(data.get("iteration", 0)), int(data.get("attempt", 0))
        text = str(data.get("text", ""))
        if iteration <= self._responded.get(task, 0) or not text:
            return
        if self._open != (task, iteration, attempt):
            retried = self._open is not None and self._open[:2] == (task, iteration)
            self.end_line()
            if retried:
                print(f"  (attempt {attempt}: the text above is void)", file=self._out)
            self._out.write(f"  [{task}] " if self._labelled else "  ")
            self._open = (task, iteration, attempt)
        self._out.write(text.replace("\n", "\n  "))
        self._out.flush()

    def before(self, event: CloudEvent) -> None:
        """Call before printing any other event."""
        self.end_line()
        if event.type == EventType.LLM_RESPONDED and isinstance(event.data, dict):
            task = str(event.data.get("task_id", ""))
            iteration = int(event.data.get("iteration", 0))
            self._responded[task] = max(self._responded.get(task, 0), iteration)

    def end_line(self) -> None:
        if self._open is not None:
            self._out.write("\n")
            self._open = None


def describe(event: CloudEvent, approve_hint: Callable[[str, str], str] | None = None) -> str:
    """One line (two for an approval) a person can read while a task runs."""
    data: dict[str, Any] = event.data if isinstance(event.data, dict) else {}
    sequence = event.extension("sequence") or "-"
    summary = _summary(event.type, data)
    line = f"[{data.get('task_id', '?')} #{sequence}] {event.type}  {summary}".rstrip()
    if event.type == EventType.APPROVAL_REQUESTED and approve_hint:
        line += f"\n    approve with: {approve_hint(data['task_id'], data['approval_id'])}"
    return line


def _summary(event_type: str, data: dict[str, Any]) -> str:
    if event_type == EventType.EXECUTION_STARTED:
        model = data.get("model_config", {})
        return f"model={model.get('provider')}/{model.get('model')}"
    if event_type == EventType.LLM_RESPONDED:
        message = data.get("message", {})
        calls = ", ".join(
            f"{c['name']}({json.dumps(c.get('arguments', {}))})"
            for c in message.get("tool_calls", [])
        )
        return f"iteration {data.get('iteration')}: {_short(message.get('content', ''))}" + (
            f" tool calls: {calls}" if calls else ""
        )
    if event_type == EventType.APPROVAL_REQUESTED:
        call = data.get("tool_call", {})
        return (
            f"{data.get('approval_id')}: {call.get('name')}"
            f"({json.dumps(call.get('arguments', {}))}) expires {data.get('expires_at')}"
        )
    if event_type == EventType.APPROVAL_RESOLVED:
        verdict = "approved" if data.get("approved") else "denied"
        how = " (timed out)" if data.get("timed_out") else f" by {data.get('approver')}"
        return f"{data.get('approval_id')}: {verdict}{how}"
    if event_type == EventType.TOOL_COMPLETED:
        outcome = f"error: {data['error']}" if data.get("error") else json.dumps(data.get("result"))
        return f"{data.get('name')} -> {_short(outcome)}"
    if event_type == EventType.EXECUTION_COMPLETED:
        return f"after {data.get('iterations')} iterations: {_short(data.get('final_message', ''))}"
    if event_type == EventType.EXECUTION_FAILED:
        error = data.get("error", {})
        return f"{error.get('type')}: {error.get('message')}"
    if event_type == EventType.EXECUTION_CANCELLED:
        return f"reason: {data.get('reason')}"
    return ""


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def print_until_done(
    events: AsyncIterator[CloudEvent],
    out: TextIO,
    approve_hint: Callable[[str, str], str] | None = None,
    *,
    stop_at_terminal: bool = True,
    many_tasks: bool = False,
) -> CloudEvent | None:
    """Print events as they come, and the text of `agent.llm.delta`s as it streams; return
    the terminal event when `stop_at_terminal`. `many_tasks`: label streamed text by task."""
    seen: set[str] = set()
    streamed = StreamedText(out, labelled=many_tasks)
    async for event in events:
        if event.id in seen:  # at-least-once delivery: dedupe by id, as the contract says
            continue
        seen.add(event.id)
        if event.type == EventType.LLM_DELTA:
            streamed.delta(event.data if isinstance(event.data, dict) else {})
            continue
        streamed.before(event)
        print(describe(event, approve_hint), file=out, flush=True)
        if stop_at_terminal and event.type in TERMINAL_TYPES:
            return event
    return None
