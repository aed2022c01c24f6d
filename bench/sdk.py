"""The worker as users run it: a real provider SDK (openai, anthropic) against the local
wire-format servers of tests/fakes (answering at once), with or without an MCP server;
kind `scripted` is the same path with the scripted provider (no SDK, no HTTP), the
baseline to compare with in the same run.

Bridge and worker processes; one-turn tasks one at a time (published → completed), then a
burst of `--sdk-tasks` requests, with the worker's RSS after them so growth shows.
"""

import asyncio
import os
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import latency, load
from temporal_executor.schemas.cloudevent import TASKID_EXTENSION, CloudEvent
from temporal_executor.schemas.config import McpServerSettings, ProviderSettings, Settings
from temporal_executor.schemas.event_types import EventType
from tests.fakes.llm_servers import FakeAnthropicServer, FakeOpenAIServer, text

if TYPE_CHECKING:
    from bench.run import Context
    from temporal_executor.bus.transport import Transport
    from temporal_executor.schemas.task import BusName

KEY_ENV = "BENCH_SDK_API_KEY"
MODEL = {"openai": "gpt-4.1-mini", "anthropic": "claude-sonnet-4-5", "scripted": "one-turn"}
MCP_SERVER = Path(__file__).resolve().parents[1] / "tests" / "fakes" / "mcp_server.py"
BURST_CONCURRENCY = 64  # requests published whose tasks have not completed yet


def key(kind: str, mcp: bool, figure: str) -> str:
    """The table's key for one figure of the sdk phase."""
    return f"sdk_{kind}{'_mcp' if mcp else ''}_{figure}"


def request_event(task_id: str, kind: str) -> CloudEvent:
    data: dict[str, Any] = {
        "task_id": task_id,
        "user_message": f"benchmark task {task_id}",
        "model_config": {"provider": kind, "model": MODEL[kind]},
    }
    return CloudEvent(
        id=str(uuid.uuid4()),
        source="bench",
        type=EventType.EXECUTION_REQUESTED,
        data=data,
        extensions={TASKID_EXTENSION: task_id},
    )


def configure(settings: Settings, kind: str, base_url: str, *, mcp: bool) -> None:
    if kind != "scripted":  # the scripted provider is configured already (test settings)
        settings.llm.providers = [
            ProviderSettings(
                name=kind,
                kind="openai" if kind == "openai" else "anthropic",
                api_key_env=KEY_ENV,
                base_url=base_url,
            )
        ]
    settings.llm.default_provider = kind
    if mcp:
        settings.mcp_servers = [
            McpServerSettings(
                name="tools", transport="stdio", command=sys.executable, args=[str(MCP_SERVER)]
            )
        ]


async def _run_tasks(transport: "Transport", clock: latency.EventClock, kind: str, n: int) -> None:
    """`n` requests, at most BURST_CONCURRENCY of them unfinished at a time."""
    prefix = f"g{uuid.uuid4().hex[:6]}"
    slots = asyncio.Semaphore(BURST_CONCURRENCY)

    async def one(i: int) -> None:
        async with slots:
            task_id = f"{prefix}-{i}"
            await transport.publish(
                transport.requests_destination(task_id), request_event(task_id, kind)
            )
            await clock.wait_done(task_id)

    await asyncio.gather(*(one(i) for i in range(n)))


async def sdk_phase(ctx: "Context", bus: "BusName", kind: str, *, mcp: bool) -> dict[str, Any]:
    """Latency through the SDK, then RSS of the worker and the bridge around a burst."""
    from bench.run import bus_client, settings_for, start_services

    o = ctx.options
    with ExitStack() as stack:
        server = FakeOpenAIServer() if kind == "openai" else FakeAnthropicServer()
        stack.enter_context(server)
        server.default = text("done")
        os.environ[KEY_ENV] = server.api_key
        settings = settings_for(ctx, bus)
        configure(settings, kind, server.base_url, mcp=mcp)
        tag = f"{bus}-sdk-{kind}{'-mcp' if mcp else ''}"
        async with bus_client(settings, bus) as transport:
            running = await start_services(ctx, ["bridge", "worker"], settings, tag)
            bridge, worker = running
            try:
                async with latency.EventClock(transport) as clock:
                    sent: dict[str, float] = {}
                    for i in range(3 + o.latency_samples):  # the first 3 warm up
                        task_id = f"l{uuid.uuid4().hex[:6]}-{i}"
                        if i >= 3:
                            sent[task_id] = time.time()
                        await transport.publish(
                            transport.requests_destination(task_id), request_event(task_id, kind)
                        )
                        await clock.wait_done(task_id)
                    completed = [(clock.completed[t] - s) * 1000 for t, s in sent.items()]
                    worker_idle, bridge_idle = worker.rss()[0], bridge.rss()[0]
                    await _run_tasks(transport, clock, kind, o.sdk_tasks)
                    worker_after = worker.rss()[0]
                worker_peak, bridge_peak = worker.rss()[1], bridge.rss()[1]
            finally:
                for proc in running:
                    await proc.stop()
    return {
        "completed": load.percentiles(completed),
        "worker_rss": (worker_idle, worker_after, worker_peak),
        "bridge_rss": (bridge_idle, bridge_peak),
    }
