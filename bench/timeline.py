"""Where a one-turn task's time goes: ``python -m bench.timeline [--bus nats] [--samples 20]``.

Runs `temporal-executor bridge` and `temporal-executor worker` as real processes on the
embedded stack (or the servers named by TEMPORAL_ADDRESS, NATS_URL, KAFKA_BOOTSTRAP_SERVERS),
sends one-turn requests one at a time, and lines up for each task: when its request was
published, the times Temporal recorded in the workflow's history, and when a subscriber
received `agent.execution.started` and `agent.execution.completed`. Prints the median of
each step in milliseconds since the request was published (docs/performance.md).
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.client import Client, WorkflowHistory

from bench import latency, load, procs
from bench.run import bus_client, one_bus_settings
from temporal_executor.bus.transport import Transport
from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.event_types import workflow_id_for
from temporal_executor.schemas.task import BusName

Timeline = dict[str, float]
KAFKA_FETCH_WAIT_MS = 10  # as `python -m bench` sets it
# (label, history event type, which occurrence): the steps of a one-turn task in order.
HISTORY_STEPS = [
    (
        "workflow started (start RPC done)",
        HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
        0,
    ),
    (
        "1st workflow task handed to the worker",
        HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
        0,
    ),
    ("1st workflow task completed", HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, 0),
    ("LLM activity completed", HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, 0),
    (
        "2nd workflow task handed to the worker",
        HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
        1,
    ),
    ("workflow completed", HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, 0),
]


def history_times(history: WorkflowHistory, published: float) -> Timeline:
    """Milliseconds from `published` to each step Temporal recorded."""
    seen: dict[int, list[float]] = {}
    for event in history.events:
        seen.setdefault(event.event_type, []).append(event.event_time.ToDatetime().timestamp())
    times: Timeline = {}
    for label, event_type, occurrence in HISTORY_STEPS:
        found = seen.get(event_type, [])
        if len(found) > occurrence:
            times[label] = (found[occurrence] - published) * 1000
    return times


async def one_at_a_time(
    client: Client, transport: Transport, clock: latency.EventClock, samples: int
) -> list[Timeline]:
    timelines: list[Timeline] = []
    prefix = f"tl{uuid.uuid4().hex[:6]}"
    for i in range(samples):
        task_id = f"{prefix}-{i}"
        published = time.time()
        await transport.publish(
            transport.requests_destination(task_id), load.request_event(task_id)
        )
        await clock.wait_done(task_id)
        handle = client.get_workflow_handle(workflow_id_for(task_id))
        await handle.result()  # the completed event goes out before the workflow closes
        history = await handle.fetch_history()
        timeline = history_times(history, published)
        timeline["started event received"] = (clock.started[task_id] - published) * 1000
        timeline["completed event received"] = (clock.completed[task_id] - published) * 1000
        timelines.append(timeline)
    return timelines


async def measure(bus: BusName, samples: int, workdir: Path) -> list[Timeline]:
    async with EmbeddedStack(["temporal", bus], data_dir=workdir / "stack") as stack:
        settings = one_bus_settings(stack, workdir, bus, KAFKA_FETCH_WAIT_MS)
        client = await load.connect(stack.temporal_address)
        async with bus_client(settings, bus) as transport:
            running = [
                procs.service(r, settings, workdir, f"timeline-{r}") for r in ("bridge", "worker")
            ]
            for proc in running:
                await proc.start()
            try:
                async with latency.EventClock(transport) as clock:
                    await one_at_a_time(client, transport, clock, 3)  # warm-up
                    return await one_at_a_time(client, transport, clock, samples)
            finally:
                for proc in running:
                    await proc.stop()


def report(timelines: list[Timeline]) -> str:
    labels = sorted(
        {label for timeline in timelines for label in timeline},
        key=lambda label: statistics.median(t[label] for t in timelines if label in t),
    )
    lines = [f"{'step':<42} {'ms p50':>7}", "-" * 50]
    for label in labels:
        values = [t[label] for t in timelines if label in t]
        lines.append(f"{label:<42} {statistics.median(values):7.1f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.timeline", description=__doc__)
    parser.add_argument("--bus", choices=["nats", "kafka"], default="nats")
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args(argv)
    bus: BusName = "nats" if args.bus == "nats" else "kafka"
    workdir = Path(tempfile.mkdtemp(prefix="bench-timeline-"))
    timelines = asyncio.run(measure(bus, args.samples, workdir))
    sys.stdout.write(f"{args.bus}, {len(timelines)} one-turn tasks, one at a time\n")
    sys.stdout.write(report(timelines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
