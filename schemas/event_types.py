"""CloudEvent type names of the wire contract (../shared/CONTRACT.md, "Event types")."""

from enum import StrEnum


class EventType(StrEnum):
    # Inbound
    EXECUTION_REQUESTED = "agent.execution.requested"
    CANCEL_REQUESTED = "agent.execution.cancel.requested"
    APPROVAL_REPLIED = "agent.tool.approval.replied"
    # Outbound, in the order a task produces them
    EXECUTION_STARTED = "agent.execution.started"
    LLM_RESPONDED = "agent.llm.responded"
    # Best-effort fragments of a turn, on their own destination, between started and
    # the turn's `agent.llm.responded` (contract v1.1, "Streaming").
    LLM_DELTA = "agent.llm.delta"
    APPROVAL_REQUESTED = "agent.tool.approval.requested"
    APPROVAL_RESOLVED = "agent.tool.approval.resolved"
    TOOL_COMPLETED = "agent.tool.completed"
    EXECUTION_COMPLETED = "agent.execution.completed"
    EXECUTION_FAILED = "agent.execution.failed"
    EXECUTION_CANCELLED = "agent.execution.cancelled"


INBOUND_TYPES = frozenset(
    {EventType.EXECUTION_REQUESTED, EventType.CANCEL_REQUESTED, EventType.APPROVAL_REPLIED}
)
TERMINAL_TYPES = frozenset(
    {EventType.EXECUTION_COMPLETED, EventType.EXECUTION_FAILED, EventType.EXECUTION_CANCELLED}
)

WORKFLOW_ID_PREFIX = "agent-execution-"
WORKFLOW_TYPE = "AgentExecutionWorkflow"


def workflow_id_for(task_id: str) -> str:
    """The Temporal workflow id of a task, fixed by the contract."""
    return f"{WORKFLOW_ID_PREFIX}{task_id}"


def event_id_for(workflow_id: str, sequence: int) -> str:
    """The id of a task's `sequence`-th published event, fixed by the contract: the
    workflow and the bridge's early `started` must agree on it."""
    return f"{workflow_id}/{sequence}"


def delta_id_for(workflow_id: str, iteration: int, attempt: int, index: int) -> str:
    """The id of an `agent.llm.delta`, fixed by the contract."""
    return f"{workflow_id}/delta/{iteration}/{attempt}/{index}"
