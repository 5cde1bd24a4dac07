"""The drift monitor over simulated shops through the worker's own runner and core, on
the in-memory store, as `python -m stream_app replay --drift-alerts` runs it: a
stationary stream of over 200,000 events raises nothing, and each shift of the
simulator raises what it changes and clears it after. The live tests
(tests/integration/test_drift_alerts.py) run the same shops through Kafka and Redis
with two workers; these judge one slice a call, so they see every slice's statistics."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from scoring.artifact import load_model
from scoring.drift import ORDER_TOTAL, SUBJECTS, DriftConfig, Judgement
from scoring.merge import InputMessage
from scoring.model import Model
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
    judgements = judged(model, history, one_by_one=True)
    # Judged: every hour from a window after SINCE to the end of the stream.
    assert sum(j.slices for j in judgements) == (150 - 111) * 24
    assert [a for j in judgements for a in j.alerts] == []
    worst = {s: max(j.latest[s].psi for j in judgements) for s in SUBJECTS}
    shifts = [j.latest[ORDER_TOTAL].mean_shift or 0.0 for j in judgements]
    print(
        "stationary: highest PSI",
        sorted(worst.items(), key=lambda kv: -kv[1])[:5],
        f"order_total mean shift {min(shifts):+.3f} to {max(shifts):+.3f}",
    )


def test_each_shift_raises_what_it_changes_within_a_window_and_clears_it_after_it_ends(
    model: Model,
) -> None:
    history = shop(12_000, seed=202, days=145, shifts=SHIFTS.values())
    judgements = judged(model, history, one_by_one=True)
    delays = check_alerts([a for j in judgements for a in j.alerts], SHIFTS)
    print("detection delays", {k: str(v) for k, v in delays.items()})

    # +40% order values: the order amount's mean shift raises it; PSI misses it.
    def order_total(first: float, last: float, statistic: str) -> list[float]:
        """The order amount's statistic in the windows that end in (first, last]."""
        lo, hi = day(first).timestamp(), day(last).timestamp()
        return [
            getattr(j.latest[ORDER_TOTAL], statistic)
            for j in judgements
            if lo < (j.book.cursor or 0) <= hi
        ]

    before, during = order_total(111, 114, "mean_shift"), order_total(115, 118, "mean_shift")
    psi = order_total(115, 118, "psi")
    print(
        f"order_total mean shift before the order value shift {min(before):+.3f} to "
        f"{max(before):+.3f}; during (whole windows) {min(during):+.3f} to {max(during):+.3f}; "
        f"PSI during {np.median(psi):.3f} (median), {max(psi):.3f} (highest)"
    )
    assert max(map(abs, before)) < 0.2 < min(during) and max(psi) < 0.2
