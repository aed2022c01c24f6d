"""A real MCP server, written with the `mcp` package, for the MCP tool tests.

Run over stdio: `python tests/fakes/mcp_server.py`; over streamable HTTP:
`python tests/fakes/mcp_server.py --http PORT`. It lists its tools two per page, so a
client that ignores `nextCursor` misses most of them.

Tools: `add` (text result), `stats` (structured result), `slow` (sleeps), `big` (a huge
result), `fail` (an `isError` result), `crash` (the process exits mid-call), `whoami`
(an environment variable, or on HTTP the `Authorization` header it was sent),
`dotted.name` (a name the model would refuse, to be sanitised).
"""

import argparse
import asyncio
import os
import sys
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent

PAGE_SIZE = 2


async def paginate_tools(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Serve `tools/list` a page at a time; the cursor is the index of the page's first tool."""
    result = await call_next(ctx)
    if ctx.method != "tools/list" or not isinstance(result, dict):
        return result
    start = int((ctx.params or {}).get("cursor") or 0)
    end = start + PAGE_SIZE
    page = {**result, "tools": result["tools"][start:end]}
    if end < len(result["tools"]):
        page["nextCursor"] = str(end)
    return page


server = MCPServer("fake-tools", middleware=[paginate_tools], log_level="WARNING")


@server.tool(structured_output=False)
def add(a: float, b: float) -> str:
    """Add two numbers."""
    total = a + b
    return str(int(total) if total.is_integer() else total)


@server.tool()
def stats(values: list[float]) -> dict[str, float]:
    """Count and sum numbers."""
    return {"count": len(values), "sum": sum(values)}


@server.tool(structured_output=False)
async def slow(seconds: float) -> str:
    """Sleep, then say for how long."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool(structured_output=False)
def big(size: int = 100_000) -> str:
    """A result of `size` characters."""
    return "x" * size


@server.tool()
def fail(reason: str = "it broke") -> CallToolResult:
    """Report a failure the way MCP tools do: a result with isError."""
    return CallToolResult(content=[TextContent(type="text", text=reason)], is_error=True)


@server.tool(structured_output=False)
def crash() -> str:
    """Exit the server process without answering."""
    os._exit(3)


@server.tool(structured_output=False)
def whoami(ctx: Context) -> str:
    """Who the server thinks the caller is: FAKE_MCP_USER, or the Authorization header."""
    if ctx.headers is not None:
        return ctx.headers.get("authorization", "anonymous")
    return os.environ.get("FAKE_MCP_USER", "anonymous")


@server.tool(name="dotted.name", structured_output=False)
def dotted() -> str:
    """A tool whose name has a dot."""
    return "dotted"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP")
    args = parser.parse_args()
    if args.http is None:
        server.run()
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    sys.exit(0)


if __name__ == "__main__":
    main()
