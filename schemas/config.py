"""The service's configuration, validated once at start and passed down.

Loaded from YAML (config/temporal-executor.yaml) with environment overrides; see
`temporal_executor.config_file` for the loader.
"""

from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

ContentMode = Literal["binary", "structured"]


class StrictModel(BaseModel):
    # A misspelt key is an error at start, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class TlsSettings(StrictModel):
    """TLS to a server: the CA that signed its certificate (None: the system's CAs), and a
    client certificate and key for mutual TLS. Files in PEM."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # The name to check the server's certificate against; None: the host connected to.
    server_name: str | None = None

    @model_validator(mode="after")
    def _cert_with_key(self) -> "TlsSettings":
        if (self.cert_file is None) != (self.key_file is None):
            msg = "tls: cert_file and key_file go together (a client certificate and its key)"
            raise ValueError(msg)
        return self


class EncryptionKeySettings(StrictModel):
    """One AES-256 key: 32 bytes, base64 or hex, from a variable or a file."""

    # Written into every payload it encrypts, so a payload finds its key after a rotation.
    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    env: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "EncryptionKeySettings":
        if (self.env is None) == (self.file is None):
            msg = f"encryption key {self.id!r}: set exactly one of env, file"
            raise ValueError(msg)
        return self


class PayloadEncryptionSettings(StrictModel):
    """AES-256-GCM encryption of every payload this service gives Temporal (workflow and
    activity inputs and results, updates, queries, failure messages and stack traces)."""

    enabled: bool = False
    # Newest first: the first key encrypts, every key decrypts. Rotate by putting a new
    # key first and keeping the old ones as long as histories encrypted with them live.
    keys: list[EncryptionKeySettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _keys_when_enabled(self) -> "PayloadEncryptionSettings":
        if self.enabled and not self.keys:
            msg = "temporal.encryption.enabled needs at least one key in temporal.encryption.keys"
            raise ValueError(msg)
        ids = [key.id for key in self.keys]
        if duplicates := sorted({i for i in ids if ids.count(i) > 1}):
            msg = f"temporal.encryption.keys: duplicate ids {duplicates}"
            raise ValueError(msg)
        return self


class TemporalSettings(StrictModel):
    host_port: str = "localhost:7233"
    namespace: str = "default"
    task_queue: str = "agent-executor"
    # Temporal Cloud API key (implies TLS), from this variable.
    api_key_env: str | None = None
    # true: TLS with the system's CAs; a mapping: its CA and, for mTLS, a client certificate.
    tls: bool | TlsSettings = False
    encryption: PayloadEncryptionSettings = Field(default_factory=PayloadEncryptionSettings)
    # gzip compresses every request to Temporal and accepts compressed replies. Each request
    # then builds a ~370 KB compressor: under a burst of starts that is most of a process's
    # peak memory (docs/performance.md), for requests of a few KB. For a slow link and
    # large payloads.
    grpc_compression: Literal["none", "gzip"] = "none"


class KafkaTopics(StrictModel):
    requests: str = "agent.requests"
    approval_replies: str = "agent.approval-replies"
    events: str = "agent.events"
    approvals: str = "agent.approvals"
    dlq: str = "agent.dlq"
    # `agent.llm.delta` events of tasks that stream (contract v1.1, "Streaming").
    deltas: str = "agent.deltas"


class KafkaSettings(StrictModel):
    enabled: bool = True
    bootstrap_servers: str = "localhost:9092"
    consumer_group: str = "temporal-executor-bridge"
    client_id: str = "temporal-executor"
    # How long a fetch may wait for data: the consumer's latency on an idle topic.
    fetch_max_wait_ms: int = Field(default=100, ge=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # SSL and SASL_SSL: the CA (None: the system's) and a client certificate for mTLS.
    tls: TlsSettings = Field(default_factory=TlsSettings)
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
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

    @model_validator(mode="after")
    def _security_fits_the_protocol(self) -> "KafkaSettings":
        protocol = self.security_protocol
        if self.tls != TlsSettings() and not protocol.endswith("SSL"):
            msg = f"bus.kafka.tls is set but security_protocol {protocol} does not use TLS"
            raise ValueError(msg)
        if self.tls.server_name is not None:
            msg = "bus.kafka.tls.server_name: Kafka clients check the broker's advertised name"
            raise ValueError(msg)
        if (self.sasl_mechanism is not None) != protocol.startswith("SASL_"):
            msg = f"bus.kafka: security_protocol {protocol} and sasl_mechanism go together"
            raise ValueError(msg)
        return self


class NatsSubjects(StrictModel):
    """Subject prefixes; a task's events go to `<events>.<taskid>`, and so on."""

    requests: str = "agent.requests"
    approval_replies: str = "agent.approval-replies"
    events: str = "agent.events"
    approvals: str = "agent.approvals"
    dlq: str = "agent.dlq"
    deltas: str = "agent.deltas"


