"""Every Prometheus metric the processes export, in one place.

Names follow Prometheus conventions (unit suffixes, `_total` on counters, added by the
client); the GenAI ones are the OpenTelemetry semantic conventions' `gen_ai.client.*`
metrics under their Prometheus names. Labels are bounded: a bus, a destination pattern
(never a task's own NATS subject), a reason, a tool or model name from config; never a
task id. Model names come from requests, so at most `MAX_LABEL_VALUES` distinct ones are
kept per label and the rest counted as `other`.
"""

import threading

from prometheus_client import Counter, Gauge, Histogram

MAX_LABEL_VALUES = 100
OTHER = "other"

# -- bus and bridge ----------------------------------------------------------------------

MESSAGES_CONSUMED = Counter(
    "temporal_executor_messages_consumed",
    "Inbound messages handled by the bridge, by outcome: started, duplicate, cancelled, "
    "approval_applied, approval_ignored, dead_lettered (with reason), retried (an attempt "
    "that will be retried: Temporal or the bus unavailable).",
    ["bus", "destination", "outcome", "reason"],
)
MESSAGES_IN_FLIGHT = Gauge(
    "temporal_executor_messages_in_flight",
    "Inbound messages the bridge is handling now (up to bridge.max_in_flight).",
    ["bus"],
)
KAFKA_CONSUMER_LAG = Gauge(
    "temporal_executor_kafka_consumer_lag_messages",
    "Messages of an assigned partition not yet handled: the partition's high watermark "
    "minus the first offset not yet acknowledged.",
    ["topic", "partition"],
)
JETSTREAM_PENDING = Gauge(
    "temporal_executor_jetstream_consumer_pending_messages",
    "Messages of a durable consumer's stream not yet delivered to it.",
    ["stream", "consumer"],
)
JETSTREAM_ACK_PENDING = Gauge(
    "temporal_executor_jetstream_consumer_ack_pending_messages",
    "Messages delivered to a durable consumer and not yet acknowledged.",
    ["stream", "consumer"],
)
EVENTS_PUBLISHED = Counter(
    "temporal_executor_events_published",
    "CloudEvents stored by the bus (a retried publish counts again).",
    ["bus", "destination", "type"],
)
PUBLISH_FAILURES = Counter(
    "temporal_executor_publish_failures",
    "Publishes the bus refused or failed (error: too_large, transport).",
    ["bus", "destination", "error"],
)

# -- task service ------------------------------------------------------------------------

TASK_START_DURATION = Histogram(
    "temporal_executor_task_start_duration_seconds",
    "Time for Temporal to accept (or refuse) a task's start, by outcome: started, "
    "duplicate, unavailable, refused.",
    ["outcome"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
)


# -- worker: tasks and approvals ---------------------------------------------------------

TASKS_FINISHED = Counter(
    "temporal_executor_tasks_finished",
    "Tasks that ended, by terminal state (completed, failed, cancelled) and error type.",
    ["state", "error_type"],
)
APPROVALS_REQUESTED = Counter(
    "temporal_executor_approvals_requested",
    "Tool calls that waited for a person's approval.",
    ["tool"],
)
APPROVALS_RESOLVED = Counter(
    "temporal_executor_approvals_resolved",
    "Approvals resolved, by outcome: approved, denied, timed_out.",
    ["outcome"],
)
APPROVAL_DECISION_DURATION = Histogram(
    "temporal_executor_approval_decision_duration_seconds",
    "Time from an approval request to its resolution, by outcome.",
    ["outcome"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400),
)

# -- worker: LLM and tool calls ----------------------------------------------------------

# Buckets advised by the GenAI semantic conventions.
GEN_AI_DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
GEN_AI_TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip

GEN_AI_OPERATION_DURATION = Histogram(
    "gen_ai_client_operation_duration_seconds",
    "GenAI operation duration (semconv gen_ai.client.operation.duration): one LLM call "
    "attempt; error_type is empty on success.",
    ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "error_type"],
    buckets=GEN_AI_DURATION_BUCKETS,
)
GEN_AI_TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage_tokens",
    "Tokens used per LLM call (semconv gen_ai.client.token.usage), by gen_ai_token_type "
    "input or output.",
    ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_token_type"],
    buckets=GEN_AI_TOKEN_BUCKETS,
)
LLM_CALLS = Counter(
    "temporal_executor_llm_calls",
    "LLM call attempts, by provider, model and outcome (ok, or the error type the task "
    "would fail with: rate_limited, provider_unavailable, authentication_failed, ...).",
    ["provider", "model", "outcome"],
)
TOOL_CALLS = Counter(
    "temporal_executor_tool_calls",
    "Tool call attempts, by tool and outcome (ok, or the error type).",
    ["tool", "outcome"],
)
TOOL_CALL_DURATION = Histogram(
    "temporal_executor_tool_call_duration_seconds",
    "Tool call attempt duration.",
    ["tool"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)


class BoundedValues:
    """Label values seen so far, at most `limit`; later new ones read as `other`."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return OTHER


model_label = BoundedValues()
tool_label = BoundedValues()
