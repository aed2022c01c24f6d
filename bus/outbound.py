"""The CloudEvent a published task event becomes, and where it goes.

Shared by the worker, which publishes every event of a task, and the bridge, which
announces `agent.execution.started` as soon as Temporal accepted a start (see
`tasks/announcer.py`); both must produce the same event for the same id.
"""

from datetime import datetime

from temporal_executor.schemas.cloudevent import (
    JSON_MEDIA_TYPE,
    SEQUENCE_EXTENSION,
    TASKID_EXTENSION,
    TRACEPARENT_EXTENSION,
    TRACESTATE_EXTENSION,
    CloudEvent,
)
from temporal_executor.schemas.event_types import EventType
from temporal_executor.schemas.events import LlmDelta
from temporal_executor.schemas.task import EventRoute, PublishInput


def build_event(publish: PublishInput, source: str) -> CloudEvent:
    """The CloudEvent for `publish`: the same bytes on every retry of the activity."""
    extensions = _extensions(publish.task_id, publish.route)
    extensions[SEQUENCE_EXTENSION] = str(publish.sequence)
    return CloudEvent(
        id=publish.event_id,
        source=source,
        type=publish.event_type,
        subject=publish.task_id,
        time=publish.time,
        datacontenttype=JSON_MEDIA_TYPE,
        data=publish.data,
        extensions=extensions,
    )


def build_delta_event(
    route: EventRoute, event_id: str, delta: LlmDelta, source: str, time: datetime
) -> CloudEvent:
    """An `agent.llm.delta`: best effort, so outside the task's `sequence` (contract v1.1)."""
    return CloudEvent(
        id=event_id,
        source=source,
        type=EventType.LLM_DELTA,
        subject=delta.task_id,
        time=time,
        datacontenttype=JSON_MEDIA_TYPE,
        data=delta.model_dump(mode="json", exclude_none=True),
        extensions=_extensions(delta.task_id, route),
    )


def _extensions(task_id: str, route: EventRoute) -> dict[str, str]:
    extensions = {TASKID_EXTENSION: task_id}
    if route.traceparent:
        extensions[TRACEPARENT_EXTENSION] = route.traceparent
    if route.tracestate:
        extensions[TRACESTATE_EXTENSION] = route.tracestate
    return extensions


def destinations(publish: PublishInput) -> list[str]:
    """Every event goes to the task's events destination; an approval request also goes
    to the approvals destination, so approval bots need read only that one."""
    if publish.event_type == EventType.APPROVAL_REQUESTED:
        return [publish.route.approvals_destination, publish.route.events_destination]
    return [publish.route.events_destination]
