"""History bytes and latency per turn, with and without External Storage:
``python -m bench.payload_storage [--turns 8] [--result-kb 200]``.

Runs a bridge and a worker in this process on the embedded stack (the task on NATS), a fake
OpenAI server as the model and the test MCP server's `big` tool: the model asks for a
`--result-kb` tool result `--turns` times, then answers. The same task runs with
`payload_storage.store` none, local (a temporary directory) and s3 (moto's S3 server,
started here). Prints, per store: the workflow history's bytes (sum of its events) per
turn, its largest event, the objects written to the store, and the task's wall time per
turn (the fastest of `--repeat` runs), and the median time to encode and decode the last
turn's LLM call input with each store (docs/performance.md). `--turns` stays at 10 or
below: without storage, the 11th turn's conversation is over Temporal's 2 MB payload
limit and the task fails.
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.config import (
    LocalPayloadStore,
    McpServerSettings,
    PayloadStorageSettings,
    ProviderSettings,
    S3PayloadStore,
    Settings,
)
from temporal_executor.schemas.conversation import ChatMessage, ToolCall
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from temporal_executor.schemas.requests import ModelSelection
from temporal_executor.schemas.task import LlmCallInput
from temporal_executor.tasks.temporal_connection import connect_temporal, data_converter
from temporal_executor.worker.tools import mcp_tools  # noqa: F401  (imported before timing)
from tests.fakes.llm_servers import FakeOpenAIServer, text, tool_calls
from tests.harness import ServiceHarness, service_settings

MCP_SERVER = Path(__file__).parent.parent / "tests" / "fakes" / "mcp_server.py"
KEY_ENV = "BENCH_OPENAI_KEY"
BUCKET = "bench-payloads"


@dataclass
class Figures:
    store: str
    turns: int
    history_bytes: int
    largest_event: int
    stored_objects: int
    seconds: float
    round_trip_ms: float = 0.0


async def _round_trip_ms(store: PayloadStorageSettings, turns: int, result_chars: int) -> float:
    """Median ms to encode and decode the last turn's LLM call input with this store: what
    storage adds to a turn (the workflow encodes it, the activity decodes it)."""
    messages = [ChatMessage(role="user", content="read big results")]
    for n in range(turns):
        call = ToolCall(id=f"call-{n}", name="calc__big", arguments={"size": result_chars})
        messages.append(ChatMessage(role="assistant", content="", tool_calls=[call]))
        messages.append(ChatMessage(role="tool", content="x" * result_chars, tool_call_id=call.id))
    converter = data_converter(Settings(payload_storage=store))
    times = []
    for rep in range(7):
        # Another task id each time: new bytes, so each store really writes (as each turn does).
        call_input = LlmCallInput(
            task_id=f"bench-{uuid.uuid4().hex}-{rep}",
            selection=ModelSelection(provider="bench", model="gpt-4o"),
            messages=messages,
            tools=[],
        )
        started = time.perf_counter()
        payloads = await converter.encode([call_input])
        await converter.decode(payloads, [LlmCallInput])
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _settings(stack: EmbeddedStack, work: Path, model: FakeOpenAIServer, turns: int) -> Settings:
    settings = service_settings(stack, work / "notes")
    settings.bus.max_message_bytes = 1024 * 1024
    settings.executor.max_result_bytes = 256 * 1024
    settings.executor.max_iterations = turns + 1
    settings.mcp_servers = [
        McpServerSettings(
            name="calc", transport="stdio", command=sys.executable, args=[str(MCP_SERVER)]
        )
    ]
    settings.llm.providers.append(
        ProviderSettings(name="bench", kind="openai", api_key_env=KEY_ENV, base_url=model.base_url)
    )
    return settings


async def run_task(
    stack: EmbeddedStack, store: PayloadStorageSettings, turns: int, result_chars: int
) -> tuple[int, int, float]:
    """(history bytes, largest event, seconds) of one task of `turns` tool turns."""
    with FakeOpenAIServer() as model, tempfile.TemporaryDirectory() as work:
        os.environ[KEY_ENV] = model.api_key
        model.enqueue(*[tool_calls(("calc__big", {"size": result_chars}))] * turns)
        model.enqueue(text("done"))
        settings = _settings(stack, Path(work), model, turns)
        settings.payload_storage = store
        harness = ServiceHarness(settings, await connect_temporal(settings))
        await harness.start()
        try:
            task_id = f"bench-{uuid.uuid4().hex[:8]}"
            data = {
                "task_id": task_id,
                "user_message": "read big results",
                "model_config": {"provider": "bench", "model": "gpt-4o"},
            }
            started = time.perf_counter()
            await harness.producers["nats"].send(EventType.EXECUTION_REQUESTED, task_id, data)
            events = await harness.watchers["nats"].wait_for_end(task_id, timeout=300)
            seconds = time.perf_counter() - started
            assert events[-1].type == EventType.EXECUTION_COMPLETED, events[-1]
            handle = harness.client.get_workflow_handle(workflow_id_for(task_id))
            history = await handle.fetch_history()
        finally:
            await harness.stop()
    sizes = [e.ByteSize() for e in history.events]
    return sum(sizes), max(sizes), seconds


def _count_objects(store: PayloadStorageSettings) -> int:
    if store.store == "local":
        return sum(1 for p in Path(store.local.directory).rglob("*") if p.is_file())
    if store.store == "s3":
        import boto3

        client = boto3.client("s3", endpoint_url=store.s3.endpoint_url)
        return int(client.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0))
    return 0


async def measure(turns: int, result_chars: int, repeat: int) -> list[Figures]:
    import boto3
    from moto.server import ThreadedMotoServer

    for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench")):
        os.environ.setdefault(name, value)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    figures: list[Figures] = []
    try:
        async with EmbeddedStack(("temporal", "nats", "kafka"), headless=True) as stack:
            with tempfile.TemporaryDirectory() as payloads:
                stores = [
                    PayloadStorageSettings(store="none"),
                    PayloadStorageSettings(
                        store="local", local=LocalPayloadStore(directory=payloads)
                    ),
                    PayloadStorageSettings(
                        store="s3", s3=S3PayloadStore(bucket=BUCKET, endpoint_url=endpoint)
                    ),
                ]
                best: dict[str, Figures] = {}
                for _ in range(repeat):  # stores in turn, so a slow spell hits them all
                    for store in stores:
                        size, largest, seconds = await run_task(stack, store, turns, result_chars)
                        seen = best.get(store.store)
                        if seen is None or seconds < seen.seconds:
                            objects = _count_objects(store)
                            best[store.store] = Figures(
                                store.store, turns + 1, size, largest, objects, seconds
                            )
                figures = list(best.values())
                for store in stores:
                    best[store.store].round_trip_ms = await _round_trip_ms(
                        store, turns, result_chars
                    )
    finally:
        moto.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=8, help="tool turns (at most 10)")
    parser.add_argument("--result-kb", type=int, default=200, help="size of each tool result")
    parser.add_argument("--repeat", type=int, default=2, help="runs per store; the fastest counts")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.turns, args.result_kb * 1000, args.repeat))
    out = sys.stdout
    out.write(
        f"{args.turns} tool turns of {args.result_kb} kB + the answer "
        f"({args.turns + 1} LLM calls)\n"
    )
    out.write(
        "store  history kB  kB/turn  largest event kB  stored objects  ms/turn"
        "  last input encode+decode ms\n"
    )
    for f in figures:
        out.write(
            f"{f.store:<6} {f.history_bytes / 1000:>10.0f} {f.history_bytes / 1000 / f.turns:>8.0f}"
            f" {f.largest_event / 1000:>17.0f} {f.stored_objects:>15} "
            f"{f.seconds * 1000 / f.turns:>8.0f} {f.round_trip_ms:>28.1f}\n"
        )


if __name__ == "__main__":
    main()
