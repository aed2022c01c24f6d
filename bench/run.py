"""`python -m bench`: every figure of issue #7 against baselines measured in the same run.

Starts the embedded stack (or uses the servers named by TEMPORAL_ADDRESS, NATS_URL,
KAFKA_BOOTSTRAP_SERVERS), runs the bridge and the worker as real processes with the
scripted provider, and prints one table. See docs/performance.md.
"""

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

from bench import latency, load, procs, sdk
from bench.minimal import WORKFLOW_NAME
from bench.report import Table
from temporal_executor.bus.factory import create_transport
from temporal_executor.bus.transport import Transport
from temporal_executor.dev.embedded_stack import EmbeddedStack, ServerName
from temporal_executor.schemas.config import Settings
from temporal_executor.schemas.event_types import workflow_id_for
from temporal_executor.schemas.task import BusName
from tests.harness import service_settings

log = logging.getLogger("bench")
AGENT_ACTIVITIES = 9  # plan, 5 publishes, 2 LLM calls, 1 tool call (script "calculate")
WORKER_CONCURRENCY = 64


PHASES = (
    "bare",
    "direct",
    "minimal",
    "bridge",
    "lean",
    "remote",
    "two",
    "naive",
    "latency",
    "worker",
    "sdk",
)
SDK_KINDS = ("scripted", "openai", "anthropic")


@dataclass
class Options:
    ns: list[int]
    buses: list[BusName]
    rpc_delay_ms: float
    latency_samples: int
    sustained_rate: float
    sustained_count: int
    worker_n: int
    bare_samples: int
    kafka_fetch_wait_ms: int
    two_bridges: bool = True
    repeat: int = 1
    phases: tuple[str, ...] = PHASES
    sdk_kinds: tuple[str, ...] = SDK_KINDS
    sdk_tasks: int = 200
    sdk_mcp: tuple[bool, ...] = (False, True)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-")))


@dataclass
class Context:
    options: Options
    stack: EmbeddedStack
    local: Client
    remote: Client
    remote_address: str
    table: Table


def settings_for(ctx: Context, bus: BusName, *, remote: bool = False) -> Settings:
    settings = one_bus_settings(
        ctx.stack, ctx.options.workdir, bus, ctx.options.kafka_fetch_wait_ms
    )
    if remote:
        settings.temporal.host_port = ctx.remote_address
    settings.bus.max_message_bytes = 1024 * 1024
    settings.executor.max_result_bytes = 256 * 1024
    return settings


def one_bus_settings(
    stack: EmbeddedStack, workdir: Path, bus: BusName, kafka_fetch_wait_ms: int
) -> Settings:
    """The services' settings for a phase: its own names, on `bus` alone."""
    settings = service_settings(stack, workdir / "notes", name=f"b{uuid.uuid4().hex[:8]}")
    settings.bus.default = bus
    settings.bus.kafka.enabled = bus == "kafka"
    settings.bus.nats.enabled = bus == "nats"
    settings.bus.kafka.fetch_max_wait_ms = kafka_fetch_wait_ms
    return settings


@contextlib.asynccontextmanager
async def bus_client(settings: Settings, bus: BusName) -> AsyncIterator[Transport]:
    transport = create_transport(bus, settings.bus)
    await transport.start()  # creates the phase's topics or streams
    try:
        yield transport
    finally:
        await transport.close()


async def wait_started(client: Client, task_id: str, running: Sequence[procs.Proc] = ()) -> None:
    handle = client.get_workflow_handle(workflow_id_for(task_id))
    deadline = time.monotonic() + 60
    while True:
        try:
            await handle.describe()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            for proc in running:
                proc.check_alive()
            await asyncio.sleep(0.05)


async def start_services(
    ctx: Context, roles: Sequence[str], settings: Settings, tag: str
) -> list[procs.Proc]:
    started = [
        procs.service(r, settings, ctx.options.workdir, f"{tag}-{r}-{i}")
        for i, r in enumerate(roles)
    ]
    for proc in started:
        await proc.start()
    return started


