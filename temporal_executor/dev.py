"""`temporal-executor dev`: the embedded stack, a worker and a bridge in one process.

The servers listen on their usual ports (Temporal 7233 with its UI on 8233, Kafka 9092,
NATS 4222) so that `send`, `approve`, `kcat` and `nats` in another terminal find them
with the default configuration.
"""

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import TextIO

from temporal_executor.bridge.service import run_bridge
from temporal_executor.embedded_stack import EmbeddedStack, ServerName
from temporal_executor.schemas.config import Settings
from temporal_executor.worker.service import run_worker

DEV_PORTS: dict[ServerName, int] = {"temporal": 7233, "kafka": 9092, "nats": 4222}
DEV_UI_PORT = 8233


def point_at_stack(settings: Settings, stack: EmbeddedStack) -> Settings:
    """The same settings, with every address taken from the running stack."""
    updated = settings.model_copy(deep=True)
    updated.temporal.host_port = stack.temporal_address
    updated.bus.kafka.bootstrap_servers = stack.kafka_bootstrap
    updated.bus.nats.url = stack.nats_url
    return updated


async def run_dev(
    settings: Settings,
    stop: asyncio.Event,
    *,
    data_dir: Path,
    out: TextIO = sys.stdout,
    after_start: "asyncio.Future[None] | None" = None,
) -> None:
    stack = EmbeddedStack(
        data_dir=data_dir,
        headless=False,
        ports=DEV_PORTS,
        extra_args={"temporal": ["--ui-port", str(DEV_UI_PORT)]},
    )
    async with stack:
        settings = point_at_stack(settings, stack)
        print(_banner(stack, data_dir), file=out, flush=True)
        worker = asyncio.create_task(run_worker(settings, stop), name="worker")
        bridge = asyncio.create_task(run_bridge(settings, stop), name="bridge")
        if after_start is not None:
            after_start.set_result(None)
        done, _ = await asyncio.wait([worker, bridge], return_when=asyncio.FIRST_EXCEPTION)
        stop.set()
        await asyncio.gather(worker, bridge, return_exceptions=True)
        for task in done:
            with contextlib.suppress(asyncio.CancelledError):
                task.result()
    print("embedded stack stopped", file=out, flush=True)


def _banner(stack: EmbeddedStack, data_dir: Path) -> str:
    return "\n".join(
        [
            "temporal-executor dev: embedded stack, worker and bridge are running",
            f"  Temporal    {stack.temporal_address}",
            f"  Temporal UI {stack.temporal_ui_url or '(headless)'}",
            f"  Kafka       {stack.kafka_bootstrap}   (tansu, Kafka-compatible, in memory)",
            f"  NATS        {stack.nats_url}   (JetStream)",
            f"  data + logs {data_dir}",
            "Send a task from another terminal:",
            '  temporal-executor send "Please save a note about Temporal" --follow',
            "Press Ctrl-C to stop everything.",
        ]
    )
