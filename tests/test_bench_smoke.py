"""The benchmark (bench/, issue #7) runs end to end in its smallest configuration.

A smoke test only: it checks that every figure is produced, never how fast anything is.
"""

import asyncio
import os
import sys
from pathlib import Path

import pytest

from bench import sdk_call
from bench.report import ROWS
from bench.run import parse
from bench.timeline import HISTORY_STEPS
from temporal_executor.dev.embedded_stack import EmbeddedStack

ROOT = Path(__file__).resolve().parents[1]


async def run_module(stack: EmbeddedStack, tmp_path: Path, *args: str) -> str:
    """`python -m <args>` against the session's servers, so it starts none of its own."""
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": stack.temporal_address,
        "NATS_URL": stack.nats_url,
        "TMPDIR": str(tmp_path),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    return text


async def run_quick_bench(stack: EmbeddedStack, tmp_path: Path, *args: str) -> str:
    """`python -m bench --quick --bus nats <args>`, its logs and configs under `tmp_path`."""
    quick = ("bench", "--quick", "--bus", "nats", "--workdir", str(tmp_path))
    return await run_module(stack, tmp_path, *quick, *args)


async def test_quick_benchmark_prints_every_figure(
    embedded_stack: EmbeddedStack, tmp_path: Path
) -> None:
    # One sdk case: the sdk phase has a test of its own, and each case is two processes.
    text = await run_quick_bench(
        embedded_stack, tmp_path, "--sdk-kinds", "openai", "--sdk-mcp", "without"
    )
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| figure | nats N=20 |")
    for label, *_ in ROWS:
        row = next((line for line in table if line.startswith(f"| {label} |")), None)
        assert row is not None, f"no row {label!r} in:\n{text}"


async def test_timeline_prints_every_step_of_a_one_turn_task(
    embedded_stack: EmbeddedStack, tmp_path: Path
) -> None:
    text = await run_module(
        embedded_stack, tmp_path, "bench.timeline", "--bus", "nats", "--samples", "2"
    )
    assert "nats, 2 one-turn tasks" in text
    for label, *_ in HISTORY_STEPS:
        assert label in text, text
    assert "started event received" in text
    assert "completed event received" in text


async def test_sdk_phase_prints_real_sdk_and_mcp_figures(
    embedded_stack: EmbeddedStack, tmp_path: Path
) -> None:
    """`--phases sdk`: the worker with the OpenAI SDK against the local wire-format server,
    with and without an MCP server, prints latency and memory for each (tiny N); kinds not
    asked for (the scripted baseline, anthropic) print none."""
    text = await run_quick_bench(
        embedded_stack, tmp_path, "--phases", "sdk", "--sdk-kinds", "openai", "--sdk-tasks", "3"
    )
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| 8.")}
    for name in ("openai", "openai + MCP"):
        for figure in (
            "light load published->completed ms",
            "worker RSS MB idle/after burst/peak",
            "bridge RSS MB idle/peak",
        ):
            row = rows[f"8. {name}: {figure}"]
            assert row.split(" | ")[1] != "-", row
    for name in ("scripted", "anthropic"):
        assert rows[f"8. {name}: bridge RSS MB idle/peak"].split(" | ")[1] == "-"


async def test_streaming_benchmark_prints_time_to_first_token(
    embedded_stack: EmbeddedStack, tmp_path: Path
) -> None:
    text = await run_module(
        embedded_stack, tmp_path, "bench.streaming", "--bus", "nats", "--samples", "2"
    )
    for label in ("time to first token", "model's own time to first chunk", "delta events"):
        assert f"| {label}" in text, text


def test_sdk_call_benchmark_times_each_provider_and_its_bare_request(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`python -m bench.sdk_call`: one LLM call through each SDK against its fake server,
    beside the same request sent by bare httpx and the scripted provider."""
    assert sdk_call.main(["--calls", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line[:24].strip() for line in lines[1:]]
    assert names == [
        "scripted",
        "openai",
        "openai (bare httpx)",
        "anthropic",
        "anthropic (bare httpx)",
    ]


def test_sdk_mcp_picks_the_cases_with_and_without_an_mcp_server() -> None:
    cases = {flag: parse(["--sdk-mcp", flag])[0].sdk_mcp for flag in ("with", "without", "both")}
    assert cases == {"with": (True,), "without": (False,), "both": (False, True)}
