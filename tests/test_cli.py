"""The `temporal-executor` command, driven the way a person types it, against the session's
real servers and service.

Commands that install no signal handlers (`send`, `approve`, `cancel`, `schema`) run
in-process through `main()` in a thread (it calls `asyncio.run`); those that stop on a
signal (`events`, `worker`, `bridge`) run as real processes.
"""

import asyncio
import io
import json
import logging
import os
import pwd
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from temporal_executor.bus.factory import create_transport
from temporal_executor.bus.transport import InboundMessage
from temporal_executor.bus_client import (
    default_approver,
    describe,
    print_until_done,
    request_event,
    task_events,
)
from temporal_executor.cli import DEFAULT_CONFIG, main
from temporal_executor.commands import approve_hint
from temporal_executor.config_file import CONFIG_PATH_ENV
from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.logs import JsonFormatter, TextFormatter, configure_logging
from temporal_executor.schemas import json_schemas
from temporal_executor.schemas.cloudevent import TASKID_EXTENSION, CloudEvent
from temporal_executor.schemas.config import LoggingSettings, Settings
from temporal_executor.schemas.event_types import EventType
from temporal_executor.schemas.requests import ExecutionRequested
from temporal_executor.schemas.task import BusName
from tests.harness import BUSES, ServiceHarness, ServiceProcess, new_task_id, service_settings

REPO = Path(__file__).resolve().parent.parent
COMMITTED_SCHEMAS = REPO / "schemas" / "json"
REGENERATE = "temporal-executor schema --out schemas/json"
TIMEOUT = 30.0
NOISY_LOGGERS = ("aiokafka", "nats", "httpx")


# -- helpers ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`main()` configures the root logger for a process; put the test session's back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, noisy_level in noisy.items():
        logging.getLogger(name).setLevel(noisy_level)


