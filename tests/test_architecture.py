"""The layers hold: each package imports only the ones below it (README, "Layout").

    schemas  ->  telemetry  ->  bus, Temporal helpers (tasks.temporal_connection,
             tasks.payload_storage, tasks.payload_encryption)  ->  tasks
             ->  bridge, gateway, worker  ->  CLI

Read from the source with `ast`, so a lazy import inside a function counts as much as one
at the top of a module. Checked: the installed package, i.e. the top-level folders and
`temporal_executor/` itself (the CLI, `config_file`, `logs`, `dev/`). Not checked: `bench/`
(its baseline consumer measures the raw aiokafka and nats clients on purpose) and `tests/`.
"""

import ast
import graphlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "temporal_executor"
LAYERS = ("schemas", "telemetry", "bus", "tasks", "bridge", "gateway", "worker")
# The CLI layer: everything in `temporal_executor/` that is not a linked layer folder.
CLI = "cli"

# What each layer (or one module, where it differs from its layer) may import of ours,
# as prefixes of module names below `temporal_executor.`. A layer may always import itself.
ALLOWED: dict[str, frozenset[str]] = {
    "schemas": frozenset(),
    # Spans, metrics and probes: every layer above records into it.
    "telemetry": frozenset({"schemas"}),
    "bus": frozenset({"schemas", "telemetry"}),
    # The Temporal connection helpers stand beside the bus: the worker uses them too.
    # With them, what their data converter is made of: payload storage and encryption.
    "tasks.temporal_connection": frozenset(
        {"schemas", "telemetry", "tasks.payload_storage", "tasks.payload_encryption"}
    ),
    "tasks.payload_storage": frozenset({"schemas"}),
    "tasks.payload_encryption": frozenset({"schemas"}),
    "tasks": frozenset({"schemas", "telemetry", "bus"}),
    "bridge": frozenset({"schemas", "telemetry", "bus", "tasks"}),
    "gateway": frozenset({"schemas", "telemetry", "bus", "tasks"}),
    "worker": frozenset({"schemas", "telemetry", "bus", "tasks.temporal_connection"}),
    CLI: frozenset({*LAYERS, CLI}),
}
# Third-party clients only one sub-package may import.
OWNED = {"aiokafka": "bus.kafka", "nats": "bus.nats"}


@dataclass(frozen=True)
class Module:
    name: str  # its import name, e.g. "temporal_executor.bridge.router"
    path: str
    source: str


def package_modules(root: Path = ROOT) -> Iterator[Module]:
    """Every module of the installed package, read from the real folders (not the links)."""
    for layer in LAYERS:
        yield from _modules_under(root / layer, f"{PACKAGE}.{layer}")
    yield from _modules_under(root / PACKAGE, PACKAGE)


