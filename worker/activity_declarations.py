"""The agent workflow's activities as the workflow sees them: name, input, output.

The workflow module imports only this, so its import graph holds no I/O code (LLM SDKs,
MCP, bus clients); `worker/activities.py` implements the protocol, and the worker
registers that implementation. The names are part of every recorded history: renaming
one breaks the replay of running tasks.
"""

from typing import Protocol

from temporalio import activity

from temporal_executor.schemas.requests import ExecutionRequested
from temporal_executor.schemas.task import (
    LlmCallInput,
    LlmCallResult,
    PublishBatch,
    PublishInput,
    TaskPlan,
    ToolCallInput,
    ToolCallResult,
)


class AgentActivityDeclarations(Protocol):
    @activity.defn(name="plan_task")
    async def plan_task(self, request: ExecutionRequested) -> TaskPlan:
        """Resolve a request against config: model, tools, approval policy, limits."""
        ...

    @activity.defn(name="call_llm")
    async def call_llm(self, call: LlmCallInput) -> LlmCallResult:
        """One LLM turn with the conversation so far."""
        ...

    @activity.defn(name="run_tool")
    async def run_tool(self, call: ToolCallInput) -> ToolCallResult:
        """One tool call; raises an `ApplicationError` whose type says why it failed."""
        ...

    @activity.defn(name="publish_event")
    async def publish_event(self, publish: PublishInput) -> None:
        """Publish one event on the task's bus."""
        ...

    @activity.defn(name="publish_events")
    async def publish_events(self, batch: PublishBatch) -> None:
        """Publish events in order; a retry publishes the earlier ones again."""
        ...