@pytest.fixture(scope="module")
def config(service: ServiceHarness, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session service's settings as the YAML file a person passes with --config."""
    path = tmp_path_factory.mktemp("cli") / "temporal-executor.yaml"
    return ServiceProcess.write_config(service.settings, path)


async def run(*argv: str) -> int:
    """`temporal-executor ARGV...` in this process, off the event loop."""
    return await asyncio.wait_for(asyncio.to_thread(main, list(argv)), TIMEOUT)


def cli_args(config: Path, bus: BusName, *args: str) -> list[str]:
    return ["--config", str(config), *args, "--transport", bus]


def send_args(task_id: str, model: str) -> list[str]:
    message = f"hello from {task_id}"
    return ["send", message, "--task-id", task_id, "--provider", "scripted", "--model", model]


def line_for(task_id: str, sequence: int, event_type: str, summary: str) -> str:
    return f"[{task_id} #{sequence}] {event_type}  {summary}"


class Process:
    """`python -m temporal_executor ...` as a real process, its output read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stdout: list[str] = []
        self.stderr: list[str] = []

    @classmethod
    async def start(cls, *argv: str) -> "Process":
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "temporal_executor",
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def wait_for_line(self, needle: str, *, stream: str = "stdout") -> str:
        reader = self.process.stdout if stream == "stdout" else self.process.stderr
        lines = self.stdout if stream == "stdout" else self.stderr
        assert reader is not None
        try:
            async with asyncio.timeout(TIMEOUT):
                while raw := await reader.readline():
                    lines.append(raw.decode().rstrip("\n"))
                    if needle in lines[-1]:
                        return lines[-1]
        except TimeoutError:
            pass
        pytest.fail(f"no {stream} line with {needle!r}:\n" + "\n".join(lines))

    async def stop(self, sig: signal.Signals) -> int:
        self.process.send_signal(sig)
        return await self.exit_code()

    async def exit_code(self) -> int:
        out, err = await asyncio.wait_for(self.process.communicate(), TIMEOUT)
        self.stdout += out.decode().splitlines()
        self.stderr += err.decode().splitlines()
        assert self.process.returncode is not None
        return self.process.returncode

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.communicate()


@pytest.fixture
async def processes() -> AsyncIterator[list[Process]]:
    """Processes a test starts; killed if the test ends before they do."""
    started: list[Process] = []
    yield started
    for process in started:
        await process.kill()


# -- send, approve, cancel --------------------------------------------------------------


@pytest.mark.parametrize("bus", BUSES)
async def test_send_publishes_a_request_the_service_runs(
    service: ServiceHarness, config: Path, bus: BusName, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = new_task_id("cli")
    assert await run(*cli_args(config, bus, *send_args(task_id, "one-turn"))) == 0
    assert capsys.readouterr().out == f"sent {EventType.EXECUTION_REQUESTED} for task {task_id}\n"
    events = await service.watchers[bus].wait_for_end(task_id)
    assert events[-1].type == EventType.EXECUTION_COMPLETED
    assert events[-1].data["final_message"] == f"done: hello from {task_id}"


@pytest.mark.parametrize("bus", BUSES)
async def test_send_follow_prints_every_event_until_the_end(
    service: ServiceHarness, config: Path, bus: BusName, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = new_task_id("cli")
    args = cli_args(config, bus, *send_args(task_id, "one-turn"), "--follow", "--no-stream")
    assert await run(*args) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"sent {EventType.EXECUTION_REQUESTED} for task {task_id}; following its events",
        line_for(task_id, 1, EventType.EXECUTION_STARTED, "model=scripted/one-turn"),
        line_for(task_id, 2, EventType.LLM_RESPONDED, f"iteration 1: done: hello from {task_id}"),
        line_for(
            task_id,
            3,
            EventType.EXECUTION_COMPLETED,
            f"after 1 iterations: done: hello from {task_id}",
        ),
    ]


async def test_send_follow_prints_the_text_as_it_streams(
    service: ServiceHarness, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = new_task_id("cli")
    assert await run(*cli_args(config, "nats", *send_args(task_id, "calculate"), "--follow")) == 0
    lines = capsys.readouterr().out.splitlines()
    # The answer streams before its agent.llm.responded (the tool call's turn has no text).
    answer = "  the answer is 42"
    assert answer in lines
    responded = [i for i, line in enumerate(lines) if EventType.LLM_RESPONDED in line]
    assert responded[0] < lines.index(answer) < responded[1]


async def test_send_follow_exits_1_when_the_task_fails(
    service: ServiceHarness, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = new_task_id("cli")
    args = cli_args(config, "kafka", *send_args(task_id, "unauthorised"), "--follow")
    assert await run(*args) == 1
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith(line_for(task_id, 2, EventType.EXECUTION_FAILED, ""))


@pytest.mark.parametrize("bus", BUSES)
async def test_send_follow_waits_for_approve_from_another_terminal(
    service: ServiceHarness,
    config: Path,
    bus: BusName,
    processes: list[Process],
    capsys: pytest.CaptureFixture[str],
) -> None:
    task_id = new_task_id("cli")
    following = asyncio.create_task(
        run(*cli_args(config, bus, *send_args(task_id, "note"), "--follow"))
    )
    request = await service.watchers[bus].wait_for(task_id, EventType.APPROVAL_REQUESTED)
    approval_id = request.data["approval_id"]

    # The approve command the follower prints is what the second terminal runs.
    hint = f"temporal-executor approve {task_id} {approval_id}"
    hint += " --transport nats" if bus == "nats" else ""
    approve = await Process.start("--config", str(config), *hint.split()[1:])
    processes.append(approve)
    assert await approve.exit_code() == 0, "\n".join(approve.stderr)
    destination = service.producers[bus].transport.approval_replies_destination(task_id)
    assert approve.stdout == [f"approved {approval_id} of task {task_id} (sent to {destination})"]
    assert await asyncio.wait_for(following, TIMEOUT) == 0

    follow = capsys.readouterr().out.splitlines()
    assert follow[4] == f"    approve with: {hint}"
    assert follow[3].startswith(
        line_for(task_id, 3, EventType.APPROVAL_REQUESTED, f"{approval_id}: save_note(")
    )
    assert follow[5] == line_for(
        task_id,
        4,
        EventType.APPROVAL_RESOLVED,
        f"{approval_id}: approved by {default_approver()}",
    )
    assert follow[6].startswith(line_for(task_id, 5, EventType.TOOL_COMPLETED, "save_note -> "))
    assert follow[-1].startswith(line_for(task_id, 7, EventType.EXECUTION_COMPLETED, "after 2"))


async def test_ctrl_c_stops_send_follow_quietly(
    service: ServiceHarness, config: Path, processes: list[Process]
) -> None:
    task_id = new_task_id("cli")
    args = cli_args(config, "kafka", *send_args(task_id, "note"), "--follow")
    follow = await Process.start(*args)
    processes.append(follow)
    await follow.wait_for_line("approve with: ")
    assert await follow.stop(signal.SIGINT) == 130
    assert "Traceback" not in "\n".join(follow.stderr), "\n".join(follow.stderr)
    # Only the follower stopped: the task still waits for its approval.
    request = await service.watchers["kafka"].wait_for(task_id, EventType.APPROVAL_REQUESTED)
    await service.producers["kafka"].approve(task_id, request.data["approval_id"])
    await service.watchers["kafka"].wait_for(task_id, EventType.EXECUTION_COMPLETED)


async def test_approve_deny_with_a_reason(
    service: ServiceHarness, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = new_task_id("cli")
    watcher = service.watchers["nats"]
    assert await run(*cli_args(config, "nats", *send_args(task_id, "note"))) == 0
    request = await watcher.wait_for(task_id, EventType.APPROVAL_REQUESTED)
    approval_id = request.data["approval_id"]
    args = ["approve", task_id, approval_id, "--deny", "--reason", "not today"]
    assert await run(*cli_args(config, "nats", *args)) == 0
    assert f"denied {approval_id} of task {task_id} (sent to " in capsys.readouterr().out

    events = await watcher.wait_for_end(task_id)
    resolved = next(e for e in events if e.type == EventType.APPROVAL_RESOLVED)
    assert resolved.data["approved"] is False
    assert resolved.data["reason"] == "not today"
    assert resolved.data["approver"] == default_approver()
    tool = next(e for e in events if e.type == EventType.TOOL_COMPLETED)
    assert tool.data["error"] == "a person denied this tool call: not today"
    assert events[-1].type == EventType.EXECUTION_COMPLETED


async def test_cancel_a_task_waiting_for_approval(
    service: ServiceHarness, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = new_task_id("cli")
    watcher = service.watchers["kafka"]
    assert await run(*cli_args(config, "kafka", *send_args(task_id, "note"))) == 0
    await watcher.wait_for(task_id, EventType.APPROVAL_REQUESTED)
    args = ["cancel", task_id, "--reason", "changed my mind"]
    assert await run(*cli_args(config, "kafka", *args)) == 0
    assert capsys.readouterr().out.endswith(f"asked to cancel task {task_id}\n")

    events = await watcher.wait_for_end(task_id)
    assert events[-1].type == EventType.EXECUTION_CANCELLED
    assert events[-1].data["reason"] == "changed my mind"


# -- events, worker and bridge: real processes that stop on a signal ---------------------


@pytest.mark.parametrize("bus", BUSES)
async def test_events_from_start_shows_a_finished_task_until_ctrl_c(
    service: ServiceHarness, config: Path, bus: BusName, processes: list[Process]
) -> None:
    task_id = new_task_id("cli")
    await service.producers[bus].request(task_id, "calculate")
    finished = await service.watchers[bus].wait_for_end(task_id)

    events = await Process.start(
        *cli_args(config, bus, "events", "--task", task_id, "--from-start")
    )
    processes.append(events)
    await events.wait_for_line(str(EventType.EXECUTION_COMPLETED))
    assert await events.stop(signal.SIGINT) == 0, "\n".join(events.stderr)
    # Each event once, in order, as `describe` puts it; nothing of other tasks.
    assert events.stdout == [describe(e) for e in finished]
    assert events.stdout[2] == line_for(task_id, 3, EventType.TOOL_COMPLETED, "calculator -> 42")


@pytest.mark.parametrize("bus", BUSES)
async def test_events_deltas_prints_the_text_as_it_streams(
    service: ServiceHarness, config: Path, bus: BusName, processes: list[Process]
) -> None:
    events = await Process.start(*cli_args(config, bus, "events", "--deltas"))
    processes.append(events)
    await events.wait_for_line("watching all tasks with deltas", stream="stderr")
    task_id = new_task_id("cli")
    await service.producers[bus].request(task_id, "calculate", stream=True)

    await events.wait_for_line(f"[{task_id} #5] {EventType.EXECUTION_COMPLETED}")
    assert await events.stop(signal.SIGINT) == 0, "\n".join(events.stderr)
    # The answer's text, labelled with its task (all tasks are watched), streamed before
    # its agent.llm.responded.
    answer = f"  [{task_id}] the answer is 42"
    assert answer in events.stdout
    responded = [
        i
        for i, line in enumerate(events.stdout)
        if f"[{task_id} " in line and EventType.LLM_RESPONDED in line
    ]
    assert responded[0] < events.stdout.index(answer) < responded[1]


async def test_worker_and_bridge_processes_run_a_task_and_stop_on_sigterm(
    embedded_stack: EmbeddedStack,
    tmp_path: Path,
    processes: list[Process],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A deployment of its own: queue, topics and streams no other test uses.
    settings = service_settings(
        embedded_stack,
        tmp_path / "notes",
    )
    config = ServiceProcess.write_config(settings, tmp_path / "config.yaml")
    worker = await Process.start("--config", str(config), "worker")
    bridge = await Process.start("--config", str(config), "bridge")
    processes += [worker, bridge]
    await worker.wait_for_line('"message": "worker started"', stream="stderr")
    await bridge.wait_for_line('"message": "bridge started"', stream="stderr")

    task_id = new_task_id("cli")
    args = ["--config", str(config), *send_args(task_id, "calculate"), "--follow"]
    assert await run(*args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == line_for(
        task_id, 5, EventType.EXECUTION_COMPLETED, "after 2 iterations: the answer is 42"
    )

    assert await worker.stop(signal.SIGTERM) == 0, "\n".join(worker.stderr)
    assert await bridge.stop(signal.SIGTERM) == 0, "\n".join(bridge.stderr)
    # Logs are JSON lines; the last says the process stopped cleanly.
    assert json.loads(worker.stderr[-1])["message"] == "worker stopped"
    assert json.loads(bridge.stderr[-1])["message"] == "bridge stopped"


async def test_bridge_waits_for_temporal_and_stops_on_sigterm(
    tmp_path: Path, processes: list[Process]
) -> None:
    settings = Settings()
    settings.temporal.host_port = "127.0.0.1:1"  # nothing listens there
    settings.bridge.retry_initial_seconds = 0.1
    config = ServiceProcess.write_config(settings, tmp_path / "config.yaml")
    bridge = await Process.start("--config", str(config), "bridge")
    processes.append(bridge)
    line = await bridge.wait_for_line("Temporal unreachable; retrying", stream="stderr")
    assert json.loads(line)["temporal"] == "127.0.0.1:1"
    assert await bridge.stop(signal.SIGTERM) == 0, "\n".join(bridge.stderr)


async def test_stop_on_signals_sets_the_stop_event(tmp_path: Path) -> None:
    script = (
        "import asyncio, os, signal\n"
        "from temporal_executor.processes import run_until_signal\n"
        "async def main(stop):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    await asyncio.wait_for(stop.wait(), 10)\n"
        "    print('stopped')\n"
        "asyncio.run(run_until_signal(main))\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert (process.returncode, out) == (0, b"stopped\n")


# -- config, help and schemas -------------------------------------------------------------


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("dev", "worker", "bridge", "send", "approve", "cancel", "events", "schema"):
        assert re.search(rf"^\s+{command}\s", out, re.M), f"{command} missing from --help"


def test_dev_help_shows_the_port_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["dev", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for flag, default in [("temporal", 7233), ("ui", 8233), ("kafka", 9092), ("nats", 4222)]:
        assert re.search(rf"--{flag}-port PORT .*\(default: {default}\)", out), flag


def test_a_bad_config_file_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("bus:\n  defualt: nats\n", encoding="utf-8")
    assert main(["--config", str(bad), "schema", "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"temporal-executor: Invalid configuration in {bad}: ")
    assert "bus.defualt: Extra inputs are not permitted" in captured.err
    assert not (tmp_path / "out").exists()


def test_a_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"
    assert main(["--config", str(missing), "schema", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"temporal-executor: Cannot read config file {missing}: No such file or directory\n"
    )


def test_the_config_file_comes_from_the_env_var_before_the_default_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As --help says: --config, else $TEMPORAL_EXECUTOR_CONFIG, else config/... if present.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_PATH_ENV, raising=False)
    DEFAULT_CONFIG.parent.mkdir()
    DEFAULT_CONFIG.write_text("bus:\n  from_default_path: 1\n", encoding="utf-8")
    from_env = tmp_path / "from-env.yaml"
    from_env.write_text("bus:\n  from_env_var: 1\n", encoding="utf-8")
    out = str(tmp_path / "out")

    assert main(["schema", "--out", out]) == 2
    assert "bus.from_default_path" in capsys.readouterr().err

    monkeypatch.setenv(CONFIG_PATH_ENV, str(from_env))
    assert main(["schema", "--out", out]) == 2
    assert "bus.from_env_var" in capsys.readouterr().err

    given = tmp_path / "given.yaml"
    given.write_text("bus:\n  given: 1\n", encoding="utf-8")
    assert main(["--config", str(given), "schema", "--out", out]) == 2
    assert "bus.given" in capsys.readouterr().err


def test_schema_writes_a_json_schema_per_event_type_and_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "json"
    assert main(["schema", "--out", str(out)]) == 0
    expected = {f"{t}.schema.json" for t in EventType} | {"config.schema.json"}
    assert {p.name for p in out.iterdir()} == expected
    assert sorted(capsys.readouterr().out.splitlines()) == sorted(str(out / n) for n in expected)
    for path in out.iterdir():
        schema = json.loads(path.read_text(encoding="utf-8"))
        _check_schema(schema, schema, path.name)
        assert schema["type"] == "object", path.name
    requested = json.loads((out / "agent.execution.requested.schema.json").read_text())
    assert requested["title"] == "agent.execution.requested data"
    assert set(requested["required"]) == {"task_id", "user_message"}
    model_config = _resolve(requested, requested["properties"]["model_config"])
    assert set(model_config["required"]) == {"provider", "model"}
    replied = json.loads((out / "agent.tool.approval.replied.schema.json").read_text())
    assert set(replied["required"]) == {"task_id", "approval_id", "approved"}
    config = json.loads((out / "config.schema.json").read_text())
    assert {"temporal", "bus", "bridge", "executor", "llm", "tools", "logging"} <= set(
        config["properties"]
    )


def test_committed_schemas_match_the_code() -> None:
    generated = {
        f"{name}.schema.json": json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in json_schemas().items()
    }
    committed = {
        p.name: p.read_text(encoding="utf-8") for p in COMMITTED_SCHEMAS.glob("*.schema.json")
    }
    stale = sorted(
        n for n in generated.keys() | committed.keys() if generated.get(n) != committed.get(n)
    )
    assert not stale, f"schemas/json is out of date ({', '.join(stale)}); run: {REGENERATE}"


_JSON_TYPES = {"object", "array", "string", "integer", "number", "boolean", "null"}


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """`node`, following a local `$ref` (possibly inside `anyOf` with null)."""
    if "anyOf" in node:
        node = next(n for n in node["anyOf"] if n.get("type") != "null")
    if "$ref" in node:
        ref: str = node["$ref"]
        assert ref.startswith("#/$defs/"), ref
        resolved: dict[str, Any] = root["$defs"][ref.removeprefix("#/$defs/")]
        return resolved
    return node


def _check_schema(root: dict[str, Any], node: Any, where: str) -> None:
    """A structural check of a JSON Schema: known types, resolvable refs, required ⊆ properties."""
    if isinstance(node, list):
        for item in node:
            _check_schema(root, item, where)
        return
    if not isinstance(node, dict):
        return
    if "$ref" in node:
        _resolve(root, node)
    kind = node.get("type")
    if kind is not None and not isinstance(kind, dict):
        kinds = kind if isinstance(kind, list) else [kind]
        assert set(kinds) <= _JSON_TYPES, f"{where}: unknown type {kind}"
    if "required" in node and isinstance(node.get("properties"), dict):
        assert set(node["required"]) <= set(node["properties"]), f"{where}: {node['required']}"
    for key, value in node.items():
        if key in ("properties", "$defs", "patternProperties"):
            for name, child in value.items():
                _check_schema(root, child, f"{where}/{name}")
        elif key != "default" and key != "examples":
            _check_schema(root, value, where)


# -- what the CLI prints: bus_client ------------------------------------------------------


def _event(event_type: EventType, data: dict[str, Any], sequence: str = "3") -> CloudEvent:
    return CloudEvent(
        id=f"agent-execution-t1/{sequence}",
        source="tests",
        type=event_type,
        data={"task_id": "t1", **data},
        extensions={TASKID_EXTENSION: "t1", "sequence": sequence},
    )


DESCRIBED: list[tuple[EventType, dict[str, Any], str]] = [
    (
        EventType.EXECUTION_STARTED,
        {"model_config": {"provider": "openai", "model": "gpt-x"}},
        "model=openai/gpt-x",
    ),
    (
        EventType.LLM_RESPONDED,
        {"iteration": 1, "message": {"content": "thinking\n  hard", "tool_calls": []}},
        "iteration 1: thinking hard",
    ),
    (
        EventType.LLM_RESPONDED,
        {
            "iteration": 2,
            "message": {
                "content": "",
                "tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}],
            },
        },
        'iteration 2:  tool calls: calculator({"expression": "1+1"})',
    ),
    (
        EventType.APPROVAL_RESOLVED,
        {"approval_id": "a1", "approved": True, "approver": "ann"},
        "a1: approved by ann",
    ),
    (
        EventType.APPROVAL_RESOLVED,
        {"approval_id": "a1", "approved": False, "timed_out": True},
        "a1: denied (timed out)",
    ),
    (EventType.TOOL_COMPLETED, {"name": "calculator", "result": 42}, "calculator -> 42"),
    (
        EventType.TOOL_COMPLETED,
        {"name": "calculator", "error": "bad expression"},
        "calculator -> error: bad expression",
    ),
    (
        EventType.EXECUTION_COMPLETED,
        {"iterations": 2, "final_message": "x" * 200},
        "after 2 iterations: " + "x" * 159 + "…",
    ),
    (
        EventType.EXECUTION_FAILED,
        {"error": {"type": "llm_error", "message": "unauthorised"}},
        "llm_error: unauthorised",
    ),
    (EventType.EXECUTION_CANCELLED, {"reason": "stop"}, "reason: stop"),
    (EventType.EXECUTION_REQUESTED, {"user_message": "hi"}, ""),
]


@pytest.mark.parametrize(("event_type", "data", "summary"), DESCRIBED)
def test_describe_each_event_type(
    event_type: EventType, data: dict[str, Any], summary: str
) -> None:
    assert describe(_event(event_type, data)) == f"[t1 #3] {event_type}  {summary}".rstrip()


def test_describe_an_approval_request_with_and_without_the_hint() -> None:
    event = _event(
        EventType.APPROVAL_REQUESTED,
        {
            "approval_id": "approval-1-1",
            "tool_call": {"id": "c1", "name": "save_note", "arguments": {"title": "t"}},
            "expires_at": "2030-01-01T00:00:00Z",
        },
    )
    first = (
        f'[t1 #3] {EventType.APPROVAL_REQUESTED}  approval-1-1: save_note({{"title": "t"}})'
        " expires 2030-01-01T00:00:00Z"
    )
    assert describe(event) == first
    settings = Settings()
    assert describe(event, lambda t, a: approve_hint(settings, t, a)) == (
        f"{first}\n    approve with: temporal-executor approve t1 approval-1-1"
    )
    settings.bus.default = "nats"
    assert describe(event, lambda t, a: approve_hint(settings, t, a)).endswith(
        "approve with: temporal-executor approve t1 approval-1-1 --transport nats"
    )


def test_the_approver_is_the_user_or_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", "ann")
    assert default_approver() == "ann"
    # A container user with no name: no variable and no passwd entry.
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    unknown_uid = next(uid for uid in range(54321, 64000) if not _has_passwd_entry(uid))
    monkeypatch.setattr(os, "getuid", lambda: unknown_uid)
    assert default_approver() == "cli"


def _has_passwd_entry(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_describe_an_event_without_data_or_sequence() -> None:
    event = CloudEvent(id="x", source="tests", type=EventType.EXECUTION_CANCELLED, data=None)
    assert describe(event) == f"[? #-] {EventType.EXECUTION_CANCELLED}  reason: None"


async def test_print_until_done_skips_redeliveries_and_stops_at_the_end() -> None:
    started = _event(EventType.EXECUTION_STARTED, {"model_config": {}}, "1")
    done = _event(EventType.EXECUTION_CANCELLED, {"reason": "r"}, "2")
    after = _event(EventType.EXECUTION_STARTED, {"model_config": {}}, "3")

    async def delivered() -> AsyncIterator[CloudEvent]:
        for event in (started, started, done, after):
            yield event

    out = io.StringIO()
    assert await print_until_done(delivered(), out) is done
    assert out.getvalue().splitlines() == [describe(started), describe(done)]
    out = io.StringIO()
    assert await print_until_done(delivered(), out, stop_at_terminal=False) is None
    assert out.getvalue().splitlines() == [describe(e) for e in (started, done, after)]


@pytest.mark.parametrize("bus", BUSES)
async def test_task_events_keeps_the_task_and_skips_what_is_not_an_event(bus: BusName) -> None:
    transport = create_transport(bus, Settings().bus)  # decoding needs no connection
    ours = request_event(ExecutionRequested(task_id="t1", user_message="hi"))
    theirs = request_event(ExecutionRequested(task_id="t2", user_message="hi"))

    def message(event: CloudEvent | None) -> InboundMessage:
        if event is None:
            return InboundMessage(source="s", key=None, value=b"\xff not json", headers=())
        value = json.dumps(
            {
                "specversion": "1.0",
                "id": event.id,
                "source": event.source,
                "type": event.type,
                "datacontenttype": "application/json",
                "taskid": event.extension(TASKID_EXTENSION),
                "data": event.data,
            }
        ).encode()
        headers = (("content-type", b"application/cloudevents+json"),)
        return InboundMessage(source="s", key=None, value=value, headers=headers)

    async def messages() -> AsyncIterator[InboundMessage]:
        for event in (None, theirs, ours):
            yield message(event)

    assert [e.id for e in [e async for e in task_events(transport, "t1", messages())]] == [ours.id]
    everything = [e.id async for e in task_events(transport, None, messages())]
    assert everything == [theirs.id, ours.id]
    assert ours.data == {
        "task_id": "t1",
        "user_message": "hi",
        "require_approval": False,
        "history": [],
        "metadata": {},
    }


# -- logs ---------------------------------------------------------------------------------


def _record(exc_info: Any = None, **extra: Any) -> logging.LogRecord:
    return logging.getLogger("te.test").makeRecord(
        "te.test", logging.WARNING, __file__, 1, "task %s stuck", ("t1",), exc_info, extra=extra
    )


def test_json_log_lines_carry_extra_fields_and_exceptions() -> None:
    try:
        message = "boom"
        raise ValueError(message)
    except ValueError:
        exc_info = sys.exc_info()
    line = JsonFormatter().format(_record(exc_info, task_id="t1", path=Path("/x")))
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "te.test"
    assert entry["message"] == "task t1 stuck"
    assert (entry["task_id"], entry["path"]) == ("t1", "/x")  # not JSON: str()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry["time"])
    assert entry["exception"].startswith("Traceback")
    assert entry["exception"].endswith("ValueError: boom")
    plain = json.loads(JsonFormatter().format(_record()))
    assert set(plain) == {"time", "level", "logger", "message"}


def test_text_log_lines_for_a_person() -> None:
    assert TextFormatter().format(_record()) == "WARNING te.test: task t1 stuck"
    assert TextFormatter().format(_record(reason="x", n=2)) == (
        "WARNING te.test: task t1 stuck reason=x n=2"
    )
    try:
        key = "k"
        raise KeyError(key)
    except KeyError:
        text = TextFormatter().format(_record(sys.exc_info()))
    first, *rest = text.splitlines()
    assert first == "WARNING te.test: task t1 stuck"
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "KeyError: 'k'"


@pytest.mark.parametrize(("fmt", "formatter"), [("json", JsonFormatter), ("text", TextFormatter)])
def test_configure_logging(fmt: str, formatter: type[logging.Formatter]) -> None:
    configure_logging(LoggingSettings.model_validate({"level": "DEBUG", "format": fmt}))
    root = logging.getLogger()
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    assert handler.stream is sys.stderr
    assert isinstance(handler.formatter, formatter)
    assert root.level == logging.DEBUG
    # Client libraries stay at WARNING, or quieter when the service is.
    assert all(logging.getLogger(n).level == logging.WARNING for n in NOISY_LOGGERS)
    configure_logging(LoggingSettings.model_validate({"level": "ERROR", "format": fmt}))
    assert all(logging.getLogger(n).level == logging.ERROR for n in NOISY_LOGGERS)
