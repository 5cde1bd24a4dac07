"""Realised performance: which sampled scores count as churned, and the figures the
tally gives back (scoring/performance.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from feature_store.store import MemoryStore
from schemas import Order, SupportTicket, topics
from scoring.artifact import load_model
from scoring.merge import InputMessage
from scoring.model import Model
from scoring.performance import BINS, HIGH, Figures, auc_drop, figures, tally_amounts
from scoring.samples import Sample, first_of_week, in_sample
from stream_app import metrics
from tests.core import FakeKafka, RecordingSink, drive, logs_of, make_runner, partition_of
from tests.support import train_soft_model
from training.metrics import calibration_error

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)  # a Monday
DAY = timedelta(days=1)
HORIZON_DAYS = 30


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    served = load_model(
        train_soft_model(tmp_path_factory.mktemp("models"), "recency_days", 5, 55, "soft")
    )
    return dataclasses.replace(served, metadata={**served.metadata, "horizon_days": HORIZON_DAYS})


def one_partition(count: int) -> list[str]:
    """Customer ids that share partition 0, so they share one stream time."""
    ids = (f"C{n:04d}" for n in range(10_000))
    return [c for c in ids if partition_of(c) == 0][:count]


def test_a_sample_churned_unless_an_order_within_its_horizon_was_in_the_stream_when_it_ended(
    model: Model,
) -> None:
    a, b, c, d, e, f, g, pacer = one_partition(8)
    orders: list[tuple[str, datetime]] = [
        *((customer, T0) for customer in (a, b, c, d, e, f, g)),
        (g, T0 + DAY),  # the same week: no second sample
        (a, T0 + 20 * DAY),
        (pacer, T0 + 25 * DAY),
        (f, T0 + 5 * DAY),  # late, but before the horizon ended in stream time
        (c, T0 + 30 * DAY),  # exactly at the horizon's end: within it
        (d, T0 + 30 * DAY + timedelta(seconds=1)),  # just after: too late
        (pacer, T0 + 40 * DAY),
        (e, T0 + 5 * DAY),  # late, after the stream time passed the horizon
        (pacer, T0 + 41 * DAY),
    ]
    events: list[tuple[str, object]] = [
        (topics.ORDERS, Order(f"O{n}", customer, ts, 20.0, "card", "delivered"))
        for n, (customer, ts) in enumerate(orders)
    ]
    # A ticket is not an order: it does not keep b.
    events.append((topics.SUPPORT_TICKETS, SupportTicket("T1", b, T0 + 10 * DAY, "billing")))
    logs = logs_of(events)  # type: ignore[arg-type]
    runner = make_runner(MemoryStore(), model, RecordingSink(), sample_rate=1.0)
    reports = drive(runner, FakeKafka(logs, random.Random(1), chunk=3))

    decided = [
        (sample.customer_id, churned)
        for report in reports
        for outcome in report.outcomes
        for sample, churned in outcome.matured
        if sample.as_of < (T0 + 7 * DAY).timestamp()
    ]
    assert sorted(decided) == sorted(
        [(a, False), (b, True), (c, False), (d, True), (e, True), (f, False), (g, False)]
    )


def test_one_sample_per_customer_per_week_of_a_hash_sample_of_customers() -> None:
    monday = T0.timestamp()
    assert first_of_week(None, monday)
    assert not first_of_week(monday, monday + 6.4 * 86400)  # Sunday, same week
    assert first_of_week(monday, monday + 6.6 * 86400)  # the next Monday
    ids = [f"C{n:07d}" for n in range(20_000)]
    chosen = [c for c in ids if in_sample(c, 0.1)]
    assert 0.09 < len(chosen) / len(ids) < 0.11
    assert chosen == [c for c in ids if in_sample(c, 0.1)]  # the same on every worker
    assert all(in_sample(c, 1.0) for c in ids) and not any(in_sample(c, 0.0) for c in ids)


def test_the_figures_from_the_tally_match_sklearn_on_the_same_outcomes() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    churned = rng.random(n) < 0.4
    probability = np.clip(rng.beta(2, 3, n) + 0.25 * churned, 0, 1)
    risk = np.where(probability >= 0.6, HIGH, "LOW")
    samples = [
        (Sample(f"C{i}", T0.timestamp(), float(p), str(r), "v1", HORIZON_DAYS), bool(y))
        for i, (p, r, y) in enumerate(zip(probability, risk, churned, strict=True))
    ]
    # Tallies are added to batch by batch: sum two halves, as the store does.
    tally: dict[str, float] = {}
    for half in (samples[: n // 2], samples[n // 2 :]):
        for key, amount in tally_amounts(half).items():
            tally[key] = tally.get(key, 0.0) + amount

    [got] = figures(tally)
    assert (got.cohort, got.model_version) == ("2026-01-05", "v1")
    assert (got.samples, got.churned) == (n, int(churned.sum()))
    # Ties within a bin count half: the error is at most the mass of pairs sharing one.
    assert got.auc == pytest.approx(roc_auc_score(churned, probability), abs=1 / BINS)
    flagged = risk == HIGH
    assert got.high_precision == pytest.approx(precision_score(churned, flagged))
    assert got.high_recall == pytest.approx(recall_score(churned, flagged))
    assert got.calibration_error == pytest.approx(calibration_error(churned, probability))


def test_figures_are_kept_apart_per_weekly_cohort_and_model_version() -> None:
    week = 7 * 86400.0
    samples = [
        (Sample("C1", T0.timestamp(), 0.9, HIGH, "v1", HORIZON_DAYS), True),
        (Sample("C2", T0.timestamp() + week, 0.2, "LOW", "v1", HORIZON_DAYS), False),
        (Sample("C3", T0.timestamp() + week, 0.8, HIGH, "v2", HORIZON_DAYS), False),
    ]
    got = [
        (f.cohort, f.model_version, f.samples, f.churned) for f in figures(tally_amounts(samples))
    ]
    assert got == [
        ("2026-01-05", "v1", 1, 1),
        ("2026-01-12", "v1", 1, 0),
        ("2026-01-12", "v2", 1, 0),
    ]
    # One outcome only: no AUC yet; nobody churned: no recall.
    assert figures(tally_amounts(samples[2:]))[0].auc is None
    assert figures(tally_amounts(samples[2:]))[0].high_recall is None


def test_the_gauges_show_the_latest_cohorts_only_and_no_unknown_figure() -> None:
    week = 7 * 86400.0
    samples = [
        (Sample(f"C{n}", T0.timestamp() + n * week, 0.8, HIGH, "v1", HORIZON_DAYS), n % 2 == 0)
        for n in range(metrics.PERFORMANCE_COHORTS + 3)
    ]
    metrics.show_performance(figures(tally_amounts(samples)))
    shown = {
        (s.labels["cohort"], s.labels["figure"])
        for family in metrics.REALISED.collect()
        for s in family.samples
    }
    cohorts = sorted({cohort for cohort, _ in shown})
    assert (
        cohorts
        == sorted({f.cohort for f in figures(tally_amounts(samples))})[
            -metrics.PERFORMANCE_COHORTS :
        ]
    )
    # One sample a cohort: one outcome, so no AUC, and recall only where someone churned.
    assert not any(name == "auc" for _, name in shown)
    assert {name for _, name in shown} >= {"high_precision", "samples", "calibration_error"}


def test_a_customer_erased_before_the_horizon_ends_is_not_counted_even_if_back(
    model: Model,
) -> None:
    gone, back, pacer = one_partition(3)
    offsets: dict[str, int] = {}

    def message(topic: str, customer_id: str, event: object | None, days: float) -> InputMessage:
        offset = offsets[topic] = offsets.get(topic, -1) + 1
        value = None if event is None else msgspec.json.encode(event)
        appended = (T0 + days * DAY).timestamp()
        return InputMessage(topic, 0, offset, customer_id.encode(), value, appended)

    def order(customer_id: str, days: float) -> InputMessage:
        placed = Order(
            f"O{customer_id}{days}", customer_id, T0 + days * DAY, 20.0, "card", "shipped"
        )
        return message(topics.ORDERS, customer_id, placed, days)

    messages = [
        order(gone, 0),
        order(back, 0),
        order(pacer, 0),
        order(pacer, 5),
        message(topics.CUSTOMERS, gone, None, 6),  # tombstones: erased
        message(topics.CUSTOMERS, back, None, 6),
        order(pacer, 8),
        order(back, 10),  # a new life: its order says nothing of the old sample
        order(pacer, 31),
    ]
    runner = make_runner(MemoryStore(), model, RecordingSink(), sample_rate=1.0)
    decided = []
    for chunk in (messages[:5], messages[5:]):  # the samples are stored in between
        runner.add(chunk)
        report = asyncio.run(runner.step(lambda topic, partition: False))
        decided += [(s.customer_id, c) for o in report.outcomes for s, c in o.matured]
    assert decided == [(pacer, False)]


def test_a_retrain_is_due_when_the_latest_judged_cohort_falls_below_the_bound() -> None:
    def cohort(week: str, auc: float | None, samples: int) -> Figures:
        return Figures(week, "v1", samples, samples // 2, auc, None, None, 0.0)

    good, bad = cohort("2026-W01", 0.78, 500), cohort("2026-W02", 0.61, 500)
    assert auc_drop([good], 0.7, 200) is None
    assert auc_drop([good, bad], 0.7, 200) == bad
    # A later cohort too small to judge does not hide the drop; a later good one does.
    thin = cohort("2026-W03", 0.40, 50)
    assert auc_drop([good, bad, thin], 0.7, 200) == bad
    assert auc_drop([bad, cohort("2026-W03", 0.75, 300)], 0.7, 200) is None
    assert auc_drop([cohort("2026-W01", None, 900)], 0.7, 200) is None  # one outcome only
