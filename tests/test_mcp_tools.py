"""Tools from MCP servers (README, "Tools from MCP servers"), against a real MCP server
written with the `mcp` package (tests/fakes/mcp_server.py), over stdio and streamable HTTP.

The end-to-end tests drive tasks through the service (bridge + worker, real Temporal and
NATS) with scripted models that call the servers' tools; the others use the worker's MCP
connections directly.
"""

import asyncio
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import mcp_types
import pytest
import yaml
from temporalio.client import Client

from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import McpServerSettings, ScriptedTurn, Settings
from temporal_executor.schemas.conversation import ToolSpec
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from temporal_executor.worker.tools import mcp_tools
from temporal_executor.worker.tools.mcp_tools import (
    McpServerUnavailable,
    McpTools,
    exposed_name,
    result_value,
)
from temporal_executor.worker.tools.registry import ToolRegistry
from tests.harness import (
    ONE_APPROVED_TOOL_CALL,
    ServiceHarness,
    data,
    new_task_id,
    service_settings,
    types,
)

SERVER = Path(__file__).parent / "fakes" / "mcp_server.py"
CONFIG = Path(__file__).parent.parent / "config" / "temporal-executor.yaml"
CALL_TIMEOUT = 3.0
TOKEN_ENV = "TEST_MCP_TOKEN"
STDIO_TOOLS = {
    "calc__add",
    "calc__big",
    "calc__crash",
    "calc__dotted_name",
    "calc__fail",
    "calc__slow",
    "calc__whoami",
}


