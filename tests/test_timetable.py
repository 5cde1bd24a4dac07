"""A partition's timetable (`scoring.timetable`): what is due comes out once, at the
instant it was last moved to."""

from __future__ import annotations

import random

from scoring.timetable import BUCKET_SECONDS, Timetable


def test_what_is_due_comes_out_once_at_its_latest_instant() -> None:
    table = Timetable({"a": 5.0, "b": 1.0})
    table.set("c", 3.0)
    table.set("a", 2.0)  # moved earlier
    table.set("b", 9.0)  # moved later
    table.set("d", 4.0)
    table.set("d", None)  # removed
    assert sorted(table.take_before(5.0)) == [(2.0, "a"), (3.0, "c")]
    assert table.take_before(5.0) == []
    assert table.instants == {"b": 9.0}


def test_a_timetable_moved_many_times_agrees_with_a_dict() -> None:
    rng = random.Random(1)
    table, expected = Timetable(), {}
    for step in range(20_000):
        key = f"k{rng.randrange(100)}"
        spread = rng.choice([0.5, 3, 40]) * BUCKET_SECONDS  # within a bucket, and across
        instant = None if rng.random() < 0.1 else step * 60.0 + rng.random() * spread
        table.set(key, instant)
        if instant is None:
            expected.pop(key, None)
        else:
            expected[key] = instant
        if step % 500 == 499:
            now = step * 60.0 + rng.random() * BUCKET_SECONDS
            due = sorted(table.take_before(now))
            assert due == sorted((t, k) for k, t in expected.items() if t < now)
            for _, key in due:
                del expected[key]
    assert table.instants == expected
