"""A partition's instants by key, in time order, kept in the worker that owns the
partition: its customers' next inactivity rescores, and its pending samples' dues.

The store holds the same (a sorted set each, written with every commit); the owner
reads them whole when it claims the partition and from then on keeps its own copy,
which no other worker can change while its epoch holds. So a batch finds what is due
without asking the store.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping


class Timetable:
    """Key -> instant, and the keys due before an instant, earliest first.

    A dict holds each key's instant; a heap orders them, an entry left behind when a
    key moves being skipped when it comes up (and dropped once the heap holds twice
    as many entries as there are keys)."""

    def __init__(self, entries: Mapping[str, float] | None = None) -> None:
        self.instants: dict[str, float] = dict(entries or {})
        self._heap = [(instant, key) for key, instant in self.instants.items()]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self.instants)

    def set(self, key: str, instant: float | None) -> None:
        """Move `key` to `instant`; None removes it."""
        if instant is None:
            self.instants.pop(key, None)
            return
        if self.instants.get(key) == instant:
            return
        self.instants[key] = instant
        heapq.heappush(self._heap, (instant, key))
        if len(self._heap) > 2 * len(self.instants) + 64:
            self._heap = [(t, k) for k, t in self.instants.items()]
            heapq.heapify(self._heap)

    def take_before(self, instant: float) -> list[tuple[float, str]]:
        """Remove and return the (instant, key) entries before `instant`, in order."""
        taken = []
        heap, instants = self._heap, self.instants
        while heap and heap[0][0] < instant:
            when, key = heapq.heappop(heap)
            if instants.get(key) == when:
                del instants[key]
                taken.append((when, key))
        return taken
