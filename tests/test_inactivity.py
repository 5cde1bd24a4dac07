"""Silent customers' rescores (`scoring.pipeline`, `scoring.inactivity`): one that
leaves the category where it was leaves the state as it was, unwritten, and the
changes published are those of rescores that each move the customer's latest scored
instant on (as the performance sample's customers' do), through profile updates and
late events in the silence and through a model promoted mid-silence."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from feature_store.definitions import FEATURE_NAMES
from feature_store.store import MemoryStore
from schemas import ChurnRiskChanged, Customer, Order, topics
from scoring.artifact import load_model
from scoring.model import Model
from scoring.pipeline import Scorer
from scoring.runner import BatchRunner
from simulator.history import generate_history
from tests.core import FakeKafka, Log, RecordingSink, by_id, drive, logs_of, partition_of
from tests.support import _write_lightgbm, train_soft_model

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Model, Model]:
    """Two models that weigh silence differently, both with a horizon (so the
    performance sample is on)."""
    found = []
    for version, low, high in (("soft-a", 5, 55), ("soft-b", 10, 40)):
        models = tmp_path_factory.mktemp(version)
        model = load_model(train_soft_model(models, "recency_days", low, high, version))
        found.append(dataclasses.replace(model, metadata={**model.metadata, "horizon_days": 30}))
    return found[0], found[1]


def shop() -> Log:
    """A simulated shop, with profile updates and late orders in customers' silences."""
    history = list(generate_history(200, seed=9, days=240).events_in_time_order())
    rng = random.Random(4)
    extra: list[tuple[str, object]] = []
    for _topic, event in history[::40]:
        customer = event.customer_id  # type: ignore[attr-defined]
        at = _time(event) + timedelta(days=rng.choice([10, 17, 25, 40]))
        extra.append((topics.CUSTOMERS, Customer(customer, T0, email_verified=True, updated_at=at)))
        late = Order(
            f"L-{customer}-{len(extra)}",
            customer,
            at - timedelta(days=9),
            12.0,
            "card",
            "delivered",
        )
        extra.append((topics.ORDERS, late))
    events = sorted(history + extra, key=lambda item: _time(item[1]))
    return logs_of(events)


def _time(event: object) -> datetime:
    if isinstance(event, Order):
        return event.order_ts
    if isinstance(event, Customer):
        return event.updated_at or event.registration_date
    return event.created_ts  # type: ignore[attr-defined, no-any-return]


def run(
    logs: Log, model: Callable[[int], Model], sample_rate: float, chunk: int = 40
) -> tuple[list[ChurnRiskChanged], int]:
    """The logs fetched in random chunks of up to `chunk` (the same chunks for the same
    logs), the model given by the step's number; returns the changes and how many
    states were written."""
    sink = RecordingSink()
    steps = [0]
    store = MemoryStore()
    written = [0]
    commit = store.commit

    def counting(commits):  # type: ignore[no-untyped-def]
        written[0] += sum(len(c.states) for c in commits)
        return commit(commits)

    store.commit = counting  # type: ignore[method-assign]
    scorer = Scorer(lambda: model(steps[0]), sample_rate=sample_rate)
    runner = BatchRunner(store, scorer, sink, topics.INPUT_TOPICS)
    for partition in range(4):
        runner.assign(partition)
    drive(runner, FakeKafka(logs, random.Random(2), chunk), on_step=steps)
    return sink.changes, written[0]


def test_a_rescore_that_changes_nothing_writes_nothing_and_the_changes_are_the_same(
    models: tuple[Model, Model],
) -> None:
    logs = shop()
    every, every_written = run(logs, lambda step: models[0], sample_rate=1.0)
    unwritten, written = run(logs, lambda step: models[0], sample_rate=0.0)
    assert len(every) > 100 and any(c.trigger.kind == "inactivity" for c in every)
    assert by_id(unwritten) == by_id(every)
    assert written < 0.8 * every_written


@pytest.fixture(scope="module")
def verified_model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """A model of silence and of the email: an unverified customer's score climbs
    from the start of their silence, a verified one's only after 20 days."""
    rng = np.random.default_rng(3)
    features = rng.normal(size=(8000, len(FEATURE_NAMES)))
    recency = rng.uniform(-20, 120, size=8000)
    verified = rng.integers(0, 2, size=8000).astype(float)
    features[:, FEATURE_NAMES.index("recency_days")] = recency
    features[:, FEATURE_NAMES.index("email_verified")] = verified
    labels = np.clip(np.where(verified == 1, recency - 20, recency + 10) / 40, 0, 1)
    params = {"objective": "cross_entropy", "num_leaves": 15, "min_data_in_leaf": 5}
    models = tmp_path_factory.mktemp("verified")
    _write_lightgbm(models, "verified", params, features, labels, 200)
    model = load_model(models)
    return dataclasses.replace(model, metadata={**model.metadata, "horizon_days": 30})


