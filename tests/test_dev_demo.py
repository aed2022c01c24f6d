"""The README's first steps, exactly as a newcomer runs them: `temporal-executor dev --demo`
in one terminal, the `approve` command it prints in another, then Ctrl-C.

Real processes on real servers: the dev stack runs on free ports given with the port flags,
in a temporary directory, so nothing is written into the repository and the session's
servers are not disturbed.
"""

import asyncio
import contextlib
import os
import re
import shlex
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from temporal_executor.commands import DEMO_MESSAGE
from temporal_executor.dev.embedded_stack import ENV_OVERRIDES, EmbeddedStack, ServerName
from temporal_executor.dev.stack import DevPorts, _banner
from temporal_executor.schemas.config import Settings
from temporal_executor.schemas.event_types import EventType

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config" / "temporal-executor.yaml"
# What a person types: the console script pip installed next to the interpreter.
CONSOLE_SCRIPT = Path(sys.executable).parent / "temporal-executor"

STARTUP_TIMEOUT = 90.0  # servers up, worker and bridge connected, first events out
EVENT_TIMEOUT = 30.0
EXIT_TIMEOUT = 30.0
APPROVE_HINT = re.compile(r"^\s+approve with: (temporal-executor approve \S+ \S+.*)$")
EXPORT = re.compile(r"^\s+export (\w+)=(\S+)$")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _children(pid: int) -> dict[int, str]:
    """The live child processes of `pid` (pid -> command name), from /proc."""
    found: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()
            name, _, rest = text.partition(" (")[2].rpartition(") ")
            state, ppid = rest.split()[:2]
            if int(ppid) == pid and state != "Z":
                found[int(stat.parent.name)] = name
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _env_without_servers() -> dict[str, str]:
    """This environment minus the variables that would make `dev` use external servers."""
    return {k: v for k, v in os.environ.items() if k not in ENV_OVERRIDES.values()}


