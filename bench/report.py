"""The one table the benchmark prints: one row per figure, one column per bus and N."""

from collections.abc import Callable
from typing import Any

from temporal_executor.schemas.task import BusName

Value = Any  # float, or a tuple of floats (percentiles, idle/peak, rate/concurrency)
Getter = Callable[[dict[str, Value], dict[str, Value] | None], Value]


def _p(value: Value) -> str:
    return "/".join(f"{v:.1f}" for v in value)


def _rate(value: Value) -> str:
    if isinstance(value, tuple):
        return f"{value[0]:.1f} (c={value[1]})"
    return f"{value:.1f}"


def _first(value: Value) -> float:
    return float(value[0] if isinstance(value, tuple) else value)


def _ratio(num: str, den: str) -> Getter:
    def get(col: dict[str, Value], _: dict[str, Value] | None) -> Value:
        if num not in col or den not in col:
            return None
        return _first(col[num]) / _first(col[den])

    return get


def _ratio_of_runs(col: dict[str, Value], _: dict[str, Value] | None) -> Value:
    """Each bridge run against the direct runs either side of it, when there were some."""
    if "bridge_direct_ratio" in col:
        return col["bridge_direct_ratio"]
    return _ratio("bridge_local", "direct_local")(col, None)


def _key(key: str) -> Getter:
    return lambda col, _: col.get(key)


def _cost(col: dict[str, Value], _: dict[str, Value] | None) -> Value:
    return 1000 / col["bridge_local"] if "bridge_local" in col else None


def _growth(col: dict[str, Value], first: dict[str, Value] | None) -> Value:
    if first is None or first is col or "bridge_local" not in col:
        return None
    return first["bridge_local"] / col["bridge_local"]


def _growth_vs_direct(col: dict[str, Value], first: dict[str, Value] | None) -> Value:
    """The bridge's growth over the direct loop's: what the server's own slowing (it keeps
    every workflow each phase left open) does not explain."""
    bridge = _growth(col, first)
    if bridge is None or first is None or "direct_local" not in col:
        return None
    return bridge / (_first(first["direct_local"]) / _first(col["direct_local"]))


def _started_gap(col: dict[str, Value], _: dict[str, Value] | None) -> Value:
    if "light_started" not in col or "bare_rpc" not in col:
        return None
    return col["light_started"][0] - col["bare_rpc"][0]


# label, getter, format, target (text), check
ROWS: list[tuple[str, Getter, Callable[[Value], str], str, Callable[[float], bool] | None]] = [
    ("1. bridge starts/s, local", _key("bridge_local"), _rate, "", None),
    ("1. direct client starts/s, local (best c)", _key("direct_local"), _rate, "", None),
    ("1. bridge runs, starts/s", _key("bridge_runs"), _p, "(median above)", None),
    ("1. direct runs, around them", _key("direct_runs"), _p, "(median above)", None),
    (
        "1. ratio bridge/direct, local (median of runs)",
        _ratio_of_runs,
        "{:.2f}".format,
        ">= 0.95",
        lambda v: v >= 0.95,
    ),
    ("1. bridge CPU ms per start (its process)", _key("bridge_cpu"), "{:.2f}".format, "", None),
    ("1. direct client CPU ms per start", _key("direct_cpu"), "{:.2f}".format, "", None),
    ("2. bridge starts/s, RPC delay", _key("bridge_remote"), _rate, "", None),
    ("2. direct client starts/s, RPC delay (best c)", _key("direct_remote"), _rate, "", None),
    ("2. naive consumer starts/s, RPC delay", _key("naive_remote"), _rate, "", None),
    (
        "2. ratio bridge/direct, RPC delay",
        _ratio("bridge_remote", "direct_remote"),
        "{:.2f}".format,
        ">= 0.95",
        lambda v: v >= 0.95,
    ),
    (
        "2. ratio bridge/naive, RPC delay",
        _ratio("bridge_remote", "naive_remote"),
        "{:.2f}".format,
        ">= 3",
        lambda v: v >= 3,
    ),
    ("3. naive consumer starts/s, local", _key("naive_local"), _rate, "", None),
    (
        "3. ratio ours/naive, local",
        _ratio("bridge_local", "naive_local"),
        "{:.2f}".format,
        "",
        None,
    ),
    (
        "3. ratio ours/naive, RPC delay",
        _ratio("bridge_remote", "naive_remote"),
        "{:.2f}".format,
        "",
        None,
    ),
    ("4. bare start_workflow RPC ms p50/p95/p99", _key("bare_rpc"), _p, "(floor)", None),
    ("4. light load: published->started ms", _key("light_started"), _p, "", None),
    (
        "4. light: started p50 - bare RPC p50, ms",
        _started_gap,
        "{:.1f}".format,
        "<= 10",
        lambda v: v <= 10,
    ),
    ("4. light load: published->completed ms", _key("light_completed"), _p, "p50 <= 50", None),
    ("4. sustained: published->started ms", _key("steady_started"), _p, "", None),
    ("4. sustained: published->completed ms", _key("steady_completed"), _p, "", None),
    ("5. full agent tasks/s (worker)", _key("agent"), _rate, "", None),
    ("5. minimal workflow tasks/s (9 activities)", _key("minimal"), _rate, "", None),
    (
        "5. ratio agent/minimal",
        _ratio("agent", "minimal"),
        "{:.2f}".format,
        ">= 0.8",
        lambda v: v >= 0.8,
    ),
    ("6. bridge RSS MB idle/peak", _key("bridge_rss"), _p, "peak <= idle + 15", None),
    (
        "6. bridge RSS MB idle/peak, bridge modules only",
        _key("lean_bridge_rss"),
        _p,
        "peak <= 64",
        None,
    ),
    ("6. worker RSS MB idle/peak", _key("worker_rss"), _p, "peak <= 128", None),
    ("7. per-task cost ms (1000 / bridge starts/s)", _cost, "{:.2f}".format, "flat", None),
    ("7. per-task cost vs first N", _growth, "{:.2f}".format, "~1.0", None),
    (
        "7. the same, over the direct loop's",
        _growth_vs_direct,
        "{:.2f}".format,
        "~1.0",
        lambda v: v <= 1.1,
    ),
    ("7. two bridges starts/s, local", _key("two_bridges"), _rate, "", None),
    (
        "7. ratio two bridges/one",
        _ratio("two_bridges", "bridge_local"),
        "{:.2f}".format,
        ">= 1 (no slower)",
        lambda v: v >= 0.95,
    ),
]