async def bridge_throughput(
    ctx: Context,
    bus: BusName,
    n: int,
    *,
    bridges: int = 1,
    remote: bool = False,
    role: str = "bridge",
) -> "BridgeRun":
    """Starts/s through `bridges` bridge processes, their RSS and CPU per start."""
    settings = settings_for(ctx, bus, remote=remote)
    async with bus_client(settings, bus) as transport:
        tag = f"{bus}-n{n}-{'remote' if remote else 'local'}-x{bridges}"
        running = await start_services(ctx, [role] * bridges, settings, tag)
        try:
            warm = [f"w{uuid.uuid4().hex[:6]}-{i}" for i in range(8 * bridges)]
            await load.publish_requests(transport, warm)
            for task_id in warm:
                await wait_started(ctx.local, task_id, running)
            await asyncio.sleep(2 if bridges > 1 else 0.2)  # group settled, startup done
            idle = max(p.rss()[0] for p in running)
            cpu = sum(p.cpu() for p in running)
            prefix = f"t{uuid.uuid4().hex[:6]}"
            first = await load.publish_requests(transport, [f"{prefix}-{i}" for i in range(n)])
            times = await load.start_times(
                ctx.local, settings.temporal.task_queue, n + len(warm), prefix=prefix
            )
            peak = max(p.rss()[1] for p in running)
            cpu_ms = (sum(p.cpu() for p in running) - cpu) * 1000 / n
        finally:
            for proc in running:
                await proc.stop()
    return BridgeRun(load.rate(n, first, times), idle, peak, cpu_ms)


@dataclass
class BridgeRun:
    rate: float
    idle_mb: float
    peak_mb: float
    cpu_ms_per_start: float


async def naive_throughput(ctx: Context, bus: BusName, n: int, *, remote: bool) -> float:
    settings = settings_for(ctx, bus)
    client = ctx.remote if remote else ctx.local
    async with bus_client(settings, bus) as transport:
        ready = asyncio.Event()
        consumer = asyncio.create_task(load.naive_consumer(settings, bus, client, n + 1, ready))
        await ready.wait()
        warm = f"w{uuid.uuid4().hex[:6]}"
        await load.publish_requests(transport, [warm])
        await wait_started(ctx.local, warm)
        prefix = f"t{uuid.uuid4().hex[:6]}"
        first = await load.publish_requests(transport, [f"{prefix}-{i}" for i in range(n)])
        await consumer
        times = await load.start_times(
            ctx.local, settings.temporal.task_queue, n + 1, prefix=prefix
        )
    return load.rate(n, first, times)


async def latency_phase(ctx: Context, bus: BusName) -> dict[str, list[float]]:
    """Bridge and worker processes, one-turn tasks; also the worker's RSS."""
    o = ctx.options
    settings = settings_for(ctx, bus)
    async with bus_client(settings, bus) as transport:
        running = await start_services(ctx, ["bridge", "worker"], settings, f"{bus}-latency")
        try:
            async with latency.EventClock(transport) as clock:
                await latency.light_load(transport, clock, 3)  # warm-up
                light = await latency.light_load(transport, clock, o.latency_samples)
                steady = await latency.sustained(
                    transport, clock, o.sustained_rate, o.sustained_count
                )
            bridge_peak, worker_peak = running[0].rss()[1], running[1].rss()[1]
        finally:
            for proc in running:
                await proc.stop()
    return {
        "light_started": light[0],
        "light_completed": light[1],
        "steady_started": steady[0],
        "steady_completed": steady[1],
        "rss_peak": [bridge_peak, worker_peak],
    }


async def worker_throughput(
    ctx: Context, proc: procs.Proc, queue: str, start: "StartFn", n: int
) -> tuple[float, float, float]:
    """Tasks/s of one worker process: first start to last close (Temporal's times)."""
    await proc.start()
    try:
        warm = f"w{uuid.uuid4().hex[:6]}"
        await asyncio.gather(*(start(f"{warm}-{i}", queue) for i in range(4)))
        await load.start_times(ctx.local, queue, 4, closed=True, prefix=warm)
        idle = proc.rss()[0]
        prefix = f"t{uuid.uuid4().hex[:6]}"
        first = time.time()
        await load.run_concurrently(
            [f"{prefix}-{i}" for i in range(n)], lambda t: start(t, queue), WORKER_CONCURRENCY
        )
        times = await load.start_times(ctx.local, queue, n + 4, closed=True, prefix=prefix)
        peak = proc.rss()[1]
    finally:
        await proc.stop()
    return load.rate(n, first, times), idle, peak


