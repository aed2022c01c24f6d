"""Fair tenants: which tenant a message belongs to, and a per-tenant cap on its slots.

A bridge handles `bridge.max_in_flight` messages at once; with `bridge.tenants.key` set, no
tenant holds more than `bridge.tenants.max_in_flight` of them, so one tenant's flood leaves
slots for the others. The cap works per ordering lane, after a message's predecessors in
its lane, so a task's messages keep their order; a message waiting for its tenant's slot
holds no slot of another tenant and blocks no partition (the bridge reads on, up to
`read_ahead` messages beyond its slots).
"""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from temporal_executor.bus.errors import BusError
from temporal_executor.bus.transport import InboundMessage, Transport

SOURCE_KEY = "source"


def tenant_of(transport: Transport, message: InboundMessage, key: str) -> str:
    """The message's tenant: its event's `source`, or the value at the dotted path `key` in
    its data; "" when it has none (or is unreadable: the router dead-letters it anyway)."""
    try:
        event = transport.decode(message)
    except BusError:
        return ""
    if key == SOURCE_KEY:
        return event.source
    value: Any = event.data
    for part in key.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    return "" if value is None or isinstance(value, dict | list) else str(value)


@dataclass
class _Tenant:
    slots: asyncio.Semaphore
    users: int = field(default=0)


class TenantSlots:
    """At most `limit` messages of each tenant at once; tenants with none are forgotten."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._tenants: dict[str, _Tenant] = {}

    async def acquire(self, tenant: str) -> None:
        entry = self._tenants.get(tenant)
        if entry is None:
            entry = self._tenants[tenant] = _Tenant(asyncio.Semaphore(self._limit))
        entry.users += 1
        try:
            await entry.slots.acquire()
        except BaseException:
            self._leave(tenant, entry)
            raise

    def release(self, tenant: str) -> None:
        entry = self._tenants[tenant]
        entry.slots.release()
        self._leave(tenant, entry)

    def _leave(self, tenant: str, entry: _Tenant) -> None:
        entry.users -= 1
        if entry.users == 0:
            del self._tenants[tenant]

    def holding(self, tenant: str) -> int:
        """Messages of `tenant` being handled or waiting (for tests and logs)."""
        entry = self._tenants.get(tenant)
        return entry.users if entry else 0