def _stdio(name: str = "calc", **fields: Any) -> McpServerSettings:
    return McpServerSettings.model_validate(
        {
            "name": name,
            "transport": "stdio",
            "command": sys.executable,
            "args": [str(SERVER)],
            "env": {"FAKE_MCP_USER": "stdio-user"},
            **fields,
        }
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class HttpMcpServer:
    """tests/fakes/mcp_server.py serving streamable HTTP in a process of its own."""

    def __init__(self, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._log = log
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self._log.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, str(SERVER), "--http", str(self.port), stdout=log, stderr=log
            )
        await _eventually(self._listening, timeout=20)

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    async def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            await asyncio.wait_for(self._process.wait(), 10)
            self._process = None


async def _eventually(condition: Callable[[], bool], *, timeout: float) -> None:
    """Poll: what the tests wait for here has no event to wait on."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            msg = f"still not true after {timeout} s: {condition}"
            raise TimeoutError(msg)
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def http_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[HttpMcpServer]:
    server = HttpMcpServer(tmp_path_factory.mktemp("mcp") / "http-server.log")
    await server.start()
    yield server
    await server.stop()


def _turns(*calls: tuple[str, dict[str, Any]]) -> list[ScriptedTurn]:
    """One turn per tool call, then an answer quoting the last result."""
    turns = [
        ScriptedTurn.model_validate({"tool_calls": [{"name": name, "arguments": arguments}]})
        for name, arguments in calls
    ]
    return [*turns, ScriptedTurn(text="tool said: {last_tool_result}")]


SCRIPTS = {
    "add": _turns(("calc__add", {"a": 2, "b": 3})),
    "remote-add": _turns(("remote__add", {"a": 4, "b": 5})),
    "whoami": _turns(("calc__whoami", {})),
    "remote-whoami": _turns(("remote__whoami", {})),
    "slow": _turns(("calc__slow", {"seconds": CALL_TIMEOUT - 1})),
    "too-slow": _turns(("calc__slow", {"seconds": CALL_TIMEOUT + 5})),
    "big": _turns(("calc__big", {"size": 100_000})),
    "fail": _turns(("calc__fail", {"reason": "no such order"})),
    "crash": _turns(("calc__crash", {}), ("calc__add", {"a": 1, "b": 1})),
    "absent": _turns(("down__add", {"a": 1, "b": 1})),
}


@pytest.fixture(scope="module")
async def mcp_service(
    embedded_stack: EmbeddedStack,
    temporal_client: Client,
    tmp_path_factory: pytest.TempPathFactory,
    http_server: HttpMcpServer,
) -> AsyncIterator[ServiceHarness]:
    settings = service_settings(
        embedded_stack,
        tmp_path_factory.mktemp("notes"),
    )
    settings.mcp_servers = [
        # stdio; whoami needs approval (per tool), stats is denied.
        _stdio(
            timeout_seconds=CALL_TIMEOUT,
            connect_timeout_seconds=5,
            deny=["stats"],
            require_approval=["whoami"],
        ),
        # streamable HTTP, with a header from the worker's environment; every tool needs
        # approval (per server).
        McpServerSettings(
            name="web",
            transport="http",
            url=http_server.url,
            headers_env={"Authorization": TOKEN_ENV},
            tool_prefix="remote",
            require_approval=True,
        ),
        # Nothing listens there: the worker starts without its tools.
        McpServerSettings(
            name="down",
            transport="http",
            url=f"http://127.0.0.1:{_free_port()}/mcp",
            connect_timeout_seconds=1,
        ),
    ]
    scripted = settings.llm.provider("scripted")
    assert scripted is not None
    scripted.scripts.update(SCRIPTS)
    connected, level = _ConnectedServers(), mcp_tools.log.level
    mcp_tools.log.addHandler(connected)
    mcp_tools.log.setLevel(logging.INFO)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(TOKEN_ENV, "Bearer test-token")
        harness = ServiceHarness(settings, temporal_client)
        await harness.start()
        try:
            # On a busy machine a server's first attempt may time out; the worker then
            # starts without its tools, and a task planned meanwhile may not call them.
            await _eventually(lambda: {"calc", "web"} <= connected.names, timeout=60)
        finally:
            mcp_tools.log.removeHandler(connected)
            mcp_tools.log.setLevel(level)
        yield harness
        await harness.stop()


class _ConnectedServers(logging.Handler):
    """The MCP servers the worker has connected to, from its log."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "MCP server connected":
            self.names.add(getattr(record, "mcp_server", ""))


async def _run(service: ServiceHarness, model: str, **fields: Any) -> tuple[str, list[CloudEvent]]:
    task_id = new_task_id(model)
    await service.producers["nats"].request(task_id, model, **fields)
    return task_id, await service.watchers["nats"].wait_for_end(task_id)


def _tool_events(events: list[CloudEvent]) -> list[dict[str, Any]]:
    return [data(e) for e in events if e.type == EventType.TOOL_COMPLETED]


ONE_TOOL_CALL = [
    EventType.EXECUTION_STARTED,
    EventType.LLM_RESPONDED,
    EventType.TOOL_COMPLETED,
    EventType.LLM_RESPONDED,
    EventType.EXECUTION_COMPLETED,
]


# -- End to end: tasks through the service ---------------------------------------------


async def test_stdio_tool_result_reaches_the_model(mcp_service: ServiceHarness) -> None:
    _, events = await _run(mcp_service, "add")
    assert types(events) == ONE_TOOL_CALL
    [tool] = _tool_events(events)
    assert (tool["name"], tool["result"], tool["error"]) == ("calc__add", "5", None)
    assert data(events[-1])["final_message"] == "tool said: 5"


@pytest.mark.parametrize(
    ("model", "fields", "tool", "result"),
    [
        # `require_approval: [whoami]` on the stdio server.
        ("whoami", {}, "calc__whoami", "stdio-user"),
        # `require_approval: true` on the HTTP server; the header came from the environment,
        # and the server echoing it back gets the worker's redaction of its own credential
        # ("anonymous" had it not been sent).
        ("remote-whoami", {}, "remote__whoami", "[redacted]"),
        # Neither server asks for calc__add: the request does.
        ("add", {"require_approval": ["calc__add"]}, "calc__add", "5"),
    ],
    ids=["per-tool", "per-server", "per-request"],
)
async def test_mcp_tool_waits_for_approval_granted_on_the_bus(
    mcp_service: ServiceHarness, model: str, fields: dict[str, Any], tool: str, result: str
) -> None:
    producer, watcher = mcp_service.producers["nats"], mcp_service.watchers["nats"]
    task_id = new_task_id(model)
    await producer.request(task_id, model, **fields)
    request = data(await watcher.wait_for(task_id, EventType.APPROVAL_REQUESTED))
    assert request["tool_call"]["name"] == tool
    await producer.approve(task_id, request["approval_id"], approver="alice")
    events = await watcher.wait_for_end(task_id)
    assert types(events) == ONE_APPROVED_TOOL_CALL
    assert (data(events[4])["result"], data(events[4])["error"]) == (result, None)
    assert data(events[-1])["final_message"] == f"tool said: {result}"


async def test_denied_mcp_tool_call_is_reported_to_the_model(mcp_service: ServiceHarness) -> None:
    producer, watcher = mcp_service.producers["nats"], mcp_service.watchers["nats"]
    task_id = new_task_id("deny")
    await producer.request(task_id, "remote-add")
    request = data(await watcher.wait_for(task_id, EventType.APPROVAL_REQUESTED))
    await producer.approve(task_id, request["approval_id"], approved=False, reason="no")
    events = await watcher.wait_for_end(task_id)
    [tool] = _tool_events(events)
    assert tool["result"] is None
    assert "denied" in tool["error"]
    assert events[-1].type == EventType.EXECUTION_COMPLETED


async def test_long_call_heartbeats(mcp_service: ServiceHarness) -> None:
    task_id = new_task_id("slow")
    await mcp_service.producers["nats"].request(task_id, "slow")
    await mcp_service.watchers["nats"].wait_for(task_id, EventType.LLM_RESPONDED)
    handle = mcp_service.client.get_workflow_handle(workflow_id_for(task_id))
    heartbeats = 0
    async with asyncio.timeout(30):
        while not any(
            e.type == EventType.TOOL_COMPLETED for e in mcp_service.watchers["nats"].events(task_id)
        ):
            description = await handle.describe()
            heartbeats += sum(
                activity.HasField("last_heartbeat_time")
                for activity in description.raw_description.pending_activities
                if activity.activity_type.name == "run_tool"
            )
            await asyncio.sleep(0.1)
    events = await mcp_service.watchers["nats"].wait_for_end(task_id)
    assert _tool_events(events)[0]["result"] == f"slept {CALL_TIMEOUT - 1}"
    assert heartbeats > 0, "run_tool did not heartbeat during a 2 s call"
    # The server's timeout (plus the connect wait and a grace) is the activity's.
    [scheduled] = [
        e.activity_task_scheduled_event_attributes
        async for e in handle.fetch_history_events()
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "run_tool"
    ]
    start_to_close = timedelta(seconds=CALL_TIMEOUT + 5 + 2)
    assert scheduled.start_to_close_timeout.ToTimedelta() == start_to_close
    # 15 s, which Temporal caps at the start-to-close.
    assert scheduled.heartbeat_timeout.ToTimedelta() == min(timedelta(seconds=15), start_to_close)


async def test_call_over_the_server_timeout_is_reported_to_the_model(
    mcp_service: ServiceHarness,
) -> None:
    started = time.monotonic()
    _, events = await _run(mcp_service, "too-slow")
    assert types(events) == ONE_TOOL_CALL
    [tool] = _tool_events(events)
    assert tool["result"] is None
    assert tool["error"] == f"MCP tool 'slow' of 'calc' did not answer within {CALL_TIMEOUT:g} s"
    # Reported at once, not retried (tool_max_attempts is 2) nor waited out.
    assert time.monotonic() - started < CALL_TIMEOUT + 4


async def test_big_result_is_truncated_with_a_note(mcp_service: ServiceHarness) -> None:
    _, events = await _run(mcp_service, "big")
    [tool] = _tool_events(events)
    assert tool["truncated"] is True
    limit = mcp_service.settings.executor.max_result_bytes
    assert len(tool["result"].encode()) <= limit
    assert "[truncated by temporal-executor: " in tool["result"]
    assert "[truncated by temporal-executor: " in data(events[-1])["final_message"]


async def test_is_error_result_is_reported_to_the_model(mcp_service: ServiceHarness) -> None:
    _, events = await _run(mcp_service, "fail")
    assert types(events) == ONE_TOOL_CALL
    [tool] = _tool_events(events)
    assert (tool["result"], tool["error"]) == (None, "no such order")
    assert data(events[-1])["final_message"] == "tool said: error: no such order"


async def test_crashed_stdio_server_is_restarted_for_the_next_call(
    mcp_service: ServiceHarness,
) -> None:
    _, events = await _run(mcp_service, "crash")
    crash, add = _tool_events(events)
    assert crash["name"] == "calc__crash"
    assert crash["error"] == "MCP server 'calc' closed the connection during the call"
    assert (add["name"], add["result"], add["error"]) == ("calc__add", "2", None)
    assert events[-1].type == EventType.EXECUTION_COMPLETED


async def test_tools_of_an_unreachable_server_are_unknown(mcp_service: ServiceHarness) -> None:
    # A model calling one is told which tools it may call, and goes on.
    _, events = await _run(mcp_service, "absent")
    [absent] = _tool_events(events)
    assert absent["error"].startswith("this task may not call tool 'down__add'; it may call: ")
    assert "calc__add" in absent["error"]
    assert events[-1].type == EventType.EXECUTION_COMPLETED
    # A request naming one fails at once.
    _, events = await _run(mcp_service, "add", tools=["calc__add", "calc__stats"])
    assert events[-1].type == EventType.EXECUTION_FAILED
    error = data(events[-1])["error"]
    assert error["type"] == "unknown_tool"
    assert "calc__stats" in error["message"]


# -- The connections, without Temporal -------------------------------------------------


async def test_stdio_tools_are_listed_across_pages_filtered_and_named() -> None:
    servers = [
        _stdio(deny=["stats"], require_approval=["whoami", "calc__fail"]),
        # No prefix, an allow list with a pattern, and `add` is a configured tool's name.
        _stdio("bare", allow=["st*", "add", "dotted.*"], tool_prefix=""),
    ]
    async with McpTools(servers, default_timeout=5, reserved=["add"]) as mcp:
        registry = ToolRegistry([], mcp.servers)
        # The server lists two tools a page: the last page has whoami and dotted.name.
        assert set(registry.names) == STDIO_TOOLS | {"stats", "dotted_name"}
        add = registry.get("calc__add")
        assert add is not None
        assert add.spec == ToolSpec(
            name="calc__add",
            description="Add two numbers.",
            parameters={
                "type": "object",
                "properties": {
                    "a": {"title": "A", "type": "number"},
                    "b": {"title": "B", "type": "number"},
                },
                "required": ["a", "b"],
            },
        )
        approval = {
            name
            for name in registry.names
            if (t := registry.get(name)) and t.settings.require_approval
        }
        assert approval == {"calc__whoami", "calc__fail"}
        # The activity's start-to-close: the call's limit, the connect wait, a grace.
        assert add.settings.timeout_seconds == 5 + 10 + 2
        assert await add({"a": 1, "b": 2}) == "3"
        stats = registry.get("stats")
        assert stats is not None
        assert await stats({"values": [1, 2, 3]}) == {"count": 3, "sum": 6}


async def test_http_server_down_at_start_joins_when_it_comes_up_and_after_a_drop(
    tmp_path: Path,
) -> None:
    http = HttpMcpServer(tmp_path / "late.log")
    settings = McpServerSettings(
        name="late", transport="http", url=http.url, headers={"Authorization": "Bearer x"}
    )
    async with McpTools([settings], default_timeout=5) as mcp:
        [server] = mcp.servers
        assert server.tools() == {}
        await http.start()
        try:
            await _eventually(lambda: "late__whoami" in server.tools(), timeout=20)
            assert await server.tools()["late__whoami"]({}) == "Bearer x"
            # The session drops: the call fails as retryable, the tools stay offered, and
            # the next call once the server is back gets a new session.
            await http.stop()
            with pytest.raises(McpServerUnavailable):
                await server.call("add", {"a": 1, "b": 1})
            assert "late__add" in server.tools()
            await http.start()
            assert await server.call("add", {"a": 1, "b": 1}) == "2"
        finally:
            await http.stop()


async def test_missing_header_variable_keeps_the_server_out() -> None:
    settings = McpServerSettings(
        name="secret",
        transport="http",
        url=f"http://127.0.0.1:{_free_port()}/mcp",
        headers_env={"Authorization": "NOT_SET_ANYWHERE"},
    )
    async with McpTools([settings], default_timeout=5, environ={}) as mcp:
        [server] = mcp.servers
        assert server.tools() == {}
        with pytest.raises(McpServerUnavailable, match="NOT_SET_ANYWHERE is not set"):
            await server.call("add", {})


# -- Names, results and settings ---------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "tool", "expected"),
    [
        ("calc", "add", "calc__add"),
        ("", "add", "add"),
        ("fs", "read.file/v2", "fs__read_file_v2"),
        ("fs", "lire_fichier_été", "fs__lire_fichier__t_"),
    ],
)
def test_exposed_names(prefix: str, tool: str, expected: str) -> None:
    assert exposed_name(prefix, tool) == expected