async def bridge_against_direct(ctx: Context, bus: BusName, n: int, concurrency: int) -> float:
    """Bridge runs alternating with direct-client runs, `--repeat` times: direct, bridge,
    direct, bridge, …, direct. Each bridge run is compared with the mean of the direct runs
    on either side of it, since the dev server's capacity drifts between phases (other
    load, the workflows each phase leaves open); the table shows medians. Returns the
    bridge's peak RSS."""
    table, want = ctx.table, ctx.options.phases
    directs: list[float] = []
    bridges: list[BridgeRun] = []
    cpu: list[float] = []

    async def direct() -> None:
        say(f"N={n} {bus}: direct baseline, local (c={concurrency})")
        rate, cpu_ms = await load.direct_starts(ctx.local, n, concurrency)
        directs.append(rate)
        cpu.append(cpu_ms)

    rounds = ctx.options.repeat if "bridge" in want else 0
    if "direct" in want:
        await direct()
    for _ in range(rounds):
        say(f"N={n} {bus}: bridge, local")
        bridges.append(await bridge_throughput(ctx, bus, n))
        if "direct" in want:
            await direct()
    if directs:
        table.set(n, bus, "direct_local", (statistics.median(directs), concurrency))
        table.set(n, bus, "direct_cpu", statistics.median(cpu))
        table.set(n, bus, "direct_runs", tuple(directs))
    if not bridges:
        return 0.0
    table.set(n, bus, "bridge_local", statistics.median(b.rate for b in bridges))
    table.set(n, bus, "bridge_runs", tuple(b.rate for b in bridges))
    table.set(n, bus, "bridge_cpu", statistics.median(b.cpu_ms_per_start for b in bridges))
    idle, peak = max(b.idle_mb for b in bridges), max(b.peak_mb for b in bridges)
    table.set(n, bus, "bridge_rss", (idle, peak))
    if len(directs) == len(bridges) + 1:
        ratios = [b.rate / ((directs[i] + directs[i + 1]) / 2) for i, b in enumerate(bridges)]
        table.set(n, bus, "bridge_direct_ratio", statistics.median(ratios))
    return peak


class StartFn:
    def __init__(self, client: Client, *, bus: BusName | None, transport: Transport | None):
        self._client = client
        self._bus = bus
        self._transport = transport

    async def __call__(self, task_id: str, queue: str) -> None:
        if self._bus is None:
            await self._client.start_workflow(
                WORKFLOW_NAME, AGENT_ACTIVITIES, id=workflow_id_for(task_id), task_queue=queue
            )
        else:
            task = load.task_input(task_id, self._bus, self._transport, model="calculate")
            await load.start_one(self._client, task, queue)


async def agent_worker_phase(ctx: Context, bus: BusName, n: int) -> tuple[float, float, float]:
    settings = settings_for(ctx, bus)
    async with bus_client(settings, bus) as transport:
        proc = procs.service("worker", settings, ctx.options.workdir, f"{bus}-agent-worker")
        start = StartFn(ctx.local, bus=bus, transport=transport)
        return await worker_throughput(ctx, proc, settings.temporal.task_queue, start, n)


async def minimal_worker_phase(ctx: Context, n: int) -> float:
    queue = f"bench-minimal-{uuid.uuid4().hex[:8]}"
    args = [
        sys.executable,
        "-m",
        "bench.minimal",
        "--address",
        ctx.stack.temporal_address,
        "--task-queue",
        queue,
    ]
    proc = procs.Proc("minimal", args, ctx.options.workdir / "minimal-worker.log")
    rate, _, _ = await worker_throughput(
        ctx, proc, queue, StartFn(ctx.local, bus=None, transport=None), n
    )
    return rate


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def run(options: Options) -> Table:
    table = Table(options.ns, options.buses)
    servers: list[ServerName] = ["temporal", *options.buses]
    async with EmbeddedStack(servers, data_dir=options.workdir / "stack") as stack:
        proxy, remote_address = await procs.start_proxy(
            stack.temporal_address, options.rpc_delay_ms / 2, options.workdir
        )
        try:
            local = await load.connect(stack.temporal_address)
            remote = await load.connect(remote_address)
            ctx = Context(options, stack, local, remote, remote_address, table)
            for n in options.ns:
                await run_n(ctx, n)
        finally:
            await proxy.stop()
    return table


