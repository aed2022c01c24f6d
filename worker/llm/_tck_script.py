"""The scripted `tck` model: the agent the official A2A TCK (a2aproject/a2a-tck) expects.

The TCK drives its system under test by the A2A message id: a message whose `messageId`
starts with a scenario's prefix asks for that scenario's behaviour (its
`docs/SUT_REQUIREMENTS.md` and `scenarios/*.feature`). The gateway keeps the message id
of the message that started a task in the request's metadata (`a2a.message_id`), so this
model reads it there and answers as the scenario says, as far as an agent of ours can:

- a scenario's text becomes the final message, hence the task's text artifact;
- "input required" is a tool call that needs approval (`save_note`, when offered);
- the long-running task of the resubscription test writes slowly.

Scenarios that need what a task of ours cannot produce (a reply that is a Message and
not a Task, file and data artifacts, the `rejected` state) get a text saying so.
"""

from temporal_executor.schemas.config import ScriptedTurn

# Where the gateway keeps the A2A message id in a request's metadata (gateway/_a2a_views).
A2A_METADATA = "a2a"
MESSAGE_ID = "message_id"

COMPLETE_TEXT = "Hello from TCK"
APPROVAL_TOOL = "save_note"
# The resubscription test needs the task alive for 2 x TCK_STREAMING_TIMEOUT (2 s by default).
SLOW_WORDS = 16
SLOW_DELAY_SECONDS = 0.5

# messageId prefix -> the final text (longest prefixes first: "tck-artifact-file-url"
# before "tck-artifact-file").
_TEXTS: dict[str, str] = {
    "tck-artifact-text": "Generated text content",
    "tck-stream-001": "Stream hello from TCK",
    "tck-stream-003": "Stream task lifecycle",
    "tck-stream-ordering-001": "Ordered output",
    "tck-stream-artifact-text": "Streamed text content",
    "tck-stream-artifact-chunked": "chunk-1 chunk-2",
}
_UNSUPPORTED: dict[str, str] = {
    "tck-message-response": "a reply that is a Message: every message starts a durable task",
    "tck-artifact-file-url": "file artifacts: a task's result is its final text",
    "tck-artifact-file": "file artifacts: a task's result is its final text",
    "tck-stream-artifact-file": "file artifacts: a task's result is its final text",
    "tck-artifact-data": "data artifacts: a task's result is its final text",
    "tck-reject-task": "the rejected state: a task that cannot go on fails",
}


def message_id(metadata: dict[str, object]) -> str:
    a2a = metadata.get(A2A_METADATA)
    found = a2a.get(MESSAGE_ID) if isinstance(a2a, dict) else None
    return found if isinstance(found, str) else ""


def tck_script(message_id: str, offered: set[str]) -> list[ScriptedTurn]:
    """The turns that play the scenario `message_id` names (the default one: complete)."""
    if message_id.startswith("tck-input-required") and APPROVAL_TOOL in offered:
        ask = {"name": APPROVAL_TOOL, "arguments": {"title": "tck", "text": "{user_message}"}}
        return [
            ScriptedTurn(text="This needs your input: approve or deny the note.", tool_calls=[ask]),
            ScriptedTurn(text=COMPLETE_TEXT),
        ]
    if message_id.startswith("test-resubscribe-message-id"):
        words = " ".join(f"word-{n}" for n in range(1, SLOW_WORDS + 1))
        return [ScriptedTurn(text=words, chunk_delay_seconds=SLOW_DELAY_SECONDS)]
    for prefix in sorted(_TEXTS, key=len, reverse=True):
        if message_id.startswith(prefix):
            return [ScriptedTurn(text=_TEXTS[prefix])]
    for prefix in sorted(_UNSUPPORTED, key=len, reverse=True):
        if message_id.startswith(prefix):
            return [ScriptedTurn(text=f"Not offered by temporal-executor: {_UNSUPPORTED[prefix]}.")]
    return [ScriptedTurn(text=COMPLETE_TEXT)]
