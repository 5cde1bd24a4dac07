"""The drift monitor over simulated shops through the worker's own runner and core, on
the in-memory store, as `python -m stream_app replay --drift-alerts` runs it: a
stationary stream of over 200,000 events raises nothing, and each shift of the
simulator raises what it changes and clears it after (the live test does the same
through Kafka and Redis with two workers, on a smaller shop)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from scoring.artifact import Model, load_model
from scoring.drift import SUBJECTS, DriftConfig, Judgement
from scoring.merge import InputMessage
from stream_app.partitioning import partition_of
from stream_app.replay import FileSink, replay_stream
from tests.drift_shop import SHIFTS, SINCE, check_alerts, day, shop

PARTITIONS = 4


@pytest.fixture(scope="module")
def model(drift_models_dir: Path) -> Model:
    return load_model(drift_models_dir)


def messages(history: Any) -> Iterator[InputMessage]:
    """The shop's events as Kafka would deliver them (replay.messages, from structs)."""
    offsets: dict[tuple[str, int], int] = {}
    for topic, event in history.events_in_time_order():
        key = event.customer_id.encode()
        partition = partition_of(key, PARTITIONS)
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        yield InputMessage(topic, partition, offset, key, msgspec.json.encode(event))


def judged(model: Model, history: Any, one_by_one: bool = False) -> list[Judgement]:
    """Judged after every batch, as the live worker judges on a timer; `one_by_one`:
    each slice in a call of its own (`latest` is then every slice's statistics)."""
    drift = DriftConfig(since=SINCE.timestamp(), max_slices=1 if one_by_one else 200)
    sink = FileSink(io.BytesIO())
    return replay_stream(messages(history), model, sink, PARTITIONS, 500, 0.05, drift=drift)


def test_a_stationary_stream_of_over_200_000_events_raises_no_drift_alert(model: Model) -> None:
    history = shop(38_500, seed=303, days=150)
    assert len(history) >= 200_000
    judgements = judged(model, history)
    # Judged: every hour from a window after SINCE to the end of the stream.
    assert sum(j.slices for j in judgements) == (150 - 111) * 24
    assert [a for j in judgements for a in j.alerts] == []
    worst = {s: max(j.latest[s].psi for j in judgements) for s in SUBJECTS}
    print(
        "stationary: highest PSI (at the last slice of each call)",
        sorted(worst.items(), key=lambda kv: -kv[1])[:5],
    )


def test_each_shift_raises_what_it_changes_within_a_window_and_clears_it_after_it_ends(
    model: Model,
) -> None:
    history = shop(12_000, seed=202, days=145, shifts=SHIFTS.values())
    judgements = judged(model, history, one_by_one=True)
    delays = check_alerts([a for j in judgements for a in j.alerts], SHIFTS)
    print("detection delays", {k: str(v) for k, v in delays.items()})

    # +40% order values: spend_7d moves, though not near the threshold (see REQUIRED).
    def spend_psi(first: float, last: float) -> list[float]:
        """spend_7d's PSI in the windows that end in (first, last]."""
        lo, hi = day(first).timestamp(), day(last).timestamp()
        return [j.latest["spend_7d"].psi for j in judgements if lo < (j.book.cursor or 0) <= hi]

    before, during = spend_psi(111, 114), spend_psi(115, 118)  # during: whole windows
    print(
        f"spend_7d PSI before the order value shift {np.median(before):.3f} (median), "
        f"{max(before):.3f} (highest); during {np.median(during):.3f}, {max(during):.3f}"
    )
    assert np.median(before) < np.median(during) and max(during) < 0.2
