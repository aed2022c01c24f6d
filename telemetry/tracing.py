"""OpenTelemetry tracing: the process's tracer provider and W3C trace-context helpers.

`configure_tracing` runs once per process (the CLI's `bridge`, `worker`, `gateway`); it
installs the SDK only when an exporter is configured, so a process without one imports
no SDK and its spans cost nothing. Trace context flows either way: a span that is not
recorded still carries its parent's ids, so an event published under it names the request.
"""

import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import Span

from temporal_executor.schemas.config import TracingSettings

log = logging.getLogger(__name__)

TRACER_NAME = "temporal_executor"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"


class _State:
    capture_content = False
    exporting = False
    provider: Any = None
    tracer: trace.Tracer | None = None


_state = _State()


def tracer() -> trace.Tracer:
    """The tracer of the provider in use: the global one (a no-op until configured)."""
    return _state.tracer or trace.get_tracer(TRACER_NAME)


def capture_content() -> bool:
    """Whether prompts, replies and tool arguments may go on spans (config opts in)."""
    return _state.capture_content


def set_capture_content(on: bool) -> None:
    _state.capture_content = on


def exporting() -> bool:
    """Whether spans are recorded and exported (an SDK tracer provider is installed)."""
    return _state.exporting


def exporter_name(settings: TracingSettings, env: Mapping[str, str] = os.environ) -> str:
    """The configured exporter: config first, then OTEL_TRACES_EXPORTER, else none."""
    if settings.exporter is not None:
        return settings.exporter
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return "none"
    name = env.get("OTEL_TRACES_EXPORTER", "none").split(",")[0].strip().lower()
    return name if name in ("otlp", "console") else "none"


def configure_tracing(settings: TracingSettings, service_name: str) -> bool:
    """Install the SDK tracer provider with the configured exporter; False when none is.

    The usual OTEL_* variables apply: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (the
    resource), OTEL_TRACES_SAMPLER(_ARG) (sampling), OTEL_EXPORTER_OTLP_* (endpoint,
    headers, TLS, timeout) where config leaves them unset.
    """
    set_capture_content(settings.capture_content)
    name = exporter_name(settings)
    if name == "none":
        return False
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": service_name}).merge(
        OTELResourceDetector().detect()
    )
    if os.environ.get("OTEL_SERVICE_NAME"):
        resource = resource.merge(Resource({"service.name": os.environ["OTEL_SERVICE_NAME"]}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter(name, settings)))
    use_tracer_provider(provider)
    log.info("tracing: exporting spans", extra={"exporter": name, "service": service_name})
    return True


def use_tracer_provider(provider: Any, *, set_global: bool = True) -> None:
    """Record spans with `provider` (an SDK TracerProvider); like an exporter in config, it
    turns Temporal's tracing on for clients connected from now on. `set_global=False`
    leaves OpenTelemetry's global provider alone (tests: `stop_using_tracer_provider`)."""
    if set_global:
        trace.set_tracer_provider(provider)
    _state.provider = provider
    _state.tracer = provider.get_tracer(TRACER_NAME)
    _state.exporting = True


def stop_using_tracer_provider() -> None:
    """Back to no spans (with `use_tracer_provider(..., set_global=False)`)."""
    _state.provider = None
    _state.tracer = None
    _state.exporting = False


def tracer_provider() -> Any:
    """The provider in use, for instrumentations that take one (None: the global one)."""
    return _state.provider


def _exporter(name: str, settings: TracingSettings) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    protocol = settings.protocol or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    )
    if protocol.startswith("http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=settings.endpoint)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcSpanExporter,
    )

    return GrpcSpanExporter(endpoint=settings.endpoint)


def shutdown_tracing() -> None:
    """Flush spans still buffered (the batch processor exports every few seconds)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()


def context_from(
    traceparent: str | None, tracestate: str | None = None
) -> otel_context.Context | None:
    """The context a W3C `traceparent` (and `tracestate`) names; None without one."""
    if not traceparent:
        return None
    carrier = {TRACEPARENT: traceparent}
    if tracestate:
        carrier[TRACESTATE] = tracestate
    return extract(carrier)


def current_traceparent(span: Span | None = None) -> tuple[str | None, str | None]:
    """`traceparent` and `tracestate` naming `span` (default: the current span)."""
    carrier: dict[str, str] = {}
    ctx = trace.set_span_in_context(span) if span is not None else None
    inject(carrier, context=ctx)
    return carrier.get(TRACEPARENT), carrier.get(TRACESTATE)


def temporal_interceptors() -> list[Any]:
    """Temporal's tracing interceptor when spans are exported: workflow and activity spans,
    and the trace context carried in every start, update, query and activity's headers.
    Replay-safe: workflow spans are made only when a workflow task is not replaying."""
    if not _state.exporting:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(tracer())]
