"""A partition's instants by key, in time order, kept in the worker that owns the
partition: its customers' next inactivity rescores, and its pending samples' dues.

The store holds the same (written with every commit); the owner reads them whole when
it claims the partition and from then on keeps its own copy, which no other worker
can change while its epoch holds. So a batch finds what is due without asking the
store.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping

# Instants are kept in buckets this many seconds wide: moving a key is two dict
# operations, and what is due is found bucket by bucket, in time order.
BUCKET_SECONDS = 600.0


class Timetable:
    """Key -> instant, and the keys due before an instant (see the module doc)."""

    def __init__(self, entries: Mapping[str, float] | None = None) -> None:
        self.instants: dict[str, float] = {}
        self._buckets: dict[int, dict[str, float]] = {}
        self._order: list[int] = []  # the buckets' numbers, a heap (an emptied one stays)
        for key, instant in (entries or {}).items():
            self.set(key, instant)

    def __len__(self) -> int:
        return len(self.instants)

    def set(self, key: str, instant: float | None) -> None:
        """Move `key` to `instant`; None removes it."""
        old = self.instants.get(key)
        if old == instant:
            return
        if old is not None:
            del self._buckets[_bucket(old)][key]
        if instant is None:
            del self.instants[key]
            return
        self.instants[key] = instant
        number = _bucket(instant)
        bucket = self._buckets.get(number)
        if bucket is None:
            bucket = self._buckets[number] = {}
            heapq.heappush(self._order, number)
        bucket[key] = instant

    def take_before(self, instant: float) -> list[tuple[float, str]]:
        """Remove and return the (instant, key) entries before `instant` (in no order:
        callers order what they take)."""
        taken: list[tuple[float, str]] = []
        last = _bucket(instant)
        order, buckets, instants = self._order, self._buckets, self.instants
        while order and order[0] <= last:
            number = order[0]
            bucket = buckets[number]
            if number < last:  # all of it is before `instant`
                heapq.heappop(order)
                del buckets[number]
                for key, when in bucket.items():
                    del instants[key]
                    taken.append((when, key))
                continue
            for key, when in list(bucket.items()):
                if when < instant:
                    del bucket[key]
                    del instants[key]
                    taken.append((when, key))
            break
        return taken


def _bucket(instant: float) -> int:
    return math.floor(instant / BUCKET_SECONDS)
