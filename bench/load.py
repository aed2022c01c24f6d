"""Load and baselines: publishing requests, starting workflows directly, the naive consumer.

Every throughput is "N tasks from the first request published (or first start called) to
the last workflow started", with the start times taken from Temporal itself.
"""

import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any

import nats
from aiokafka import AIOKafkaConsumer
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from temporal_executor.bus.codec import decode_kafka, decode_nats
from temporal_executor.bus.kafka.watch import inbound as kafka_inbound
from temporal_executor.bus.nats.watch import inbound as nats_inbound
from temporal_executor.bus.transport import Transport
from temporal_executor.schemas.cloudevent import TASKID_EXTENSION, CloudEvent
from temporal_executor.schemas.config import Settings, TemporalSettings
from temporal_executor.schemas.event_types import WORKFLOW_TYPE, EventType, workflow_id_for
from temporal_executor.schemas.requests import ExecutionRequested
from temporal_executor.schemas.task import AgentTaskInput, BusName, EventRoute
from temporal_executor.tasks.temporal_connection import connect_temporal

RPC_TIMEOUT = timedelta(seconds=10)
PUBLISH_CONCURRENCY = 256
WAIT_TIMEOUT = 1800.0


async def connect(address: str, namespace: str = "default") -> Client:
    temporal = TemporalSettings(host_port=address, namespace=namespace)
    return await connect_temporal(Settings(temporal=temporal))


def request_data(task_id: str, model: str = "one-turn") -> dict[str, Any]:
    return {
        "task_id": task_id,
        "user_message": f"benchmark task {task_id}",
        "model_config": {"provider": "scripted", "model": model},
    }


def request_event(task_id: str, model: str = "one-turn") -> CloudEvent:
    return CloudEvent(
        id=str(uuid.uuid4()),
        source="bench",
        type=EventType.EXECUTION_REQUESTED,
        data=request_data(task_id, model),
        extensions={TASKID_EXTENSION: task_id},
    )


def task_input(
    task_id: str, bus: BusName, transport: Transport | None = None, model: str = "one-turn"
) -> AgentTaskInput:
    """What the bridge would start for the request (same route, same payload)."""
    request = ExecutionRequested.model_validate(request_data(task_id, model))
    if transport is None:
        route = EventRoute(
            bus=bus,
            events_destination="agent.events",
            approvals_destination="agent.approvals",
            approval_replies_destination="agent.approval-replies",
        )
    else:
        route = EventRoute(
            bus=bus,
            events_destination=transport.events_destination(task_id),
            approvals_destination=transport.approvals_destination(task_id),
            approval_replies_destination=transport.approval_replies_destination(task_id),
        )
    return AgentTaskInput(request=request, route=route)


async def start_one(client: Client, task: AgentTaskInput, task_queue: str) -> None:
    """The start the bridge does: same workflow, id, policies and timeout."""
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await client.start_workflow(
            WORKFLOW_TYPE,
            task,
            id=workflow_id_for(task.request.task_id),
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            rpc_timeout=RPC_TIMEOUT,
        )


async def run_concurrently(
    items: Iterable[Any], work: Callable[[Any], Awaitable[None]], concurrency: int
) -> None:
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def publish_requests(
    transport: Transport, task_ids: list[str], model: str = "one-turn"
) -> float:
    """Publish one request per task id as fast as the bus takes them; the first's time."""
    events = [(transport.requests_destination(t), request_event(t, model)) for t in task_ids]
    first = time.time()

    async def publish(item: tuple[str, CloudEvent]) -> None:
        await transport.publish(*item)

    await run_concurrently(events, publish, PUBLISH_CONCURRENCY)
    return first