async def run_n(ctx: Context, n: int) -> None:
    o, table = ctx.options, ctx.table
    first_n = n == o.ns[0]

    def want(phase: str, *, once: bool = False) -> bool:
        return phase in o.phases and (first_n or not once)

    if want("bare"):
        say(f"N={n}: bare start RPC latency")
        bare = await load.bare_start_latency(ctx.local, o.bare_samples)
        table.set_all(n, "bare_rpc", load.percentiles(bare))
    best_local = best_remote = 0
    if want("direct"):
        say(f"N={n}: direct baseline: best client concurrency, local and remote")
        best_local = await load.best_concurrency(ctx.local, n)
        if want("remote"):
            best_remote = await load.best_concurrency(ctx.remote, n)
    for bus in o.buses:
        peaks = [0.0]
        # Each baseline runs right before the figure it is compared with, so both see the
        # same machine (other load on a small machine moves the server's capacity).
        if want("bridge") or want("direct"):
            peaks.append(await bridge_against_direct(ctx, bus, n, best_local))
        if want("two") and o.two_bridges:
            say(f"N={n} {bus}: two bridges, local")
            run = await bridge_throughput(ctx, bus, n, bridges=2)
            table.set(n, bus, "two_bridges", run.rate)
        if want("lean"):
            say(f"N={n} {bus}: bridge without the CLI's other imports, local")
            run = await bridge_throughput(ctx, bus, n, role="lean-bridge")
            table.set(n, bus, "lean_bridge_rss", (run.idle_mb, run.peak_mb))
        if want("naive"):
            say(f"N={n} {bus}: naive consumer, local")
            table.set(n, bus, "naive_local", await naive_throughput(ctx, bus, n, remote=False))
        if want("direct") and want("remote"):
            say(f"N={n} {bus}: direct baseline, remote (c={best_remote})")
            rate, _ = await load.direct_starts(ctx.remote, n, best_remote)
            table.set(n, bus, "direct_remote", (rate, best_remote))
        if want("remote"):
            say(f"N={n} {bus}: bridge, remote")
            run = await bridge_throughput(ctx, bus, n, remote=True)
            table.set(n, bus, "bridge_remote", run.rate)
            peaks.append(run.peak_mb)
        if want("naive") and want("remote"):
            say(f"N={n} {bus}: naive consumer, remote")
            table.set(n, bus, "naive_remote", await naive_throughput(ctx, bus, n, remote=True))
        worker_peak = 0.0
        if want("latency", once=True):
            say(f"N={n} {bus}: latency (bridge + worker)")
            lat = await latency_phase(ctx, bus)
            for key in ("light_started", "light_completed", "steady_started", "steady_completed"):
                table.set(n, bus, key, load.percentiles(lat[key]))
            peaks.append(lat["rss_peak"][0])
            worker_peak = lat["rss_peak"][1]
        if want("minimal", once=True):
            say(f"N={n} {bus}: minimal workflow ({AGENT_ACTIVITIES} activities)")
            table.set(n, bus, "minimal", await minimal_worker_phase(ctx, o.worker_n))
        if want("worker", once=True):
            say(f"N={n} {bus}: worker, full agent tasks")
            rate, idle_w, peak_w = await agent_worker_phase(ctx, bus, o.worker_n)
            table.set(n, bus, "agent", rate)
            table.set(n, bus, "worker_rss", (idle_w, max(peak_w, worker_peak)))
        if want("sdk", once=True):
            for kind in o.sdk_kinds:
                for mcp in o.sdk_mcp:
                    label = f"{kind}{' + MCP' if mcp else ''}"
                    say(f"N={n} {bus}: {label} SDK, bridge + worker, {o.sdk_tasks} tasks")
                    result = await sdk.sdk_phase(ctx, bus, kind, mcp=mcp)
                    for key, value in result.items():
                        table.set(n, bus, sdk.key(kind, mcp, key), value)
        rss = table.values[table.name(n, bus)].get("bridge_rss")
        if rss is not None:
            table.set(n, bus, "bridge_rss", (rss[0], max(peaks)))


