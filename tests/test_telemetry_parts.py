"""The telemetry layer's parts on their own: the probe server's answers, readiness checks,
which exporter config and the OTEL_* variables choose, bounded label values."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from temporal_executor.schemas.config import TracingSettings
from temporal_executor.telemetry import tracing
from temporal_executor.telemetry.health import HealthChecks
from temporal_executor.telemetry.metrics import OTHER, BoundedValues
from temporal_executor.telemetry.server import TelemetryServer


@pytest.fixture
async def probes() -> AsyncIterator[tuple[HealthChecks, httpx.AsyncClient]]:
    checks = HealthChecks()
    server = TelemetryServer("127.0.0.1", 0, checks=checks, readiness_timeout=0.2)
    await server.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        yield checks, http
    await server.stop()


async def test_readyz_says_what_is_not_ready(
    probes: tuple[HealthChecks, httpx.AsyncClient],
) -> None:
    checks, http = probes
    starting = await http.get("/readyz")
    assert starting.status_code == 503
    assert starting.json() == {"status": "unavailable", "detail": "starting: not connected yet"}

    async def fine() -> str | None:
        return None

    async def down() -> str | None:
        return "connection refused"

    async def hangs() -> str | None:
        await asyncio.sleep(10)
        return None

    async def broken() -> str | None:
        msg = "bug"
        raise RuntimeError(msg)

    with checks.registered("temporal", fine):
        assert (await http.get("/readyz")).json() == {"status": "ready"}
        with (
            checks.registered("kafka", down),
            checks.registered("nats", hangs),
            checks.registered("other", broken),
        ):
            unready = await http.get("/readyz")
            assert unready.status_code == 503
            assert unready.json()["detail"] == (
                "kafka: connection refused; nats: no answer within 0.2 s; other: RuntimeError: bug"
            )
        assert (await http.get("/readyz")).status_code == 200
        checks.stopping = True
        assert (await http.get("/readyz")).json()["detail"] == "shutting down"
    assert (await http.get("/healthz")).json() == {"status": "ok"}


async def test_only_get_and_head_of_the_three_paths(
    probes: tuple[HealthChecks, httpx.AsyncClient],
) -> None:
    _, http = probes
    metrics = await http.get("/metrics?name=x")
    assert metrics.status_code == 200
    assert "# TYPE temporal_executor_messages_consumed_total counter" in metrics.text
    head = await http.head("/healthz")
    assert head.status_code == 200
    assert head.content == b""
    assert (await http.post("/metrics")).status_code == 405
    assert (await http.get("/")).status_code == 404


async def test_a_request_that_is_not_http_is_dropped(
    probes: tuple[HealthChecks, httpx.AsyncClient],
) -> None:
    _, http = probes
    host, port = str(http.base_url.host), http.base_url.port
    assert port is not None
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"nonsense\r\n\r\n")
    await writer.drain()
    assert await reader.read() == b""  # closed without an answer
    writer.close()
    await writer.wait_closed()
    assert (await http.get("/healthz")).status_code == 200  # and the server goes on


@pytest.mark.parametrize(
    ("configured", "env", "chosen"),
    [
        (None, {}, "none"),
        (None, {"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
        (None, {"OTEL_TRACES_EXPORTER": "console,otlp"}, "console"),
        (None, {"OTEL_TRACES_EXPORTER": "zipkin"}, "none"),
        (None, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, "none"),
        ("otlp", {"OTEL_TRACES_EXPORTER": "none"}, "otlp"),
        ("none", {"OTEL_TRACES_EXPORTER": "otlp"}, "none"),
    ],
)
def test_config_names_the_exporter_else_the_otel_variables(
    configured: str | None, env: dict[str, str], chosen: str
) -> None:
    settings = TracingSettings.model_validate({"exporter": configured})
    assert tracing.exporter_name(settings, env) == chosen


def test_exporters_by_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    assert isinstance(tracing._exporter("otlp", TracingSettings()), GrpcExporter)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert isinstance(tracing._exporter("otlp", TracingSettings()), HttpExporter)
    grpc = TracingSettings(protocol="grpc", endpoint="http://127.0.0.1:9")
    assert isinstance(tracing._exporter("otlp", grpc), GrpcExporter)
    assert isinstance(tracing._exporter("console", TracingSettings()), ConsoleSpanExporter)


def test_no_exporter_installs_nothing() -> None:
    assert tracing.configure_tracing(TracingSettings(exporter="none"), "test") is False
    assert not tracing.exporting()
    assert tracing.temporal_interceptors() == []


def test_label_values_are_bounded() -> None:
    label = BoundedValues(limit=2)
    assert [label(v) for v in ("a", "b", "a", "c", "b", "d")] == ["a", "b", "a", OTHER, "b", OTHER]
