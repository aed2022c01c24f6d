"""The HTTP and A2A gateway: the same tasks as the bus, for callers without a bus client.

- REST (the API of the executor this project descends from): `POST /api/v1/execute`,
  `GET /api/v1/status/<workflow id>`, `POST /api/v1/approve/<workflow id>`,
  `POST /api/v1/cancel/<workflow id>`, `GET /api/v1/events/<task id>` (Server-Sent Events);
  OpenAPI at `/openapi.json` and `/docs`; `/healthz` and `/readyz`.
- A2A v1.0 over JSON-RPC at `/a2a`, agent card at `/.well-known/agent-card.json`, with
  approvals in kagent's human-in-the-loop extension.

A way in like the bridge: it starts, approves and cancels tasks through the task service
(`tasks/`), whose errors it maps to HTTP statuses and A2A errors, and reads their events
from the bus; it never imports `bridge` or `worker`.
"""

from temporal_executor.gateway._app import agent_card, create_app
from temporal_executor.gateway._errors import (
    BusUnavailable,
    CannotStart,
    GatewayError,
    PayloadTooLarge,
    ShuttingDown,
)
from temporal_executor.gateway._hitl import HITL_EXTENSION_URI
from temporal_executor.gateway._server import GatewayServer, auth_token, run_gateway
from temporal_executor.gateway._streams import TaskStreams

__all__ = [
    "HITL_EXTENSION_URI",
    "BusUnavailable",
    "CannotStart",
    "GatewayError",
    "GatewayServer",
    "PayloadTooLarge",
    "ShuttingDown",
    "TaskStreams",
    "agent_card",
    "auth_token",
    "create_app",
    "run_gateway",
]