def test_long_names_are_cut_deterministically_and_stay_distinct() -> None:
    first = exposed_name("server", "x" * 100 + "a")
    second = exposed_name("server", "x" * 100 + "b")
    assert len(first) == len(second) == 64
    assert first != second
    assert first == exposed_name("server", "x" * 100 + "a")
    ToolSpec(name=first)  # the pattern every provider accepts


def test_content_blocks_become_text() -> None:
    result = mcp_types.CallToolResult(
        content=[
            mcp_types.TextContent(text="hello"),
            mcp_types.ImageContent(data="AAAA", mime_type="image/png"),
            mcp_types.ResourceLink(name="report", uri="file:///r.txt"),
            mcp_types.EmbeddedResource(
                resource=mcp_types.TextResourceContents(uri="file:///a.txt", text="inside")
            ),
        ]
    )
    assert result_value(result) == (
        "hello\n[image image/png, 3 bytes, not shown]\n[resource report: file:///r.txt]\ninside"
    )
    assert result_value(mcp_types.CallToolResult(content=[])) == ""


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"name": "a", "transport": "stdio"}, "needs `command`"),
        ({"name": "a", "transport": "http"}, "needs `url`"),
        ({"name": "a", "transport": "http", "url": "http://h/mcp", "args": ["x"]}, "args"),
        ({"name": "a", "transport": "stdio", "command": "x", "headers": {"a": "b"}}, "headers"),
        ({"name": "a.b", "transport": "stdio", "command": "x"}, "name"),
        ({"name": "a", "transport": "http", "url": "ftp://h"}, "url"),
    ],
)
def test_bad_server_settings_are_refused(entry: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        McpServerSettings.model_validate(entry)


def test_server_names_are_unique() -> None:
    with pytest.raises(ValueError, match="duplicate MCP server names"):
        Settings(mcp_servers=[_stdio(), _stdio()])


def test_documented_example_is_valid_config() -> None:
    text = CONFIG.read_text(encoding="utf-8")
    block = text[text.index("# mcp_servers:") : text.index("\nlogging:")]
    example = yaml.safe_load("\n".join(line[2:] for line in block.splitlines()))
    settings = Settings.model_validate(example)
    assert [s.transport for s in settings.mcp_servers] == ["stdio", "http"]
