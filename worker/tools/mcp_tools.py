"""Tools from MCP servers: connected once per worker, offered to the model like any other.

Each server in `mcp_servers` gets one connection for the worker's lifetime: a stdio server
is started once (not per call), an HTTP server keeps one streamable HTTP session. Its
tools are listed (every page) and offered as `<tool_prefix>__<tool>`, made safe for every
provider (`[a-zA-Z0-9_-]{1,64}`, deterministically), with their JSON Schemas.

A connection belongs to one asyncio task, its *owner*: the `mcp` package's transports are
anyio task groups, which must be entered and left by the same task, while tool calls
come from the worker's activities, each a task of its own. The owner connects, lists the
tools, then waits until the connection breaks or the worker stops, and connects again.

Failures, and what the model or the task sees:

- Unreachable at start: logged, the worker runs on, the server's tools are absent (a
  request naming them fails with `unknown_tool`) and the owner keeps trying, backing off
  from 1 s to 30 s; the tools appear for tasks planned once it answers.
- Broken later (a crashed stdio server, a dropped HTTP session): the tools stay offered
  as last listed; the call that finds the connection broken fails as retryable, the owner
  reconnects at once, and Temporal's retry of the tool activity uses the new connection.
- A call that outruns the server's `timeout_seconds`, or a result with `isError`: a
  `ToolError`, reported to the model without retrying (the server may still be at work).
"""

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AsyncExitStack
from fnmatch import fnmatchcase
from types import TracebackType
from typing import Any, Self

import httpx2
import mcp_types
from mcp import Client, MCPError, StdioServerParameters
from mcp.client import Transport
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from temporal_executor.schemas.config import McpServerSettings, ToolSettings
from temporal_executor.schemas.conversation import ToolSpec
from temporal_executor.worker.errors import ToolError
from temporal_executor.worker.redaction import redact_known, redact_known_in, remember
from temporal_executor.worker.tools.registry import Tool

log = logging.getLogger(__name__)

SEPARATOR = "__"
MAX_NAME_LENGTH = 64
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
RECONNECT_INITIAL_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 30.0
# A server that pages forever cannot hang the worker's start.
MAX_LIST_PAGES = 100
# The tool activity's start-to-close is the call's own limit plus the wait for a
# connection plus this, so the call's own, clearer, timeout fires first.
ACTIVITY_GRACE_SECONDS = 2.0
# As the `mcp` package's own HTTP client: a server may hold a response stream open.
HTTP_READ_TIMEOUT_SECONDS = 300.0
CLIENT_INFO = mcp_types.Implementation(name="temporal-executor", version="0.1.0")


class McpServerUnavailable(ToolError):
    """The server is not connected, or the connection broke during the call: Temporal
    retries the tool activity (`executor.tool_max_attempts`), then the model is told."""

    retryable = True


def exposed_name(prefix: str, tool: str) -> str:
    """`<prefix>__<tool>` in the characters every provider accepts, at most 64 of them; a
    longer name keeps its start and ends in a hash of the whole, so it stays unique."""
    raw = f"{prefix}{SEPARATOR}{tool}" if prefix else tool
    name = _UNSAFE.sub("_", raw) or "_"
    if len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        name = f"{name[: MAX_NAME_LENGTH - len(digest) - 1]}_{digest}"
    return name


def result_value(result: mcp_types.CallToolResult) -> Any:
    """A tool result as JSON for the model and the event: the structured content when the
    server sends it, else the content blocks as text (binary data is described, not sent)."""
    if result.structured_content is not None:
        return result.structured_content
    parts = [_block_text(block) for block in result.content]
    return parts[0] if len(parts) == 1 else "\n".join(parts)


def _block_text(block: mcp_types.ContentBlock) -> str:
    if isinstance(block, mcp_types.TextContent):
        return block.text
    if isinstance(block, mcp_types.ImageContent | mcp_types.AudioContent):
        return f"[{block.type} {block.mime_type}, {len(block.data) * 3 // 4} bytes, not shown]"
    if isinstance(block, mcp_types.ResourceLink):
        return f"[resource {block.name}: {block.uri}]"
    resource = block.resource
    if isinstance(resource, mcp_types.TextResourceContents):
        return resource.text
    return f"[resource {resource.uri}, {resource.mime_type or 'binary'}, not shown]"


def _matches(patterns: Sequence[str], *names: str) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in patterns for name in names)


