"""One deterministic order per partition: its topic-partitions merged by event time.

Customers are keyed alike on every input topic, so partition p of `orders`,
`support-tickets` and `customers` holds the same customers: one task, three inputs.
Kafka keeps each topic-partition in order but says nothing across them, and a
consumer reads them side by side, so the order a worker happens to see depends on
fetch timing. The state a change is scored on must not: a replay, a live run over a
backlog and a batch read again after a crash have to apply each customer's events
in one order, or the same change ids would carry different contents.

So, as Kafka Streams does (`PartitionGroup`, `max.task.idle.ms`), the next event of
a partition is always the earliest head of its topic-partitions (ties: the topic's
rank, then the offset), and nothing is released while a topic-partition that has
nothing buffered still has unread messages in Kafka: it could hold an earlier one.
A topic-partition that is caught up holds an event back until that event has been
here for `idle` seconds (and the topic-partition empty as long), for what is in
flight between the producer, the broker and here: a profile and an order sent
together reach two partitions, and their consumer, in either order. The wait runs
from the event's arrival, not from when the quiet input was last found empty:
a topic-partition quiet for minutes would otherwise let every newcomer straight
past it.

A topic the workers write themselves (the ticks, `scoring.ticks`) is not waited for
that way: its writer says when a message is on its way (`expect`), and until that
message is buffered it holds the others back; otherwise a quiet one holds nothing.
(Waited for like an input, it held every event at the live edge for `idle`, since
ticks are rare: 60 ms of the median latency.)
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

import msgspec


class InputMessage(msgspec.Struct, frozen=True, gc=False):
    """A message as Kafka (or a replayed file) delivered it. (A Struct: made for every
    message, at a fifth of a frozen dataclass's cost; never in a reference cycle.)"""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # None: a tombstone
    timestamp: float | None = None  # the broker's (epoch s), if the message has one


class Decoded(msgspec.Struct, frozen=True, gc=False):
    """An input message with its event decoded, or the reason it could not be."""

    message: InputMessage
    event: object | None
    time: float  # event time (epoch seconds); -inf for what failed to decode
    reason: str | None = None
    category: str | None = None  # the reason's category (scoring.decoding.REFUSALS)

    @property
    def order(self) -> tuple[float, int]:
        return (self.time, self.message.offset)


def latencies(batch: Sequence[Decoded], durable_at: float) -> list[float]:
    """End-to-end latency of each input of a batch: seconds from its broker append
    time to the batch's outputs being durable (inputs without a broker time have none)."""
    return [durable_at - d.message.timestamp for d in batch if d.message.timestamp is not None]


class PartitionMerger:
    """The buffered, not yet released input of one partition (see the module doc)."""

    def __init__(self, topics: Sequence[str], idle: float, announced: Collection[str] = ()) -> None:
        self.topics = tuple(topics)
        self.rank = {topic: rank for rank, topic in enumerate(self.topics)}
        self.idle = idle
        # Topics whose messages are announced (`expect`) rather than waited for.
        self.announced = frozenset(announced)
        # The offset each topic-partition is known to be writing (inf: one whose
        # offset is not known yet): until it is buffered, it holds the others back.
        self.expected: dict[str, float] = {}
        self.buffers: dict[str, deque[Decoded]] = {t: deque() for t in self.topics}
        # When each buffered message arrived, in step with `buffers`.
        self._arrived: dict[str, deque[float]] = {t: deque() for t in self.topics}
        self.last_offset: dict[str, int] = {}  # highest offset buffered so far
        # When each topic-partition was last found empty: it holds the others back
        # until it has been empty for `idle` (Kafka Streams' max.task.idle.ms).
        self._empty_since: dict[str, float] = {}
        # A batch that was in flight when the last owner stopped: exactly these
        # offsets go first, in the same order, so its outputs come out the same.
        self.replay_through: dict[str, int] | None = None

    def add(self, decoded: Decoded, now: float) -> bool:
        """Buffer a message arrived at `now`; False for one already buffered (a
        redelivery)."""
        topic, offset = decoded.message.topic, decoded.message.offset
        if offset <= self.last_offset.get(topic, -1):
            return False
        self.last_offset[topic] = offset
        self.buffers[topic].append(decoded)
        self._arrived[topic].append(now)
        self._empty_since.pop(topic, None)
        return True

    def expect(self, topic: str, offset: float) -> None:
        """A message at `offset` of `topic` is on its way (math.inf: its offset is not
        known yet; -1: it will not come after all)."""
        self.expected[topic] = offset

    def skip_through(self, offsets: Mapping[str, int]) -> None:
        """Messages at or below these offsets are done: never buffer them."""
        for topic, offset in offsets.items():
            self.last_offset[topic] = max(self.last_offset.get(topic, -1), offset)

    def __len__(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    def release(
        self, now: float, behind: Callable[[str], bool], most: int | None = None
    ) -> list[Decoded]:
        """The messages that can be processed now, in the partition's order (at most
        `most` of them; the rest wait for the next call).

        `behind(topic)`: that topic-partition still has messages unread in Kafka."""
        if self.replay_through is not None:
            return self._release_replayed(behind)
        released: list[Decoded] = []
        buffers = self.buffers
        limit = len(self) if most is None else most
        while len(released) < limit:
            empty = [t for t in self.topics if not buffers[t]]
            for topic in empty:
                self._empty_since.setdefault(topic, now)
            if len(empty) == len(self.topics):
                return released
            if not empty:
                self._release_while_none_empty(released, limit)
                continue
            head = min(
                (buffers[t][0] for t in self.topics if buffers[t]),
                key=lambda d: (d.time, self.rank[d.message.topic], d.message.offset),
            )
            topic = head.message.topic
            if empty:
                waited = now - self._arrived[topic][0]
                for quiet in empty:
                    if (
                        behind(quiet)
                        or self.last_offset.get(quiet, -1) < self.expected.get(quiet, -1)
                        or (
                            quiet not in self.announced
                            and min(waited, now - self._empty_since[quiet]) < self.idle
                        )
                    ):
                        return released  # it may still deliver an earlier event
            self._arrived[topic].popleft()
            released.append(buffers[topic].popleft())
        return released

    def _release_while_none_empty(self, released: list[Decoded], limit: int) -> None:
        """While every topic-partition has something buffered, the earliest head goes
        next (the rule above, with nothing to wait for): a heap of the heads, until
        one runs out."""
        buffers, arrived, rank = self.buffers, self._arrived, self.rank
        heads = [(b[0].time, rank[t], b[0].message.offset, t) for t, b in buffers.items()]
        heapq.heapify(heads)
        while len(released) < limit:
            topic = heapq.heappop(heads)[3]
            buffer = buffers[topic]
            released.append(buffer.popleft())
            arrived[topic].popleft()
            if not buffer:
                return
            head = buffer[0]
            heapq.heappush(heads, (head.time, rank[topic], head.message.offset, topic))

    def _release_replayed(self, behind: Callable[[str], bool]) -> list[Decoded]:
        through = self.replay_through or {}
        for topic, offset in through.items():
            if self.last_offset.get(topic, -1) < offset and behind(topic):
                return []  # not all of the batch has been read again yet
        parts: list[Decoded] = []
        for topic, offset in through.items():
            buffer = self.buffers[topic]
            while buffer and buffer[0].message.offset <= offset:
                self._arrived[topic].popleft()
                parts.append(buffer.popleft())
        self.replay_through = None
        return merged(parts, self.rank)

    def drain(self) -> list[Decoded]:
        """Everything buffered, forgotten (the partition was lost or is re-read)."""
        out = [d for b in self.buffers.values() for d in b]
        for topic in self.topics:
            self.buffers[topic].clear()
            self._arrived[topic].clear()
        self.last_offset.clear()
        self._empty_since.clear()
        return out


def merged(decoded: Iterable[Decoded], rank: Mapping[str, int]) -> list[Decoded]:
    """Several topic-partitions' messages merged by the rule above, all available.

    A k-way merge of each topic-partition's sequence by its head, not a sort by time:
    a topic-partition's own order is never changed (a late event stays after the
    events before it), exactly as the incremental release does."""
    queues: dict[str, deque[Decoded]] = {}
    for d in sorted(decoded, key=lambda d: (d.message.topic, d.message.offset)):
        queues.setdefault(d.message.topic, deque()).append(d)
    out: list[Decoded] = []
    while queues:
        topic = min(
            queues,
            key=lambda t: (queues[t][0].time, rank[t], queues[t][0].message.offset),
        )
        out.append(queues[topic].popleft())
        if not queues[topic]:
            del queues[topic]
    return out
