"""What every provider's streaming path shares: where fragments go, and how they are batched.

A provider streaming a reply hands each fragment to a `DeltaSink` as it arrives (text, or
a piece of a tool call's arguments) and goes on reading; it never waits for the bus. The
sink the LLM activity gives it is a `DeltaBatcher`: it coalesces the fragments that arrive
while it waits and emits at most one batch per interval (config's
`executor.delta_interval_seconds`, 50 ms), the first fragment of a call at once, so the
time to first token stays low and a fast model does not become thousands of messages.
Each batch holds one fragment per run of the same kind (text, or one tool call), so a
batch is usually one event, a few at most.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


class DeltaSink(Protocol):
    """Takes a streamed reply's fragments; never blocks, never raises for the bus."""

    def text(self, fragment: str) -> None: ...

    def tool_call(self, call_id: str, name: str, arguments: str) -> None:
        """The next piece of tool call `call_id`'s arguments JSON (may be empty: the call
        has begun)."""


@dataclass
class Fragment:
    """Coalesced fragments of one kind: text (`call_id` None) or one tool call's."""

    text: str = ""
    call_id: str | None = None
    name: str = ""
    arguments: str = ""


EmitBatch = Callable[[list[Fragment]], Awaitable[None]]


class DeltaBatcher:
    """A `DeltaSink` that emits coalesced fragments from a task of its own.

    Use as `async with DeltaBatcher(emit, interval) as sink:`; leaving emits what is left
    and waits (up to `close_timeout_seconds`) for the last batch. `emit` runs one batch at a
    time, in order; its errors are logged and the batch dropped (deltas are best effort).
    `on_fragment` is called for each fragment as it arrives (the activity heartbeats there).
    """

    def __init__(
        self,
        emit: EmitBatch,
        interval_seconds: float,
        *,
        on_fragment: Callable[[], None] | None = None,
    ) -> None:
        self._emit = emit
        self._interval = interval_seconds
        self._on_fragment = on_fragment
        self._pending: list[Fragment] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._last_emit = -float("inf")
        self._task: asyncio.Task[None] | None = None
        self.fragments = 0
        # How long leaving waits for the last batch to go out.
        self.close_timeout_seconds = 2.0

    async def __aenter__(self) -> "DeltaBatcher":
        self._task = asyncio.create_task(self._run(), name="delta-batcher")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing = True
        self._wake.set()
        task = self._task
        if task is None:
            return
        if exc_info[0] is not None and not isinstance(exc_info[1], Exception):
            # Cancelled: the attempt is over, its last fragments do not matter.
            task.cancel()
        # Best effort: a bus that does not take the last fragments soon does not hold the
        # turn's result back.
        await asyncio.wait({task}, timeout=self.close_timeout_seconds)
        if not task.done():
            log.warning("dropped the last streamed fragments: the bus is slow or down")
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def text(self, fragment: str) -> None:
        if not fragment:
            return
        last = self._pending[-1] if self._pending else None
        if last is not None and last.call_id is None:
            last.text += fragment
        else:
            self._pending.append(Fragment(text=fragment))
        self._arrived()

    def tool_call(self, call_id: str, name: str, arguments: str) -> None:
        last = self._pending[-1] if self._pending else None
        if last is not None and last.call_id == call_id:
            last.arguments += arguments
        else:
            self._pending.append(Fragment(call_id=call_id, name=name, arguments=arguments))
        self._arrived()

    def _arrived(self) -> None:
        self.fragments += 1
        if self._on_fragment is not None:
            self._on_fragment()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                if self._closing:
                    return
                continue
            # Closing: what is left goes now, rather than holding the turn's end back.
            wait = self._last_emit + self._interval - time.monotonic()
            if wait > 0 and not self._closing:
                # Fragments arriving meanwhile join the batch.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed(), wait)
            batch, self._pending = self._pending, []
            self._last_emit = time.monotonic()
            try:
                await self._emit(batch)
            except Exception:
                log.warning("dropped %d streamed fragments", len(batch), exc_info=True)
            if self._closing and not self._pending:
                return

    async def _closed(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
        self._wake.set()