def _modules_under(folder: Path, package: str) -> Iterator[Module]:
    for directory, subdirectories, files in os.walk(folder):  # does not follow links
        subdirectories[:] = sorted(
            d
            for d in subdirectories
            if d != "__pycache__" and not (Path(directory) / d).is_symlink()
        )
        for file in sorted(f for f in files if f.endswith(".py")):
            path = Path(directory) / file
            parts = path.relative_to(folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            name = ".".join((package, *parts))
            yield Module(name, str(path.relative_to(folder.parent)), path.read_text("utf-8"))


def imported(source: str) -> Iterator[tuple[int, str, str, int]]:
    """(line, name, module, level) of every name imported: `import a.b` is `a.b` in `a.b`;
    `from a import b` is `a.b` in `a` (`b` is a module of `a`, or a name in `a`)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}".lstrip("."), base, node.level


def _rule_for(module: str) -> tuple[str, frozenset[str]]:
    """The most specific rule, a module's own or else its layer's: (what it covers, what
    else it allows). What a rule covers may import itself."""
    for key in sorted(ALLOWED, key=len, reverse=True):
        if _within(module, key):
            return key, ALLOWED[key]
    return module, frozenset()  # pragma: no cover - every module is in a layer


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _layer(module: str) -> str:
    return module.split(".")[0]


def violations(modules: Iterable[Module]) -> list[str]:
    found: list[str] = []
    for module in modules:
        me = _ours(module.name)
        scope, allowed = _rule_for(me)
        for line, target, parent, level in imported(module.source):
            where = f"{module.path}:{line}"
            if level:
                found.append(f"{where}: relative import; import {PACKAGE}.… absolutely")
                continue
            top = target.split(".")[0]
            if top in OWNED and not _within(me, OWNED[top]):
                found.append(f"{where}: imports {top}, which only {OWNED[top]} may import")
            if top != PACKAGE:
                continue
            ours, within = _ours(target), _ours(parent)
            if any(_within(ours, a) or _within(within, a) for a in {scope, *allowed}):
                continue
            found.append(f"{where}: {me} may not import {PACKAGE}.{ours}")
    return list(dict.fromkeys(found))  # one line per statement, however many names


def _ours(name: str) -> str:
    """A module name of ours the way the rules name it: `temporal_executor.bus.codec` is
    `bus.codec`; the CLI's modules (`temporal_executor.cli`, `.config_file`, …) are `cli`."""
    ours = name.removeprefix(PACKAGE).removeprefix(".")
    return ours if _layer(ours) in LAYERS else CLI


def import_cycle(modules: Iterable[Module]) -> list[str]:
    """Modules of ours that import one another round about (lazily or not); [] if none."""
    modules = list(modules)
    names = {m.name for m in modules}
    graph: dict[str, set[str]] = {}
    for module in modules:
        graph[module.name] = {
            target if target in names else parent
            for _, target, parent, level in imported(module.source)
            if not level and (target in names or parent in names)
        } - {module.name}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle: list[str] = exc.args[1]
        return cycle
    return []


def test_every_layer_imports_only_the_layers_below_it() -> None:
    modules = list(package_modules())
    layers_seen = {_layer(_ours(m.name)) for m in modules}
    assert layers_seen == {*LAYERS, CLI}
    assert len(modules) > 60, "the walk should see the whole package"
    assert violations(modules) == []


def test_no_modules_import_each_other() -> None:
    assert import_cycle(package_modules()) == []


def test_an_import_cycle_is_found() -> None:
    modules = [
        _module("cli", "from temporal_executor import commands\n"),
        _module("commands", "def f():\n    from temporal_executor.cli import hint\n"),
        _module("logs", "from temporal_executor.cli import main\n"),
    ]
    cycle = import_cycle(modules)
    assert set(cycle) == {f"{PACKAGE}.cli", f"{PACKAGE}.commands"}
    assert import_cycle(modules[::2]) == []


def _module(name: str, source: str) -> Module:
    return Module(f"{PACKAGE}.{name}", f"{name.replace('.', '/')}.py", source)


@pytest.mark.parametrize(
    ("name", "source", "says"),
    [
        ("schemas.task", "from temporal_executor.bus.codec import decode", "may not import"),
        ("bus.codec", "import temporal_executor.tasks.service", "may not import"),
        ("tasks.service", "from temporal_executor.bridge.router import Router", "may not import"),
        ("tasks.temporal_connection", "from temporal_executor.bus import codec", "may not"),
        ("tasks.temporal_connection", "from temporal_executor.tasks import service", "may not"),
        ("bridge.router", "from temporal_executor.worker import activities", "may not import"),
        ("bridge.router", "from temporal_executor.gateway import create_app", "may not import"),
        ("gateway._rest", "from temporal_executor.bridge.router import Router", "may not"),
        ("worker.service", "from temporal_executor.bridge import router", "may not import"),
        ("worker.service", "from temporal_executor.tasks.service import TaskService", "may not"),
        ("worker.service", "from temporal_executor.tasks import service", "may not import"),
        ("worker.service", "from temporal_executor.cli import main", "may not import"),
        ("bus.codec", "def f():\n    from temporal_executor.tasks import errors\n", "may not"),
        ("bus.kafka.transport", "import nats", "only bus.nats may import"),
        ("bus.transport", "from aiokafka import AIOKafkaProducer", "only bus.kafka may"),
        ("worker.publisher", "import nats.js", "only bus.nats may import"),
        ("cli", "from aiokafka import AIOKafkaConsumer", "only bus.kafka may import"),
        ("bridge.router", "from .dispatcher import Dispatcher", "relative import"),
    ],
)
def test_an_import_across_the_rule_is_found(name: str, source: str, says: str) -> None:
    [problem] = violations([_module(name, source)])
    assert says in problem


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("schemas.task", "from temporal_executor.schemas.conversation import ChatMessage"),
        ("bus.codec", "from temporal_executor.schemas.cloudevent import CloudEvent"),
        ("bus.nats.transport", "import nats.js.errors"),
        ("bus.kafka.consumer", "from aiokafka.errors import KafkaError"),
        ("tasks.service", "from temporal_executor.bus.transport import Transport"),
        ("tasks.service", "from temporal_executor.tasks.errors import TaskError"),
        ("bus.kafka.consumer", "from temporal_executor.bus.errors import BusError"),
        ("bridge.router", "from temporal_executor.tasks.service import TaskService"),
        ("gateway._app", "from temporal_executor.tasks import errors"),
        ("worker.service", "from temporal_executor.tasks.temporal_connection import connect"),
        ("worker.service", "from temporal_executor.tasks import temporal_connection"),
        ("cli", "from temporal_executor.worker.service import run_worker"),
        ("cli", "from temporal_executor import commands"),
    ],
)
def test_an_import_the_rule_allows_passes(name: str, source: str) -> None:
    assert violations([_module(name, source)]) == []


def test_the_walk_reads_real_folders_and_skips_links(tmp_path: Path) -> None:
    (tmp_path / "bus" / "nats").mkdir(parents=True)
    (tmp_path / "bus" / "nats" / "__init__.py").write_text("import nats\n")
    (tmp_path / PACKAGE).mkdir()
    (tmp_path / PACKAGE / "cli.py").write_text("import aiokafka\n")
    (tmp_path / PACKAGE / "bus").symlink_to(tmp_path / "bus")
    modules = list(package_modules(tmp_path))
    assert [(m.name, m.path) for m in modules] == [
        (f"{PACKAGE}.bus.nats", "bus/nats/__init__.py"),
        (f"{PACKAGE}.cli", f"{PACKAGE}/cli.py"),
    ]
    assert [p.split(": ", 1)[1] for p in violations(modules)] == [
        "imports aiokafka, which only bus.kafka may import"
    ]
