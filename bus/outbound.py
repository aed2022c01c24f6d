"""The CloudEvent a published task event becomes, and where it goes.

Shared by the worker, which publishes every event of a task, and the bridge, which
announces `agent.execution.started` as soon as Temporal accepted a start (see
`tasks/announcer.py`); both must produce the same event for the same id.
"""

from temporal_executor.schemas.cloudevent import (
    JSON_MEDIA_TYPE,
    SEQUENCE_EXTENSION,
    TASKID_EXTENSION,
    TRACEPARENT_EXTENSION,
    TRACESTATE_EXTENSION,
    CloudEvent,
)
from temporal_executor.schemas.event_types import EventType
from temporal_executor.schemas.task import PublishInput


def build_event(publish: PublishInput, source: str) -> CloudEvent:
    """The CloudEvent for `publish`: the same bytes on every retry of the activity."""
    extensions = {
        TASKID_EXTENSION: publish.task_id,
        SEQUENCE_EXTENSION: str(publish.sequence),
    }
    if publish.route.traceparent:
        extensions[TRACEPARENT_EXTENSION] = publish.route.traceparent
    if publish.route.tracestate:
        extensions[TRACESTATE_EXTENSION] = publish.route.tracestate
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


def destinations(publish: PublishInput) -> list[str]:
    """Every event goes to the task's events destination; an approval request also goes
    to the approvals destination, so approval bots need read only that one."""
    if publish.event_type == EventType.APPROVAL_REQUESTED:
        return [publish.route.approvals_destination, publish.route.events_destination]
    return [publish.route.events_destination]