def parse(argv: Sequence[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--n", default="1000", help="tasks per run, comma-separated")
    parser.add_argument("--bus", default="kafka,nats", help="kafka, nats or both")
    parser.add_argument("--rpc-delay-ms", type=float, default=20, help="round trip added")
    parser.add_argument("--latency-samples", type=int, default=50)
    parser.add_argument("--sustained-rate", type=float, default=4, help="requests/s")
    parser.add_argument("--sustained-count", type=int, default=60)
    parser.add_argument("--worker-n", type=int, default=100, help="tasks per worker run")
    parser.add_argument("--bare-samples", type=int, default=200)
    parser.add_argument("--kafka-fetch-wait-ms", type=int, default=10)
    parser.add_argument("--one-bridge-only", action="store_true", help="skip two bridges")
    parser.add_argument(
        "--repeat", type=int, default=3, help="bridge runs, alternating with direct ones"
    )
    parser.add_argument("--phases", default=",".join(PHASES), help="which to run")
    parser.add_argument(
        "--sdk-kinds", default=",".join(SDK_KINDS), help="real SDKs for the sdk phase"
    )
    parser.add_argument(
        "--sdk-tasks", type=int, default=200, help="sdk phase: tasks before 'RSS after N'"
    )
    parser.add_argument(
        "--sdk-mcp",
        choices=("both", "with", "without"),
        default="both",
        help="sdk phase: with an MCP server, without, or both",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: N=20, small samples")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--workdir", type=Path, help="logs and configs (default: a temp dir)")
    args = parser.parse_args(argv)
    buses: list[BusName] = []
    for name in args.bus.split(","):
        if name not in ("kafka", "nats"):
            parser.error(f"unknown bus {name!r}")
        buses.append("kafka" if name == "kafka" else "nats")
    options = Options(
        ns=[int(x) for x in args.n.split(",")],
        buses=buses,
        rpc_delay_ms=args.rpc_delay_ms,
        latency_samples=args.latency_samples,
        sustained_rate=args.sustained_rate,
        sustained_count=args.sustained_count,
        worker_n=args.worker_n,
        bare_samples=args.bare_samples,
        kafka_fetch_wait_ms=args.kafka_fetch_wait_ms,
        two_bridges=not args.one_bridge_only,
        repeat=max(args.repeat, 1),
        phases=tuple(args.phases.split(",")),
        sdk_kinds=tuple(k for k in args.sdk_kinds.split(",") if k),
        sdk_tasks=args.sdk_tasks,
        sdk_mcp={"both": (False, True), "with": (True,), "without": (False,)}[args.sdk_mcp],
    )
    if unknown := set(options.sdk_kinds) - set(SDK_KINDS):
        parser.error(f"unknown SDK kinds {sorted(unknown)}")
    if args.quick:
        options.ns = [20]
        options.latency_samples = 3
        options.sustained_count = 6
        options.sustained_rate = 10
        options.worker_n = 6
        options.bare_samples = 10
        options.repeat = 1
        options.sdk_tasks = min(options.sdk_tasks, 10)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        options.workdir = args.workdir
    return options, args


def main(argv: Sequence[str] | None = None) -> int:
    options, args = parse(argv)
    logging.basicConfig(level=logging.WARNING)
    say(f"logs and configs in {options.workdir}")
    table = asyncio.run(run(options))
    header = (
        f"{datetime.date.today().isoformat()}, {platform.node()}, {platform.processor() or ''}"
        f" Python {platform.python_version()}, RPC delay {options.rpc_delay_ms:g} ms,"
        f" kafka fetch_max_wait_ms {options.kafka_fetch_wait_ms}"
    )
    print(header)
    print(table.render())
    if args.json:
        args.json.write_text(json.dumps(table.values, indent=2, default=str), encoding="utf-8")
    return 0
