"""No secret anywhere: tasks run on every provider kind (the real SDKs against the local
wire-format servers) and on both MCP transports, with recognisable credentials, including
a provider that quotes the credential back in its error and an MCP tool that echoes its
Authorization header. None of the credentials may appear in what leaves the process:
workflow history, published events, dead letters, logs, spans (with content capture on), or
the gateway's answers."""

import contextlib
import json
import logging
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.gateway import GatewayServer
from temporal_executor.logs import JsonFormatter
from temporal_executor.schemas.config import McpServerSettings, ProviderSettings, ScriptedTurn
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from temporal_executor.tasks.temporal_connection import connect_temporal
from temporal_executor.telemetry import tracing
from temporal_executor.worker.redaction import redact, redact_known_in, remember
from tests.fakes._script import ErrorReply
from tests.fakes.llm_servers import (
    FakeAnthropicServer,
    FakeGeminiServer,
    FakeOpenAIServer,
    FakeVertexAnthropicServer,
    RecordedRequest,
    Reply,
    http_error,
    text,
)
from tests.harness import ServiceHarness, new_task_id, service_settings
from tests.test_mcp_tools import SERVER as MCP_SERVER
from tests.test_mcp_tools import HttpMcpServer


def _secret(prefix: str) -> str:
    return f"{prefix}SECRET{uuid.uuid4().hex}"


# Recognisable values in the shapes the real ones have.
SECRETS = {
    "anthropic": _secret("sk-ant-api03-"),
    "openai": _secret("sk-proj-"),
    "azure_openai": _secret(""),
    "vertex_anthropic": _secret("ya29."),
    "vertex_gemini": _secret("ya29."),
    "mcp_http": _secret(""),
    "mcp_stdio": _secret(""),
    "gateway": _secret(""),
}
ENV = {name: f"TE_NO_SECRET_{name.upper()}" for name in SECRETS}
MODELS = {
    "anthropic": "claude-sonnet-4-6",
    "openai": "gpt-4.1",
    "azure_openai": "my-deployment",
    "vertex_anthropic": "claude-sonnet-4-5@20250929",
    "vertex_gemini": "gemini-2.5-flash",
}
PROVIDER_KINDS = tuple(MODELS)
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key")


def reply(request: RecordedRequest) -> Reply | ErrorReply:
    """An answer, or for a task named `refuse-*` an error that repeats the credentials the
    caller sent, as some APIs and proxies do. By the request, not by order: a retried
    attempt gets the same reply."""
    if "hello from refuse-" not in json.dumps(request.body):
        return text("all good")
    sent = next(filter(None, (request.header(h) for h in CREDENTIAL_HEADERS)), "")
    return http_error(400, f"malformed request; credentials sent: {sent}")


@dataclass
class Capture(logging.Handler):
    """Every log record, as the service writes it (JSON lines)."""

    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def __hash__(self) -> int:
        return id(self)


@dataclass
class World:
    service: ServiceHarness
    servers: dict[str, Any]
    logs: Capture
    spans: InMemorySpanExporter
    gateway_url: str
    seen: list[str] = field(default_factory=list)  # gateway answers


@contextlib.contextmanager
def captured_logs() -> Iterator[Capture]:
    capture = Capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(capture)
    root.setLevel(logging.INFO)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(level)


def provider_settings(kind: str, server: Any) -> ProviderSettings:
    fields: dict[str, Any] = {"name": f"p-{kind}", "kind": kind}
    if kind.startswith("vertex_"):
        fields |= {
            "project": server.project,
            "region": server.region,
            "access_token_env": ENV[kind],
            "base_url": server.base_url,
        }
    elif kind == "azure_openai":
        fields |= {
            "api_key_env": ENV[kind],
            "base_url": server.azure_endpoint,
            "api_version": "2024-10-21",
        }
    else:
        fields |= {"api_key_env": ENV[kind], "base_url": server.base_url}
    return ProviderSettings.model_validate(fields)


def new_fake(kind: str) -> Any:
    secret = SECRETS[kind]
    if kind == "anthropic":
        return FakeAnthropicServer(api_key=secret)
    if kind in ("openai", "azure_openai"):
        return FakeOpenAIServer(api_key=secret)
    if kind == "vertex_anthropic":
        return FakeVertexAnthropicServer(access_token=secret)
    return FakeGeminiServer(access_token=secret)


