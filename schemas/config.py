"""The service's configuration, validated once at start and passed down.

Loaded from YAML (config/temporal-executor.yaml) with environment overrides; see
`temporal_executor.settings` for the loader.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ContentMode = Literal["binary", "structured"]


class StrictModel(BaseModel):
    # A misspelt key is an error at start, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class TemporalSettings(StrictModel):
    host_port: str = "localhost:7233"
    namespace: str = "default"
    task_queue: str = "agent-executor"
    api_key_env: str | None = None
    tls: bool = False


class KafkaTopics(StrictModel):
    requests: str = "agent.requests"
    approval_replies: str = "agent.approval-replies"
    events: str = "agent.events"
    approvals: str = "agent.approvals"
    dlq: str = "agent.dlq"


class KafkaSettings(StrictModel):
    enabled: bool = True
    bootstrap_servers: str = "localhost:9092"
    consumer_group: str = "temporal-executor-bridge"
    client_id: str = "temporal-executor"
    # How long a fetch may wait for data: the consumer's latency on an idle topic.
    fetch_max_wait_ms: int = Field(default=100, ge=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username_env: str | None = None
    sasl_password_env: str | None = None
    # Partitions for topics the service creates when they are missing.
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)
    create_topics: bool = True
    topics: KafkaTopics = Field(default_factory=KafkaTopics)
    # The idempotent producer needs broker support (InitProducerId) that some
    # Kafka-compatible brokers, tansu among them, lack; on real Kafka it may be turned on.
    idempotent_producer: bool = False
    # Consumer group liveness. Brokers hold a join until about half the session timeout, so
    # a smaller one starts consuming sooner (tests); Kafka enforces at least 6000 by default.
    session_timeout_ms: int = Field(default=10_000, ge=1)
    heartbeat_interval_ms: int = Field(default=3_000, ge=1)
    # Acked offsets are committed at most this often (and whenever the consumer idles).
    commit_interval_ms: int = Field(default=500, ge=1)

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> "KafkaSettings":
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            msg = "bus.kafka.heartbeat_interval_ms must be less than session_timeout_ms"
            raise ValueError(msg)
        return self


class NatsSubjects(StrictModel):
    """Subject prefixes; a task's events go to `<events>.<taskid>`, and so on."""

    requests: str = "agent.requests"
    approval_replies: str = "agent.approval-replies"
    events: str = "agent.events"
    approvals: str = "agent.approvals"
    dlq: str = "agent.dlq"


class NatsStreams(StrictModel):
    requests: str = "AGENT_REQUESTS"
    approval_replies: str = "AGENT_APPROVAL_REPLIES"
    events: str = "AGENT_EVENTS"
    approvals: str = "AGENT_APPROVALS"
    dlq: str = "AGENT_DLQ"


class NatsSettings(StrictModel):
    enabled: bool = True
    url: str = "nats://localhost:4222"
    durable: str = "temporal-executor-bridge"
    create_streams: bool = True
    # How long JetStream waits for an ack before redelivering a message.
    ack_wait_seconds: float = Field(default=30, gt=0)
    subjects: NatsSubjects = Field(default_factory=NatsSubjects)
    streams: NatsStreams = Field(default_factory=NatsStreams)


class BusSettings(StrictModel):
    # The bus for tasks that did not arrive on one (HTTP, A2A) and for CLI commands.
    default: Literal["kafka", "nats"] = "kafka"
    content_mode: ContentMode = "binary"
    # The `source` attribute of every event the service publishes.
    source: str = "temporal-executor"
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)

    @model_validator(mode="after")
    def _default_bus_enabled(self) -> "BusSettings":
        if not getattr(self, self.default).enabled:
            msg = f"bus.default is {self.default!r} but bus.{self.default}.enabled is false"
            raise ValueError(msg)
        return self


class BridgeSettings(StrictModel):
    # Messages being handled at once across all tasks; one task's messages stay in order.
    max_in_flight: int = Field(default=64, ge=1)
    retry_initial_seconds: float = Field(default=0.5, gt=0)
    retry_max_seconds: float = Field(default=30, gt=0)
    rpc_timeout_seconds: float = Field(default=10, gt=0)
    # Approvers allowed to answer; empty means anyone who can publish on the bus.
    allowed_approvers: list[str] = Field(default_factory=list)