class Terminal:
    """A command running in its own terminal: what it printed so far, and its exit."""

    def __init__(self, process: asyncio.subprocess.Process, stderr: Path) -> None:
        self.process = process
        self.stderr = stderr
        self.lines: list[str] = []

    async def wait_for_line(self, pattern: str | re.Pattern[str], timeout: float) -> re.Match[str]:
        """Read stdout until a line matches; fail with everything printed so far."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        for line in self.lines:
            if match := regex.search(line):
                return match
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while raw := await self.process.stdout.readline():
                    self.lines.append(raw.decode().rstrip("\n"))
                    if match := regex.search(self.lines[-1]):
                        return match
        except TimeoutError:
            pytest.fail(f"no line matching {regex.pattern!r} in {timeout}s\n{self.transcript()}")
        pytest.fail(f"stdout ended before a line matched {regex.pattern!r}\n{self.transcript()}")

    async def exit_code(self, timeout: float = EXIT_TIMEOUT) -> int:
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            pytest.fail(f"still running {timeout}s later\n{self.transcript()}")
        assert self.process.stdout is not None
        self.lines += (await self.process.stdout.read()).decode().splitlines()
        assert self.process.returncode is not None
        return self.process.returncode

    def transcript(self) -> str:
        stderr = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        return "--- stdout ---\n" + "\n".join(self.lines) + "\n--- stderr ---\n" + stderr[-4000:]


@pytest.fixture
async def dev_demo(tmp_path: Path) -> AsyncIterator[tuple[Terminal, dict[str, int]]]:
    """`temporal-executor dev --demo` on free ports, run from an empty directory."""
    servers = ["temporal", "ui", "kafka", "nats", "gateway"]
    ports = dict(zip(servers, _free_ports(len(servers)), strict=True))
    flags = [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]
    with (tmp_path / "dev.stderr").open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "temporal_executor",
            "--config",
            str(CONFIG),
            "dev",
            "--demo",
            "--data-dir",
            str(tmp_path / "dev-data"),
            *flags,
            cwd=tmp_path,
            env=_env_without_servers(),
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    terminal = Terminal(process, tmp_path / "dev.stderr")
    yield terminal, ports
    if process.returncode is None:  # the test failed half-way: leave nothing running
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), EXIT_TIMEOUT)
        except TimeoutError:
            process.kill()  # the stack's watchdog then stops the servers
            await process.wait()


async def test_demo_is_approved_from_another_terminal_and_ctrl_c_stops_everything(
    dev_demo: tuple[Terminal, dict[str, int]], tmp_path: Path
) -> None:
    dev, ports = dev_demo
    hint = (await dev.wait_for_line(APPROVE_HINT, STARTUP_TIMEOUT)).group(1)

    # The banner said where the servers are, and how another terminal finds them.
    banner = "\n".join(dev.lines)
    assert f"Temporal    127.0.0.1:{ports['temporal']}" in banner
    assert f"Temporal UI http://127.0.0.1:{ports['ui']}" in banner
    assert f"Kafka       127.0.0.1:{ports['kafka']}" in banner
    assert f"NATS        nats://127.0.0.1:{ports['nats']}" in banner
    exports = {m[1]: m[2] for line in dev.lines if (m := EXPORT.match(line))}
    assert exports == {
        "TEMPORAL_ADDRESS": f"127.0.0.1:{ports['temporal']}",
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{ports['kafka']}",
        "NATS_URL": f"nats://127.0.0.1:{ports['nats']}",
    }
    assert all(_accepts(port) for port in ports.values()), "a server is not listening"
    # The scripted model asked before saving the note, and ran the calculator meanwhile.
    assert any(
        f"{EventType.APPROVAL_REQUESTED}  approval-1-2: save_note(" in line for line in dev.lines
    )
    await dev.wait_for_line(
        re.escape(f"{EventType.TOOL_COMPLETED}  calculator -> 42"), EVENT_TIMEOUT
    )

    # "Run that command in a second terminal", with the variables the banner printed.
    words = shlex.split(hint)
    assert words[:2] == ["temporal-executor", "approve"]
    assert words[3] == "approval-1-2"
    approve = await asyncio.create_subprocess_exec(
        str(CONSOLE_SCRIPT),
        "--config",
        str(CONFIG),
        *words[1:],
        cwd=tmp_path,
        env={**_env_without_servers(), **exports},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(approve.communicate(), EVENT_TIMEOUT)
    assert approve.returncode == 0, err.decode()
    task_id = words[2]
    assert out.decode().startswith(f"approved approval-1-2 of task {task_id} (sent to ")

    await dev.wait_for_line(
        rf"\[{task_id} #\d+\] {re.escape(EventType.APPROVAL_RESOLVED)}  approval-1-2: approved by ",
        EVENT_TIMEOUT,
    )
    await dev.wait_for_line(rf"{re.escape(EventType.TOOL_COMPLETED)}  save_note -> ", EVENT_TIMEOUT)
    await dev.wait_for_line(
        rf"\[{task_id} #\d+\] {re.escape(EventType.EXECUTION_COMPLETED)}  after 2 iterations",
        EVENT_TIMEOUT,
    )
    await dev.wait_for_line(r"^Demo done\. Press Ctrl-C to stop the stack\.$", EVENT_TIMEOUT)
    # The note went where config says, relative to where `dev` was started.
    note = tmp_path / ".temporal-executor" / "notes" / "demo.txt"
    assert note.read_text(encoding="utf-8") == DEMO_MESSAGE

    # Ctrl-C: the worker, the bridge and every server stop, and the exit is clean.
    servers = _children(dev.process.pid)
    for server in ("temporal", "nats-server", "tansu"):  # tansu's name carries its version
        assert any(name.startswith(server) for name in servers.values()), servers
    dev.process.send_signal(signal.SIGINT)
    assert await dev.exit_code() == 0, dev.transcript()
    assert dev.lines[-1] == "embedded stack stopped"
    assert not [pid for pid in servers if _alive(pid)], "a server outlived `dev`"
    assert not [port for port in ports.values() if _accepts(port)], "a port is still open"


async def test_ctrl_c_while_the_demo_waits_for_approval(
    dev_demo: tuple[Terminal, dict[str, int]],
) -> None:
    # A newcomer who does not approve and presses Ctrl-C must get their terminal back.
    dev, ports = dev_demo
    await dev.wait_for_line(APPROVE_HINT, STARTUP_TIMEOUT)
    servers = _children(dev.process.pid)
    dev.process.send_signal(signal.SIGINT)
    assert await dev.exit_code() == 0, dev.transcript()
    assert not any("Demo done" in line for line in dev.lines)
    assert dev.lines[-1] == "embedded stack stopped"
    assert not [pid for pid in servers if _alive(pid)], "a server outlived `dev`"
    assert not [port for port in ports.values() if _accepts(port)], "a port is still open"


async def test_a_port_in_use_is_named_and_nothing_is_left_running(tmp_path: Path) -> None:
    [nats_port, *others] = _free_ports(4)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", nats_port))
        taken.listen()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "temporal_executor",
            "--config",
            str(CONFIG),
            "dev",
            "--demo",
            "--data-dir",
            str(tmp_path / "dev-data"),
            "--nats-port",
            str(nats_port),
            "--temporal-port",
            str(others[0]),
            "--ui-port",
            str(others[1]),
            "--kafka-port",
            str(others[2]),
            cwd=tmp_path,
            env=_env_without_servers(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), STARTUP_TIMEOUT)
    assert process.returncode == 1, (out + err).decode()
    message = err.decode()
    assert re.search(
        rf"^temporal-executor dev: nats at nats://127\.0\.0\.1:{nats_port} exited", message, re.M
    ), message
    assert "address already in use" in message  # the end of the server's log
    assert "Traceback" not in message
    assert not out, "no banner, no demo: the stack never started"
    assert not [port for port in others if _accepts(port)], "a server was left running"


@pytest.mark.parametrize(
    ("ports", "exports"),
    [
        (DevPorts(), []),
        (
            DevPorts(temporal=1, ui=2, kafka=3, nats=4),
            [
                "  export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:3",
                "  export NATS_URL=nats://127.0.0.1:4",
                "  export TEMPORAL_ADDRESS=127.0.0.1:1",
            ],
        ),
    ],
)
def test_the_banner_tells_other_terminals_about_unusual_ports(
    ports: DevPorts, exports: list[str]
) -> None:
    # Servers given by the environment are used as they are, so no process is needed here.
    servers: dict[ServerName, str] = {
        "temporal": "127.0.0.1:1",
        "kafka": "127.0.0.1:3",
        "nats": "nats://127.0.0.1:4",
    }
    stack = EmbeddedStack(env={ENV_OVERRIDES[name]: address for name, address in servers.items()})
    lines = _banner(stack, Path("dev-data"), ports, Settings()).splitlines()
    assert lines[lines.index("Send a task from another terminal:") + 1 : -2] == exports
    # The default provider is scripted: the banner must say no model is called.
    assert any("scripted provider" in line and "no model is called" in line for line in lines)
    assert lines[-2] == '  temporal-executor send "Please save a note about Temporal" --follow'