class NatsStreams(StrictModel):
    requests: str = "AGENT_REQUESTS"
    approval_replies: str = "AGENT_APPROVAL_REPLIES"
    events: str = "AGENT_EVENTS"
    approvals: str = "AGENT_APPROVALS"
    dlq: str = "AGENT_DLQ"
    deltas: str = "AGENT_DELTAS"


class NatsSettings(StrictModel):
    enabled: bool = True
    url: str = "nats://localhost:4222"
    # true: TLS with the system's CAs (as a `tls://` URL); a mapping: its CA and, for
    # mutual TLS, a client certificate.
    tls: bool | TlsSettings = False
    # Credentials, at most one kind: a user and the variable holding its password; the
    # variable holding a token; an NKey seed file; a `.creds` file (JWT and seed, as
    # `nsc` writes it).
    user: str | None = None
    password_env: str | None = None
    token_env: str | None = None
    nkey_seed_file: str | None = None
    creds_file: str | None = None
    durable: str = "temporal-executor-bridge"
    create_streams: bool = True
    # How long JetStream waits for an ack before redelivering a message.
    ack_wait_seconds: float = Field(default=30, gt=0)
    subjects: NatsSubjects = Field(default_factory=NatsSubjects)
    streams: NatsStreams = Field(default_factory=NatsStreams)

    @model_validator(mode="after")
    def _one_kind_of_credentials(self) -> "NatsSettings":
        if (self.user is None) != (self.password_env is None):
            msg = "bus.nats: user and password_env go together"
            raise ValueError(msg)
        kinds = [self.user, self.token_env, self.nkey_seed_file, self.creds_file]
        if sum(kind is not None for kind in kinds) > 1:
            msg = "bus.nats: set at most one of user, token_env, nkey_seed_file, creds_file"
            raise ValueError(msg)
        return self


class BusSettings(StrictModel):
    # The bus for tasks that did not arrive on one (HTTP, A2A) and for CLI commands.
    default: Literal["kafka", "nats"] = "kafka"
    content_mode: ContentMode = "binary"
    # The `source` attribute of every event the service publishes.
    source: str = "temporal-executor"
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    # How long the bus keeps `agent.llm.delta` events: they are live and best-effort (the
    # `agent.llm.responded` after them is the record), so nobody reads old ones. Set on the
    # deltas topic (`retention.ms`) and stream (`max_age`) when the service creates them.
    deltas_retention_seconds: int = Field(default=3600, ge=1)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)

    @model_validator(mode="after")
    def _default_bus_enabled(self) -> "BusSettings":
        if not getattr(self, self.default).enabled:
            msg = f"bus.default is {self.default!r} but bus.{self.default}.enabled is false"
            raise ValueError(msg)
        return self


class TenantSettings(StrictModel):
    """Fair tenants: no tenant holds more than `max_in_flight` of a bridge's slots.

    `key` names where a message's tenant is read: `source` (the CloudEvent's `source`) or a
    dotted path into the event's data, such as `metadata.tenant`; a message without one
    counts as the tenant "". Unset: no per-tenant cap. With a key, the bridge also reads up
    to `read_ahead` messages beyond its slots, so that other tenants' messages behind one
    tenant's flood are reached; each waits, unacknowledged, with its task's order kept.
    """

    key: str | None = Field(default=None, pattern=r"^(source|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*)$")
    # Small: what waits behind a flood is the queue of start RPCs at Temporal, about this cap
    # divided by Temporal's starts per second (README, "Tenants"; bench/tenants.py).
    max_in_flight: int = Field(default=8, ge=1)
    read_ahead: int = Field(default=1024, ge=0)