def _sdk_rows() -> list[tuple[str, Getter, Callable[[Value], str], str, None]]:
    """Section 8: the real SDKs, with and without an MCP server (bench/sdk.py)."""
    rows: list[tuple[str, Getter, Callable[[Value], str], str, None]] = []
    for kind in ("scripted", "openai", "anthropic"):
        for mcp in (False, True):
            name = f"{kind}{' + MCP' if mcp else ''}"
            prefix = f"sdk_{kind}{'_mcp' if mcp else ''}_"
            rows += [
                (
                    f"8. {name}: light load published->completed ms",
                    _key(prefix + "completed"),
                    _p,
                    "p50 <= 50",
                    None,
                ),
                (
                    f"8. {name}: worker RSS MB idle/after burst/peak",
                    _key(prefix + "worker_rss"),
                    _p,
                    "peak <= 128",
                    None,
                ),
                (
                    f"8. {name}: bridge RSS MB idle/peak",
                    _key(prefix + "bridge_rss"),
                    _p,
                    "peak <= idle + 15",
                    None,
                ),
            ]
    return rows


ROWS += _sdk_rows()

CHECKS_ON_P50 = {
    "4. light load: published->completed ms": lambda v: v[0] <= 50,
    "6. bridge RSS MB idle/peak": lambda v: v[1] <= v[0] + 15,
    "6. bridge RSS MB idle/peak, bridge modules only": lambda v: v[1] <= 64,
    "6. worker RSS MB idle/peak": lambda v: v[1] <= 128,
}
for _label, *_ in ROWS:
    if _label.startswith("8. ") and "->completed" in _label:
        CHECKS_ON_P50[_label] = lambda v: v[0] <= 50
    elif _label.startswith("8. ") and "worker RSS" in _label:
        CHECKS_ON_P50[_label] = lambda v: v[2] <= 128
    elif _label.startswith("8. ") and "bridge RSS" in _label:
        CHECKS_ON_P50[_label] = lambda v: v[1] <= v[0] + 15


class Table:
    def __init__(self, ns: list[int], buses: list[BusName]) -> None:
        self.columns = [(n, bus) for n in ns for bus in buses]
        self.values: dict[str, dict[str, Value]] = {self.name(n, b): {} for n, b in self.columns}

    @staticmethod
    def name(n: int, bus: BusName) -> str:
        return f"{bus} N={n}"

    def set(self, n: int, bus: BusName, key: str, value: Value) -> None:
        self.values[self.name(n, bus)][key] = value

    def set_all(self, n: int, key: str, value: Value) -> None:
        for col_n, bus in self.columns:
            if col_n == n:
                self.set(n, bus, key, value)

    def render(self) -> str:
        names = [self.name(n, b) for n, b in self.columns]
        firsts = {b: self.values[self.name(self.columns[0][0], b)] for _, b in self.columns}
        lines = [
            "| figure | " + " | ".join(names) + " | target |",
            "|---|" + "---|" * len(names) + "---|",
        ]
        for label, get, fmt, target, check in ROWS:
            cells = []
            for (_, bus), name in zip(self.columns, names, strict=True):
                value = get(self.values[name], firsts[bus])
                cells.append(self._cell(label, value, fmt, check))
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")
        return "\n".join(lines)

    @staticmethod
    def _cell(
        label: str, value: Value, fmt: Callable[[Value], str], check: Callable[[float], bool] | None
    ) -> str:
        if value is None:
            return "-"
        text = fmt(value)
        verdict: bool | None = None
        if check is not None:
            verdict = check(value)
        elif label in CHECKS_ON_P50:
            verdict = CHECKS_ON_P50[label](value)
        if verdict is None:
            return text
        return f"{text} {'ok' if verdict else 'MISS'}"
