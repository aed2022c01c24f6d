"""Which Kafka offsets may be committed when deliveries are acked out of order.

A partition's committed offset says "everything before this is done", so it may only
advance over a contiguous run of acked messages: with offsets 5, 6, 7 handed out and 5 and 7
acked, the commit is 6 (next to read), and becomes 8 once 6 is acked. Offsets need not be
consecutive (compaction, transaction markers), so the run is over the offsets handed out,
in order, not over `offset + 1`.
"""

from collections import deque

TopicPartitionKey = tuple[str, int]


class PartitionOffsets:
    """One partition's offsets handed out and not yet committed past, for one assignment."""

    def __init__(self, key: TopicPartitionKey) -> None:
        self.key = key
        # Set when the partition is revoked: acks of its deliveries no longer count, since
        # the next owner starts from the last commit (the message is handled again).
        self.revoked = False
        self._pending: deque[int] = deque()  # handed out, in order
        self._outstanding: set[int] = set()  # the same, for lookups
        self._acked: set[int] = set()
        self._position: int | None = None  # next offset to read, everything before done
        self._committed: int | None = None

    @property
    def unacked(self) -> int:
        return len(self._pending) - len(self._acked)

    @property
    def next_unfinished(self) -> int | None:
        """The first offset not yet acked (handed out or not); None before any delivery."""
        return self._pending[0] if self._pending else self._position

    def delivered(self, offset: int) -> None:
        if self._pending and offset <= self._pending[-1]:
            msg = f"offset {offset} of {self.key} handed out after {self._pending[-1]}"
            raise ValueError(msg)
        self._pending.append(offset)
        self._outstanding.add(offset)

    def ack(self, offset: int) -> bool:
        """Mark `offset` done; False if it was not pending (already acked, or unknown)."""
        if offset in self._acked or offset not in self._outstanding:
            return False
        self._acked.add(offset)
        while self._pending and self._pending[0] in self._acked:
            done = self._pending.popleft()
            self._outstanding.discard(done)
            self._acked.discard(done)
            self._position = done + 1
        return True

    def to_commit(self) -> int | None:
        """The offset to commit, if it moved since the last successful commit."""
        if self._position is None or self._position == self._committed:
            return None
        return self._position

    def committed(self, position: int) -> None:
        self._committed = position


class OffsetTracker:
    """Every assigned partition's `PartitionOffsets`."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartitionKey, PartitionOffsets] = {}

    def partition(self, key: TopicPartitionKey) -> PartitionOffsets:
        offsets = self._partitions.get(key)
        if offsets is None:
            offsets = self._partitions[key] = PartitionOffsets(key)
        return offsets

    def get(self, key: TopicPartitionKey) -> PartitionOffsets | None:
        return self._partitions.get(key)

    def to_commit(self, keys: set[TopicPartitionKey] | None = None) -> dict[TopicPartitionKey, int]:
        """Offsets to commit, for `keys` only when given (the partitions still assigned)."""
        offsets: dict[TopicPartitionKey, int] = {}
        for key, partition in self._partitions.items():
            position = partition.to_commit()
            if position is not None and (keys is None or key in keys):
                offsets[key] = position
        return offsets

    def committed(self, offsets: dict[TopicPartitionKey, int]) -> None:
        for key, position in offsets.items():
            partition = self._partitions.get(key)
            if partition is not None:
                partition.committed(position)

    def revoke(self, keys: set[TopicPartitionKey]) -> int:
        """Forget `keys`; returns how many unacked deliveries they had."""
        unacked = 0
        for key in keys:
            partition = self._partitions.pop(key, None)
            if partition is not None:
                partition.revoked = True
                unacked += partition.unacked
        return unacked

    def revoke_all(self) -> int:
        return self.revoke(set(self._partitions))
