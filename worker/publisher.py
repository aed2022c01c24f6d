"""Publishes a task's events on the bus its request arrived on.

One transport per bus, connected on first use and kept for the worker's lifetime.
"""

import asyncio
from collections.abc import Callable

from temporal_executor.bridge.transport import Transport
from temporal_executor.schemas.cloudevent import (
    JSON_MEDIA_TYPE,
    SEQUENCE_EXTENSION,
    TASKID_EXTENSION,
    TRACEPARENT_EXTENSION,
    TRACESTATE_EXTENSION,
    CloudEvent,
)
from temporal_executor.schemas.event_types import EventType
from temporal_executor.schemas.task import BusName, PublishInput

TransportFactory = Callable[[BusName], Transport]


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


class EventPublisher:
    def __init__(self, transport_factory: TransportFactory, source: str) -> None:
        self._factory = transport_factory
        self._source = source
        self._transports: dict[BusName, Transport] = {}
        self._lock = asyncio.Lock()

    async def publish(self, publish: PublishInput) -> None:
        transport = await self._transport(publish.route.bus)
        event = build_event(publish, self._source)
        for destination in destinations(publish):
            await transport.publish(destination, event)

    async def _transport(self, bus: BusName) -> Transport:
        transport = self._transports.get(bus)
        if transport is not None:
            return transport
        async with self._lock:
            if bus not in self._transports:
                created = self._factory(bus)
                await created.start()
                self._transports[bus] = created
            return self._transports[bus]

    async def close(self) -> None:
        transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            await transport.close()
