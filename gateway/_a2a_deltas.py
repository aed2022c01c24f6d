"""A turn's text as it streams, as A2A artifact updates.

Each LLM turn that streams (`agent.llm.delta`) is one artifact, `turn-<iteration>`: its
attempt's first fragment opens it (`append: false`, so a retried call's new attempt
replaces the void text of the one before), each further fragment is `append: true`, and
the turn's `agent.llm.responded` closes it with `lastChunk: true` and the turn's whole text
(`append: false`): the authoritative record, whatever fragments were lost on the way.
Fragments of a turn that has already ended are dropped.
"""

from typing import Any

from a2a.helpers import new_text_part
from a2a.types.a2a_pb2 import Artifact, TaskArtifactUpdateEvent

from temporal_executor.gateway._streams import LLM_DELTA
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.event_types import EventType

TURN_ARTIFACT = "turn-{iteration}"


class TurnArtifacts:
    """Artifact updates of one stream's turns; feed it every event of the task, in order."""

    def __init__(self, task_id: str, context_id: str) -> None:
        self._task_id = task_id
        self._context_id = context_id
        self._attempts: dict[int, int] = {}  # iteration -> the attempt streaming now
        self._ended: set[int] = set()

    def updates(self, event: CloudEvent) -> list[TaskArtifactUpdateEvent]:
        data: dict[str, Any] = event.data if isinstance(event.data, dict) else {}
        iteration = data.get("iteration")
        if not isinstance(iteration, int) or iteration in self._ended:
            return []
        if event.type == LLM_DELTA:
            return self._fragment(iteration, data)
        if event.type == EventType.LLM_RESPONDED and iteration in self._attempts:
            self._ended.add(iteration)
            said: dict[str, Any] = data.get("message") or {}
            return [self._update(iteration, str(said.get("content") or ""), last=True)]
        return []

    def _fragment(self, iteration: int, data: dict[str, Any]) -> list[TaskArtifactUpdateEvent]:
        text = data.get("text")
        attempt = data.get("attempt", 1)
        if not text or not isinstance(text, str) or not isinstance(attempt, int):
            return []  # a tool call's fragment: the turn's message shows the call
        current = self._attempts.get(iteration)
        if current is not None and attempt < current:
            return []  # a late fragment of a void attempt
        self._attempts[iteration] = attempt
        return [self._update(iteration, text, append=current == attempt)]

    def _update(
        self, iteration: int, text: str, *, append: bool = False, last: bool = False
    ) -> TaskArtifactUpdateEvent:
        name = TURN_ARTIFACT.format(iteration=iteration)
        return TaskArtifactUpdateEvent(
            task_id=self._task_id,
            context_id=self._context_id,
            artifact=Artifact(artifact_id=name, name=name, parts=[new_text_part(text)]),
            append=append,
            last_chunk=last,
        )