async def start_times(
    client: Client, task_queue: str, n: int, *, closed: bool = False, prefix: str = ""
) -> list[float]:
    """Start (or close) times, as Temporal recorded them, of `n` workflows on `task_queue`
    whose task id starts with `prefix`; waits until visibility shows them all."""
    query = f'TaskQueue = "{task_queue}"'
    if closed:
        query += ' AND ExecutionStatus != "Running"'
    deadline = time.monotonic() + WAIT_TIMEOUT
    while True:
        count = (await client.count_workflows(query)).count
        if count >= n:
            break
        if time.monotonic() > deadline:
            msg = f"only {count} of {n} workflows on {task_queue} after {WAIT_TIMEOUT} s"
            raise TimeoutError(msg)
        await asyncio.sleep(0.5)
    times: list[float] = []
    wanted = workflow_id_for(prefix)
    async for execution in client.list_workflows(query, page_size=1000):
        if not execution.id.startswith(wanted):
            continue
        stamp = execution.close_time if closed else execution.start_time
        if stamp is not None:
            times.append(stamp.timestamp())
    return times


def rate(n: int, first: float, times: list[float]) -> float:
    return n / max(max(times) - first, 1e-9)


async def direct_starts(
    client: Client, n: int, concurrency: int, bus: BusName = "kafka"
) -> tuple[float, float]:
    """Starts/s of a plain client loop, `concurrency` starts in flight, and the CPU
    milliseconds this process spent per start (its Python and SDK-core threads)."""
    queue = f"bench-direct-{uuid.uuid4().hex[:8]}"
    prefix = f"d{uuid.uuid4().hex[:6]}"
    tasks = [task_input(f"{prefix}-{i}", bus) for i in range(n)]
    first, cpu = time.time(), time.process_time()
    await run_concurrently(tasks, lambda t: start_one(client, t, queue), concurrency)
    cpu_ms = (time.process_time() - cpu) * 1000 / n
    return rate(n, first, await start_times(client, queue, n, prefix=prefix)), cpu_ms


async def best_concurrency(
    client: Client, n: int, concurrencies: tuple[int, ...] = (8, 32, 64, 128)
) -> int:
    """The concurrency at which a plain client loop starts the most workflows per second
    (a short sweep; the full run at that concurrency is `direct_starts`)."""
    sample = max(min(n // 4, 300), 10)
    sweep = {c: (await direct_starts(client, sample, c))[0] for c in concurrencies}
    return max(sweep, key=lambda c: sweep[c])


async def bare_start_latency(client: Client, k: int) -> list[float]:
    """Milliseconds of each of `k` start_workflow RPCs, one at a time: the floor."""
    queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
    prefix = f"b{uuid.uuid4().hex[:6]}"
    samples: list[float] = []
    for i in range(k):
        task = task_input(f"{prefix}-{i}", "kafka")
        began = time.perf_counter()
        await start_one(client, task, queue)
        samples.append((time.perf_counter() - began) * 1000)
    return samples


async def naive_consumer(
    settings: Settings, bus: BusName, client: Client, n: int, ready: asyncio.Event
) -> None:
    """The consumer a user would write by hand: decode, await start_workflow, commit, repeat."""
    queue = settings.temporal.task_queue
    if bus == "kafka":
        kafka = settings.bus.kafka
        consumer = AIOKafkaConsumer(
            kafka.topics.requests,
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=f"naive-{kafka.consumer_group}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=kafka.fetch_max_wait_ms,
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        )
        await consumer.start()
        try:
            ready.set()
            for _ in range(n):
                record = await consumer.getone()
                event = decode_kafka(kafka_inbound(record))
                await start_one(client, _input_of(event, bus), queue)
                await consumer.commit()
        finally:
            await consumer.stop()
        return
    nats_settings = settings.bus.nats
    nc = await nats.connect(nats_settings.url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            f"{nats_settings.subjects.requests}.>",
            durable=f"naive-{nats_settings.durable}",
            stream=nats_settings.streams.requests,
        )
        ready.set()
        handled = 0
        while handled < n:
            try:
                messages = await sub.fetch(1, timeout=1)
            except TimeoutError:
                continue
            for msg in messages:
                event = decode_nats(nats_inbound(msg))
                await start_one(client, _input_of(event, bus), queue)
                await msg.ack()
                handled += 1
    finally:
        await nc.close()


def _input_of(event: CloudEvent, bus: BusName) -> AgentTaskInput:
    request = ExecutionRequested.model_validate(event.data)
    return task_input(request.task_id, bus)


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    if len(samples) < 2:
        value = samples[0] if samples else float("nan")
        return value, value, value
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]
