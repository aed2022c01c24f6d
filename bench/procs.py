"""Processes the benchmark runs: bridges, workers, the delay proxy; their memory from /proc."""

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from pathlib import Path

import yaml

from temporal_executor.schemas.config import Settings

PROFILE_ENV = "BENCH_PROFILE"  # e.g. "bridge" or "bridge,worker": run them under py-spy


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the benchmark dies (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of `pid` in MB, from /proc (Linux)."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


class Proc:
    """A child process of the benchmark, stopped with SIGTERM (SIGKILL if it lingers)."""

    def __init__(self, name: str, args: list[str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.profile = False  # attach py-spy (collapsed stacks in <log>.pyspy.txt)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, *, stdout_pipe: bool = False) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.args,
                stdout=asyncio.subprocess.PIPE if stdout_pipe else log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        if self.profile:
            spy = str(Path(sys.executable).with_name("py-spy"))
            out = str(self.log_path.with_suffix(".pyspy.txt"))
            args = [spy, "record", "-r", "200", "-f", "raw", "-o", out, "--pid", str(self.pid)]
            # py-spy writes its output when the process it watches exits.
            await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )

    def check_alive(self) -> None:
        if self.process is not None and self.process.returncode is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            msg = f"{self.name} exited with {self.process.returncode}: {tail}"
            raise RuntimeError(msg)

    def rss(self) -> tuple[float, float]:
        return rss_mb(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


def write_config(settings: Settings, path: Path) -> Path:
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json")), encoding="utf-8")
    return path


def service(role: str, settings: Settings, workdir: Path, name: str) -> Proc:
    """`temporal-executor bridge|worker` as a real process, as users run it."""
    config = write_config(settings, workdir / f"{name}.yaml")
    if role == "lean-bridge":
        args = [sys.executable, "-m", "bench.lean_bridge", str(config)]
    else:
        args = [sys.executable, "-m", "temporal_executor", "--config", str(config), role]
    proc = Proc(name, args, workdir / f"{name}.log")
    profile = os.environ.get(PROFILE_ENV)
    proc.profile = bool(profile and role in profile.split(","))
    return proc


async def start_proxy(target: str, delay_ms: float, workdir: Path) -> tuple[Proc, str]:
    """The delay proxy in its own process; returns it and the address to connect to."""
    args = [sys.executable, "-m", "bench.proxy", "--target", target, "--delay-ms", str(delay_ms)]
    proxy = Proc("proxy", args, workdir / "proxy.log")
    await proxy.start(stdout_pipe=True)
    assert proxy.process is not None
    assert proxy.process.stdout is not None
    line = await asyncio.wait_for(proxy.process.stdout.readline(), 30)
    return proxy, f"127.0.0.1:{int(line)}"
