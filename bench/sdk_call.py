"""What one LLM call costs through a real SDK, without the rest of a task.

``python -m bench.sdk_call [--calls 300]``: the worker's provider objects (the registry the
LLM activity uses: one SDK client per worker) call the local wire-format servers of
tests/fakes, each in a process of its own so it does not share this one's GIL; beside them
a bare `httpx` POST of the same request to the same server, and the scripted provider.
Milliseconds per call, warm (the first calls, which import the SDK and build its client,
are left out). The difference between a provider and the scripted one is what the SDK
path adds to a one-turn task's published → completed (bench/sdk.py measures that).
"""

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from multiprocessing.queues import Queue
from typing import Any

import httpx

from temporal_executor.schemas.config import LlmSettings, ProviderSettings
from temporal_executor.schemas.conversation import ChatMessage
from temporal_executor.schemas.requests import ModelSelection
from temporal_executor.schemas.task import LlmCallInput
from temporal_executor.worker.llm.registry import ProviderRegistry

KEY_ENV = "BENCH_SDK_CALL_KEY"
WARM_UP = 5
MODELS = {"openai": "gpt-4.1-mini", "anthropic": "claude-sonnet-4-5", "scripted": "echo"}


def _serve(kind: str, out: "Queue[tuple[str, str]]") -> None:
    from tests.fakes.llm_servers import FakeAnthropicServer, FakeOpenAIServer, text

    server = (FakeOpenAIServer() if kind == "openai" else FakeAnthropicServer()).start()
    server.default = text("done")
    out.put((server.base_url, server.api_key))
    time.sleep(3600)


def _bare_request(kind: str, base_url: str, key: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    body: dict[str, Any] = {"model": MODELS[kind], "messages": [{"role": "user", "content": "hi"}]}
    if kind == "openai":
        return f"{base_url}/chat/completions", body, {"authorization": f"Bearer {key}"}
    body["max_tokens"] = 64
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    return f"{base_url}/v1/messages", body, headers


async def _timed(calls: int, one: Any) -> list[float]:
    samples = []
    for _ in range(calls + WARM_UP):
        began = time.perf_counter()
        await one()
        samples.append((time.perf_counter() - began) * 1000)
    return samples[WARM_UP:]


async def run(kinds: list[str], calls: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    scripted = ProviderRegistry(LlmSettings()).get("scripted")
    call = LlmCallInput(
        task_id="bench",
        selection=ModelSelection(provider="scripted", model=MODELS["scripted"]),
        messages=[ChatMessage(role="user", content="hello")],
    )
    results["scripted"] = await _timed(calls, lambda: scripted.complete(call, None))
    for kind in kinds:
        results.update(await _time_kind(kind, call, calls))
    return results


async def _time_kind(kind: str, call: LlmCallInput, calls: int) -> dict[str, list[float]]:
    """The provider `kind` and a bare httpx request, against its fake server."""
    queue: Queue[tuple[str, str]] = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(kind, queue), daemon=True)
    server.start()
    try:
        base_url, key = queue.get(timeout=30)
        os.environ[KEY_ENV] = key
        settings = ProviderSettings(name=kind, kind=kind, api_key_env=KEY_ENV, base_url=base_url)
        provider = ProviderRegistry(LlmSettings(providers=[settings])).get(kind)
        sdk_call = call.model_copy(
            update={"selection": ModelSelection(provider=kind, model=MODELS[kind])}
        )
        through_sdk = await _timed(calls, lambda: provider.complete(sdk_call, None))
        await provider.aclose()
        url, body, headers = _bare_request(kind, base_url, key)
        async with httpx.AsyncClient() as client:

            async def bare() -> None:
                (await client.post(url, json=body, headers=headers)).raise_for_status()

            return {kind: through_sdk, f"{kind} (bare httpx)": await _timed(calls, bare)}
    finally:
        server.kill()
        server.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sdk_call", description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--kinds", default="openai,anthropic")
    args = parser.parse_args(argv)
    results = asyncio.run(run([k for k in args.kinds.split(",") if k], args.calls))
    print(f"ms per LLM call, {args.calls} calls each (warm), p50 / mean / min")
    for name, samples in results.items():
        print(
            f"{name:24s} {statistics.median(samples):7.2f} {statistics.mean(samples):7.2f}"
            f" {min(samples):7.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