def _describe(exc: BaseException) -> str:
    """One line for a failure, however deep in anyio's exception groups it is."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class McpServer:
    """One configured server: its connection (owned by one task) and its tools as last
    listed. A `ToolSource` of the worker's `ToolRegistry`."""

    def __init__(
        self,
        settings: McpServerSettings,
        *,
        default_timeout: float,
        environ: Mapping[str, str],
        reserved: Collection[str] = (),
        earlier: Sequence["McpServer"] = (),
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.timeout = settings.timeout_seconds or default_timeout
        # The tool activity's start-to-close for this server's tools.
        self.activity_timeout = (
            self.timeout + settings.connect_timeout_seconds + ACTIVITY_GRACE_SECONDS
        )
        self._prefix = settings.name if settings.tool_prefix is None else settings.tool_prefix
        self._environ = environ
        self._reserved = reserved
        self._earlier = earlier
        self._tools: dict[str, Tool] = {}
        self._client: Client | None = None
        # Connection attempts ended so far (failed, or connected and then lost).
        self._attempts = 0
        # Set, and replaced by a fresh one, whenever `_client` or `_attempts` changes.
        self._change = asyncio.Event()
        # Set to make the owner look again: the connection broke, a caller waits, or stop.
        self._attention = asyncio.Event()
        self._closing = False
        self._last_error: str | None = None
        self._failures = 0  # in a row
        self._owner: asyncio.Task[None] | None = None

    def tools(self) -> Mapping[str, Tool]:
        return self._tools

    async def start(self) -> None:
        """Start the owner and wait for its first attempt, at most the connect timeout."""
        self._owner = asyncio.create_task(self._own(), name=f"mcp-server-{self.name}")
        # The handshake and the listing each have the connect timeout; spawning too.
        answered = await self._until(
            lambda: self._client is not None or self._attempts > 0,
            seconds=self.settings.connect_timeout_seconds + 5,
        )
        if not answered:
            log.error(
                "MCP server is not answering; the worker starts without its tools, and keeps "
                "trying",
                extra=self._extra(),
            )

    async def aclose(self) -> None:
        self._closing = True
        self._attention.set()
        if self._owner is None:
            return
        try:
            # Stopping a stdio server may take its grace period (2 s) and a kill (2 s).
            await asyncio.wait_for(asyncio.shield(self._owner), 10)
        except TimeoutError:
            self._owner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._owner

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        client = await self._wait_connected()
        try:
            result = await client.call_tool(tool, arguments, read_timeout_seconds=self.timeout)
        except MCPError as exc:
            if exc.code == mcp_types.REQUEST_TIMEOUT:
                msg = f"MCP tool {tool!r} of {self.name!r} did not answer within {self.timeout:g} s"
                raise ToolError(msg) from exc
            if exc.code == mcp_types.CONNECTION_CLOSED:
                self._broken(client)
                msg = f"MCP server {self.name!r} closed the connection during the call"
                raise McpServerUnavailable(msg) from exc
            msg = f"MCP server {self.name!r} refused the call: {exc.message}"
            raise ToolError(msg) from exc
        if result.is_error:
            text = redact_known("\n".join(_block_text(block) for block in result.content))
            raise ToolError(text or f"MCP tool {tool!r} of {self.name!r} failed")
        # A server may echo what it was sent (a header, a variable): not to the model.
        return redact_known_in(result_value(result))

    async def _wait_connected(self) -> Client:
        """The connection; if there is none, the outcome of one more attempt at it."""
        if self._client is None:
            attempts = self._attempts
            self._attention.set()  # try now, not at the end of the backoff
            await self._until(
                lambda: self._client is not None or self._attempts > attempts,
                seconds=self.settings.connect_timeout_seconds + 5,
            )
        if self._client is None:
            why = f": {self._last_error}" if self._last_error else ""
            msg = f"MCP server {self.name!r} is not connected{why}"
            raise McpServerUnavailable(msg)
        return self._client

    async def _until(self, condition: Callable[[], bool], *, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while not condition():
                    await self._change.wait()
        return condition()

    def _changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    def _broken(self, client: Client) -> None:
        if client is self._client:
            self._client = None
            self._changed()
            self._attention.set()

    async def _own(self) -> None:
        while not self._closing:
            try:
                await self._connection()
                if not self._closing:
                    log.warning("MCP connection lost; reconnecting", extra=self._extra())
                continue
            except Exception as exc:  # anything the server or its transport does wrong
                self._last_error = _describe(exc)
                self._failures += 1
                doublings = min(self._failures - 1, 10)
                delay = min(RECONNECT_INITIAL_SECONDS * 2**doublings, RECONNECT_MAX_SECONDS)
                self._log_failure(retry_in=delay)
            finally:
                self._client = None
                self._attempts += 1
                self._changed()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._attention.wait()

    async def _connection(self) -> None:
        """Connect, list, serve calls until told to look again; leave in this same task."""
        self._attention.clear()
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(await self._new_client(stack))
            listed = await _list_tools(client)
            self._tools = self._offered(listed)
            self._client, self._last_error, self._failures = client, None, 0
            self._changed()
            log.info("MCP server connected", extra=self._extra(tools=sorted(self._tools)))
            # A transport that fails cancels this wait (its task group is in `stack`), and
            # leaving `stack` raises what failed.
            while self._client is client and not self._closing:
                await self._attention.wait()
                self._attention.clear()

    async def _new_client(self, stack: AsyncExitStack) -> Client:
        s = self.settings
        if s.transport == "stdio":
            assert s.command is not None  # checked by McpServerSettings
            env = {**s.env, **{name: self._variable(name) for name in s.inherit_env}}
            params = StdioServerParameters(command=s.command, args=s.args, env=env, cwd=s.cwd)
            transport: Transport = stdio_client(params, errlog=sys.stderr)
        else:
            assert s.url is not None  # checked by McpServerSettings
            headers = {
                **s.headers,
                **{header: self._variable(name) for header, name in s.headers_env.items()},
            }
            # The read timeout covers a whole tool call answered as one SSE stream.
            timeout = httpx2.Timeout(
                s.connect_timeout_seconds,
                read=max(HTTP_READ_TIMEOUT_SECONDS, self.timeout + ACTIVITY_GRACE_SECONDS),
            )
            http = await stack.enter_async_context(
                httpx2.AsyncClient(headers=headers, timeout=timeout)
            )
            transport = streamable_http_client(s.url, http_client=http)
        return Client(
            transport,
            read_timeout_seconds=s.connect_timeout_seconds,
            client_info=CLIENT_INFO,
            # Listed once per connection; a cache would only hide a changed list.
            cache=None,
        )

    def _variable(self, name: str) -> str:
        value = self._environ.get(name)
        if value is None:
            msg = f"environment variable {name} is not set"
            raise LookupError(msg)
        return remember(value)

    def _offered(self, listed: list[mcp_types.Tool]) -> dict[str, Tool]:
        s = self.settings
        offered: dict[str, Tool] = {}
        for remote in listed:
            name = exposed_name(self._prefix, remote.name)
            if s.allow and not _matches(s.allow, remote.name, name):
                continue
            if _matches(s.deny, remote.name, name):
                continue
            owner = self._owner_of(name, offered)
            if owner is not None:
                log.warning(
                    "MCP tool not offered: its name is taken",
                    extra=self._extra(tool=remote.name, offered_as=name, taken_by=owner),
                )
                continue
            offered[name] = self._tool(remote, name)
        return offered

    def _owner_of(self, name: str, offered: Mapping[str, Tool]) -> str | None:
        if name in self._reserved:
            return "tools"
        if name in offered:
            return f"mcp_servers.{self.name}"
        earlier = next((server for server in self._earlier if name in server.tools()), None)
        return None if earlier is None else f"mcp_servers.{earlier.name}"

    def _tool(self, remote: mcp_types.Tool, name: str) -> Tool:
        s = self.settings
        parameters = {k: v for k, v in remote.input_schema.items() if k != "title"}
        description = remote.description or remote.title or ""
        approval = (
            s.require_approval
            if isinstance(s.require_approval, bool)
            else _matches(s.require_approval, remote.name, name)
        )
        settings = ToolSettings(
            name=name,
            description=description,
            parameters=parameters,
            require_approval=approval,
            timeout_seconds=self.activity_timeout,
        )
        tool_name = remote.name

        async def call(**arguments: Any) -> Any:
            return await self.call(tool_name, arguments)

        spec = ToolSpec(name=name, description=description, parameters=parameters)
        return Tool(spec=spec, settings=settings, function=call, arguments_model=None)

    def _log_failure(self, retry_in: float) -> None:
        extra = self._extra(error=self._last_error, retry_in_seconds=retry_in)
        if self._failures > 1:
            log.warning("MCP server still unreachable", extra=extra)
        elif self._tools:
            log.error("MCP server unreachable; its tools stay offered as listed", extra=extra)
        else:
            log.error("MCP server unreachable; its tools are absent until it answers", extra=extra)

    def _extra(self, **fields: Any) -> dict[str, Any]:
        return {"mcp_server": self.name, "transport": self.settings.transport, **fields}


async def _list_tools(client: Client) -> list[mcp_types.Tool]:
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    for _ in range(MAX_LIST_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


class McpTools:
    """Every configured MCP server, connected for as long as this context is open."""

    def __init__(
        self,
        servers: Sequence[McpServerSettings],
        *,
        default_timeout: float,
        reserved: Collection[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.servers: list[McpServer] = []
        for settings in servers:
            self.servers.append(
                McpServer(
                    settings,
                    default_timeout=default_timeout,
                    environ=os.environ if environ is None else environ,
                    reserved=reserved,
                    earlier=list(self.servers),
                )
            )

    async def __aenter__(self) -> Self:
        await asyncio.gather(*(server.start() for server in self.servers))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.gather(*(server.aclose() for server in self.servers))