class BridgeSettings(StrictModel):
    # Messages being handled at once across all tasks; one task's messages stay in order.
    # Each costs a few KB while its start RPC is in flight; 128 kept a local dev server
    # busiest (docs/performance.md) and hides a 20 ms round trip to a remote one.
    max_in_flight: int = Field(default=128, ge=1)
    retry_initial_seconds: float = Field(default=0.5, gt=0)
    retry_max_seconds: float = Field(default=30, gt=0)
    rpc_timeout_seconds: float = Field(default=10, gt=0)
    # Approvers allowed to answer; empty means anyone who can publish on the bus.
    allowed_approvers: list[str] = Field(default_factory=list)
    # Publish `agent.execution.started` as soon as Temporal accepted a start, ahead of the
    # workflow's own copy (same id: consumers dedupe by id). Only for requests that name
    # their model_config, the event's data; off: the workflow alone publishes it.
    announce_started: bool = True
    tenants: TenantSettings = Field(default_factory=TenantSettings)


class KeySource(StrictModel):
    """Where a key or secret is read: a file or an environment variable (exactly one), so
    that no secret sits in committed config."""

    file: str | None = Field(default=None, min_length=1)
    env: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> "KeySource":
        if (self.file is None) == (self.env is None):
            msg = "a key source names exactly one of `file` and `env`"
            raise ValueError(msg)
        return self


class TokenIdentity(StrictModel):
    """A gateway bearer token and the identity of whoever sends it."""

    identity: str = Field(min_length=1)
    token: KeySource


JwtAlgorithm = Literal["EdDSA", "ES256", "ES384", "RS256", "RS384", "RS512", "PS256"]
_DEFAULT_JWT_ALGORITHMS: tuple[JwtAlgorithm, ...] = ("EdDSA", "ES256", "RS256")


class JwtAuthSettings(StrictModel):
    """Gateway callers identified by JWTs, verified offline: signature (configured public
    keys or a JWKS file), issuer, audience and expiry."""

    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    # Public keys as PEM or JWK; a JWKS file's keys are picked by the token's `kid`.
    public_keys: list[KeySource] = Field(default_factory=list)
    jwks_file: str | None = None
    algorithms: list[JwtAlgorithm] = Field(
        default_factory=lambda: list(_DEFAULT_JWT_ALGORITHMS), min_length=1
    )
    # The claim naming the caller; it becomes the approver of approvals they send.
    identity_claim: str = Field(default="sub", min_length=1)
    leeway_seconds: float = Field(default=30, ge=0)

    @model_validator(mode="after")
    def _some_key(self) -> "JwtAuthSettings":
        if not self.public_keys and self.jwks_file is None:
            msg = "gateway.jwt needs public_keys or a jwks_file"
            raise ValueError(msg)
        return self


class GatewaySettings(StrictModel):
    """The HTTP and A2A gateway (`temporal-executor gateway`, and in `dev`)."""

    # 127.0.0.1 serves this machine only; 0.0.0.0 every interface (containers).
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # The environment variable holding the bearer token every call must send; unset: no auth.
    # The health, readiness, docs and agent card endpoints stay open. This one shared token
    # names nobody: callers who approve need an identity from `tokens` or `jwt`.
    auth_token_env: str | None = None
    # Bearer tokens that identify their sender (the approver of the approvals they send).
    tokens: list[TokenIdentity] = Field(default_factory=list)
    # Or JWTs from an identity provider, verified offline.
    jwt: JwtAuthSettings | None = None
    # The URL callers reach the gateway at, named in the A2A agent card; unset: the URL of
    # the request that fetched the card.
    public_url: str | None = None
    # Browser origins allowed to call the codec endpoint (`/codec`, served when
    # temporal.encryption is on): the Temporal UI's.
    codec_cors_origins: list[str] = Field(
        default_factory=lambda: ["http://localhost:8233", "http://127.0.0.1:8233"]
    )
    # The A2A agent card's name and description.
    agent_name: str = "temporal-executor"
    agent_description: str = (
        "Runs an AI agent task durably on Temporal: LLM calls, tool calls and human approvals."
    )


