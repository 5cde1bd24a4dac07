"""The daily report's counters (`scoring.daily`): what the batch runner commits for each
day equals what it published, on the day the outputs became durable, and the latency
quantiles read off the buckets are within the stated relative error."""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import UTC, date, datetime

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feature_store.store import MemoryStore
from schemas import topics
from scoring.artifact import load_model
from scoring.daily import (
    MAX_LATENCY,
    MIN_LATENCY,
    RELATIVE_ERROR,
    DailyCounts,
    daily_tally,
    histogram,
    quantile,
    read_day,
    tally_name,
)
from scoring.merge import Decoded, InputMessage
from scoring.model import Model
from scoring.outcome import PartitionOutcome
from simulator.history import generate_history
from tests.core import PARTITIONS, FakeKafka, RecordingSink, drive, logs_of, make_runner
from tests.support import train_soft_model

DURABLE_AT = datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    models = tmp_path_factory.mktemp("models")
    return load_model(train_soft_model(models, "recency_days", 5, 55, "soft-recency"))


def message(topic: str, offset: int, timestamp: float | None = None) -> Decoded:
    return Decoded(InputMessage(topic, 0, offset, b"C1", b"{}", timestamp), None, 0.0, "bad")


def test_a_batch_counts_on_the_utc_day_its_outputs_became_durable() -> None:
    batch = [message(topics.ORDERS, 0)]
    before = datetime(2026, 3, 1, 23, 59, 59, 900_000, tzinfo=UTC).timestamp()
    after = datetime(2026, 3, 2, 0, 0, 0, 100_000, tzinfo=UTC).timestamp()

    assert list(daily_tally(PartitionOutcome(0), batch, before)) == [tally_name(date(2026, 3, 1))]
    assert list(daily_tally(PartitionOutcome(0), batch, after)) == [tally_name(date(2026, 3, 2))]


def test_a_batch_that_produced_nothing_adds_no_tally() -> None:
    assert daily_tally(PartitionOutcome(0), [], DURABLE_AT) == {}


def test_latency_runs_from_each_inputs_broker_append_time_to_its_batch_being_durable() -> None:
    batch = [
        message(topics.ORDERS, 0, DURABLE_AT - 0.050),
        message(topics.ORDERS, 1, DURABLE_AT - 2.0),
        message(topics.ORDERS, 2, None),  # a replayed line: no broker time, no latency
    ]
    (tally,) = daily_tally(PartitionOutcome(0), batch, DURABLE_AT).values()
    counts = DailyCounts.from_fields(date(2026, 3, 1), tally.amounts)

    assert counts.events == {topics.ORDERS: 3}
    assert sum(counts.latency.values()) == 2
    assert counts.latency_quantile(0.0) == pytest.approx(0.050, rel=RELATIVE_ERROR)
    assert counts.latency_quantile(1.0) == pytest.approx(2.0, rel=RELATIVE_ERROR)


def test_a_days_counters_equal_what_the_runner_published_and_scored(model: Model) -> None:
    history = generate_history(120, seed=5, days=200)
    logs = logs_of(list(history.events_in_time_order()))
    rng = random.Random(3)
    # Broker append times up to 5 s before the batch's outputs are durable.
    logs = {
        tp: [msgspec.structs.replace(m, timestamp=DURABLE_AT - rng.uniform(0, 5)) for m in log]
        for tp, log in logs.items()
    }
    orders = next(tp for tp in logs if tp[0] == topics.ORDERS)
    logs[orders].append(
        InputMessage(topics.ORDERS, orders[1], len(logs[orders]), b"C1", b"not json", DURABLE_AT)
    )
    store, sink = MemoryStore(), RecordingSink()
    runner = make_runner(store, model, sink, tallies=[daily_tally])
    runner.wall = lambda: DURABLE_AT
    reports = drive(runner, FakeKafka(logs, rng))

    counts = read_day(store, range(PARTITIONS), date(2026, 3, 1))

    outcomes = [o for r in reports for o in r.outcomes]
    scores = [o.scores for o in outcomes if o.scores is not None]
    published = Counter((c.previous_risk or "new", c.risk) for c in sink.changes)
    expected_events: Counter[str] = Counter()
    for (topic, _), log in logs.items():
        expected_events[topic] += len(log)
    assert counts.events == dict(expected_events)
    expected_outcomes: Counter[str] = Counter()
    for outcome in outcomes:
        for (_, name), n in outcome.counts.items():  # summed over topics
            expected_outcomes[name] += n
    assert counts.outcomes == dict(+expected_outcomes)  # +: those that occurred
    assert counts.dead_letters == {topics.ORDERS: 1} == Counter(d.topic for d in sink.dead_letters)
    assert counts.changes == dict(published) and sum(published.values()) > 10
    assert counts.into_high == sum(1 for c in sink.changes if c.risk == "HIGH") > 0
    assert counts.risks == dict(Counter(r for s in scores for r in s.risks))
    assert counts.models == {"soft-recency": counts.scores}
    assert counts.scores == sum(o.scored for o in outcomes)
    probabilities = np.concatenate([s.probabilities for s in scores])
    assert counts.churn_rate == pytest.approx(float(probabilities.mean()), rel=1e-12)
    assert sum(counts.latency.values()) == sum(expected_events.values())
    assert read_day(store, range(PARTITIONS), date(2026, 3, 2)).empty


def exact_lower_quantile(values: list[float], q: float) -> float:
    ordered = sorted(min(max(v, MIN_LATENCY), MAX_LATENCY) for v in values)
    return ordered[math.floor(q * (len(ordered) - 1))]


latencies = st.lists(
    st.floats(min_value=-5.0, max_value=MAX_LATENCY * 10, allow_nan=False), min_size=1
) | st.lists(st.floats(min_value=0.001, max_value=10.0), min_size=1, max_size=2000)


@given(values=latencies, q=st.sampled_from([0.0, 0.5, 0.95, 0.99, 1.0]) | st.floats(0, 1))
def test_latency_quantiles_are_within_the_stated_relative_error(
    values: list[float], q: float
) -> None:
    exact = exact_lower_quantile(values, q)
    estimate = quantile(histogram(values), q)

    assert estimate is not None
    # (1e-12: log() may put a value exactly on a bucket's edge into the next bucket)
    assert abs(estimate - exact) <= (RELATIVE_ERROR + 1e-12) * exact


@given(parts=st.lists(latencies, min_size=1, max_size=4))
def test_buckets_summed_over_partitions_give_the_quantiles_of_all_latencies(
    parts: list[list[float]],
) -> None:
    summed: Counter[int] = Counter()
    for part in parts:
        summed.update(histogram(part))
    everything = [v for part in parts for v in part]

    assert dict(summed) == histogram(everything)


def test_no_latencies_have_no_quantile() -> None:
    assert quantile({}, 0.5) is None
    assert DailyCounts(date(2026, 3, 1)).latency_quantile(0.99) is None
