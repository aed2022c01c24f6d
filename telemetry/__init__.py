"""What the processes tell operators: OpenTelemetry traces, Prometheus metrics, health probes.

Below the bus layer (it imports only `schemas`), so the bus, the task service, the bridge,
the gateway and the worker all record into it. Nothing here is needed for a task to run:
with nothing configured, spans are no-ops (trace context still flows) and metrics are only
counted in memory.
"""