class SigningKeys(StrictModel):
    """The keys one approver, or one bot, signs approval replies with (several: rotation)."""

    # Ed25519 public keys, PEM or JWK (EdDSA signatures): the service holds nothing that
    # could forge an approval.
    public_keys: list[KeySource] = Field(default_factory=list)
    # Shared HS256 secrets (at least 32 bytes) for simple bots; whoever holds one can sign.
    hmac_secrets: list[KeySource] = Field(default_factory=list)
    # Approvers or groups this key may sign as (a bot signing for people); empty: only as
    # the name it is configured under.
    signs_for: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _some_key(self) -> "SigningKeys":
        if not self.public_keys and not self.hmac_secrets:
            msg = "a signer needs public_keys or hmac_secrets"
            raise ValueError(msg)
        return self


_APPROVER_LIST = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]


class ApprovalSettings(StrictModel):
    """Who may approve which tool, and how a bus reply proves who sent it (README, Security).

    Lists name approvers or groups. A tool's own entry (its name as the model sees it, or a
    shell-style pattern) decides; else its MCP server's entry; else `bridge.allowed_approvers`;
    a tool none of them names may be approved by anyone.
    """

    # Refuse bus replies without a valid `approvalsig` (dead-lettered `invalid-signature`).
    require_signature: bool = False
    # A signature is valid at most this long (`exp` - `iat`), and `exp` with this leeway.
    max_validity_seconds: float = Field(default=900, gt=0)
    leeway_seconds: float = Field(default=30, ge=0)
    # Signers by name: an approver, or a bot (its JWS header's `kid`).
    keys: dict[str, SigningKeys] = Field(default_factory=dict)
    groups: dict[str, _APPROVER_LIST] = Field(default_factory=dict)
    tools: dict[str, _APPROVER_LIST] = Field(default_factory=dict)
    mcp_servers: dict[str, _APPROVER_LIST] = Field(default_factory=dict)

    def members(self, names: list[str]) -> list[str]:
        """`names` with each group replaced by its members (sorted, without repeats)."""
        found: set[str] = set()
        for name in names:
            found.update(self.groups.get(name, [name]))
        return sorted(found)


class ExecutorSettings(StrictModel):
    max_iterations: int = Field(default=10, ge=1)
    # true: every tool call needs approval; a list: these tools do.
    require_approval: bool | list[str] = False
    approval_timeout_seconds: float = Field(default=3600, gt=0)
    approve_on_timeout: bool = False
    llm_timeout_seconds: float = Field(default=120, gt=0)
    llm_max_attempts: int = Field(default=5, ge=1)
    # An LLM call heartbeats while it waits for the model: a worker that dies mid-call is
    # noticed after this long (not llm_timeout_seconds) and the call retried elsewhere.
    llm_heartbeat_timeout_seconds: float = Field(default=10, ge=1)
    tool_timeout_seconds: float = Field(default=60, gt=0)
    tool_max_attempts: int = Field(default=3, ge=1)
    publish_timeout_seconds: float = Field(default=15, gt=0)
    # LLM replies and tool results larger than this are truncated (Temporal's hard limit is 2 MB).
    max_result_bytes: int = Field(default=256 * 1024, ge=1024, le=1_500_000)
    # A task continues as new once its history has this many events, keeping its messages.
    continue_as_new_after_events: int = Field(default=10_000, ge=100)
    max_tool_errors: int = Field(
        default=3,
        ge=1,
        description="A task fails once its model makes this many mistaken tool calls in a "
        "row (arguments not JSON or not fitting the tool, a tool it may not call, input the "
        "tool rejects); until then each goes back to the model as an error result. A request "
        "may set fewer.",
    )
    max_parallel_tools: int = Field(
        default=8,
        ge=1,
        description="The tool calls of one LLM turn that run at once; the others wait.",
    )
    max_total_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Token budget (input + output, all turns) of a task that sets none; "
        "null: no budget.",
    )
    stream: bool = Field(
        default=False,
        description="Publish `agent.llm.delta` events as the model writes, for requests that "
        'do not say (`"stream": true|false`); deltas go to their own destination '
        "(`bus.kafka.topics.deltas`, `bus.nats.subjects.deltas`).",
    )
    delta_interval_seconds: float = Field(
        default=0.05,
        ge=0,
        description="At most one delta event per fragment kind this often, so a fast model "
        "does not become thousands of messages; the first fragment of a call goes out at once.",
    )