@contextlib.contextmanager
def captured_spans() -> Iterator[InMemorySpanExporter]:
    """Every span, with message and tool content captured: the most a trace can hold."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.use_tracer_provider(provider, set_global=False)
    tracing.set_capture_content(True)
    try:
        yield spans
    finally:
        tracing.set_capture_content(False)
        tracing.stop_using_tracer_provider()


def span_text(span: ReadableSpan) -> str:
    events = [(e.name, dict(e.attributes or {})) for e in span.events]
    status = span.status.description or ""
    return f"{span.name} {dict(span.attributes or {})} {status} {events}"


@pytest.fixture(scope="module")
async def world(
    embedded_stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("no-secrets")
    with (
        contextlib.ExitStack() as stack,
        pytest.MonkeyPatch.context() as env,
        captured_spans() as spans,
    ):
        for name, value in SECRETS.items():
            env.setenv(ENV[name], value)
        env.setenv(ENV["mcp_http"], f"Bearer {SECRETS['mcp_http']}")
        servers = {kind: stack.enter_context(new_fake(kind)) for kind in PROVIDER_KINDS}
        mcp_http = HttpMcpServer(tmp / "mcp-http.log")
        await mcp_http.start()
        settings = service_settings(embedded_stack, tmp)
        settings.bus.default = "nats"
        settings.llm.providers += [provider_settings(k, servers[k]) for k in PROVIDER_KINDS]
        settings.mcp_servers = [
            McpServerSettings(
                name="calc",
                transport="stdio",
                command=sys.executable,
                args=[str(MCP_SERVER)],
                inherit_env=[ENV["mcp_stdio"]],
            ),
            McpServerSettings(
                name="web",
                transport="http",
                url=mcp_http.url,
                headers_env={"Authorization": ENV["mcp_http"]},
            ),
        ]
        scripted = settings.llm.provider("scripted")
        assert scripted is not None
        scripted.scripts["mcp"] = [
            ScriptedTurn.model_validate(
                {"tool_calls": [{"name": "calc__add", "arguments": {"a": 1, "b": 2}}]}
            ),
            ScriptedTurn.model_validate({"tool_calls": [{"name": "web__whoami", "arguments": {}}]}),
            ScriptedTurn(text="whoami said: {last_tool_result}"),
        ]
        settings.gateway = settings.gateway.model_copy(
            update={"port": 0, "auth_token_env": ENV["gateway"]}
        )
        with captured_logs() as logs:
            client = await connect_temporal(settings)  # with the tracing interceptor
            service = ServiceHarness(settings, client)
            await service.start()
            gateway = GatewayServer(settings, client)
            await gateway.start()
            try:
                yield World(service, servers, logs, spans, gateway.url)
            finally:
                await gateway.stop()
                await service.stop()
                await mcp_http.stop()


async def run(
    world: World, provider: str, model: str, *, prefix: str | None = None, **fields: Any
) -> str:
    task_id = new_task_id(prefix or provider.removeprefix("p-"))
    await world.service.producers["nats"].request(
        task_id, model_config={"provider": provider, "model": model}, **fields
    )
    await world.service.watchers["nats"].wait_for_end(task_id)
    return task_id


async def everything_published_and_kept(world: World, task_ids: list[str]) -> str:
    """History, events (values and headers), dead letters, logs and gateway answers."""
    parts: list[str] = []
    for task_id in task_ids:
        handle = world.service.client.get_workflow_handle(workflow_id_for(task_id))
        parts.append((await handle.fetch_history()).to_json())
        for message in world.service.watchers["nats"].raw_events(task_id):
            parts.append(message.value.decode(errors="replace"))
            parts.extend(f"{k}={v!r}" for k, v in message.headers)
    for message in world.service.watchers["nats"].dead_letters:
        parts.append(message.value.decode(errors="replace"))
        parts.extend(f"{k}={v!r}" for k, v in message.headers)
    parts += world.logs.lines + world.seen
    parts += [span_text(span) for span in world.spans.get_finished_spans()]
    return "\n".join(parts)


def leaked(haystack: str) -> list[str]:
    # The random part of each: a masked or re-encoded copy still gives it away.
    return [name for name, secret in SECRETS.items() if secret.split("SECRET")[1] in haystack]


@pytest.mark.parametrize("kind", PROVIDER_KINDS)
async def test_no_provider_credential_leaves_the_process(world: World, kind: str) -> None:
    server = world.servers[kind]
    server.default = reply
    ok = await run(world, f"p-{kind}", MODELS[kind], tools=[])
    refused = await run(world, f"p-{kind}", MODELS[kind], prefix="refuse", tools=[])
    events = world.service.watchers["nats"]
    assert events.events(ok)[-1].type == EventType.EXECUTION_COMPLETED, events.events(ok)[-1].data
    failed = events.events(refused)[-1]
    assert failed.type == EventType.EXECUTION_FAILED
    assert isinstance(failed.data, dict)
    assert "credentials sent:" in failed.data["error"]["message"]
    # The credential was sent, and the provider quoted it back.
    sent = [r for r in server.requests if any(r.header(h) for h in CREDENTIAL_HEADERS)]
    assert sent
    assert any(SECRETS[kind] in (r.header(h) or "") for r in sent for h in CREDENTIAL_HEADERS)
    # Spans were recorded, the messages in them (content capture on).
    chats = [s for s in world.spans.get_finished_spans() if s.name == f"chat {MODELS[kind]}"]
    assert any("gen_ai.input.messages" in (s.attributes or {}) for s in chats)
    assert leaked(await everything_published_and_kept(world, [ok, refused])) == []


async def test_no_mcp_credential_leaves_the_process(world: World) -> None:
    task_id = await run(world, "scripted", "mcp")
    events = world.service.watchers["nats"].events(task_id)
    assert events[-1].type == EventType.EXECUTION_COMPLETED
    assert isinstance(events[-1].data, dict)
    # The HTTP server was sent the header (and its tool echoed it, redacted here).
    assert events[-1].data["final_message"] == "whoami said: [redacted]"
    assert leaked(await everything_published_and_kept(world, [task_id])) == []


async def test_no_gateway_token_leaves_the_process(world: World) -> None:
    task_id = new_task_id("gw")
    headers = {"Authorization": f"Bearer {SECRETS['gateway']}"}
    async with httpx.AsyncClient(base_url=world.gateway_url, timeout=30) as http:
        body = {
            "task_id": task_id,
            "user_message": "hi",
            "model_config": {"provider": "scripted", "model": "one-turn"},
        }
        started = await http.post("/api/v1/execute", json=body, headers=headers)
        assert started.status_code == 202, started.text
        await world.service.watchers["nats"].wait_for_end(task_id)
        status = await http.get(f"/api/v1/status/{task_id}", headers=headers)
        refused = await http.get(f"/api/v1/status/{task_id}", headers={"Authorization": "x"})
    assert refused.status_code == 401
    world.seen += [started.text, status.text, refused.text, json.dumps(dict(status.headers))]
    assert leaked(await everything_published_and_kept(world, [task_id])) == []


def test_scan_finds_a_leak() -> None:
    """The scan itself: a secret, or its random part in a masked copy, is found."""
    assert leaked(f"Bearer {SECRETS['gateway']}") == ["gateway"]
    masked = "sk-****" + SECRETS["openai"].split("SECRET")[1]
    assert leaked(masked) == ["openai"]
    assert Path(MCP_SERVER).is_file()


def test_redaction_shapes_and_known_values() -> None:
    remember("Basic " + "d29ya2VyOnMzY3JldC12YWx1ZQ")
    remember("short")  # too short to tell from a word: kept
    text = (
        "auth Bearer abc.def-123456 key sk-ant-api03-ABCDEFGHIJKLMNOPQRSTUV "
        "token ya29.a0AfB_byC1234567 google AIza"
        + "B"
        * 35
        + " jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl "
        "known d29ya2VyOnMzY3JldC12YWx1ZQ short"
    )
    assert redact(text) == (
        "auth Bearer [redacted] key [redacted] token [redacted] google [redacted] "
        "jwt [redacted] known [redacted] short"
    )
    value = {"a": ["Basic d29ya2VyOnMzY3JldC12YWx1ZQ", 3], "b": "Bearer abc.def-123456"}
    assert redact_known_in(value) == {"a": ["[redacted]", 3], "b": "Bearer abc.def-123456"}
