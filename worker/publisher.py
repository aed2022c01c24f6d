"""Publishes a task's events on the bus its request arrived on.

One transport per bus, connected on first use and kept for the worker's lifetime.
"""

import asyncio
from collections.abc import Callable

from temporal_executor.bus.outbound import build_event, destinations
from temporal_executor.bus.transport import Transport
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.task import BusName, EventRoute, PublishInput
from temporal_executor.worker.instrumentation import PUBLISHED

TransportFactory = Callable[[BusName], Transport]


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
        PUBLISHED.published(publish)

    async def check(self, bus: BusName) -> str | None:
        """None when `bus` answers (connecting to it first if no event went there yet)."""
        return await (await self._transport(bus)).check()

    @property
    def source(self) -> str:
        return self._source

    async def publish_unconfirmed(
        self, route: EventRoute, destination: str, event: CloudEvent
    ) -> None:
        """Publish without waiting for the bus to store it (streamed deltas: best effort)."""
        transport = await self._transport(route.bus)
        await transport.publish(destination, event, confirm=False)

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