class WorkerSettings(StrictModel):
    # On SIGTERM the worker stops polling and gives running activities this long to finish;
    # then it cancels them and reports them failed, so Temporal retries them elsewhere at once.
    graceful_shutdown_seconds: float = Field(default=10, ge=0)
    # Workflow runs kept in memory between their workflow tasks (the SDK's sticky cache); a
    # run not in it is rebuilt by replaying its history at its next workflow task. A run
    # leaves the cache when it ends, so only unfinished ones count, and a task waiting for
    # an approval stays until the reply. Each costs ~120-150 KB of RSS (docs/performance.md):
    # the SDK's default of 1000 lets waiting tasks alone take ~150 MB.
    max_cached_workflows: int = Field(default=100, ge=0)
    # Workflow tasks and activities this worker runs at once (the SDK's slots, 100 each).
    max_concurrent_workflow_tasks: int = Field(default=100, ge=2)
    max_concurrent_activities: int = Field(default=100, ge=1)


ProviderKind = Literal[
    "anthropic", "openai", "azure_openai", "vertex_anthropic", "vertex_gemini", "scripted"
]


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
    # Streaming: the pause before each fragment (a word of text, a piece of arguments), to
    # play a model that writes at a human pace.
    chunk_delay_seconds: float = Field(default=0, ge=0)


class FallbackTarget(StrictModel):
    """Where a task's LLM call goes when its provider is down (rate limited or unavailable
    after every attempt): another configured provider, and the model to ask there."""

    provider: str = Field(min_length=1)
    # None: the model the request named.
    model: str | None = Field(default=None, min_length=1)


_AZURE_AUTH = ("api_key_env", "azure_ad_token_env", "azure_ad_token_provider")
_VERTEX_ONLY = ("project", "region", "access_token_env")


class ProviderSettings(StrictModel):
    name: str = Field(min_length=1)
    kind: ProviderKind
    api_key_env: str | None = None
    base_url: str | None = None
    # Azure OpenAI
    api_version: str | None = None
    # Azure OpenAI with Microsoft Entra ID instead of a key (set at most one of these and
    # api_key_env): a variable holding an access token (read once; it expires, so for tests
    # and short jobs), or a refreshing token provider from the azure-identity package
    # (installed separately).
    azure_ad_token_env: str | None = None
    azure_ad_token_provider: Literal["default_azure_credential"] | None = None
    # Vertex AI (vertex_anthropic, vertex_gemini). Unset: the SDKs' usual variables
    # (ANTHROPIC_VERTEX_PROJECT_ID or GOOGLE_CLOUD_PROJECT, CLOUD_ML_REGION or
    # GOOGLE_CLOUD_LOCATION) and Application Default Credentials.
    project: str | None = None
    region: str | None = None
    # A variable holding an OAuth 2 access token to use instead of Application Default
    # Credentials (e.g. from `gcloud auth print-access-token`).
    access_token_env: str | None = None
    # Models this provider may run; empty allows any.
    models: list[str] = Field(default_factory=list)
    default_max_tokens: int = Field(default=4096, gt=0)
    # Scripted provider: model name -> turns played in order, one per LLM call.
    scripts: dict[str, list[ScriptedTurn]] = Field(default_factory=dict)
    # Tried in order when this provider stays rate limited or unavailable (see README).
    fallbacks: list[FallbackTarget] = Field(default_factory=list)

    @model_validator(mode="after")
    def _options_fit_the_kind(self) -> "ProviderSettings":
        unused = [f for f in _AZURE_AUTH[1:] if self.kind != "azure_openai" and getattr(self, f)]
        unused += [
            f for f in _VERTEX_ONLY if not self.kind.startswith("vertex_") and getattr(self, f)
        ]
        if unused:
            msg = f"provider {self.name!r}: {', '.join(unused)} not used by kind {self.kind}"
            raise ValueError(msg)
        if self.kind == "azure_openai" and sum(bool(getattr(self, f)) for f in _AZURE_AUTH) > 1:
            msg = f"provider {self.name!r}: set at most one of {', '.join(_AZURE_AUTH)}"
            raise ValueError(msg)
        if any(target.provider == self.name for target in self.fallbacks):
            msg = f"provider {self.name!r} names itself in its fallbacks"
            raise ValueError(msg)
        return self


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
        # A fallback is needed only when its provider is down: a typo must fail at start.
        for provider in self.providers:
            missing = [f.provider for f in provider.fallbacks if f.provider not in names]
            if missing:
                msg = f"llm.providers: {provider.name!r} falls back to unknown providers {missing}"
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


