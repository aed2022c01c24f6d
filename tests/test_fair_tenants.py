"""Fair tenants on the real servers: one tenant's flood does not hold every slot of a bridge.

The bridge here is a real transport and `Dispatcher` with a Router that holds tenant A's
messages (as a slow Temporal would) until the test lets them go. With a per-tenant cap of
2 of 4 slots, tenant B's tasks, sent after A's flood, start and complete while all of A's
wait; A never holds more than its cap; and A's tasks, each a request followed by a cancel,
keep their order (each waits for an approval, and ends cancelled: no cancel came first).
"""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.client import Client

from temporal_executor.bridge import dispatcher
from temporal_executor.bridge.dispatcher import Dispatcher, window_size
from temporal_executor.bridge.router import Router
from temporal_executor.bridge.tenants import TenantSlots, tenant_of
from temporal_executor.bus.codec import encode_kafka, encode_nats
from temporal_executor.bus.factory import create_transport
from temporal_executor.bus.transport import InboundMessage, Transport
from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import Settings
from temporal_executor.schemas.event_types import EventType
from temporal_executor.schemas.task import BusName
from temporal_executor.tasks.service import TaskService
from tests.harness import BUSES, ServiceHarness, new_task_id, service_settings

pytestmark = pytest.mark.parametrize("bus", BUSES)

FLOOD = 12
TENANT_CAP = 2


class HoldingRouter(Router):
    """The real Router, but tenant A's messages wait for `release`; counts per tenant."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.release = asyncio.Event()
        self.handling: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()

    async def handle(self, transport: Transport, message: InboundMessage) -> tuple[str, str]:
        tenant = tenant_of(transport, message, "metadata.tenant")
        self.handling[tenant] += 1
        self.peak[tenant] = max(self.peak[tenant], self.handling[tenant])
        try:
            if tenant == "A":
                await self.release.wait()
            return await super().handle(transport, message)
        finally:
            self.handling[tenant] -= 1


@pytest.fixture(scope="module")
async def fair(
    embedded_stack: EmbeddedStack, temporal_client: Client, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceHarness]:
    settings = service_settings(embedded_stack, tmp_path_factory.mktemp("tenants"))
    settings.bridge.max_in_flight = 4
    settings.bridge.tenants.key = "metadata.tenant"
    settings.bridge.tenants.max_in_flight = TENANT_CAP
    settings.bridge.tenants.read_ahead = 64
    harness = ServiceHarness(settings, temporal_client, bridge=False, worker=True)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


async def test_a_flood_from_one_tenant_leaves_slots_for_the_others(
    fair: ServiceHarness, temporal_client: Client, bus: BusName, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The waiting messages tell the bus they are still wanted, several times here.
    monkeypatch.setattr(dispatcher, "KEEP_ALIVE_SECONDS", 0.2)
    settings = fair.settings
    transport = create_transport(bus, settings.bus, max_in_flight=window_size(settings.bridge))
    await transport.start()
    router = HoldingRouter(TaskService(settings, temporal_client), settings)
    run = asyncio.create_task(Dispatcher(transport, router, settings.bridge).run())
    producer, watcher = fair.producers[bus], fair.watchers[bus]
    try:
        flood = [new_task_id("tenant-a") for _ in range(FLOOD)]
        for task_id in flood:
            # A task that waits for an approval: only the cancel after it ends it.
            await producer.request(task_id, "note", metadata={"tenant": "A"})
            await producer.send(EventType.CANCEL_REQUESTED, task_id, {"task_id": task_id})
        others = [new_task_id("tenant-b") for _ in range(3)]
        for task_id in others:
            await producer.request(task_id, metadata={"tenant": "B"})
        for task_id in others:
            events = await watcher.wait_for_end(task_id)
            assert events[-1].type == EventType.EXECUTION_COMPLETED
        # B's tasks went through while A's flood waited, A holding no more than its cap.
        assert router.handling["A"] == TENANT_CAP
        assert router.peak["A"] == TENANT_CAP
        router.release.set()
        for task_id in flood:
            events = await watcher.wait_for_end(task_id)
            assert events[-1].type == EventType.EXECUTION_CANCELLED, task_id
        assert router.peak["A"] == TENANT_CAP
    finally:
        router.release.set()
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await transport.close()


async def test_tenant_slots_forget_idle_tenants(bus: BusName) -> None:
    slots = TenantSlots(limit=1)
    await slots.acquire("a")
    second = asyncio.create_task(slots.acquire("a"))
    await asyncio.sleep(0)
    assert slots.holding("a") == 2  # one handled, one waiting
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    assert slots.holding("a") == 1
    slots.release("a")
    assert slots.holding("a") == 0


def test_the_tenant_of_a_message(bus: BusName) -> None:
    transport = create_transport(bus, Settings().bus)
    encode = encode_kafka if bus == "kafka" else encode_nats
    event = CloudEvent(id="1", source="shop", type="x", data={"metadata": {"tenant": 7}})
    encoded = encode(event, "binary")
    message = InboundMessage("topic", encoded.key, encoded.value, tuple(encoded.headers))
    assert tenant_of(transport, message, "metadata.tenant") == "7"
    assert tenant_of(transport, message, "source") == "shop"
    assert tenant_of(transport, message, "metadata") == ""  # not a value
    assert tenant_of(transport, message, "metadata.tenant.id") == ""
    unreadable = InboundMessage("topic", None, b"not json", ())
    assert tenant_of(transport, unreadable, "source") == ""
