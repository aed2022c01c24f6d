"""`python -m bench.streaming`: time to first token, and what a streaming turn adds to the bus.

The bridge and the worker run as real processes with `"stream": true` tasks whose model is
the OpenAI SDK against the fake Chat Completions server (tests/fakes), streaming a reply of
`--words` words `--chunk-ms` apart after `--first-chunk-ms`. One task at a time:

- time to first token: request published → first `agent.llm.delta` received by a
  subscriber, next to the fake model's own time to its first chunk (request received →
  first chunk written), p50 / p95; split into the part before the model got the request
  and the part after its first chunk (the streaming path itself);
- what a turn adds to the bus: the model's chunks, the delta events published for them
  (batched, at most one per 50 ms and fragment kind), and those events per second while
  the turn streams.

Starts the embedded stack (or uses TEMPORAL_ADDRESS, NATS_URL, KAFKA_BOOTSTRAP_SERVERS).
See docs/performance.md.
"""

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs
from bench.load import percentiles
from bench.run import bus_client, one_bus_settings, say
from temporal_executor.bus.transport import Transport, Watch
from temporal_executor.dev.embedded_stack import EmbeddedStack, ServerName
from temporal_executor.schemas.cloudevent import TASKID_EXTENSION, CloudEvent
from temporal_executor.schemas.config import ProviderSettings
from temporal_executor.schemas.event_types import TERMINAL_TYPES, EventType
from temporal_executor.schemas.task import BusName
from tests.fakes.llm_servers import FakeOpenAIServer, text

KEY_ENV = "BENCH_FAKE_OPENAI_KEY"
PROVIDER = "fake-openai"
TIMEOUT = 60.0


