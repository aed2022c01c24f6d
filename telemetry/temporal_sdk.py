"""The Temporal SDK's own metrics (`temporal_*`) on the process's /metrics.

The SDK's core exports Prometheus text on an address of its own; it is bound to a free
loopback port, and each scrape of /metrics appends what it reads there to ours, as it is
(parsing and re-encoding it cost a worker ~20 ms of CPU per scrape), so one endpoint
serves both and a deployment scrapes one port. The names do not overlap: the SDK's all
start with `temporal_` and ours with `temporal_executor_`, `gen_ai_` or `process_`.
"""

import socket
import urllib.request

from prometheus_client import REGISTRY, generate_latest
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

SCRAPE_TIMEOUT_SECONDS = 2.0


class _State:
    url: str | None = None


_state = _State()


def exposition() -> bytes:
    """Every metric of the process in the Prometheus text format: ours, then the SDK's.
    Blocking (it reads the SDK's over loopback): call it off the event loop."""
    ours = generate_latest(REGISTRY)
    if _state.url is None:
        return ours
    try:
        with urllib.request.urlopen(_state.url, timeout=SCRAPE_TIMEOUT_SECONDS) as reply:
            sdk: bytes = reply.read()
    except OSError:
        return ours  # the SDK's exporter not up (yet): ours alone
    return ours + sdk


def install_sdk_metrics() -> Runtime:
    """A default Temporal runtime exporting its metrics, appended to ours. Call before the
    process creates its first Temporal client."""
    port = _free_loopback_port()
    runtime = Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"127.0.0.1:{port}",
                # Prometheus conventions: `_total` on counters, seconds with `_seconds`.
                counters_total_suffix=True,
                unit_suffix=True,
                durations_as_seconds=True,
            )
        )
    )
    Runtime.set_default(runtime)
    _state.url = f"http://127.0.0.1:{port}/metrics"
    return runtime


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