def test_a_profile_in_a_silence_is_scored_as_of_the_latest_rung_it_passed(
    verified_model: Model,
) -> None:
    # Verified customers order on day 0 and fall silent; on day 20 (after rungs 7
    # and 14), a profile says their email is no longer verified: it is scored as of
    # the latest rung its silence passed (day 14), whether that rescore was written
    # or not, and the next rung (day 21) makes them HIGH.
    events: list[tuple[str, object]] = []
    for n in range(6):
        customer, start = f"S{n}", T0 + timedelta(hours=n)
        events.append((topics.CUSTOMERS, Customer(customer, start, email_verified=True)))
        events.append((topics.ORDERS, Order(f"SO{n}", customer, start, 30.0, "card", "delivered")))
    for day in range(1, 120):  # another customer's daily orders move the stream time on
        at = T0 + timedelta(days=day)
        events.append((topics.ORDERS, Order(f"Z{day}", "Z", at, 5.0, "card", "delivered")))
        if day == 20:
            for n in range(6):
                flip = Customer(f"S{n}", T0, email_verified=False, updated_at=at)
                events.append((topics.CUSTOMERS, flip))
    logs = logs_of(events, partitions=1)
    # Small batches: a few days each, so the plans made at one rung are used later.
    every, _ = run(logs, lambda step: verified_model, sample_rate=1.0, chunk=3)
    planned, _ = run(logs, lambda step: verified_model, sample_rate=0.0, chunk=3)
    silent = {c.event_time.date() - T0.date() for c in every if c.customer_id.startswith("S")}
    assert silent == {timedelta(days=14), timedelta(days=21)}  # MEDIUM, then HIGH
    assert by_id(planned) == by_id(every)


def test_a_model_promoted_mid_silence_takes_over_at_the_next_rung(
    models: tuple[Model, Model],
) -> None:
    logs = shop()

    def promoted(step: int) -> Model:
        return models[0] if step < 25 else models[1]

    every, _ = run(logs, promoted, sample_rate=1.0)
    planned, _ = run(logs, promoted, sample_rate=0.0)
    assert {c.model_version for c in every} == {"soft-a", "soft-b"}
    assert by_id(planned) == by_id(every)


def test_a_customer_silent_past_the_retention_is_forgotten_and_comes_back_as_new(
    models: tuple[Model, Model],
) -> None:
    """With CHURN_RETENTION_DAYS, a customer silent that long is deleted in the
    partition's commit (counted), and one who comes back later starts a new life:
    lifetime totals from the return, change ids of their own. Chunked as replayed."""
    gone = next(f"g-{n}" for n in range(99) if partition_of(f"g-{n}") == 0)
    busy = next(f"b-{n}" for n in range(99) if partition_of(f"b-{n}") == 0)

    def order(customer: str, day: int) -> tuple[str, Order]:
        at = T0 + timedelta(days=day)
        return topics.ORDERS, Order(f"{customer}-{day}", customer, at, 20.0, "card", "delivered")

    events = [order(gone, d) for d in range(3)] + [order(busy, d) for d in range(0, 200, 5)]
    events.append(order(gone, 181))
    logs = logs_of(sorted(events, key=lambda item: item[1].order_ts))

    def run_with(retention_days: int, chunk: int) -> tuple[MemoryStore, RecordingSink, int]:
        store, sink = MemoryStore(), RecordingSink()
        scorer = Scorer(lambda: models[0], retention_days=retention_days)
        runner = BatchRunner(store, scorer, sink, topics.SOURCE_TOPICS)
        for partition in range(4):
            runner.assign(partition)
        reports = drive(runner, FakeKafka(logs, random.Random(3), chunk))
        return store, sink, sum(o.forgotten for r in reports for o in r.outcomes)

    kept, _, none = run_with(0, 4)
    store, sink, forgotten = run_with(120, 4)
    assert none == 0 and forgotten == 1
    before, after = kept.read(0, [gone])[gone], store.read(0, [gone])[gone]
    assert before.totals != after.totals and before.origin != after.origin
    assert after.origin.startswith(f"{topics.ORDERS}@") and after.seen == before.seen
    _, replayed, _ = run_with(120, 1000)
    assert by_id(sink.changes) == by_id(replayed.changes)
