"""The gateway's ASGI app: REST API, A2A (JSON-RPC and agent card), health, OpenAPI docs."""

import asyncio
import logging
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import add_a2a_routes_to_fastapi, create_jsonrpc_routes
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentExtension,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, PROTOCOL_VERSION_1_0, TransportProtocol
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException
from starlette.routing import Route

from temporal_executor.gateway._a2a import TaskRequestHandler
from temporal_executor.gateway._a2a_http import cached_card, json_only
from temporal_executor.gateway._codec import CODEC_REQUEST_HEADERS, codec_router
from temporal_executor.gateway._errors import GatewayError, http_answer
from temporal_executor.gateway._hitl import HITL_EXTENSION_URI
from temporal_executor.gateway._identity import Authenticator
from temporal_executor.gateway._middleware import BearerAuth, EchoExtensions
from temporal_executor.gateway._models import ErrorBody, Health
from temporal_executor.gateway._rest import TaskRoutes, request_schemas
from temporal_executor.gateway._streams import TaskStreams
from temporal_executor.schemas.config import Settings
from temporal_executor.tasks.errors import TaskError, TemporalUnavailable
from temporal_executor.tasks.payload_encryption import encryption_codec
from temporal_executor.tasks.service import TaskService
from temporal_executor.telemetry.temporal_sdk import exposition
from temporal_executor.telemetry.tracing import exporting, tracer_provider

log = logging.getLogger(__name__)

A2A_PATH = "/a2a"
BEARER_SCHEME = "bearer"


def create_app(
    settings: Settings, tasks: TaskService, streams: TaskStreams, *, token: str | None
) -> FastAPI:
    """The app for `tasks`. With a `token` (the shared one) or identities in config
    (`gateway.tokens`, `gateway.jwt`), every call but health, docs and the card needs one."""
    authenticator = Authenticator(settings.gateway, token)
    started = datetime.now(UTC)
    app = FastAPI(
        title="temporal-executor gateway",
        version=_version(),
        description=(
            "Start, follow and approve agent tasks over HTTP, or drive them as an A2A agent. "
            "Tasks are the ones the bus carries: same validation, same workflow "
            "(`agent-execution-<task_id>`), same CloudEvents."
        ),
        redoc_url=None,
    )
    routes = TaskRoutes(tasks, streams, max_body_bytes=settings.bus.max_message_bytes)
    app.include_router(routes.router())
    codec = encryption_codec(settings.temporal.encryption)
    if codec is not None:
        app.include_router(codec_router(codec))

    @app.get("/healthz", tags=["health"], summary="The process is up")
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Temporal answers: tasks can be started",
        responses={503: {"model": Health}},
    )
    async def readyz() -> JSONResponse:
        problem = await _readiness(tasks, streams)
        if problem is None:
            return JSONResponse(Health(status="ready").model_dump())
        body = Health(status="unavailable", detail=problem)
        return JSONResponse(body.model_dump(), status_code=503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics (README, Operations)")
    async def prometheus_metrics() -> Response:
        # Off the event loop: it reads the Temporal SDK's metrics over loopback HTTP.
        body = await asyncio.to_thread(exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get(AGENT_CARD_WELL_KNOWN_PATH, tags=["A2A: Agent Card"], summary="The A2A agent card")
    async def card(request: Request) -> Response:
        base = settings.gateway.public_url or str(request.base_url)
        found = agent_card(settings, base.rstrip("/"), bearer=authenticator.enabled)
        return cached_card(request, agent_card_to_dict(found), started)

    handler = TaskRequestHandler(
        tasks, streams, cancel_wait_seconds=settings.bridge.rpc_timeout_seconds
    )
    [sdk_route] = create_jsonrpc_routes(handler, A2A_PATH)
    endpoint = json_only(sdk_route.endpoint)
    add_a2a_routes_to_fastapi(app, jsonrpc_routes=[Route(A2A_PATH, endpoint, methods=["POST"])])
    # Clients that join the card's URL with "/" (the A2A TCK's) post to `/a2a/`.
    app.add_route(f"{A2A_PATH}/", endpoint, methods=["POST"], include_in_schema=False)
    a2a_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = a2a_openapi()
        schema.setdefault("components", {}).setdefault("schemas", {}).update(request_schemas())
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(TaskError, _gateway_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(EchoExtensions, supported=frozenset({HITL_EXTENSION_URI}))
    if authenticator.enabled:
        # Outermost: before anything else runs.
        app.add_middleware(BearerAuth, authenticator=authenticator)
    if codec is not None and settings.gateway.codec_cors_origins:
        # Outside the bearer check: a browser's preflight carries no token. It only asks
        # whether the UI's origin may call; the call itself still passes the bearer check.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.gateway.codec_cors_origins,
            allow_methods=["POST"],
            allow_headers=list(CODEC_REQUEST_HEADERS),
            allow_credentials=True,
        )
    if exporting():
        # A server span per call (named by route, continuing the caller's `traceparent`);
        # a task started under it carries the trace into its workflow and events.
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=tracer_provider(), excluded_urls="healthz,readyz,metrics"
        )
    return app


def agent_card(settings: Settings, base_url: str, *, bearer: bool) -> AgentCard:
    gateway = settings.gateway
    card = AgentCard(
        name=gateway.agent_name,
        description=gateway.agent_description,
        version=_version(),
        documentation_url=f"{base_url}/docs",
        supported_interfaces=[
            AgentInterface(
                url=f"{base_url}{A2A_PATH}",
                protocol_binding=TransportProtocol.JSONRPC.value,
                protocol_version=PROTOCOL_VERSION_1_0,
            )
        ],
        capabilities=AgentCapabilities(
            streaming=True,
            push_notifications=False,
            extensions=[
                AgentExtension(
                    uri=HITL_EXTENSION_URI,
                    description="Tool calls that need a person's approval pause the task in "
                    "input-required with a tool_approval_request; answer with a "
                    "tool_approval_response (or the text approve / deny).",
                    required=False,
                )
            ],
        ),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain", "application/json"],
        skills=[
            AgentSkill(
                id="agent-task",
                name="Run an agent task",
                description="Runs the message as a durable agent task: LLM turns and tool "
                f"calls, with approvals where config asks. Default model: "
                f"{settings.llm.default_provider}/{settings.llm.default_model}; message "
                "metadata may set model_config {provider, model}, tools, system_prompt.",
                tags=["agent", "temporal", "durable"],
                examples=["Work out 6 * 7 and save a note about it."],
            )
        ],
    )
    if bearer:
        card.security_schemes[BEARER_SCHEME].CopyFrom(
            SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(scheme="bearer"))
        )
        card.security_requirements.append(
            SecurityRequirement(schemes={BEARER_SCHEME: StringList()})
        )
    return card


async def _readiness(tasks: TaskService, streams: TaskStreams) -> str | None:
    """What keeps the gateway from serving, or None when Temporal answers."""
    if streams.closing:
        return "shutting down"
    try:
        await tasks.ping()
    except TemporalUnavailable as exc:
        return exc.message
    return None


def _version() -> str:
    try:
        return version("temporal-executor")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def _error(status: int, code: str, message: str) -> JSONResponse:
    body = ErrorBody(status=status, error=code, message=message)
    return JSONResponse(body.model_dump(), status_code=status)


async def _gateway_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError | TaskError)
    status, code = http_answer(exc)
    if status >= 500:
        log.warning(
            "gateway request failed", extra={"path": request.url.path, "error": exc.message}
        )
    return _error(status, code, exc.message)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, str(exc.detail))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
    )
    return _error(400, "invalid_request", problems)