class McpServerSettings(StrictModel):
    """An MCP server whose tools the model may call, as `<tool_prefix>__<tool>`.

    The worker connects once at start (stdio: it starts `command` and keeps it running;
    http: a streamable HTTP session to `url`) and lists the server's tools. Tool-name
    lists (`allow`, `deny`, `require_approval`) take the server's names or the names the
    model sees, and shell-style patterns such as `delete_*`.
    """

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,32}$")
    transport: Literal["stdio", "http"]
    # stdio: the server process. It gets PATH, HOME, USER, SHELL, TERM and LOGNAME, `env`,
    # and the worker's variables named in `inherit_env` (a token, say), nothing else.
    command: str | None = Field(default=None, min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    inherit_env: list[str] = Field(default_factory=list)
    cwd: str | None = None
    # http: the endpoint, headers sent on every request, and headers whose value is read
    # from a worker variable (`{Authorization: MY_TOKEN_ENV}`).
    url: str | None = Field(default=None, pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    headers_env: dict[str, str] = Field(default_factory=dict)
    # Which of the server's tools are offered: `allow` (empty: all) minus `deny`.
    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    # true: every tool of this server needs approval; a list: these do.
    require_approval: bool | list[str] = False
    # How long one tool call may take; None: executor.tool_timeout_seconds.
    timeout_seconds: float | None = Field(default=None, gt=0)
    connect_timeout_seconds: float = Field(default=10, gt=0)
    # Tools are offered as `<tool_prefix>__<tool>`; None: the server's `name`; "": no prefix.
    tool_prefix: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9_-]{0,32}$")

    @model_validator(mode="after")
    def _fields_fit_the_transport(self) -> "McpServerSettings":
        stdio_only = ("command", "args", "env", "inherit_env", "cwd")
        http_only = ("url", "headers", "headers_env")
        needed, unused = (
            ("command", http_only) if self.transport == "stdio" else ("url", stdio_only)
        )
        if getattr(self, needed) is None:
            msg = f"mcp server {self.name!r}: transport {self.transport} needs `{needed}`"
            raise ValueError(msg)
        if set_fields := [f for f in unused if getattr(self, f)]:
            msg = (
                f"mcp server {self.name!r}: {', '.join(set_fields)} not used by "
                f"transport {self.transport}"
            )
            raise ValueError(msg)
        return self


def _unique_mcp_names(servers: list[McpServerSettings]) -> list[McpServerSettings]:
    names = [server.name for server in servers]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        msg = f"duplicate MCP server names {duplicates}"
        raise ValueError(msg)
    return servers


class TracingSettings(StrictModel):
    """OpenTelemetry traces. Trace context flows through the bus, Temporal and every
    published event's `traceparent` whether or not spans are exported."""

    # none: no export; otlp: to an OpenTelemetry collector; console: to stderr. Unset: the
    # OTEL_TRACES_EXPORTER variable (otlp, console or none), else none.
    exporter: Literal["none", "otlp", "console"] | None = None
    # OTLP over grpc or http/protobuf. Unset: OTEL_EXPORTER_OTLP_PROTOCOL, else grpc.
    protocol: Literal["grpc", "http/protobuf"] | None = None
    # Where OTLP goes. Unset: OTEL_EXPORTER_OTLP(_TRACES)_ENDPOINT, else the exporter's default
    # (localhost:4317 for grpc, http://localhost:4318/v1/traces for http/protobuf).
    endpoint: str | None = None
    # Prompts, replies, tool arguments and results on spans (gen_ai.input.messages, ...).
    # Off: spans carry names, ids, models, token counts and error types only.
    capture_content: bool = False


class ObservabilitySettings(StrictModel):
    """Metrics, health probes and traces of the bridge and the worker (the gateway serves
    /metrics, /healthz and /readyz on its own port)."""

    # Where the bridge and the worker serve /metrics, /healthz and /readyz; unset: not served.
    port: int | None = Field(default=None, ge=0, le=65535)
    # 127.0.0.1 serves this machine only; 0.0.0.0 every interface (containers).
    host: str = "127.0.0.1"
    # The Temporal SDK's own metrics (temporal_*: polls, task latencies, slots), on /metrics too.
    temporal_sdk_metrics: bool = True
    # How long /readyz waits for Temporal and each bus to answer.
    readiness_timeout_seconds: float = Field(default=2, gt=0)
    tracing: TracingSettings = Field(default_factory=TracingSettings)


class LocalPayloadStore(StrictModel):
    # Every process of the deployment must see the same directory (one host, or a shared
    # volume); relative to the working directory.
    directory: str = ".temporal-executor/payloads"


class S3PayloadStore(StrictModel):
    bucket: str = ""  # must exist already
    # Prepended to every object key; objects already stored keep the key they were stored at.
    prefix: str = ""
    # An S3-compatible endpoint (MinIO, Ceph, moto…); unset: AWS. Credentials come from the
    # usual AWS variables and files (AWS_ACCESS_KEY_ID, AWS_PROFILE, roles, …).
    endpoint_url: str | None = None
    region: str | None = None


class PayloadStorageSettings(StrictModel):
    """Temporal's External Storage: payloads of at least `threshold_bytes` (a conversation
    sent to the LLM, a long tool result, a continue-as-new input) go to the store, and
    history keeps a reference. Every process (worker, bridge, gateway, CLI) must use the
    same store; encryption, when configured, happens before a payload leaves the process."""

    store: Literal["none", "local", "s3"] = "none"
    threshold_bytes: int = Field(default=256 * 1024, ge=0, le=2 * 1024 * 1024)
    local: LocalPayloadStore = Field(default_factory=LocalPayloadStore)
    s3: S3PayloadStore = Field(default_factory=S3PayloadStore)

    @property
    def max_payload_bytes(self) -> int:
        """The largest payload a workflow may hand Temporal: the server's 2 MB limit (less
        headroom for the envelope) when payloads stay inline, else the S3 driver's 50 MiB."""
        if self.store == "none":
            return 2 * 1024 * 1024 - 16 * 1024
        return 50 * 1024 * 1024

    @model_validator(mode="after")
    def _s3_has_a_bucket(self) -> "PayloadStorageSettings":
        if self.store == "s3" and not self.s3.bucket:
            msg = "payload_storage.s3.bucket is required when payload_storage.store is s3"
            raise ValueError(msg)
        return self


class LoggingSettings(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class Settings(StrictModel):
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    bridge: BridgeSettings = Field(default_factory=BridgeSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    payload_storage: PayloadStorageSettings = Field(default_factory=PayloadStorageSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    tools: list[ToolSettings] = Field(default_factory=_default_tools)
    mcp_servers: Annotated[list[McpServerSettings], AfterValidator(_unique_mcp_names)] = Field(
        default_factory=list
    )
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)

    @model_validator(mode="after")
    def _approvals_name_servers(self) -> "Settings":
        # A misspelt server would leave its tools open to any approver.
        for name in self.approvals.mcp_servers:
            server = next((s for s in self.mcp_servers if s.name == name), None)
            if server is None:
                msg = f"approvals.mcp_servers names {name!r}, which mcp_servers lacks"
                raise ValueError(msg)
            if not _prefix(server):
                msg = (
                    f"approvals.mcp_servers: server {name!r} has an empty tool_prefix, so its "
                    "tools cannot be told apart; name them under approvals.tools"
                )
                raise ValueError(msg)
        return self

    def approvers_for(self, tool: str) -> list[str] | None:
        """Who may approve calls of `tool` (the name the model sees), groups expanded; None:
        anyone. Its own `approvals.tools` entry (exact name first, then patterns in config
        order), else its MCP server's (by tool prefix), else `bridge.allowed_approvers`."""
        approvals = self.approvals
        named = approvals.tools.get(tool)
        if named is None:
            named = next((v for k, v in approvals.tools.items() if fnmatchcase(tool, k)), None)
        if named is None:
            named = next(
                (
                    approvals.mcp_servers[server.name]
                    for server in self.mcp_servers
                    if server.name in approvals.mcp_servers
                    and tool.startswith(f"{_prefix(server)}__")
                ),
                None,
            )
        if named is None:
            named = self.bridge.allowed_approvers
        return approvals.members(named) if named else None

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


def _prefix(server: McpServerSettings) -> str:
    return server.name if server.tool_prefix is None else server.tool_prefix
