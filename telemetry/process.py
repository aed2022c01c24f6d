"""Telemetry for one process of the service: tracing, the SDK's metrics, the probe server."""

import contextlib
import logging
from collections.abc import AsyncIterator

from temporal_executor.schemas.config import Settings
from temporal_executor.telemetry.health import HEALTH
from temporal_executor.telemetry.server import TelemetryServer
from temporal_executor.telemetry.temporal_sdk import install_sdk_metrics
from temporal_executor.telemetry.tracing import configure_tracing, shutdown_tracing

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def observed(
    settings: Settings, role: str, *, serve: bool = True
) -> AsyncIterator[TelemetryServer | None]:
    """Set up telemetry for `role` (bridge, worker, gateway, dev) before it connects to
    anything; with `serve` and `observability.port` set, serve /metrics, /healthz and
    /readyz there meanwhile. Readiness reads 503 once the block is left (stopping)."""
    observability = settings.observability
    configure_tracing(observability.tracing, f"temporal-executor-{role}")
    # /metrics is served by this block (with a port), or by the caller (the gateway's app).
    metrics_served = not serve or observability.port is not None
    if observability.temporal_sdk_metrics and metrics_served:
        install_sdk_metrics()
    server = None
    if serve and observability.port is not None:
        server = TelemetryServer(
            observability.host,
            observability.port,
            readiness_timeout=observability.readiness_timeout_seconds,
        )
        await server.start()
    try:
        yield server
    finally:
        HEALTH.stopping = True
        if server is not None:
            await server.stop()
        shutdown_tracing()
