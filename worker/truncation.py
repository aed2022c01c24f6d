"""Keep LLM replies and tool results under Temporal's payload limit (2 MB hard).

Too-large content is cut with a note the model and event subscribers can read, so a
task never retries forever on a payload Temporal refuses.
"""

import json
from typing import Any

NOTE = "\n[truncated by temporal-executor: {size} bytes exceeded the {limit}-byte limit]"


def truncate_text(text: str, limit: int) -> tuple[str, bool]:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text, False
    note = NOTE.format(size=len(encoded), limit=limit)
    kept = encoded[: max(0, limit - len(note.encode("utf-8")))].decode("utf-8", errors="ignore")
    return kept + note, True


def truncate_value(value: Any, limit: int) -> tuple[Any, bool]:
    """A JSON value within `limit` bytes: as it is, or its JSON text truncated."""
    encoded = json.dumps(value, ensure_ascii=False, default=str)
    if len(encoded.encode("utf-8")) <= limit:
        return value, False
    return truncate_text(encoded, limit)
