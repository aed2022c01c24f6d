"""`agent.llm.delta` events of a streamed LLM call, published from the LLM activity.

Never through the workflow: fragments would bloat its history, and they are best effort
anyway (contract v1.1, "Streaming"). Each attempt of a call numbers its deltas from 0;
a retried attempt (a new activity attempt, or a fallback's) has a new `attempt`, which
tells subscribers to drop the text of the earlier one.
"""

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from temporalio import activity

from temporal_executor.bus.outbound import build_delta_event
from temporal_executor.schemas.event_types import delta_id_for
from temporal_executor.schemas.events import LlmDelta, ToolCallFragment
from temporal_executor.schemas.task import LlmCallInput
from temporal_executor.worker.llm.streaming import DeltaBatcher, Fragment
from temporal_executor.worker.publisher import EventPublisher


class DeltaPublisher:
    def __init__(self, publisher: EventPublisher, interval_seconds: float) -> None:
        self._publisher = publisher
        self._interval = interval_seconds

    def streams(self, call: LlmCallInput) -> bool:
        """Whether `call` asks for deltas and has somewhere to send them."""
        return call.stream and call.route is not None and bool(call.route.deltas_destination)

    @asynccontextmanager
    async def sink_for(self, call: LlmCallInput) -> AsyncIterator[DeltaBatcher | None]:
        """In the LLM activity: the sink for `call`'s fragments, None when it does not stream.

        Each fragment heartbeats (the SDK throttles them), so a stalled stream or a dead
        worker is noticed after the heartbeat timeout.
        """
        if not self.streams(call):
            yield None
            return
        info = activity.info()
        attempt = info.attempt
        async with self.open(
            call,
            workflow_id=info.workflow_id or "",
            attempt=attempt,
            on_fragment=activity.heartbeat,
        ) as sink:
            yield sink

    def open(
        self,
        call: LlmCallInput,
        *,
        workflow_id: str,
        attempt: int,
        on_fragment: Callable[[], None] | None = None,
    ) -> DeltaBatcher:
        """The sink for the fragments of attempt `attempt` (the activity's) of `call`;
        use it as `async with`."""
        route, destination = call.route, call.route.deltas_destination if call.route else None
        if route is None or destination is None:
            msg = "this LLM call does not stream (no route for its deltas)"
            raise ValueError(msg)
        attempt += call.attempt_offset
        indexes = itertools.count()

        async def emit(batch: list[Fragment]) -> None:
            for fragment in batch:
                index = next(indexes)
                tool_call = None
                if fragment.call_id is not None:
                    tool_call = ToolCallFragment(
                        id=fragment.call_id, name=fragment.name, arguments=fragment.arguments
                    )
                delta = LlmDelta(
                    task_id=call.task_id,
                    iteration=call.iteration,
                    attempt=attempt,
                    index=index,
                    text=fragment.text,
                    tool_call=tool_call,
                )
                event_id = delta_id_for(workflow_id, call.iteration, attempt, index)
                event = build_delta_event(
                    route, event_id, delta, self._publisher.source, datetime.now(UTC)
                )
                await self._publisher.publish_unconfirmed(route, destination, event)

        return DeltaBatcher(emit, self._interval, on_fragment=on_fragment)
