from pathlib import Path

import pytest

from temporal_executor.schemas.config import ToolSettings
from temporal_executor.worker.errors import ConfigurationError, InvalidToolArguments
from temporal_executor.worker.tools.builtin import calculator, current_time
from temporal_executor.worker.tools.registry import ToolRegistry


def greet(name: str, times: int = 1) -> str:
    """Greet someone, possibly several times."""
    return " ".join([f"hello {name}"] * times)


async def shout(text: str) -> str:
    return text.upper()


def prefixed(prefix: str) -> object:
    def tool(text: str) -> str:
        return prefix + text

    return tool


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("6 * 7", 42),
        ("(2 + 3) * 4", 20),
        ("-2 ** 2", -4),
        ("sqrt(16) + abs(-1)", 5.0),
        ("7 // 2 % 3", 0),
    ],
)
def test_calculator(expression: str, value: float) -> None:
    assert calculator(expression) == value


@pytest.mark.parametrize("expression", ["__import__('os')", "2 ** 100000", "1 +", "'a' * 3", "x"])
def test_calculator_refuses_what_is_not_arithmetic(expression: str) -> None:
    with pytest.raises(InvalidToolArguments):
        calculator(expression)


def test_current_time_checks_the_zone() -> None:
    assert current_time("Europe/Paris")[-6:] in ("+01:00", "+02:00")
    with pytest.raises(InvalidToolArguments, match="unknown timezone"):
        current_time("Mars/Olympus")


async def test_callables_get_a_schema_from_their_signature(tmp_path: Path) -> None:
    registry = ToolRegistry(
        [
            ToolSettings(name="greet", function="tests.test_tools:greet"),
            ToolSettings(name="shout", function="tests.test_tools:shout", require_approval=True),
            ToolSettings(name="save_note", options={"directory": str(tmp_path)}),
            ToolSettings(name="pre", function="tests.test_tools:prefixed", options={"prefix": ">"}),
        ]
    )
    greet_tool = registry.get("greet")
    assert greet_tool is not None
    assert greet_tool.spec.description == "Greet someone, possibly several times."
    assert greet_tool.spec.parameters["required"] == ["name"]
    assert greet_tool.spec.parameters["properties"]["times"]["type"] == "integer"
    assert await greet_tool({"name": "ada", "times": 2}) == "hello ada hello ada"
    with pytest.raises(InvalidToolArguments, match="times"):
        await greet_tool({"name": "ada", "times": "many"})
    shout_tool = registry.get("shout")
    assert shout_tool is not None
    assert await shout_tool({"text": "hi"}) == "HI"
    save = registry.get("save_note")
    assert save is not None
    assert "saved 5 characters" in await save({"title": "a/b c", "text": "hello"})
    assert (tmp_path / "a-b-c.txt").read_text() == "hello"
    pre = registry.get("pre")
    assert pre is not None
    assert await pre({"text": "x"}) == ">x"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (ToolSettings(name="nope"), "not a built-in tool"),
        (ToolSettings(name="x", function="tests.test_tools:missing"), "cannot load"),
        (ToolSettings(name="x", function="no_such_module_here:f"), "cannot load"),
        (ToolSettings(name="x", function="tests.test_tools:REPO"), "not callable"),
    ],
)
def test_bad_tool_config_fails_at_start(entry: ToolSettings, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ToolRegistry([entry])


REPO = "not a function"
