"""Every payload shape of temporal-executor: the wire contract, workflow I/O and config.

This package does no I/O and imports nothing else of the project; everything imports it.
"""

from typing import Any

from pydantic import BaseModel

from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import Settings
from temporal_executor.schemas.conversation import (
    AssistantMessage,
    ChatMessage,
    ToolCall,
    ToolSpec,
    Usage,
)
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from temporal_executor.schemas.events import (
    ApprovalRequested,
    ApprovalResolved,
    ErrorInfo,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionStarted,
    LlmDelta,
    LlmResponded,
    TaskEventData,
    ToolCallFragment,
    ToolCompleted,
)
from temporal_executor.schemas.requests import (
    ApprovalReplied,
    CancelRequested,
    ExecutionRequested,
    ModelSelection,
)

# The data model of each event type, as published in JSON Schema.
DATA_MODELS: dict[EventType, type[BaseModel]] = {
    EventType.EXECUTION_REQUESTED: ExecutionRequested,
    EventType.CANCEL_REQUESTED: CancelRequested,
    EventType.APPROVAL_REPLIED: ApprovalReplied,
    EventType.EXECUTION_STARTED: ExecutionStarted,
    EventType.LLM_RESPONDED: LlmResponded,
    EventType.LLM_DELTA: LlmDelta,
    EventType.APPROVAL_REQUESTED: ApprovalRequested,
    EventType.APPROVAL_RESOLVED: ApprovalResolved,
    EventType.TOOL_COMPLETED: ToolCompleted,
    EventType.EXECUTION_COMPLETED: ExecutionCompleted,
    EventType.EXECUTION_FAILED: ExecutionFailed,
    EventType.EXECUTION_CANCELLED: ExecutionCancelled,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of each event type's `data`, plus the config file, keyed by file stem."""
    schemas: dict[str, dict[str, Any]] = {}
    for event_type, model in DATA_MODELS.items():
        schema = model.model_json_schema(by_alias=True)
        schema["title"] = f"{event_type} data"
        schemas[str(event_type)] = schema
    schemas["config"] = Settings.model_json_schema()
    return schemas


__all__ = [
    "DATA_MODELS",
    "ApprovalReplied",
    "ApprovalRequested",
    "ApprovalResolved",
    "AssistantMessage",
    "CancelRequested",
    "ChatMessage",
    "CloudEvent",
    "ErrorInfo",
    "EventType",
    "ExecutionCancelled",
    "ExecutionCompleted",
    "ExecutionFailed",
    "ExecutionRequested",
    "ExecutionStarted",
    "LlmDelta",
    "LlmResponded",
    "ModelSelection",
    "Settings",
    "TaskEventData",
    "ToolCall",
    "ToolCallFragment",
    "ToolCompleted",
    "ToolSpec",
    "Usage",
    "json_schemas",
    "workflow_id_for",
]
