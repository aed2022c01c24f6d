"""What payload encryption (`temporal.encryption`) costs a task: latency and CPU, off vs on.

A bridge and a worker run as real processes on the embedded Temporal and NATS; one-turn
tasks go one at a time (request published -> `agent.execution.completed` received), in
alternating phases with encryption off and on, so a drift of the machine hits both. CPU is
the bridge's plus the worker's, per task. Then the codec alone, per payload.

    python -m bench.encryption [--samples 25] [--rounds 2]   (about a minute on an idle machine)
"""

import argparse
import asyncio
import base64
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from temporalio.api.common.v1 import Payload

from bench import latency, load, procs
from bench.run import bus_client, one_bus_settings
from temporal_executor.bus.transport import Transport
from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.config import EncryptionKeySettings, PayloadEncryptionSettings
from temporal_executor.tasks.payload_encryption import EncryptionCodec

KEY_ENV = "BENCH_PAYLOAD_KEY"
WARM_UP = 5


async def phase(
    stack: EmbeddedStack, workdir: Path, *, encrypted: bool, samples: int
) -> tuple[list[float], float]:
    """(latencies in ms, CPU ms per task of bridge + worker) for `samples` tasks."""
    settings = one_bus_settings(stack, workdir, "nats", 100)
    if encrypted:
        settings.temporal.encryption = PayloadEncryptionSettings(
            enabled=True, keys=[EncryptionKeySettings(id="bench", env=KEY_ENV)]
        )
    tag = f"enc-{'on' if encrypted else 'off'}-{uuid.uuid4().hex[:4]}"
    async with bus_client(settings, "nats") as transport:
        running = [procs.service(r, settings, workdir, f"{tag}-{r}") for r in ("bridge", "worker")]
        for proc in running:
            await proc.start()
        try:
            async with latency.EventClock(transport) as clock:
                await tasks(transport, clock, tag, WARM_UP)
                cpu_before = sum(proc.cpu() for proc in running)
                took = await tasks(transport, clock, tag, samples)
                cpu = sum(proc.cpu() for proc in running) - cpu_before
        finally:
            for proc in running:
                await proc.stop()
    return took, cpu * 1000 / samples


async def tasks(transport: Transport, clock: latency.EventClock, tag: str, n: int) -> list[float]:
    took: list[float] = []
    for _ in range(n):
        task_id = f"{tag}-{uuid.uuid4().hex[:8]}"
        published = time.time()
        await transport.publish(
            transport.requests_destination(task_id), load.request_event(task_id)
        )
        await clock.wait_done(task_id)
        took.append((clock.completed[task_id] - published) * 1000)
    return took


async def codec_alone(sizes: Sequence[int], rounds: int = 2000) -> dict[int, float]:
    """Microseconds to encrypt and decrypt one payload of each size."""
    codec = EncryptionCodec([("bench", os.urandom(32))])
    spent: dict[int, float] = {}
    for size in sizes:
        payload = Payload(metadata={"encoding": b"json/plain"}, data=b"x" * size)
        start = time.perf_counter()
        for _ in range(rounds):
            await codec.decode(await codec.encode([payload]))
        spent[size] = (time.perf_counter() - start) / rounds * 1e6
    return spent


async def measure(samples: int, rounds: int, workdir: Path) -> str:
    os.environ[KEY_ENV] = base64.b64encode(os.urandom(32)).decode()
    results: dict[bool, tuple[list[float], list[float]]] = {False: ([], []), True: ([], [])}
    async with EmbeddedStack(["temporal", "nats"], data_dir=workdir / "stack") as stack:
        for _ in range(rounds):
            for encrypted in (False, True):
                took, cpu = await phase(stack, workdir, encrypted=encrypted, samples=samples)
                results[encrypted][0].extend(took)
                results[encrypted][1].append(cpu)
    lines = [
        f"{samples * rounds} one-turn tasks each way, one at a time, NATS, "
        "bridge + worker as processes",
        f"{'encryption':<12} {'p50 ms':>8} {'p90 ms':>8} {'CPU ms/task':>12}",
    ]
    for encrypted, (latencies, cpus) in results.items():
        p50, p90 = statistics.median(latencies), statistics.quantiles(latencies, n=10)[-1]
        name = "on" if encrypted else "off"
        lines.append(f"{name:<12} {p50:8.1f} {p90:8.1f} {statistics.mean(cpus):12.2f}")
    lines.append("codec alone (encrypt + decrypt one payload):")
    for size, micros in (await codec_alone([1024, 16 * 1024, 256 * 1024])).items():
        lines.append(f"  {size // 1024:>4} KiB  {micros:8.1f} us")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.encryption", description=__doc__)
    parser.add_argument("--samples", type=int, default=25, help="tasks per phase")
    parser.add_argument("--rounds", type=int, default=2, help="off/on phase pairs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-encryption-") as workdir:
        print(asyncio.run(measure(args.samples, args.rounds, Path(workdir))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
