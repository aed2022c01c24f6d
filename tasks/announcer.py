"""Announces `agent.execution.started` the moment Temporal accepted a task's start.

The workflow publishes the same event — same id `<workflow id>/1`, same data — once its
first workflow task has planned the task. Announcing it as the start returns (for the
bridge and the gateway alike) tells subscribers
one bus hop after the start RPC instead of after the server dispatched that workflow task
(20-30 ms later on the dev server, docs/performance.md). Consumers already dedupe by
event id (the contract's "at least once out"), so the second copy is harmless.
"""

import asyncio
import logging
from datetime import UTC, datetime

from temporal_executor.bus.errors import BusError
from temporal_executor.bus.outbound import build_event
from temporal_executor.bus.transport import Transport
from temporal_executor.schemas.event_types import EventType, event_id_for, workflow_id_for
from temporal_executor.schemas.events import ExecutionStarted
from temporal_executor.schemas.task import AgentTaskInput, PublishInput

log = logging.getLogger(__name__)
# The workflow publishes the event anyway: never hold a request's ack for long over it.
ANNOUNCE_TIMEOUT_SECONDS = 5.0


def started_announcement(task: AgentTaskInput) -> PublishInput | None:
    """The workflow's first event, if the task service can know it exactly.

    Without `model_config` in the request the worker's config picks the model, which
    this process's config need not agree with; such a task is announced by its workflow only.
    """
    request = task.request
    if request.llm is None or task.carried_sequence != 0:
        return None
    workflow_id = workflow_id_for(request.task_id)
    data = ExecutionStarted(
        task_id=request.task_id,
        workflow_id=workflow_id,
        llm=request.llm,
        metadata=request.metadata,
    )
    return PublishInput(
        route=task.route,
        event_type=EventType.EXECUTION_STARTED,
        event_id=event_id_for(workflow_id, 1),
        task_id=request.task_id,
        sequence=1,
        time=datetime.now(UTC),
        data=data.model_dump(mode="json", by_alias=True),
    )


async def announce_started(transport: Transport, task: AgentTaskInput, source: str) -> None:
    """Best effort: a failure is logged and left to the workflow's own copy."""
    publish = started_announcement(task)
    if publish is None:
        return
    try:
        async with asyncio.timeout(ANNOUNCE_TIMEOUT_SECONDS):
            # Unconfirmed: the workflow's copy is the confirmed one, so the caller need not
            # wait for a reply from the bus (a JetStream ack) for every request it handles.
            event = build_event(publish, source)
            await transport.publish(publish.route.events_destination, event, confirm=False)
    except (BusError, TimeoutError) as exc:  # bus down, or the event too large
        log.warning(
            "could not announce the task's start; its workflow will",
            extra={"task_id": publish.task_id, "error": str(exc)},
        )
