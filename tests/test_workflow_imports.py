"""The workflow module imports activity declarations, never their I/O implementations."""

import inspect
import json
import subprocess
import sys

from temporalio import activity

from temporal_executor.worker.activities import AgentActivities
from temporal_executor.worker.activity_declarations import AgentActivityDeclarations

# Modules that do I/O: none may load with the workflow module.
IO_MODULES = (
    "temporal_executor.worker.activities",
    "temporal_executor.worker.llm",
    "temporal_executor.worker.tools",
    "temporal_executor.worker.publisher",
    "temporal_executor.bus",
    "openai",
    "anthropic",
    "google.genai",
    "httpx",
    "mcp",
    "aiokafka",
    "nats",
)


def test_importing_the_workflow_loads_no_io_module() -> None:
    probe = (
        "import sys, json\n"
        "import temporal_executor.worker.workflow\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    assert "temporal_executor.worker.activity_declarations" in loaded
    offending = sorted(
        name for name in loaded if any(name == m or name.startswith(f"{m}.") for m in IO_MODULES)
    )
    assert offending == []


def _definition(method: object) -> activity._Definition:
    definition = activity._Definition.from_callable(method)  # type: ignore[arg-type]
    assert definition is not None, method
    return definition


def test_the_implementation_registers_every_declared_activity_under_its_name() -> None:
    declared = {
        name: _definition(method)
        for name, method in inspect.getmembers(AgentActivityDeclarations, inspect.isfunction)
        if not name.startswith("_")
    }
    assert set(declared) == {
        "plan_task",
        "call_llm",
        "run_tool",
        "publish_event",
        "publish_events",
    }
    for name, declaration in declared.items():
        implementation = _definition(getattr(AgentActivities, name))
        assert implementation.name == declaration.name, name
        assert implementation.arg_types == declaration.arg_types, name
        assert implementation.ret_type == declaration.ret_type, name
