"""Experiment: start -> result latency of 5 no-op activities, regular vs local, one at a time.

A one-turn agent task runs 5 activities in a row (plan, publish started, LLM call, publish
llm.responded, publish completed). This measures what that chain costs on the same server
as regular activities and as local activities, with eager workflow start off (as for the
bridge, whose client is not the worker's). ``python -m bench.local_activities``.
"""

import argparse
import asyncio
import time
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from bench.load import percentiles
from temporal_executor.dev.embedded_stack import EmbeddedStack

STEPS = 5


@activity.defn(name="bench_step")
async def step(n: int) -> int:
    return n


@workflow.defn(name="BenchRegularChain")
class RegularChain:
    @workflow.run
    async def run(self, steps: int) -> int:
        for n in range(steps):
            await workflow.execute_activity(step, n, start_to_close_timeout=timedelta(seconds=30))
        return steps


@workflow.defn(name="BenchLocalChain")
class LocalChain:
    @workflow.run
    async def run(self, steps: int) -> int:
        for n in range(steps):
            await workflow.execute_local_activity(
                step, n, start_to_close_timeout=timedelta(seconds=30)
            )
        return steps


async def measure(address: str, samples: int) -> dict[str, tuple[float, float, float]]:
    client = await Client.connect(address)
    queue = f"bench-la-{uuid.uuid4().hex[:8]}"
    results: dict[str, tuple[float, float, float]] = {}
    async with Worker(
        client,
        task_queue=queue,
        workflows=[RegularChain, LocalChain],
        activities=[step],
        workflow_runner=UnsandboxedWorkflowRunner(),  # run as __main__; same for both
    ):
        for name in ("BenchRegularChain", "BenchLocalChain"):
            took: list[float] = []
            for i in range(samples + 3):
                began = time.perf_counter()
                await client.execute_workflow(
                    name, STEPS, id=f"{name}-{uuid.uuid4().hex[:8]}", task_queue=queue
                )
                if i >= 3:  # warm-up
                    took.append((time.perf_counter() - began) * 1000)
            results[name] = percentiles(took)
    return results


async def main_async(samples: int) -> None:
    async with EmbeddedStack(["temporal"]) as stack:
        results = await measure(stack.temporal_address, samples)
    for name, (p50, p95, p99) in results.items():
        print(f"{name}: {STEPS} activities, start->result ms p50/p95/p99", end=" ")
        print(f"{p50:.1f}/{p95:.1f}/{p99:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=30)
    asyncio.run(main_async(parser.parse_args().samples))


if __name__ == "__main__":
    main()
