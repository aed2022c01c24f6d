"""The worker process: runs agent workflows and their activities until told to stop."""

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from temporal_executor.bus.factory import create_transport, enabled_buses
from temporal_executor.bus.transport import Transport
from temporal_executor.schemas.config import Settings
from temporal_executor.schemas.task import BusName
from temporal_executor.tasks.temporal_connection import connect_temporal, readiness_checks
from temporal_executor.telemetry.health import Check
from temporal_executor.worker.activities import AgentActivities
from temporal_executor.worker.llm.registry import ProviderRegistry
from temporal_executor.worker.publisher import EventPublisher
from temporal_executor.worker.tools.registry import ToolRegistry, ToolSource
from temporal_executor.worker.workflow import AgentExecutionWorkflow

log = logging.getLogger(__name__)
HEARTBEAT_THROTTLE = timedelta(seconds=2)


def build_activities(
    settings: Settings, tool_sources: Sequence[ToolSource] = ()
) -> tuple[AgentActivities, EventPublisher, ProviderRegistry]:
    providers = ProviderRegistry(settings.llm)
    publisher = EventPublisher(
        lambda bus: _publishing_transport(bus, settings), source=settings.bus.source
    )
    activities = AgentActivities(
        executor=settings.executor,
        llm=settings.llm,
        providers=providers,
        tools=ToolRegistry(settings.tools, tool_sources),
        publisher=publisher,
        approvers_for=settings.approvers_for,
        max_payload_bytes=settings.payload_storage.max_payload_bytes,
    )
    return activities, publisher, providers


def _publishing_transport(bus: BusName, settings: Settings) -> Transport:
    return create_transport(bus, settings.bus)


def build_worker(client: Client, settings: Settings, activities: AgentActivities) -> Worker:
    return Worker(
        client,
        task_queue=settings.temporal.task_queue,
        workflows=[AgentExecutionWorkflow],
        activities=[
            activities.plan_task,
            activities.call_llm,
            activities.run_tool,
            activities.publish_event,
            activities.publish_events,
        ],
        # In-flight activities get this long to finish on SIGTERM before they are cancelled.
        graceful_shutdown_timeout=timedelta(seconds=settings.worker.graceful_shutdown_seconds),
        # The SDK sends heartbeats at most every 80% of the heartbeat timeout: 8 of the LLM
        # call's 10 s, so 2 s late on a busy host was a lost call. Every 2 s leaves 8.
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        max_cached_workflows=settings.worker.max_cached_workflows,
        max_concurrent_workflow_tasks=settings.worker.max_concurrent_workflow_tasks,
        max_concurrent_activities=settings.worker.max_concurrent_activities,
        # The sandbox still checks every workflow call for determinism; passing modules
        # through instead of re-importing them for each workflow run took ~8 ms off a
        # task's first workflow task (docs/performance.md). Workflow code keeps no state
        # in modules, so sharing them between runs is safe.
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
        ),
    )


async def run_worker(settings: Settings, stop: asyncio.Event, client: Client | None = None) -> None:
    client = client or await connect_temporal(settings)
    async with _mcp_servers(settings) as servers:
        activities, publisher, providers = build_activities(settings, servers)
        worker = build_worker(client, settings, activities)
        log.info(
            "worker started",
            extra={
                "task_queue": settings.temporal.task_queue,
                "temporal": settings.temporal.host_port,
            },
        )
        try:
            async with worker:
                bus_checks: dict[str, Check] = {
                    bus: functools.partial(publisher.check, bus)
                    for bus in enabled_buses(settings.bus)
                }
                with readiness_checks(settings, client, bus_checks):
                    await stop.wait()
                log.info("worker stopping")
        finally:
            await publisher.close()
            await providers.aclose()
    log.info("worker stopped")


@contextlib.asynccontextmanager
async def _mcp_servers(settings: Settings) -> AsyncIterator[Sequence[ToolSource]]:
    """Connected MCP servers, before the worker polls, so the first task sees their tools;
    one that is down does not stop the worker (see worker/tools/mcp_tools.py)."""
    if not settings.mcp_servers:
        # The `mcp` SDK costs ~30 MB of RSS: only a worker that uses it imports it.
        yield ()
        return
    from temporal_executor.worker.tools.mcp_tools import McpTools

    async with McpTools(
        settings.mcp_servers,
        default_timeout=settings.executor.tool_timeout_seconds,
        reserved=[tool.name for tool in settings.tools],
    ) as mcp:
        yield mcp.servers
