"""The bridge process: one dispatcher per enabled bus, until told to stop."""

import asyncio
import logging

from temporalio.client import Client

from temporal_executor.bridge.dispatcher import Dispatcher, window_size
from temporal_executor.bridge.router import Router
from temporal_executor.bus.factory import create_transport, enabled_buses
from temporal_executor.bus.transport import Transport
from temporal_executor.schemas.config import Settings
from temporal_executor.tasks.service import TaskService
from temporal_executor.tasks.temporal_connection import connect_with_retry, readiness_checks

log = logging.getLogger(__name__)


async def run_bridge(settings: Settings, stop: asyncio.Event, client: Client | None = None) -> None:
    client = client or await connect_with_retry(settings, stop)
    if client is None:
        return
    router = Router(TaskService(settings, client), settings)
    transports: list[Transport] = [
        create_transport(bus, settings.bus, max_in_flight=window_size(settings.bridge))
        for bus in enabled_buses(settings.bus)
    ]
    for transport in transports:
        await transport.start()
    dispatchers = [Dispatcher(t, router, settings.bridge) for t in transports]
    runs = [
        asyncio.create_task(d.run(), name=f"dispatch-{t.bus}")
        for d, t in zip(dispatchers, transports, strict=True)
    ]
    log.info("bridge started", extra={"buses": [t.bus for t in transports]})
    stopped = asyncio.create_task(stop.wait())
    ready = readiness_checks(settings, client, {t.bus: t.check for t in transports})
    try:
        await asyncio.wait([stopped, *runs], return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready.close()
        log.info("bridge stopping: finishing in-flight messages")
        stopped.cancel()
        # Stop fetching; each dispatcher then lets its in-flight messages finish and ack,
        # and only then does its transport commit what was acknowledged and disconnect.
        for run in runs:
            run.cancel()
        for run, outcome in zip(
            runs, await asyncio.gather(*runs, return_exceptions=True), strict=True
        ):
            if isinstance(outcome, Exception):
                log.error("dispatcher %s failed", run.get_name(), exc_info=outcome)
        for transport in transports:
            await transport.close()
    log.info("bridge stopped")
