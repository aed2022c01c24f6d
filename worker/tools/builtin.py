"""Built-in tools: small, safe, and enough for the demo to show an approval.

Each is a plain function whose signature and docstring make its JSON Schema.
"""

import ast
import math
import operator
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from temporal_executor.worker.errors import InvalidToolArguments

_BINARY_OPERATORS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY_OPERATORS: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}
# A huge exponent would hang the worker; no useful answer needs one.
_MAX_EXPONENT = 1000


def calculator(expression: str) -> float | int:
    """Evaluate an arithmetic expression, e.g. "(2 + 3) * 4" or "sqrt(2) * pi"."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        msg = f"not an arithmetic expression: {expression!r}"
        raise InvalidToolArguments(msg) from None
    result = _evaluate(tree.body)
    if not isinstance(result, int | float):
        msg = f"not an arithmetic expression: {expression!r}"
        raise InvalidToolArguments(msg)
    return result


def _evaluate(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            msg = f"exponent {right} is too large"
            raise InvalidToolArguments(msg)
        return _BINARY_OPERATORS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPERATORS:
        return _UNARY_OPERATORS[type(node.op)](_evaluate(node.operand))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](*(_evaluate(arg) for arg in node.args))
    msg = f"unsupported in an arithmetic expression: {ast.unparse(node)!r}"
    raise InvalidToolArguments(msg)


def current_time(timezone: str = "UTC") -> str:
    """The current date and time in an IANA timezone such as "Europe/Paris", as RFC 3339."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        msg = f"unknown timezone {timezone!r}"
        raise InvalidToolArguments(msg) from None
    return datetime.now(UTC).astimezone(zone).isoformat(timespec="seconds")


def make_save_note(directory: str = ".temporal-executor/notes") -> Callable[[str, str], str]:
    """Build `save_note` writing into `directory` (a tool option in config)."""
    root = Path(directory)

    def save_note(title: str, text: str) -> str:
        """Save a note as a text file on the worker; returns where it was written."""
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", title).strip("-")[:64] or "note"
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"{slug}.txt"
        path.write_text(text, encoding="utf-8")
        return f"saved {len(text)} characters to {path}"

    return save_note


# name -> factory taking the tool's `options` from config.
BUILTIN_TOOLS: dict[str, Callable[..., Callable[..., Any]]] = {
    "calculator": lambda: calculator,
    "current_time": lambda: current_time,
    "save_note": make_save_note,
}
