"""`python -m bench.tenants`: does one tenant's flood delay another tenant's starts?

A real bridge process on the embedded stack (no worker: a start is the bridge's work).
Tenant B sends `--samples` requests at `--rate` per second and we time each one from
publish to its workflow's start as Temporal recorded it:

- alone: B's usual start latency;
- flood, no cap: tenant A published `--flood` requests just before B's (no `bridge.tenants`);
- flood, cap N: the same with `bridge.tenants.key: metadata.tenant`, `max_in_flight: N`.

Prints the median and 95th percentile of each, and how long A's flood took to start.
"""

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from bench import procs
from bench.load import (
    PUBLISH_CONCURRENCY,
    connect,
    request_event,
    run_concurrently,
    start_times,
)
from bench.run import bus_client, one_bus_settings
from temporal_executor.bus.transport import Transport
from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.event_types import workflow_id_for

TIMEOUT = 300.0


def tenant_request(task_id: str, tenant: str) -> CloudEvent:
    event = request_event(task_id)
    return event.model_copy(update={"data": {**event.data, "metadata": {"tenant": tenant}}})


async def publish_flood(transport: Transport, task_ids: list[str]) -> None:
    async def publish(task_id: str) -> None:
        await transport.publish(
            transport.requests_destination(task_id), tenant_request(task_id, "A")
        )

    await run_concurrently(task_ids, publish, PUBLISH_CONCURRENCY)


async def tenant_b(transport: Transport, client: Client, k: int, rate: float) -> list[float]:
    """Publish → start, in ms, of `k` requests of tenant B sent at `rate` per second."""
    sent: dict[str, float] = {}
    prefix = f"b{uuid.uuid4().hex[:6]}"
    began = time.monotonic()
    for i in range(k):
        delay = began + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task_id = f"{prefix}-{i}"
        sent[task_id] = time.time()
        await transport.publish(
            transport.requests_destination(task_id), tenant_request(task_id, "B")
        )
    return [(await start_time(client, t) - s) * 1000 for t, s in sent.items()]


async def start_time(client: Client, task_id: str) -> float:
    """When Temporal started the task's workflow (waits for the start)."""
    handle = client.get_workflow_handle(workflow_id_for(task_id))
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            started = (await handle.describe()).start_time
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
            continue
        return started.timestamp()


async def phase(
    stack: EmbeddedStack,
    client: Client,
    args: argparse.Namespace,
    workdir: Path,
    *,
    flood: int,
    cap: int | None,
) -> tuple[list[float], float]:
    settings = one_bus_settings(stack, workdir, args.bus, 100)
    if cap is not None:
        settings.bridge.tenants.key = "metadata.tenant"
        settings.bridge.tenants.max_in_flight = cap
    async with bus_client(settings, args.bus) as transport:
        name = f"{args.bus}-flood{flood}-cap{cap}"
        bridge = procs.service("bridge", settings, workdir, name)
        await bridge.start()
        try:
            warm = f"w{uuid.uuid4().hex[:6]}"
            await transport.publish(transport.requests_destination(warm), request_event(warm))
            await start_time(client, warm)
            prefix = f"a{uuid.uuid4().hex[:6]}"
            began = time.time()
            await publish_flood(transport, [f"{prefix}-{i}" for i in range(flood)])
            b = await tenant_b(transport, client, args.samples, args.rate)
            bridge.check_alive()
            queue = settings.temporal.task_queue
            starts = await start_times(client, queue, flood + 1 + args.samples, prefix=prefix)
            flood_seconds = max(starts, default=began) - began
        finally:
            await bridge.stop()
    return b, flood_seconds


def summary(samples: list[float]) -> str:
    p95 = statistics.quantiles(samples, n=20)[-1] if len(samples) > 1 else samples[0]
    return f"median {statistics.median(samples):7.1f} ms   p95 {p95:7.1f} ms"


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-tenants-"))
    async with EmbeddedStack(("temporal", args.bus), headless=True) as stack:
        client = await connect(stack.temporal_address)
        alone, _ = await phase(stack, client, args, workdir, flood=0, cap=None)
        print(f"{args.bus}: tenant B alone                       {summary(alone)}", flush=True)
        for cap in [None, *args.caps]:
            b, seconds = await phase(stack, client, args, workdir, flood=args.flood, cap=cap)
            label = f"cap {cap:3d} of 128" if cap is not None else "no tenant cap "
            print(
                f"{args.bus}: B during A's flood, {label}  {summary(b)}"
                f"   (A's {args.flood} started in {seconds:.1f} s)",
                flush=True,
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tenants", description=__doc__)
    parser.add_argument("--bus", choices=["kafka", "nats"], default="kafka")
    parser.add_argument("--flood", type=int, default=1000, help="tenant A's requests")
    parser.add_argument("--samples", type=int, default=20, help="tenant B's requests")
    parser.add_argument("--rate", type=float, default=10, help="tenant B's requests per second")
    parser.add_argument(
        "--caps",
        type=lambda text: [int(c) for c in text.split(",")],
        default=[8],
        help="per-tenant caps to measure, comma-separated (default: 8)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
