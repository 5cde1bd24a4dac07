"""Time moving on quiet partitions: which partitions to tick, and to what time.

A partition's stream time moves only with its own events. One that receives none
for a while holds back its customers' inactivity rescores, and, since the drift
watermark is the smallest stream time of the group, drift judging for everyone.
So the worker writes a tick (`schemas.Tick`) into each quiet partition it owns,
carrying the group's frontier: the latest stream time any partition has reached.
The task reads ticks with its inputs (`topics.SOURCE_TOPICS`), so a replay of the
log meets each tick where the live run did, and live and replay still agree.

Ticking to the frontier rather than to the wall clock keeps a backfill of history
in its own time; the price is that time stands still while the whole shop is silent
(then nothing can tell a pause in the shop from one in its feeds, and rescoring
everyone as lapsed would be wrong).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping


def frontier(stream_times: Mapping[int, float | None]) -> float | None:
    """The latest stream time any partition has reached (None: no event anywhere)."""
    return max((t for t in stream_times.values() if t is not None), default=None)


def due(
    owned: Mapping[int, float | None],
    before: Mapping[int, float | None],
    caught_up: Collection[int],
    group: Mapping[int, float | None],
    gap: float,
) -> dict[int, float]:
    """The owned partitions to tick, with the time each tick carries.

    A partition is ticked when it is quiet: caught up with its log (`caught_up`), its
    stream time the same as at the last round (`before`), and more than `gap` behind
    the frontier of the `group`'s stream times. One that never had an event has no
    customer to rescore and holds no watermark back: it is left alone."""
    ahead = frontier(group)
    if ahead is None:
        return {}
    return {
        partition: ahead
        for partition, time in owned.items()
        if time is not None
        and partition in caught_up
        and before.get(partition) == time
        and ahead - time > gap
    }
