"""Approvals over A2A, the way kagent's human-in-the-loop extension carries them.

The extension (https://kagent.dev/extensions/hitl/v1, `kagent.core.a2a._hitl` and kagent's
"Human in the loop" page) pauses a task in `input-required` whose status message lists the
URI in `extensions` and holds, under that URI in its `metadata`::

    {"type": "tool_approval_request", "hint": "...",
     "tools": [{"id": <opaque approval id>, "call_id": <tool call id>, "name": ..., "args": {...}}]}

and the client resumes the same task with a message that does the same with::

    {"type": "tool_approval_response",
     "approvals": [{"id": <approval id>, "approved": true|false, "rejection_reason": "..."}]}

Here `id` is our `approval_id`. kagent's models forbid other keys, so the deadline goes in
the hint. The request is attached whether or not the caller asked for the extension (the
`A2A-Extensions` header), and it is also a DataPart, so a client that knows nothing of the
extension still sees the tool call; the prose part says how to answer in plain text.

Replies are read leniently: the response in the metadata (with or without the URI in
`extensions`), the same object as a DataPart, or text starting with approve/yes or
deny/no (the rest of the text is the reason). Any other text is a follow-up message, the
way A2A continues a task in `input-required`: it denies the calls waiting, with the text
as the reason the model reads, so the person steers the agent and nothing runs unasked.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from a2a.helpers import get_data_parts, get_message_text, new_data_part, new_text_part
from a2a.types.a2a_pb2 import Message, Role
from google.protobuf.json_format import MessageToDict

from temporal_executor.schemas.conversation import ToolCall

HITL_EXTENSION_URI = "https://kagent.dev/extensions/hitl/v1"
TOOL_APPROVAL_REQUEST = "tool_approval_request"
TOOL_APPROVAL_RESPONSE = "tool_approval_response"

_APPROVE = frozenset({"approve", "approved", "yes", "y", "ok", "allow"})
_DENY = frozenset({"deny", "denied", "reject", "rejected", "no", "n"})


@dataclass(frozen=True)
class PendingCall:
    approval_id: str
    tool_call: ToolCall
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Decision:
    approval_id: str
    approved: bool
    reason: str | None = None


class UnreadableReply(ValueError):
    """A message on a task waiting for approval that says nothing, or a structured
    response that names other approvals; says what would do."""


def approval_request(pending: list[PendingCall]) -> dict[str, Any]:
    """The extension's `tool_approval_request` payload for the approvals waiting."""
    return {
        "type": TOOL_APPROVAL_REQUEST,
        "hint": " ".join(_hint(call) for call in pending),
        "tools": [
            {
                "id": call.approval_id,
                "call_id": call.tool_call.id,
                "name": call.tool_call.name,
                "args": call.tool_call.arguments,
            }
            for call in pending
        ],
    }


def approval_message(
    pending: list[PendingCall], *, message_id: str, task_id: str, context_id: str
) -> Message:
    """The status message of a task in `input-required`: prose, a DataPart, the extension."""
    payload = approval_request(pending)
    prose = (
        f'{payload["hint"]} Reply "approve" or "deny" (optionally with a reason); '
        "anything else denies it and goes to the agent as your answer."
    )
    message = Message(
        message_id=message_id,
        task_id=task_id,
        context_id=context_id,
        role=Role.ROLE_AGENT,
        parts=[new_text_part(prose), new_data_part(payload)],
        extensions=[HITL_EXTENSION_URI],
    )
    message.metadata.update({HITL_EXTENSION_URI: payload})
    return message


def decisions(message: Message, pending: list[PendingCall]) -> list[Decision]:
    """What a reply decides; `UnreadableReply` if it decides nothing or names other calls."""
    waiting = [call.approval_id for call in pending]
    response = _structured_response(message)
    if response is not None:
        found = [_decision(item) for item in response.get("approvals") or []]
        unknown = [d.approval_id for d in found if d.approval_id not in waiting]
        if not found or unknown:
            msg = f"the tool_approval_response must decide {waiting}; it names {unknown or 'none'}"
            raise UnreadableReply(msg)
        return found
    words = get_message_text(message, " ").strip()
    if not words:
        msg = (
            f"the task is waiting for approval of {waiting}: reply with a "
            f"{TOOL_APPROVAL_RESPONSE} ({HITL_EXTENSION_URI}) or text"
        )
        raise UnreadableReply(msg)
    verdict, _, rest = words.partition(" ")
    verdict = verdict.lower().strip(".,!:;")
    if verdict in _APPROVE | _DENY:
        reason = rest.strip() or None
        return [Decision(approval_id, verdict in _APPROVE, reason) for approval_id in waiting]
    # Any other text is the person's answer to the agent: the calls waiting do not run (only
    # an explicit yes runs a tool) and the model reads the words as the reason they did not.
    return [Decision(approval_id, False, words) for approval_id in waiting]


def _structured_response(message: Message) -> dict[str, Any] | None:
    candidates: list[Any] = []
    if message.HasField("metadata"):
        candidates.append(MessageToDict(message.metadata).get(HITL_EXTENSION_URI))
    candidates.extend(get_data_parts(message.parts))
    for candidate in candidates:
        if isinstance(candidate, dict) and candidate.get("type") == TOOL_APPROVAL_RESPONSE:
            return candidate
    return None


def _decision(item: Any) -> Decision:
    if not isinstance(item, dict) or not isinstance(item.get("approved"), bool):
        msg = f"each approval needs an id and a boolean approved, got {json.dumps(item)}"
        raise UnreadableReply(msg)
    reason = item.get("rejection_reason")
    return Decision(str(item.get("id")), item["approved"], reason if reason else None)


def _hint(call: PendingCall) -> str:
    arguments = json.dumps(call.tool_call.arguments, ensure_ascii=False)
    hint = f"{call.tool_call.name}({arguments}) needs approval ({call.approval_id}"
    if call.expires_at is not None:
        hint += f", expires {call.expires_at.isoformat()}"
    return hint + ")."
