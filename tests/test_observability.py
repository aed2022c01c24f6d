"""Metrics, probes and span export of the real processes (README, "Operations").

`temporal-executor bridge` and `temporal-executor worker` run as processes on the real
servers with `observability.port` set; after tasks (one with an approval) and a message
that is dead-lettered, their /metrics are scraped over HTTP; /readyz answers 503 while
Temporal is stopped and 200 again once it is back, and /healthz 200 throughout. Both
export spans over OTLP/HTTP to a local collector stand-in: the bridge told so by the
standard OTEL_* variables, the worker by its config.
"""

import asyncio
import http.server
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from temporalio.client import Client

from temporal_executor.bus.errors import DeadLetterReason
from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.event_types import EventType
from tests.harness import ServiceHarness, ServiceProcess, new_task_id, service_settings

PROBE_DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Collector(http.server.ThreadingHTTPServer):
    """Stands in for an OpenTelemetry collector's OTLP/HTTP receiver: keeps what it gets."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.requests: list[ExportTraceServiceRequest] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def spans(self) -> dict[str, set[str]]:
        """Span names by the `service.name` of the process that sent them."""
        found: dict[str, set[str]] = {}
        for request in list(self.requests):
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                names = found.setdefault(attributes.get("service.name", "?"), set())
                for scope in resource_spans.scope_spans:
                    names.update(span.name for span in scope.spans)
        return found


class _Receive(http.server.BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/v1/traces":
            self.server.requests.append(ExportTraceServiceRequest.FromString(body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Observed:
    harness: ServiceHarness  # producers and watchers; no bridge or worker of its own
    bridge: str  # base URLs of the processes' telemetry servers
    worker: str
    collector: Collector


@pytest.fixture
async def observed(
    embedded_stack: EmbeddedStack,
    temporal_client: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Observed]:
    settings = service_settings(embedded_stack, tmp_path / "notes", approval_timeout_seconds=600)
    settings.logging.format = "text"
    harness = ServiceHarness(settings, temporal_client, bridge=False, worker=False)
    await harness.start()
    collector = Collector()
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    processes = []
    urls = {}
    for role in ("bridge", "worker"):
        port = free_port()
        settings.observability.port = port
        if role == "bridge":  # the standard variables, which the processes inherit
            monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
            monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        else:  # config
            monkeypatch.delenv("OTEL_TRACES_EXPORTER")
            monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
            tracing = settings.observability.tracing
            tracing.exporter = "otlp"
            tracing.protocol = "http/protobuf"
            tracing.endpoint = f"{collector.endpoint}/v1/traces"
        config = ServiceProcess.write_config(settings, tmp_path / f"{role}.yaml")
        process = ServiceProcess(role, config)
        await process.start()
        processes.append(process)
        urls[role] = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            for url in urls.values():
                await until(http, f"{url}/readyz", lambda status: status == 200)
        yield Observed(harness, urls["bridge"], urls["worker"], collector)
    finally:
        exit_codes: list[int | None] = []
        for process in processes:
            try:
                exit_codes.append(await process.terminate())
            except TimeoutError:  # it did not stop on SIGTERM: leave nothing running
                await process.kill()
                exit_codes.append(None)
        await harness.stop()
        collector.shutdown()
        collector.server_close()
        assert exit_codes == [0, 0], "bridge and worker exit 0 on SIGTERM"


async def until(http: httpx.AsyncClient, url: str, wanted: Callable[[int], bool]) -> httpx.Response:
    """GET `url` until its status is `wanted` (the server may not listen yet)."""
    async with asyncio.timeout(PROBE_DEADLINE):
        while True:
            try:
                response = await http.get(url)
                if wanted(response.status_code):
                    return response
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)


async def scrape(http: httpx.AsyncClient, url: str) -> list[Sample]:
    response = await http.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_metrics_after_tasks_an_approval_and_a_dead_letter(observed: Observed) -> None:
    harness = observed.harness
    producer, watcher = harness.producers["kafka"], harness.watchers["kafka"]
    one_turn, noted = new_task_id("metrics"), new_task_id("metrics-approval")
    await producer.request(one_turn, "one-turn")
    await producer.request(noted, "note")
    request = await watcher.wait_for(noted, EventType.APPROVAL_REQUESTED)
    assert isinstance(request.data, dict)
    await producer.approve(noted, request.data["approval_id"], approver="alice")
    bad = await producer.send(EventType.EXECUTION_REQUESTED, "bad", {"task_id": "bad"})
    for task_id in (one_turn, noted):
        assert (await watcher.wait_for_end(task_id))[-1].type == EventType.EXECUTION_COMPLETED
    await watcher.wait_for_dead_letter(bad.id.encode(), field="id")
    topics = harness.settings.bus.kafka.topics

    async with httpx.AsyncClient(timeout=10) as http:
        # The worker counts a task once its terminal event is out; the bridge acks (and
        # counts) a message once handled: both are seen shortly after the events.
        bridge = await _scraped_when(
            http,
            observed.bridge,
            "temporal_executor_messages_consumed_total",
            outcome="approval_applied",
        )
        worker = await _scraped_when(
            http, observed.worker, "temporal_executor_tasks_finished_total", state="completed"
        )
        healthy = await http.get(f"{observed.bridge}/healthz")
        assert healthy.status_code == 200
        assert healthy.json() == {"status": "ok"}

    consumed = "temporal_executor_messages_consumed_total"
    requests = {"bus": "kafka", "destination": topics.requests}
    assert value(bridge, consumed, outcome="started", **requests) == 2
    assert value(bridge, consumed, outcome="approval_applied", bus="kafka") == 1
    assert (
        value(
            bridge,
            consumed,
            outcome="dead_lettered",
            reason=DeadLetterReason.INVALID_DATA,
            **requests,
        )
        == 1
    )
    assert (
        value(bridge, "temporal_executor_task_start_duration_seconds_count", outcome="started") == 2
    )
    assert value(bridge, "temporal_executor_messages_in_flight", bus="kafka") == 0
    # The bridge's early `agent.execution.started`, one per task.
    published = "temporal_executor_events_published_total"
    started = {"bus": "kafka", "destination": topics.events, "type": EventType.EXECUTION_STARTED}
    assert value(bridge, published, **started) == 2
    assert any(s.name.startswith("temporal_executor_kafka_consumer_lag") for s in bridge)
    # JetStream's pending counts are read every few seconds: wait for the first.
    async with httpx.AsyncClient(timeout=10) as http:
        pending = await _scraped_when(
            http,
            observed.bridge,
            "temporal_executor_jetstream_consumer_pending_messages",
            consumer=f"{harness.settings.bus.nats.durable}-requests",
            present="yes",
        )
    assert {
        s.labels["stream"]
        for s in pending
        if s.name == "temporal_executor_jetstream_consumer_ack_pending_messages"
    } >= {harness.settings.bus.nats.streams.requests}
    # The Temporal SDK's own metrics beside ours (the client's RPCs).
    assert value(bridge, "temporal_request_total") > 0

    assert value(worker, "temporal_executor_tasks_finished_total", state="completed") == 2
    assert value(worker, "temporal_executor_approvals_requested_total", tool="save_note") == 1
    assert value(worker, "temporal_executor_approvals_resolved_total", outcome="approved") == 1
    decision = "temporal_executor_approval_decision_duration_seconds_count"
    assert value(worker, decision, outcome="approved") == 1
    scripted = {"gen_ai_provider_name": "scripted", "gen_ai_operation_name": "chat"}
    duration = "gen_ai_client_operation_duration_seconds_count"
    assert value(worker, duration, gen_ai_request_model="one-turn", error_type="", **scripted) == 1
    assert value(worker, duration, gen_ai_request_model="note", error_type="", **scripted) == 2
    tokens = "gen_ai_client_token_usage_tokens_count"
    assert value(worker, tokens, gen_ai_token_type="input", **scripted) == 3
    assert value(worker, tokens, gen_ai_token_type="output", **scripted) == 3
    calls = "temporal_executor_llm_calls_total"
    assert value(worker, calls, provider="scripted", outcome="ok") == 3
    assert value(worker, "temporal_executor_tool_calls_total", tool="save_note", outcome="ok") == 1
    events = {"bus": "kafka", "destination": topics.events}
    assert value(worker, published, type=EventType.EXECUTION_COMPLETED, **events) == 2
    approvals = {"bus": "kafka", "destination": topics.approvals}
    assert value(worker, published, type=EventType.APPROVAL_REQUESTED, **approvals) == 1
    assert value(worker, "temporal_executor_publish_failures_total") == 0
    # The SDK's worker metrics: workflow tasks and activities it ran.
    assert value(worker, "temporal_workflow_completed_total") >= 2
    # Bounded labels: no task id anywhere.
    for sample in [*bridge, *worker]:
        assert not {one_turn, noted} & set(sample.labels.values()), sample

    # Spans went out over OTLP from both (the batch processor sends within 0.1 s; the
    # processes flush what is left when they stop).
    async with asyncio.timeout(PROBE_DEADLINE):
        while True:
            spans = observed.collector.spans()
            bridge_spans = spans.get("temporal-executor-bridge", set())
            worker_spans = spans.get("temporal-executor-worker", set())
            if (
                "chat note" in worker_spans
                and "StartWorkflow:AgentExecutionWorkflow" in bridge_spans
            ):
                break
            await asyncio.sleep(0.2)
    assert f"process {topics.requests}" in bridge_spans
    assert {"execute_tool save_note", "await_approval save_note"} <= worker_spans


async def _scraped_when(
    http: httpx.AsyncClient, url: str, name: str, present: str = "", **labels: str
) -> list[Sample]:
    """The samples once `name` (with `labels`) is above zero, or with `present` at all."""

    def found(samples: list[Sample]) -> bool:
        if present:
            return any(
                s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
                for s in samples
            )
        return value(samples, name, **labels) > 0

    async with asyncio.timeout(PROBE_DEADLINE):
        while True:
            samples = await scrape(http, url)
            if found(samples):
                await asyncio.sleep(0.5)  # let the counts of the same moment settle
                return await scrape(http, url)
            await asyncio.sleep(0.2)


async def test_readyz_is_503_while_temporal_is_down(
    observed: Observed, embedded_stack: EmbeddedStack
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for url in (observed.bridge, observed.worker):
            ready = await http.get(f"{url}/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"status": "ready"}
        await embedded_stack.stop_temporal()
        try:
            for url in (observed.bridge, observed.worker):
                down = await until(http, f"{url}/readyz", lambda status: status != 200)
                assert down.status_code == 503
                assert "temporal" in down.json()["detail"]
                # Alive all the same: restarting it would not bring Temporal back.
                assert (await http.get(f"{url}/healthz")).status_code == 200
        finally:
            await embedded_stack.start_temporal()
        for url in (observed.bridge, observed.worker):
            back = await until(http, f"{url}/readyz", lambda status: status == 200)
            assert back.json() == {"status": "ready"}
        missing = await http.get(f"{observed.bridge}/nope")
        assert missing.status_code == 404