@dataclass
class Turn:
    sent: float
    first_delta: float | None = None
    last_delta: float | None = None
    deltas: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class DeltaClock:
    """Notes when each task's deltas and terminal event arrive."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self.turns: dict[str, Turn] = {}
        self._readers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> "DeltaClock":
        t = self._transport
        for destination in (t.deltas_destination(None), t.events_destination(None)):
            watch = t.watch(destination, from_start=False)
            await watch.start()
            self._readers.append(asyncio.create_task(self._read(watch)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    async def _read(self, watch: Watch) -> None:
        async with watch:
            async for message in watch:
                received = time.time()
                self._note(self._transport.decode(message), received)

    def _note(self, event: CloudEvent, received: float) -> None:
        turn = self.turns.get(event.extension(TASKID_EXTENSION) or "")
        if turn is None:
            return
        if event.type == EventType.LLM_DELTA:
            turn.deltas += 1
            turn.first_delta = turn.first_delta or received
            turn.last_delta = received
        elif event.type in TERMINAL_TYPES:
            turn.done.set()


@dataclass
class BusResult:
    ttft_ms: list[float]
    to_model_ms: list[float]
    model_ttfc_ms: list[float]
    chunks: int
    deltas: list[int]
    rates: list[float]


async def one_bus(
    stack: EmbeddedStack, model: FakeOpenAIServer, bus: BusName, o: argparse.Namespace
) -> BusResult:
    settings = one_bus_settings(stack, o.workdir, bus, kafka_fetch_wait_ms=10)
    settings.llm.providers.append(
        ProviderSettings(name=PROVIDER, kind="openai", base_url=model.base_url, api_key_env=KEY_ENV)
    )
    settings.executor.llm_max_attempts = 1
    running = [
        procs.service(role, settings, o.workdir, f"stream-{bus}-{role}")
        for role in ("bridge", "worker")
    ]
    async with bus_client(settings, bus) as transport, DeltaClock(transport) as clock:
        for proc in running:
            await proc.start()
        try:
            await _turns(transport, clock, 2, running)  # warm-up: imports, connections
            model.first_chunk_latencies.clear()
            model.clear_requests()
            turns = await _turns(transport, clock, o.samples, running)
        finally:
            for proc in running:
                await proc.stop()
    answered = [t for t in turns if t.first_delta is not None and t.last_delta is not None]
    return BusResult(
        ttft_ms=[(t.first_delta - t.sent) * 1000 for t in answered if t.first_delta],
        to_model_ms=[
            (r.received - t.sent) * 1000 for r, t in zip(model.requests, turns, strict=True)
        ],
        model_ttfc_ms=[s * 1000 for s in model.first_chunk_latencies],
        chunks=o.words + 3,  # role chunk, a chunk per word, finish chunk, usage chunk
        deltas=[t.deltas for t in answered],
        rates=[
            t.deltas / (t.last_delta - t.first_delta)
            for t in answered
            if t.last_delta and t.first_delta and t.last_delta > t.first_delta
        ],
    )


async def _turns(
    transport: Transport, clock: DeltaClock, n: int, running: Sequence[procs.Proc]
) -> list[Turn]:
    turns: list[Turn] = []
    prefix = f"st{uuid.uuid4().hex[:6]}"
    for i in range(n):
        task_id = f"{prefix}-{i}"
        event = CloudEvent(
            id=str(uuid.uuid4()),
            source="bench",
            type=EventType.EXECUTION_REQUESTED,
            data={
                "task_id": task_id,
                "user_message": "Tell me a story.",
                "model_config": {"provider": PROVIDER, "model": "gpt-bench"},
                "stream": True,
            },
            extensions={TASKID_EXTENSION: task_id},
        )
        turn = clock.turns[task_id] = Turn(sent=time.time())
        await transport.publish(transport.requests_destination(task_id), event)
        try:
            await asyncio.wait_for(turn.done.wait(), TIMEOUT)
        except TimeoutError:
            for proc in running:
                proc.check_alive()
            raise
        turns.append(turn)
    return turns


def _ms(samples: list[float]) -> str:
    p50, p95, _ = percentiles(samples)
    return f"{p50:.0f} / {p95:.0f} ms"


def render(results: dict[BusName, BusResult], o: argparse.Namespace) -> str:
    buses = list(results)
    rows = [
        ("time to first token, p50 / p95", [_ms(r.ttft_ms) for r in results.values()]),
        ("published → model got the request", [_ms(r.to_model_ms) for r in results.values()]),
        ("model's own time to first chunk", [_ms(r.model_ttfc_ms) for r in results.values()]),
        (
            "model's first chunk → first delta received",
            [
                _ms(
                    [
                        a - b - c
                        for a, b, c in zip(r.ttft_ms, r.to_model_ms, r.model_ttfc_ms, strict=False)
                    ]
                )
                for r in results.values()
            ],
        ),
        ("model chunks per turn", [str(r.chunks) for r in results.values()]),
        (
            "delta events per turn (mean)",
            [f"{statistics.mean(r.deltas):.1f}" for r in results.values()],
        ),
        (
            "delta events/s while streaming (mean)",
            [f"{statistics.mean(r.rates):.1f}" for r in results.values()],
        ),
    ]
    lines = [
        f"{o.samples} streamed one-turn tasks per bus, one at a time; model: {o.words} words, "
        f"first chunk after {o.first_chunk_ms:g} ms, then one every {o.chunk_ms:g} ms",
        "",
        "| figure | " + " | ".join(buses) + " |",
        "|---|" + "---|" * len(buses),
    ]
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
    return "\n".join(lines)


async def run(o: argparse.Namespace) -> dict[BusName, BusResult]:
    servers: list[ServerName] = ["temporal", *o.buses]
    results: dict[BusName, BusResult] = {}
    async with EmbeddedStack(servers, data_dir=o.workdir / "stack") as stack:
        with FakeOpenAIServer() as model:
            model.default = text(" ".join(f"word{i}" for i in range(o.words)))
            model.first_chunk_delay_seconds = o.first_chunk_ms / 1000
            model.chunk_delay_seconds = o.chunk_ms / 1000
            os.environ[KEY_ENV] = model.api_key  # the worker process inherits it
            for bus in o.buses:
                say(f"{bus}: {o.samples} streamed turns")
                results[bus] = await one_bus(stack, model, bus, o)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streaming", description=__doc__)
    parser.add_argument("--bus", default="kafka,nats", help="kafka, nats or both")
    parser.add_argument("--samples", type=int, default=20, help="turns per bus")
    parser.add_argument("--words", type=int, default=60, help="words per reply")
    parser.add_argument("--first-chunk-ms", type=float, default=50)
    parser.add_argument("--chunk-ms", type=float, default=10)
    parser.add_argument("--workdir", type=Path, help="logs and configs (default: a temp dir)")
    o = parser.parse_args(argv)
    o.buses = [b for b in o.bus.split(",") if b in ("kafka", "nats")]
    o.workdir = o.workdir or Path(tempfile.mkdtemp(prefix="bench-stream-"))
    o.workdir.mkdir(parents=True, exist_ok=True)
    say(f"logs and configs in {o.workdir}")
    with contextlib.suppress(KeyboardInterrupt):
        print(render(asyncio.run(run(o)), o))
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