class ExecutorSettings(StrictModel):
    max_iterations: int = Field(default=10, ge=1)
    # true: every tool call needs approval; a list: these tools do.
    require_approval: bool | list[str] = False
    approval_timeout_seconds: float = Field(default=3600, gt=0)
    approve_on_timeout: bool = False
    llm_timeout_seconds: float = Field(default=120, gt=0)
    llm_max_attempts: int = Field(default=5, ge=1)
    tool_timeout_seconds: float = Field(default=60, gt=0)
    tool_max_attempts: int = Field(default=3, ge=1)
    publish_timeout_seconds: float = Field(default=15, gt=0)
    # LLM replies and tool results larger than this are truncated (Temporal's hard limit is 2 MB).
    max_result_bytes: int = Field(default=256 * 1024, ge=1024, le=1_500_000)
    # A task continues as new once its history has this many events, keeping its messages.
    continue_as_new_after_events: int = Field(default=10_000, ge=100)


ProviderKind = Literal["anthropic", "openai", "azure_openai", "scripted"]


class ScriptedTurn(StrictModel):
    """One reply of the scripted provider: text, tool calls, or an error to raise.

    `tool_calls` items are `{"name": ..., "arguments": {...}}`. `{user_message}` and
    `{last_tool_result}` in `text` and in argument strings are filled in from the conversation.
    """

    text: str = ""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    error: (
        Literal[
            "rate_limited",
            "unavailable",
            "authentication",
            "model_not_found",
            "context_too_long",
            "invalid_request",
        ]
        | None
    ) = None
    # The wait the error asks for (a 429's Retry-After), used as Temporal's next retry delay.
    retry_after: float | None = Field(default=None, gt=0)
    # Raise `error` only on the first N attempts of this call, then reply with the turn's text
    # and tool calls: a failure that a retry heals. None: every attempt fails.
    error_attempts: int | None = Field(default=None, ge=1)


class ProviderSettings(StrictModel):
    name: str = Field(min_length=1)
    kind: ProviderKind
    api_key_env: str | None = None
    base_url: str | None = None
    # Azure OpenAI
    api_version: str | None = None
    # Models this provider may run; empty allows any.
    models: list[str] = Field(default_factory=list)
    default_max_tokens: int = Field(default=4096, gt=0)
    # Scripted provider: model name -> turns played in order, one per LLM call.
    scripts: dict[str, list[ScriptedTurn]] = Field(default_factory=dict)


def _default_providers() -> list[ProviderSettings]:
    return [
        ProviderSettings(name="scripted", kind="scripted"),
        ProviderSettings(name="anthropic", kind="anthropic", api_key_env="ANTHROPIC_API_KEY"),
        ProviderSettings(name="openai", kind="openai", api_key_env="OPENAI_API_KEY"),
    ]


class LlmSettings(StrictModel):
    # The scripted provider needs no key, so a fresh install runs its demo as it is.
    default_provider: str = "scripted"
    default_model: str = "demo"
    providers: list[ProviderSettings] = Field(default_factory=_default_providers)

    @model_validator(mode="after")
    def _unique_names(self) -> "LlmSettings":
        names = [p.name for p in self.providers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            msg = f"llm.providers: duplicate provider names {duplicates}"
            raise ValueError(msg)
        return self

    def provider(self, name: str) -> ProviderSettings | None:
        return next((p for p in self.providers if p.name == name), None)


class ToolSettings(StrictModel):
    """A tool: a built-in by name, or a Python callable `module:function`."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    function: str | None = Field(default=None, pattern=r"^[\w.]+:\w+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    require_approval: bool = False
    timeout_seconds: float | None = Field(default=None, gt=0)
    # Keyword arguments bound when the tool is created (e.g. a directory, a base URL).
    options: dict[str, Any] = Field(default_factory=dict)


def _default_tools() -> list[ToolSettings]:
    return [
        ToolSettings(name="calculator"),
        ToolSettings(name="current_time"),
        # Writes to disk on the worker: the kind of side effect a person approves.
        ToolSettings(
            name="save_note",
            require_approval=True,
            options={"directory": ".temporal-executor/notes"},
        ),
    ]


class LoggingSettings(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class Settings(StrictModel):
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    bridge: BridgeSettings = Field(default_factory=BridgeSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    tools: list[ToolSettings] = Field(default_factory=_default_tools)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @model_validator(mode="after")
    def _results_fit_in_events(self) -> "Settings":
        # An event carries one LLM reply or tool result plus its envelope; it must fit the bus.
        if self.executor.max_result_bytes * 2 > self.bus.max_message_bytes:
            msg = (
                f"executor.max_result_bytes ({self.executor.max_result_bytes}) must be at most "
                f"half of bus.max_message_bytes ({self.bus.max_message_bytes})"
            )
            raise ValueError(msg)
        return self
