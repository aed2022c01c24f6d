"""The Temporal SDK's own metrics (`temporal_*`) on the process's /metrics.

The SDK's core exports Prometheus text on an address of its own; it is bound to a free
loopback port, and a collector in our registry reads it at each scrape, so one /metrics
serves both and a deployment scrapes one port.
"""

import socket
import urllib.request
from collections.abc import Iterable

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

SCRAPE_TIMEOUT_SECONDS = 2.0


class SdkMetrics(Collector):
    def __init__(self, url: str) -> None:
        self._url = url

    def describe(self) -> Iterable[Metric]:
        return []  # names are not known before the SDK records them

    def collect(self) -> Iterable[Metric]:
        try:
            with urllib.request.urlopen(self._url, timeout=SCRAPE_TIMEOUT_SECONDS) as reply:
                text = reply.read().decode("utf-8")
        except OSError:
            return []
        return list(text_string_to_metric_families(text))


def install_sdk_metrics() -> Runtime:
    """A default Temporal runtime exporting its metrics, read into our registry. Call before
    the process creates its first Temporal client."""
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
    REGISTRY.register(SdkMetrics(f"http://127.0.0.1:{port}/metrics"))
    return runtime


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
