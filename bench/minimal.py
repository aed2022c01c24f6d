"""The hand-written minimal workflow: N no-op activities in a row, on a worker of its own.

Run as its own process (``python -m bench.minimal --address A --task-queue Q``), like the
real worker, until SIGTERM.
"""

import argparse
import asyncio
import signal
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

WORKFLOW_NAME = "BenchMinimalWorkflow"


@activity.defn(name="bench_noop")
async def noop(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


@workflow.defn(name=WORKFLOW_NAME)
class MinimalWorkflow:
    @workflow.run
    async def run(self, activities: int) -> int:
        for step in range(activities):
            await workflow.execute_activity(
                noop, {"step": step}, start_to_close_timeout=timedelta(seconds=30)
            )
        return activities


async def serve(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(client, task_queue=task_queue, workflows=[MinimalWorkflow], activities=[noop])
    async with worker:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.address, args.task_queue))


if __name__ == "__main__":
    main()
