"""What tracing and metrics cost: the same load with telemetry off and on.

    .venv/bin/python -m bench.observability [--tasks 300] [--bus nats]

Starts the embedded Temporal and one bus, then for each mode a bridge and a worker as
real processes, sends `--tasks` one-turn requests as fast as the bus takes them and waits
for every task's `agent.execution.completed`. Prints per mode the CPU milliseconds per
task of each process (from /proc), its RSS at the end and at peak, and the CPU one scrape
of its /metrics costs (measured apart, idle, over 10 scrapes). "metrics": /metrics and
probes served (scraped every 15 s during the load, as Prometheus would), the Temporal
SDK's metrics; "on" adds every span exported over OTLP/HTTP to a local sink that accepts
and drops them: what a deployment with tracing runs.
"""

import argparse
import asyncio
import contextlib
import http.server
import socket
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import procs
from bench.load import publish_requests
from bench.run import one_bus_settings
from temporal_executor.bus.factory import create_transport
from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.cloudevent import TASKID_EXTENSION
from temporal_executor.schemas.config import Settings
from temporal_executor.schemas.event_types import EventType
from temporal_executor.schemas.task import BusName

WARM_UP = 20
TIMEOUT = 300.0
SCRAPE_EVERY_SECONDS = 15.0
SCRAPES_MEASURED = 10


class _Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def otlp_sink() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()


MODES = ("off", "metrics", "on")


def configured(settings: Settings, *, mode: str, port: int, sink: str) -> Settings:
    """off: nothing; metrics: /metrics and probes, SDK metrics; on: metrics and tracing."""
    settings = settings.model_copy(deep=True)
    observability = settings.observability
    observability.temporal_sdk_metrics = mode != "off"
    observability.port = port if mode != "off" else None
    observability.tracing.exporter = "otlp" if mode == "on" else "none"
    observability.tracing.protocol = "http/protobuf"
    observability.tracing.endpoint = sink
    return settings


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as reply:
        body: bytes = reply.read()
        return body


async def scrape_meanwhile(urls: list[str], stop: asyncio.Event) -> None:
    while not stop.is_set():
        for url in urls:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(_get, url)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SCRAPE_EVERY_SECONDS)


async def run_mode(
    stack: EmbeddedStack, bus: BusName, workdir: Path, n: int, *, mode: str, sink: str
) -> dict[str, float]:
    base = one_bus_settings(stack, workdir, bus, kafka_fetch_wait_ms=100)
    ports = {"bridge": _free_port(), "worker": _free_port()}
    services = {
        role: procs.service(
            role,
            configured(base, mode=mode, port=ports[role], sink=sink),
            workdir,
            f"{role}-{mode}",
        )
        for role in ("bridge", "worker")
    }
    for proc in services.values():
        await proc.start()
    transport = create_transport(bus, base.bus)
    await transport.start()
    completed: set[str] = set()
    done = asyncio.Event()
    wanted: set[str] = set()
    async with transport.watch(transport.events_destination(None), from_start=False) as events:

        async def follow() -> None:
            async for message in events:
                event = transport.decode(message)
                if event.type == EventType.EXECUTION_COMPLETED:
                    completed.add(event.extension(TASKID_EXTENSION) or "")
                    if wanted and wanted <= completed:
                        done.set()

        following = asyncio.create_task(follow())
        try:
            warm = [f"warm-{uuid.uuid4().hex[:8]}" for _ in range(WARM_UP)]
            wanted.update(warm)
            await publish_requests(transport, warm)
            await asyncio.wait_for(done.wait(), TIMEOUT)
            done.clear()
            cpu = {role: proc.cpu() for role, proc in services.items()}
            stop_scraping = asyncio.Event()
            on = mode != "off"
            urls = [f"http://127.0.0.1:{p}/metrics" for p in ports.values()] if on else []
            scraping = asyncio.create_task(scrape_meanwhile(urls, stop_scraping))
            tasks = [f"t-{uuid.uuid4().hex[:10]}" for _ in range(n)]
            wanted.clear()
            wanted.update(tasks)
            began = time.monotonic()
            await publish_requests(transport, tasks)
            await asyncio.wait_for(done.wait(), TIMEOUT)
            elapsed = time.monotonic() - began
            stop_scraping.set()
            await scraping
            figures = {"seconds": elapsed}
            for role, proc in services.items():
                figures[f"{role}_cpu_ms_per_task"] = (proc.cpu() - cpu[role]) * 1000 / n
                rss, peak = proc.rss()
                figures[f"{role}_rss_mb"] = rss
                figures[f"{role}_peak_rss_mb"] = peak
            for role, proc in services.items():
                figures[f"{role}_cpu_ms_per_scrape"] = 0.0
                if on:
                    before = proc.cpu()
                    for _ in range(SCRAPES_MEASURED):
                        await asyncio.to_thread(_get, f"http://127.0.0.1:{ports[role]}/metrics")
                    cost = (proc.cpu() - before) * 1000 / SCRAPES_MEASURED
                    figures[f"{role}_cpu_ms_per_scrape"] = cost
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
    await transport.close()
    for proc in services.values():
        await proc.stop()
    return figures


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def main_async(n: int, bus: BusName, repeat: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-observability-"))
    async with EmbeddedStack(("temporal", bus), headless=True) as stack:
        with otlp_sink() as sink:
            results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
            for _ in range(repeat):
                for mode in MODES:
                    figures = await run_mode(stack, bus, workdir, n, mode=mode, sink=sink)
                    results[mode].append(figures)
                    print(mode, {k: round(v, 2) for k, v in figures.items()}, flush=True)
    print(f"\n{n} one-turn tasks on {bus}, {repeat} run(s) per mode (median):")
    print(f"  {'':28} {'off':>8} {'metrics':>8} {'on':>8}")
    for key in results["off"][0]:
        medians = [sorted(r[key] for r in results[mode])[repeat // 2] for mode in MODES]
        print(f"  {key:28} " + " ".join(f"{m:8.2f}" for m in medians))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--bus", choices=["kafka", "nats"], default="nats")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(main_async(args.tasks, args.bus, args.repeat))


if __name__ == "__main__":
    main()
