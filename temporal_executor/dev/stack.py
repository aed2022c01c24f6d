"""`temporal-executor dev`: the embedded stack, a worker, a bridge and the gateway in one process.

The servers listen on their usual ports (Temporal 7233 with its UI on 8233, Kafka 9092,
NATS 4222) so that `send`, `approve`, `kcat` and `nats` in another terminal find them
with the default configuration; the HTTP and A2A gateway listens on 127.0.0.1:8080.
`--temporal-port`, `--ui-port`, `--kafka-port`, `--nats-port` and `--gateway-port` choose
others; the banner then says which variables point another terminal at them.
"""

import asyncio
import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from temporal_executor.dev.embedded_stack import EmbeddedStack, ServerName
from temporal_executor.schemas.config import Settings


@dataclass(frozen=True)
class DevPorts:
    """Where the dev stack listens; the defaults are the servers' usual ports."""

    temporal: int = 7233
    ui: int = 8233
    kafka: int = 9092
    nats: int = 4222
    gateway: int = 8080

    def servers(self) -> dict[ServerName, int]:
        return {"temporal": self.temporal, "kafka": self.kafka, "nats": self.nats}


def ui_args(settings: Settings, ports: DevPorts) -> list[str]:
    """The Temporal UI's flags: its port and, with encrypted payloads, the gateway's codec
    endpoint, so the UI shows them decrypted."""
    args = ["--ui-port", str(ports.ui)]
    if settings.temporal.encryption.enabled:
        args += ["--ui-codec-endpoint", f"http://127.0.0.1:{ports.gateway}/codec"]
    return args


def point_at_stack(settings: Settings, stack: EmbeddedStack) -> Settings:
    """The same settings, with every address taken from the running stack."""
    updated = settings.model_copy(deep=True)
    updated.temporal.host_port = stack.temporal_address
    updated.bus.kafka.bootstrap_servers = stack.kafka_bootstrap
    updated.bus.nats.url = stack.nats_url
    return updated


def with_local_payload_store(settings: Settings, data_dir: Path) -> Settings:
    """Unless config names a store, the embedded stack keeps large payloads (README,
    "Conversations of any size") in its data directory: one host, every process sees it."""
    if settings.payload_storage.store != "none":
        return settings
    updated = settings.model_copy(deep=True)
    updated.payload_storage.store = "local"
    updated.payload_storage.local.directory = str(data_dir / "payloads")
    return updated


async def run_dev(
    settings: Settings,
    stop: asyncio.Event,
    *,
    data_dir: Path,
    ports: DevPorts = DevPorts(),  # frozen: one shared default is safe
    out: TextIO = sys.stdout,
    after_start: "asyncio.Future[Settings] | None" = None,
) -> None:
    """Run the stack, a worker, a bridge and the gateway until `stop` is set.

    Once all are up, `after_start` gets the settings pointing at the stack, for whatever
    else the caller runs against it (the demo).
    """
    # Imported here: the CLI builds its parser from `DevPorts` and should not load these.
    from temporal_executor.bridge.service import run_bridge
    from temporal_executor.gateway import GatewayServer
    from temporal_executor.worker.service import run_worker

    stack = EmbeddedStack(
        data_dir=data_dir,
        headless=False,
        ports=ports.servers(),
        extra_args={"temporal": ui_args(settings, ports)},
    )
    async with stack:
        settings = with_local_payload_store(point_at_stack(settings, stack), data_dir)
        if settings.temporal.encryption.enabled:
            ui = [f"http://{host}:{ports.ui}" for host in ("127.0.0.1", "localhost")]
            settings.gateway.codec_cors_origins += ui
        settings.gateway.host, settings.gateway.port = "127.0.0.1", ports.gateway
        gateway = GatewayServer(settings)
        await gateway.start()  # raises `CannotStart` (port taken) before anything else runs
        try:
            print(_banner(stack, data_dir, ports, settings, gateway.url), file=out, flush=True)
            worker = asyncio.create_task(run_worker(settings, stop), name="worker")
            bridge = asyncio.create_task(run_bridge(settings, stop), name="bridge")
            if after_start is not None:
                after_start.set_result(settings)
            done, _ = await asyncio.wait([worker, bridge], return_when=asyncio.FIRST_EXCEPTION)
            stop.set()
            await asyncio.gather(worker, bridge, return_exceptions=True)
        finally:
            await gateway.stop()
        for task in done:
            with contextlib.suppress(asyncio.CancelledError):
                task.result()
    print("embedded stack stopped", file=out, flush=True)


def _llm_line(settings: Settings) -> str:
    llm = settings.llm
    provider = llm.provider(llm.default_provider)
    if provider is not None and provider.kind == "scripted":
        # The demo must run with no API key, and must not pass for a real model.
        return (
            f"  LLM         scripted provider, model {llm.default_model!r}: no API key needed, "
            "no model is called, replies are scripted"
        )
    return f"  LLM         {llm.default_provider}/{llm.default_model} (default for requests)"


def _banner(
    stack: EmbeddedStack,
    data_dir: Path,
    ports: DevPorts,
    settings: Settings,
    gateway_url: str | None = None,
) -> str:
    lines = [
        "temporal-executor dev: embedded stack, worker, bridge and gateway are running",
        f"  Temporal    {stack.temporal_address}",
        f"  Temporal UI {stack.temporal_ui_url or '(headless)'}",
        f"  Kafka       {stack.kafka_bootstrap}   (tansu, Kafka-compatible, in memory)",
        f"  NATS        {stack.nats_url}   (JetStream)",
        f"  Gateway     {gateway_url or '(not started)'}   (HTTP API, A2A; docs at /docs)",
        f"  data + logs {data_dir}",
        _llm_line(settings),
        "Send a task from another terminal:",
    ]
    if ports.servers() != DevPorts().servers():
        # Not the usual ports: the default config would not find them.
        lines += [f"  export {var}={value}" for var, value in sorted(stack.as_env().items())]
    lines += [
        '  temporal-executor send "Please save a note about Temporal" --follow',
        "Press Ctrl-C to stop everything.",
    ]
    return "\n".join(lines)
