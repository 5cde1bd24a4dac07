"""The drift monitor's core: its statistics, the hysteresis of its alerts, references,
the counts per event-time slice, and one judgement per slice for the whole group, on
the in-memory store and on Redis and Redis Cluster (the alert book's compare-and-set
and the tallies' layout are theirs)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import numpy as np
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from feature_store.definitions import FEATURE_NAMES
from feature_store.redis_store import RedisStateStore
from feature_store.store import Commit, MemoryStore, StateStore
from schemas import Order
from scoring.drift import (
    CLEARED,
    MEAN_SHIFT,
    ORDER_TOTAL,
    PSI,
    RAISED,
    SUBJECTS,
    AlertState,
    DriftConfig,
    DriftMonitor,
    DriftReferenceError,
    DriftStore,
    DriftTally,
    MemoryDriftStore,
    Reference,
    Statistics,
    advance,
    alert_id,
    binned_ks,
    input_values,
    psi,
    reference_profile,
    statistics,
    tally_name,
)
from scoring.outcome import PartitionOutcome, Scores
from stream_app.redis_drift import RedisDriftStore, drift_status

HOUR = 3600
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
VERSION = "v1"
SPEND = FEATURE_NAMES.index("spend_7d")
AGE = FEATURE_NAMES.index("age")


def shares(size: int) -> st.SearchStrategy[np.ndarray]:
    """Share vectors with no share below 0.001 (PSI's floor never bites)."""
    weights = st.lists(st.floats(0.01, 1.0), min_size=size, max_size=size)
    return weights.map(lambda w: np.asarray(w) / sum(w))


# --- statistics ---------------------------------------------------------------------


@given(shares(8), shares(8))
def test_psi_is_zero_for_the_reference_itself_and_positive_for_anything_else(
    expected: np.ndarray, observed: np.ndarray
) -> None:
    assert psi(expected, expected) == 0
    assert psi(expected, observed) >= 0
    if not np.allclose(expected, observed, atol=1e-9):
        assert psi(expected, observed) > 0


@given(shares(6), shares(6), st.floats(0, 1), st.floats(0, 1))
def test_psi_grows_as_more_of_the_window_comes_from_another_distribution(
    expected: np.ndarray, other: np.ndarray, a: float, b: float
) -> None:
    low, high = sorted((a, b))

    def mixed(t: float) -> np.ndarray:
        return (1 - t) * expected + t * other

    assert psi(expected, mixed(low)) <= psi(expected, mixed(high)) + 1e-12


def test_psi_of_a_bin_the_reference_never_saw_is_finite_and_large() -> None:
    assert 0.5 < psi(np.array([0.5, 0.5, 0.0]), np.array([0.4, 0.4, 0.2])) < math.inf


def test_binned_ks_is_the_largest_gap_between_cumulative_shares_of_present_values() -> None:
    expected = np.array([0.25, 0.25, 0.25, 0.25, 0.0])
    observed = np.array([0.5, 0.1, 0.1, 0.1, 0.2])  # the last bin: missing values
    # present values renormalised: 0.625, 0.125, 0.125, 0.125 -> cumulative gap 0.375
    assert binned_ks(expected, observed) == pytest.approx(0.375)
    assert math.isnan(binned_ks(expected, np.array([0, 0, 0, 0, 1.0])))


def test_the_mean_shift_is_relative_to_the_reference_mean(reference: Reference) -> None:
    spend = reference.subjects[SPEND]
    assert spend.mean is not None
    counts = np.ones(spend.size)  # the last: a missing value
    stats = statistics(spend, counts, total=1.4 * spend.mean * (spend.size - 1))
    assert stats.mean_shift == pytest.approx(0.4)
    assert stats.scores == spend.size


# --- hysteresis ---------------------------------------------------------------------

CONFIG = DriftConfig(raise_above=0.2, clear_below=0.1, consecutive=3)


def window(psi: float, mean_shift: float | None = None) -> Statistics:
    return Statistics(psi, math.nan, mean_shift, None, 1000)


def run(values: Sequence[float], config: DriftConfig) -> list[tuple[int, str]]:
    state, changes = AlertState(), []
    for i, value in enumerate(values):
        state, change = advance(
            state, window(value), config.thresholds("age"), config.consecutive, i
        )
        if change is not None:
            changes.append((i, change))
    return changes


@given(st.lists(st.sampled_from([0.05, 0.15, 0.3]), max_size=60), st.integers(1, 4))
def test_an_alert_changes_only_after_k_slices_in_a_row_past_its_threshold_and_always_then(
    values: list[float], k: int
) -> None:
    config = DriftConfig(raise_above=0.2, clear_below=0.1, consecutive=k)
    changes = run(values, config)
    assert [c for _, c in changes] == [RAISED, CLEARED] * (len(changes) // 2) + [RAISED] * (
        len(changes) % 2
    )
    raised, since = False, 0
    for i, value in enumerate(values):
        past = value > 0.2 if not raised else value < 0.1
        run_length = 0
        for earlier in reversed(values[since : i + 1]):
            if (earlier > 0.2) if not raised else (earlier < 0.1):
                run_length += 1
            else:
                break
        changed = (i, RAISED if not raised else CLEARED) in changes
        assert changed == (past and run_length >= k), (i, values[since : i + 1])
        if changed:
            raised, since = not raised, i + 1


@given(st.lists(st.floats(0.1, 0.2), max_size=50))
def test_values_between_the_two_thresholds_never_change_an_alert(values: list[float]) -> None:
    assert run([0.5, 0.5, 0.5, *values], CONFIG) == [(2, RAISED)]
    assert run(values, CONFIG) == []


def test_a_raised_alert_records_when_it_changed_and_the_last_value() -> None:
    state = AlertState()
    judged = CONFIG.thresholds("age")
    for end in (10, 11):
        state, change = advance(state, window(0.3), judged, 3, end)
        assert change is None and state.streak == end - 9
    state, change = advance(state, window(0.4), judged, 3, 12)
    assert change == RAISED and state == AlertState(True, 0, 12, 0.4, PSI)
    assert AlertState.from_json(state.to_json()) == state
    # A book written before the mean shift was judged: its alerts were raised by PSI.
    old = {k: v for k, v in state.to_json().items() if k != "statistic"}
    assert AlertState.from_json(old) == state


def test_the_order_amount_is_also_raised_by_its_mean_shift_and_cleared_once_both_are_low() -> None:
    judged = CONFIG.thresholds(ORDER_TOTAL)
    assert [t.statistic for t in judged] == [PSI, MEAN_SHIFT]
    assert [t.statistic for t in CONFIG.thresholds("spend_7d")] == [PSI]
    state, changes = AlertState(), []
    slices = [
        window(0.05, 0.25),  # prices up a quarter: PSI calm, the mean shift past 0.2
        window(0.05, -0.3),  # either direction
        window(0.08, 0.3),
        window(0.05, 0.05),  # cleared only once both are below their clear thresholds
        window(0.15, 0.05),
        window(0.05, None),  # no order in the window: cannot clear it
        window(0.05, 0.08),
        window(0.05, 0.05),
        window(0.05, 0.05),
    ]
    for end, stats in enumerate(slices):
        state, change = advance(state, stats, judged, 3, end)
        if change is not None:
            changes.append((end, change, state.statistic))
    assert changes == [(2, RAISED, MEAN_SHIFT), (8, CLEARED, MEAN_SHIFT)]


# --- references ---------------------------------------------------------------------


def rows(
    n: int, seed: int, spend_factor: float = 1.0, age_shift: float = 0.0, price_factor: float = 1.0
) -> Scores:
    """Scores of a synthetic shop: every feature random, spend_7d zero-inflated, 70% of
    the scores triggered by an order (its total spread as the simulator's: log-SD 1)."""
    rng = np.random.default_rng(seed)
    features = rng.normal(10.0, 2.0, size=(n, len(FEATURE_NAMES)))
    features[:, SPEND] = np.where(rng.random(n) < 0.6, 0.0, rng.lognormal(4, 0.5, n))
    features[:, SPEND] *= spend_factor
    features[:, AGE] = rng.normal(37, 12, n) + age_shift
    features[rng.random(n) < 0.1, FEATURE_NAMES.index("mean_resolution_hours")] = np.nan
    probabilities = rng.random(n)
    risks = [("LOW", "MEDIUM", "HIGH")[int(p * 3)] for p in probabilities]
    totals = rng.lognormal(4.3, 1.0, n) * price_factor
    at = datetime.fromtimestamp(T0, tz=UTC)
    events: list[object | None] = [
        Order(f"o{i}", "c", at, round(float(totals[i]), 2), "card", "delivered")
        if is_order
        else None
        for i, is_order in enumerate(rng.random(n) < 0.7)
    ]
    return Scores(VERSION, features, probabilities, risks, [float(T0)] * n, ["event"] * n, events)


def profile(n: int = 5000, seed: int = 1) -> dict:
    scores = rows(n, seed)
    return reference_profile(
        scores.features, scores.probabilities, scores.risks, scores.as_of, scores.events
    )


@pytest.fixture(scope="module")
def reference() -> Reference:
    found = Reference.from_metadata({"reference": {"serving": profile()}})
    assert found is not None
    return found


def test_a_reference_round_trips_through_metadata_and_its_bins_hold_its_shares(
    reference: Reference,
) -> None:
    assert [s.name for s in reference.subjects] == list(SUBJECTS)
    assert reference.rows == 5000
    scores = rows(5000, seed=1)
    for subject, column in zip(reference.subjects[:-3], scores.features.T, strict=True):
        counts = np.bincount(subject.bins(column), minlength=subject.size)
        np.testing.assert_allclose(counts / 5000, subject.shares)
        assert np.all(counts[:-1] > 0), f"{subject.name}: every bin holds reference values"
    mix = reference.subjects[-1]
    assert mix.size == 4 and mix.mean is None and mix.shares[-1] == 0
    # The order amount: the orders' totals only, none missing.
    totals = input_values(scores.events)[:, 0]
    totals = totals[~np.isnan(totals)]
    order_total = reference.subjects[SUBJECTS.index(ORDER_TOTAL)]
    assert 0.65 * 5000 < len(totals) < 0.75 * 5000
    counts = np.bincount(order_total.bins(totals), minlength=order_total.size)
    np.testing.assert_allclose(counts / len(totals), order_total.shares)
    assert order_total.shares[-1] == 0 and order_total.mean == pytest.approx(totals.mean())


def test_the_minimum_of_a_zero_inflated_feature_has_a_bin_and_the_rest_their_deciles(
    reference: Reference,
) -> None:
    spend = reference.subjects[SPEND]
    zeros = np.mean(rows(5000, seed=1).features[:, SPEND] == 0)  # about 0.6
    assert spend.cuts[0] > 0 and spend.shares[0] == pytest.approx(zeros)
    assert len(spend.cuts) == 10  # the smallest positive value, then nine deciles
    assert np.allclose(spend.shares[1:-1], 0.04, atol=0.01)


def test_an_artifact_without_a_drift_reference_has_none_and_a_malformed_one_is_refused() -> None:
    assert Reference.from_metadata({}) is None
    assert Reference.from_metadata({"reference": {"features": {}}}) is None
    broken = profile()
    broken["subjects"]["age"]["shares"] = [1.0]
    with pytest.raises(DriftReferenceError, match="age: shares must be"):
        Reference.from_metadata({"reference": {"serving": broken}})
    del broken["subjects"]["age"]
    with pytest.raises(DriftReferenceError, match="subjects"):
        Reference.from_metadata({"reference": {"serving": broken}})


# --- counting -------------------------------------------------------------------------


def outcome(scores: Scores, partition: int = 0) -> PartitionOutcome:
    return PartitionOutcome(partition, scores=scores)


def test_the_tally_counts_event_scores_by_the_slice_of_their_instant_and_not_rescores(
    reference: Reference,
) -> None:
    scores = rows(6, seed=2)
    scores.as_of[:] = [T0 + 10, T0 + 20, T0 + HOUR + 5, T0 + HOUR + 6, T0 + 2 * HOUR, T0 + 30]
    scores.triggers[:] = ["event", "event", "event", "inactivity", "event", "inactivity"]
    tally = DriftTally(lambda version: reference, DriftConfig())
    counted = tally(outcome(scores), [], 0.0)
    assert set(counted) == {tally_name(VERSION, T0 + k * HOUR) for k in range(3)}
    fields = reference.layout.fields  # a slice's tally is a vector, in the layout's order
    counts = [
        dict(zip(fields, counted[tally_name(VERSION, T0 + k * HOUR)].amounts, strict=True))
        for k in range(3)
    ]
    assert [c["rows"] for c in counts] == [2, 1, 1]
    first = counted[tally_name(VERSION, T0)]
    assert first.ttl == 28 * 24 * HOUR  # a backstop: the judge deletes slices in event time
    orders = sum(isinstance(e, Order) for e in scores.events[:2])
    for subject in reference.subjects:
        bins = [counts[0][f"{subject.name}:{b}"] for b in range(subject.size)]
        assert sum(bins) == (orders if subject.name == ORDER_TOTAL else 2), subject.name


def test_nothing_is_counted_before_since_nor_for_a_model_without_a_reference(
    reference: Reference,
) -> None:
    scores = rows(4, seed=3)
    scores.as_of[:] = [T0 - 1, T0 - 1, T0, T0 + 1]
    counted = DriftTally(lambda version: reference, DriftConfig(since=T0))(outcome(scores), [], 0)
    assert [t.amounts[-1] for t in counted.values()] == [2]  # the vector's last: its rows
    assert DriftTally(lambda version: None, DriftConfig())(outcome(scores), [], 0) == {}


# --- judging --------------------------------------------------------------------------

PARTITIONS = 2


@pytest.fixture(params=["memory", "redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Where the partitions' state and the alert book live: in memory, in one Redis, in
    a Redis Cluster (its keys then spread over the nodes' slots)."""
    yield request.param
    for client in CLIENTS.pop(request.node.nodeid, []):
        RedisStateStore(client, NAMESPACES.pop(id(client))).delete_namespace()


CLIENTS: dict[str, list[redis.Redis | redis.RedisCluster]] = {}
NAMESPACES: dict[int, str] = {}


class Shop:
    """A state store and its drift store, the partitions committed to as the runner
    does (claimed, then each commit fenced and carrying the batch's tallies)."""

    def __init__(
        self, reference: Reference, config: DriftConfig, request: pytest.FixtureRequest
    ) -> None:
        kind = request.getfixturevalue("backend")
        self.store: StateStore
        self.drift: DriftStore
        if kind == "memory":
            self.store = memory = MemoryStore()
            self.drift = MemoryDriftStore(memory)
            self.client = None
        else:
            url = request.getfixturevalue("redis_url" if kind == "redis" else "redis_cluster_url")
            client = (redis.Redis if kind == "redis" else redis.RedisCluster).from_url(url)
            namespace = f"drift-{uuid.uuid4().hex[:8]}"
            CLIENTS.setdefault(request.node.nodeid, []).append(client)
            NAMESPACES[id(client)] = namespace
            self.store = RedisStateStore(client, namespace)
            self.drift = RedisDriftStore(client, namespace)
        self.tally = DriftTally(lambda version: reference, config)
        self.epochs = {p: self.store.claim(p).epoch for p in range(PARTITIONS)}
        self.offsets = dict.fromkeys(range(PARTITIONS), -1)

    def commit(self, partition: int, scores: Scores | None, stream_time: float) -> None:
        tallies = {} if scores is None else self.tally(outcome(scores, partition), [], 0)
        previous = self.offsets[partition]
        self.offsets[partition] += 1
        verdict = self.store.commit(
            [
                Commit(
                    partition,
                    self.epochs[partition],
                    {"orders": previous},
                    {"orders": self.offsets[partition]},
                    stream_time,
                    tallies=tallies,
                )
            ]
        )
        assert verdict[partition][0] == "committed"

    def hours(self, first: int, last: int, **shift: float) -> None:
        """Hours first..last (from T0) of scores, 100 an hour in each partition."""
        for hour in range(first, last + 1):
            for partition in range(PARTITIONS):
                scores = rows(100, seed=1000 * hour + partition, **shift)
                scores.as_of[:] = [T0 + hour * HOUR + 60.0] * 100
                self.commit(partition, scores, T0 + (hour + 1) * HOUR)

    def tallies(self) -> set[str]:
        """The names of the tallies the partitions hold."""
        if isinstance(self.store, MemoryStore):
            return {name for p in self.store.partitions.values() for name in p.tallies}
        assert isinstance(self.store, RedisStateStore)
        keys = (key.decode() for key in self.store.scan())
        return {key.split(":tally:", 1)[1] for key in keys if ":tally:" in key}


def judge_all(monitor: DriftMonitor, reference: Reference) -> list:
    alerts = []
    while (judgement := monitor.judge(reference, VERSION)) is not None:
        alerts += judgement.alerts
        assert monitor.commit(judgement)
    return alerts


def monitored(
    reference: Reference, config: DriftConfig, request: pytest.FixtureRequest
) -> tuple[Shop, DriftMonitor]:
    shop = Shop(reference, config, request)
    return shop, DriftMonitor(config, range(PARTITIONS), shop.drift)


SMALL = DriftConfig(window_slices=4, consecutive=2, min_scores=300, since=float(T0))


def test_a_slice_is_judged_once_the_slowest_partition_has_passed_its_end(
    reference: Reference, backend: str, request: pytest.FixtureRequest
) -> None:
    shop, monitor = monitored(reference, SMALL, request)
    shop.hours(0, 5)
    shop.commit(1, None, T0 + 9 * HOUR)  # partition 1 runs ahead; 0 is at hour 6
    judgement = monitor.judge(reference, VERSION)
    assert judgement is not None
    # The first slice judged has a whole window behind it: the 4th hour ends at T0 + 4h.
    assert judgement.slices == 3 and judgement.book.cursor == T0 + 6 * HOUR
    assert monitor.commit(judgement)
    assert monitor.judge(reference, VERSION) is None  # nothing new until partition 0 moves
    shop.commit(0, None, T0 + 8 * HOUR + 1)
    judgement = monitor.judge(reference, VERSION)
    assert judgement is not None and judgement.book.cursor == T0 + 8 * HOUR


def test_a_partition_that_never_had_data_does_not_hold_the_watermark_back(
    reference: Reference, backend: str, request: pytest.FixtureRequest
) -> None:
    shop, monitor = monitored(reference, SMALL, request)
    assert shop.drift.watermark(range(PARTITIONS)) is None  # nothing to judge yet
    for hour in range(6):
        scores = rows(200, seed=hour)
        scores.as_of[:] = [T0 + hour * HOUR + 60.0] * 200
        shop.commit(0, scores, T0 + (hour + 1) * HOUR)
    assert shop.drift.watermark(range(PARTITIONS)) == T0 + 6 * HOUR
    judgement = monitor.judge(reference, VERSION)
    assert judgement is not None and judgement.book.cursor == T0 + 6 * HOUR


def test_a_shift_raises_its_subjects_once_and_clears_them_once_it_has_passed(
    reference: Reference, backend: str, request: pytest.FixtureRequest
) -> None:
    shop, monitor = monitored(reference, SMALL, request)
    shop.hours(0, 9)
    shop.hours(10, 19, age_shift=15.0)
    shop.hours(20, 34)
    alerts = judge_all(monitor, reference)
    assert [(a.feature, a.state) for a in alerts] == [("age", RAISED), ("age", CLEARED)]
    raised, cleared = alerts
    # Raised as the shifted hours fill the window; cleared once they have left it.
    assert T0 + 11 * HOUR <= raised.window.end.timestamp() <= T0 + 14 * HOUR
    assert T0 + 22 * HOUR <= cleared.window.end.timestamp() <= T0 + 26 * HOUR
    shift = raised.statistics.mean_shift
    assert raised.value > 0.2 and shift is not None and 0 < shift < 15 / 37
    assert isinstance(shift, float) and type(raised.window.mean) is float
    assert raised.event_id == alert_id("age", RAISED, int(raised.window.end.timestamp()))
    assert raised.window.scores == 4 * 2 * 100 and raised.reference.rows == 5000


def test_prices_up_40_percent_raise_the_order_amount_by_its_mean_shift_alone(
    reference: Reference, backend: str, request: pytest.FixtureRequest
) -> None:
    shop, monitor = monitored(reference, SMALL, request)
    shop.hours(0, 9)
    shop.hours(10, 19, price_factor=1.4)
    shop.hours(20, 34)
    alerts = judge_all(monitor, reference)
    assert [(a.feature, a.state, a.statistic) for a in alerts] == [
        (ORDER_TOTAL, RAISED, MEAN_SHIFT),
        (ORDER_TOTAL, CLEARED, MEAN_SHIFT),
    ]
    raised, cleared = alerts
    assert raised.value == raised.statistics.mean_shift and 0.2 < raised.value < 0.5
    assert raised.statistics.psi < 0.2  # a change of scale PSI alone would miss
    assert (raised.thresholds.raise_above, raised.thresholds.clear_below) == (0.2, 0.1)
    # Cleared after the shifted hours have left the window (hour 24), once 3 windows in
    # a row are within 10% of the reference: means of ~550 orders spread this much
    # wander by about 5%, so that takes a few hours more.
    assert abs(cleared.value) < 0.1
    assert T0 + 24 * HOUR <= cleared.window.end.timestamp() <= T0 + 30 * HOUR


def test_one_judgement_per_slice_however_many_judges_and_both_had_the_same_ids(
    reference: Reference, backend: str, request: pytest.FixtureRequest
) -> None:
    shop, first = monitored(reference, SMALL, request)
    second = DriftMonitor(SMALL, range(PARTITIONS), shop.drift)
    shop.hours(0, 9)
    judge_all(first, reference)  # up to the shift
    shop.hours(10, 19, age_shift=15.0)
    a, b = first.judge(reference, VERSION), second.judge(reference, VERSION)
    assert a is not None and b is not None
    assert [x.event_id for x in a.alerts] == [x.event_id for x in b.alerts] != []
    assert first.commit(a)
    assert not second.commit(b)
    assert second.judge(reference, VERSION) is None


def test_a_judge_that_died_between_publishing_and_its_compare_and_set_repeats_the_same_ids(
    reference: Reference, backend: str, request: pytest.FixtureRequest
) -> None:
    shop, monitor = monitored(reference, SMALL, request)
    shop.hours(0, 19, age_shift=15.0)
    published = monitor.judge(reference, VERSION)  # then the worker died: no commit
    assert published is not None and published.alerts
    again = monitor.judge(reference, VERSION)
    assert again is not None
    assert [a.event_id for a in again.alerts] == [a.event_id for a in published.alerts]


def test_a_window_with_too_few_scores_is_not_judged(
    reference: Reference, backend: str, request: pytest.FixtureRequest
) -> None:
    config = DriftConfig(window_slices=4, consecutive=1, min_scores=10_000, since=float(T0))
    shop, monitor = monitored(reference, config, request)
    shop.hours(0, 9, age_shift=30.0)
    judgement = monitor.judge(reference, VERSION)
    assert judgement is not None and judgement.slices == 7
    assert judgement.alerts == [] and judgement.latest == {} and judgement.book.alerts == {}


def test_tallies_no_later_window_needs_are_dropped_once_judged(
    reference: Reference, backend: str, request: pytest.FixtureRequest
) -> None:
    config = DriftConfig(window_slices=4, consecutive=2, since=float(T0), max_slices=2)
    shop, monitor = monitored(reference, config, request)
    shop.hours(0, 19)
    judge_all(monitor, reference)
    kept = shop.tallies()
    # The last call judged the slice ending at hour 20, from the window [16, 20): it
    # keeps what it read (a judge that read the book with it needs the same), and
    # the next window, [17, 21), needs no more.
    assert kept == {tally_name(VERSION, T0 + h * HOUR) for h in range(16, 20)}


def test_without_since_the_first_call_only_marks_where_judging_starts(
    reference: Reference, backend: str, request: pytest.FixtureRequest
) -> None:
    config = DriftConfig(window_slices=4, consecutive=1)
    shop, monitor = monitored(reference, config, request)
    shop.hours(0, 5, age_shift=30.0)
    start = monitor.judge(reference, VERSION)
    assert start is not None and start.slices == 0 and start.book.cursor == T0 + 6 * HOUR
    assert monitor.commit(start)
    shop.hours(6, 6, age_shift=30.0)
    judgement = monitor.judge(reference, VERSION)
    assert judgement is not None and [a.feature for a in judgement.alerts] == ["age"]
    assert monitor.commit(judgement)
    assert shop.drift.book().alerts["age"].raised


def test_the_alert_book_read_back_from_redis_is_the_one_judged(
    reference: Reference, backend: str, request: pytest.FixtureRequest
) -> None:
    shop, monitor = monitored(reference, SMALL, request)
    shop.hours(0, 19, age_shift=15.0)
    alerts = judge_all(monitor, reference)
    assert [a.feature for a in alerts] == ["age"]
    book = shop.drift.book()
    assert book.cursor == T0 + 20 * HOUR and set(book.alerts) == set(SUBJECTS)
    assert (
        book.alerts["age"].raised and book.alerts["age"].since == alerts[0].window.end.timestamp()
    )
    if isinstance(shop.drift, RedisDriftStore):
        status = drift_status(shop.drift.client, shop.drift.keys.namespace)
        assert status.judged_through == datetime.fromtimestamp(T0 + 20 * HOUR, tz=UTC)
        assert status.alerts == book.alerts and status.raised() == ["age"]
        assert status.states()["age"] == "raised" and status.states()["tenure_days"] == "ok"
