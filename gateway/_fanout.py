"""One bus subscription per destination for the whole gateway, fanned out per task id.

A stream (SSE, A2A) used to open its own watch of the events destination; on Kafka that
is a consumer reading the whole topic, per subscriber. Here every destination a gateway
follows (the events topic or `agent.events.>`, the deltas one) is watched once, from its
end, by one reader that hands each event to the queues of the streams following its task.
What happened before a stream subscribed comes from the task itself (`_streams`).
"""

import asyncio
import logging
from collections.abc import Mapping

from temporal_executor.bus.errors import BusError, TransportError
from temporal_executor.bus.transport import Transport, Watch
from temporal_executor.schemas.cloudevent import TASKID_EXTENSION, CloudEvent
from temporal_executor.schemas.task import BusName

log = logging.getLogger(__name__)

# What a follower's queue holds: events of its task, then None once the watch has ended.
Inbox = asyncio.Queue[CloudEvent | None]


class SharedWatch:
    """One destination on one bus, read once, its events handed to each task's followers."""

    def __init__(self, transport: Transport, destination: str) -> None:
        self._transport = transport
        self.destination = destination
        self._followers: dict[str, set[Inbox]] = {}
        self._watch: Watch | None = None
        self._reading: asyncio.Task[None] | None = None
        self._live = False
        self._starting = asyncio.Lock()

    @property
    def open(self) -> bool:
        return self._live

    @property
    def followers(self) -> int:
        return sum(len(inboxes) for inboxes in self._followers.values())

    async def follow(self, task_id: str, inbox: Inbox) -> None:
        """From when this returns, every event of `task_id` read from the bus goes to `inbox`."""
        self._followers.setdefault(task_id, set()).add(inbox)
        try:
            await self._ensure_open()
        except BaseException:
            self.unfollow(task_id, inbox)
            raise

    def unfollow(self, task_id: str, inbox: Inbox) -> None:
        followers = self._followers.get(task_id)
        if followers is not None:
            followers.discard(inbox)
            if not followers:
                del self._followers[task_id]

    async def _ensure_open(self) -> None:
        async with self._starting:
            if self.open:
                return
            watch = self._transport.watch(self.destination, from_start=False)
            await watch.start()  # the position is fixed: the followers registered see the rest
            self._watch, self._live = watch, True
            self._reading = asyncio.create_task(
                self._read(watch), name=f"fanout {self.destination}"
            )
            log.info(
                "gateway follows a bus destination",
                extra={"bus": self._transport.bus, "destination": self.destination},
            )

    async def _read(self, watch: Watch) -> None:
        try:
            async for message in watch:
                try:
                    event = self._transport.decode(message)
                except BusError:  # not a CloudEvent, so not one of ours
                    continue
                task_id = event.extension(TASKID_EXTENSION)
                for inbox in self._followers.get(task_id or "", ()):
                    inbox.put_nowait(event)
        except Exception:
            log.exception("reading %s failed", self.destination)
        finally:
            # The watch ended (the gateway or its transport is closing, or the bus failed):
            # its streams end too (a client resumes with `Last-Event-ID`), and the next
            # follower opens a new one.
            ended, self._followers, self._live = self._followers, {}, False
            for followers in ended.values():
                for inbox in followers:
                    inbox.put_nowait(None)
            await watch.aclose()

    async def close(self) -> None:
        if self._watch is not None:
            await self._watch.aclose()
        if self._reading is not None:
            await asyncio.gather(self._reading, return_exceptions=True)


class FanOut:
    """The gateway's shared watches, one per (bus, destination), opened when first needed."""

    def __init__(self, transports: Mapping[BusName, Transport]) -> None:
        self._transports = transports
        self._watches: dict[tuple[BusName, str], SharedWatch] = {}
        self._closing = False

    @property
    def subscriptions(self) -> int:
        """How many bus subscriptions the gateway holds for its streams (whatever their number)."""
        return sum(1 for watch in self._watches.values() if watch.open)

    @property
    def followers(self) -> int:
        """How many streams follow them (a stream with deltas counts twice)."""
        return sum(watch.followers for watch in self._watches.values())

    async def follow(self, bus: BusName, destination: str, task_id: str, inbox: Inbox) -> None:
        if self._closing:
            msg = "the gateway is shutting down"
            raise TransportError(msg)
        key = (bus, destination)
        shared = self._watches.get(key)
        if shared is None:
            shared = self._watches[key] = SharedWatch(self._transports[bus], destination)
        await shared.follow(task_id, inbox)

    def unfollow(self, bus: BusName, destination: str, task_id: str, inbox: Inbox) -> None:
        shared = self._watches.get((bus, destination))
        if shared is not None:
            shared.unfollow(task_id, inbox)

    async def close(self) -> None:
        """End every watch: their followers' streams end."""
        self._closing = True
        for shared in list(self._watches.values()):
            await shared.close()
