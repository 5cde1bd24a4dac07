"""Tests for the synthetic history generator and its SQLite / JSON-lines sinks."""

from __future__ import annotations

import functools
import re
import sqlite3
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import (
    INPUT_EVENTS,
    PROBLEM_DELIVERY_STATUSES,
    Customer,
    Order,
    SupportTicket,
)
from schemas.topics import CUSTOMERS, ORDERS, SUPPORT_TICKETS
from simulator import (
    DEFAULT_START,
    SHIFT_KINDS,
    History,
    Shift,
    TokenBucket,
    Treatment,
    generate_history,
    read_jsonl,
    write_jsonl,
    write_sqlite,
)
from simulator.__main__ import main

N = 2000  # big enough for the statistical checks, small enough to take well under a second


@pytest.fixture(scope="module")
def history() -> History:
    return generate_history(N, seed=11)


def event_time(topic: str, event: object, start: datetime) -> datetime:
    if isinstance(event, Customer):
        return max(event.registration_date, start)
    if isinstance(event, Order):
        return event.order_ts
    assert isinstance(event, SupportTicket), topic
    return event.created_ts


def encoded_events(h: History) -> list[tuple[str, bytes]]:
    return [(topic, msgspec.json.encode(e)) for topic, e in h.events_in_time_order()]


def orders_by_customer(h: History) -> dict[str, list[Order]]:
    by_customer: dict[str, list[Order]] = defaultdict(list)
    for o in h.orders:
        by_customer[o.customer_id].append(o)
    return by_customer


# --- determinism -------------------------------------------------------------------------


def test_same_seed_gives_identical_history():
    a = generate_history(300, seed=3, days=90)
    b = generate_history(300, seed=3, days=90)
    assert encoded_events(a) == encoded_events(b)
    pd.testing.assert_frame_equal(a.truth, b.truth)


def test_different_seeds_give_different_histories():
    a = generate_history(300, seed=3, days=90)
    b = generate_history(300, seed=4, days=90)
    assert encoded_events(a) != encoded_events(b)


# --- shape of the data -------------------------------------------------------------------


def test_ids_are_unique_and_follow_the_id_formats(history):
    customer_ids = [c.customer_id for c in history.customers]
    order_ids = [o.order_id for o in history.orders]
    ticket_ids = [t.ticket_id for t in history.tickets]
    for ids, pattern in (
        (customer_ids, r"C\d{7}"),
        (order_ids, r"O\d{9}"),
        (ticket_ids, r"T\d{8}"),
    ):
        assert len(set(ids)) == len(ids)
        assert all(re.fullmatch(pattern, i) for i in ids)
    known = set(customer_ids)
    assert {o.customer_id for o in history.orders} <= known
    assert {t.customer_id for t in history.tickets} <= known


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=60),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    days=st.integers(min_value=1, max_value=120),
)
def test_all_timestamps_are_utc_whole_seconds_inside_the_period(n, seed, days):
    start = datetime(2025, 3, 1, tzinfo=UTC)
    end = start + timedelta(days=days)
    h = generate_history(n, seed=seed, start=start, days=days)
    assert (h.start, h.end) == (start, end)

    stamps = [c.registration_date for c in h.customers]
    stamps += [o.order_ts for o in h.orders]
    stamps += [t.created_ts for t in h.tickets]
    stamps += [t.resolved_ts for t in h.tickets if t.resolved_ts is not None]
    for ts in stamps:
        assert ts.utcoffset() == timedelta(0)
        assert ts.microsecond == 0
    # Profiles may predate the period (up to two years); every event happens inside it.
    for c in h.customers:
        assert start - timedelta(days=730) <= c.registration_date < end
    for topic, event in h.events_in_time_order():
        assert start <= event_time(topic, event, start) < end
    for t in h.tickets:
        assert t.resolved_ts is None or t.resolved_ts < end


def test_order_totals_are_the_sum_of_their_item_lines(history):
    for o in history.orders:
        assert 1 <= len(o.items) <= 4
        assert o.currency == "USD"
        expected = round(sum(i.quantity * i.price for i in o.items), 2)
        assert o.total_amount == pytest.approx(expected, abs=1e-9)
    zero = sum(o.total_amount == 0 for o in history.orders)
    assert zero / len(history.orders) < 0.02  # vouchers exist but are rare


def test_ticket_resolution_time_matches_resolved_ts(history):
    unresolved = 0
    for t in history.tickets:
        if t.resolved_ts is None:
            unresolved += 1
            assert t.resolution_time_hours is None
            assert t.satisfaction_score is None  # nobody rates an open ticket
        else:
            assert t.resolution_time_hours is not None
            elapsed_h = (t.resolved_ts - t.created_ts).total_seconds() / 3600
            assert elapsed_h == pytest.approx(t.resolution_time_hours, abs=1e-6)
    assert 0.05 < unresolved / len(history.tickets) < 0.2
    no_score = sum(t.satisfaction_score is None for t in history.tickets)
    assert 0.1 < no_score / len(history.tickets) < 0.3


def test_averages_are_realistic(history):
    assert 6 < history.orders_per_customer < 15
    assert 0.15 < history.churned_fraction < 0.45
    missing_age = sum(c.age is None for c in history.customers) / N
    assert 0.01 < missing_age < 0.06


def test_truth_has_one_row_per_customer(history):
    truth = history.truth
    assert list(truth.columns) == [
        "customer_id",
        "churn_propensity",
        "churn_ts",
        "saved",
        "rhythm_shape",
    ]
    assert (truth["rhythm_shape"] == 1.0).all()  # everyone buys as a Poisson process
    assert not truth["saved"].any()  # nobody is saved without a treatment
    assert list(truth["customer_id"]) == [c.customer_id for c in history.customers]
    assert truth["churn_propensity"].between(0, 1).all()
    churned = truth["churn_ts"].dropna()
    assert (churned >= pd.Timestamp(history.start)).all()
    assert (churned < pd.Timestamp(history.end)).all()


# --- behaviour driven by churn propensity ------------------------------------------------


def test_high_propensity_customers_order_less_and_have_more_delivery_problems(history):
    by_customer = orders_by_customer(history)
    # Only customers present all year, so registration dates do not blur the comparison.
    truth = history.truth.set_index("customer_id")
    veterans = [c.customer_id for c in history.customers if c.registration_date < history.start]
    propensity = truth.loc[veterans, "churn_propensity"]
    low = propensity[propensity <= propensity.quantile(0.25)].index
    high = propensity[propensity >= propensity.quantile(0.75)].index

    def orders_per_customer(ids: pd.Index) -> float:
        return float(np.mean([len(by_customer[c]) for c in ids]))

    def problem_share(ids: pd.Index) -> float:
        orders = [o for c in ids for o in by_customer[c]]
        return sum(o.delivery_status in PROBLEM_DELIVERY_STATUSES for o in orders) / len(orders)

    def mean_basket(ids: pd.Index) -> float:
        return float(np.mean([o.total_amount for c in ids for o in by_customer[c]]))

    assert orders_per_customer(high) < 0.6 * orders_per_customer(low)
    assert problem_share(high) > 1.5 * problem_share(low)
    assert mean_basket(high) < mean_basket(low)


def test_high_propensity_customers_open_more_tickets_and_are_less_satisfied(history):
    truth = history.truth.set_index("customer_id")["churn_propensity"]
    median = truth.median()
    tickets = Counter(t.customer_id for t in history.tickets)
    high = truth[truth > median].index
    low = truth[truth <= median].index
    # Although they order less and leave sooner, they still open more tickets.
    assert sum(tickets[c] for c in high) > 1.25 * sum(tickets[c] for c in low)

    scores = [
        (truth[t.customer_id] > median, t.satisfaction_score)
        for t in history.tickets
        if t.satisfaction_score is not None
    ]
    high_scores = [s for is_high, s in scores if is_high]
    low_scores = [s for is_high, s in scores if not is_high]
    assert np.mean(high_scores) < np.mean(low_scores)


def test_churners_are_silent_after_churn_ts(history):
    churn_ts = {
        cid: ts.to_pydatetime()
        for cid, ts in zip(history.truth["customer_id"], history.truth["churn_ts"], strict=True)
        if not pd.isna(ts)
    }
    assert churn_ts
    for o in history.orders:
        if o.customer_id in churn_ts:
            assert o.order_ts < churn_ts[o.customer_id]
    for t in history.tickets:
        if t.customer_id in churn_ts:
            assert t.created_ts < churn_ts[t.customer_id]


def test_churners_order_less_in_the_month_before_churning(history):
    by_customer = orders_by_customer(history)
    day = timedelta(days=1)
    last_month = earlier_month = 0
    for cid, ts in zip(history.truth["customer_id"], history.truth["churn_ts"], strict=True):
        if pd.isna(ts):
            continue
        churn = ts.to_pydatetime()
        # Only churners we can observe for 100 days before the end.
        if churn - 100 * day < history.start:
            continue
        times = [o.order_ts for o in by_customer[cid]]
        last_month += sum(churn - 30 * day <= t < churn for t in times)
        earlier_month += sum(churn - 100 * day <= t < churn - 70 * day for t in times)
    assert earlier_month > 50
    assert last_month < 0.7 * earlier_month  # about 0.5: the rate fades linearly to zero


# --- wire format and ordering ------------------------------------------------------------


def test_every_event_round_trips_through_the_schema_types(history):
    for topic, event in history.events_in_time_order():
        decoded = msgspec.json.decode(msgspec.json.encode(event), type=INPUT_EVENTS[topic])
        assert decoded == event


def test_events_in_time_order_is_sorted_and_complete(history):
    events = list(history.events_in_time_order())
    assert len(events) == len(history)
    assert Counter(topic for topic, _ in events) == {
        CUSTOMERS: len(history.customers),
        ORDERS: len(history.orders),
        SUPPORT_TICKETS: len(history.tickets),
    }
    times = [event_time(topic, e, history.start) for topic, e in events]
    assert times == sorted(times)


def test_each_profile_comes_before_its_customers_orders_and_tickets(history):
    seen: set[str] = set()
    for topic, event in history.events_in_time_order():
        if topic == CUSTOMERS:
            seen.add(event.customer_id)
        else:
            assert event.customer_id in seen


def test_profiles_registered_before_the_period_are_emitted_first(history):
    veterans = sum(c.registration_date < history.start for c in history.customers)
    assert veterans > 0
    first = [topic for topic, _ in list(history.events_in_time_order())[:veterans]]
    assert first == [CUSTOMERS] * veterans


def test_generate_history_rejects_naive_start_and_empty_period():
    with pytest.raises(ValueError):
        generate_history(10, start=datetime(2025, 7, 1))
    with pytest.raises(ValueError):
        generate_history(10, days=0)


def test_zero_customers_give_an_empty_history():
    h = generate_history(0)
    assert len(h) == 0
    assert list(h.events_in_time_order()) == []
    assert h.churned_fraction == 0.0


# --- sinks -------------------------------------------------------------------------------

SEED_SCHEMA = {
    "customers": [
        ("customer_id", "TEXT", 1),
        ("age", "INTEGER", 0),
        ("gender", "TEXT", 0),
        ("city", "TEXT", 0),
        ("registration_date", "TEXT", 0),
        ("email_verified", "INTEGER", 0),
        ("phone_verified", "INTEGER", 0),
    ],
    "orders": [
        ("order_id", "TEXT", 1),
        ("customer_id", "TEXT", 0),
        ("order_date", "TEXT", 0),
        ("total_amount", "REAL", 0),
        ("payment_method", "TEXT", 0),
        ("delivery_status", "TEXT", 0),
    ],
    "order_items": [
        ("order_id", "TEXT", 0),
        ("product_category", "TEXT", 0),
        ("quantity", "INTEGER", 0),
        ("price", "REAL", 0),
    ],
    "support_tickets": [
        ("ticket_id", "TEXT", 1),
        ("customer_id", "TEXT", 0),
        ("created_at", "TEXT", 0),
        ("resolution_time_hours", "REAL", 0),
        ("satisfaction_score", "INTEGER", 0),
    ],
}


@pytest.fixture(scope="module")
def small_history() -> History:
    return generate_history(200, seed=5, days=120)


def test_sqlite_has_the_seed_schema_and_all_rows(small_history, tmp_path):
    path = tmp_path / "shop.db"
    path.write_text("not a database")  # an existing file is replaced
    write_sqlite(small_history, path)
    write_sqlite(small_history, path)  # and rewriting does not duplicate rows

    with sqlite3.connect(path) as conn:
        for table, columns in SEED_SCHEMA.items():
            info = conn.execute(f"PRAGMA table_info({table})").fetchall()
            assert [(name, type_, pk) for _, name, type_, _, _, pk in info] == columns

        def count(table: str) -> int:
            return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

        assert count("customers") == len(small_history.customers)
        assert count("orders") == len(small_history.orders)
        assert count("order_items") == sum(len(o.items) for o in small_history.orders)
        assert count("support_tickets") == len(small_history.tickets)
        assert count("simulator_truth") == len(small_history.customers)

        first = small_history.orders[0]
        row = conn.execute(
            "SELECT order_date, total_amount FROM orders WHERE order_id = ?", (first.order_id,)
        ).fetchone()
        assert row == (first.order_ts.isoformat(), first.total_amount)
        assert row[0].endswith("+00:00")
        churned = conn.execute(
            "SELECT COUNT(*) FROM simulator_truth WHERE churn_ts IS NOT NULL"
        ).fetchone()[0]
        assert churned == small_history.truth["churn_ts"].notna().sum()


def test_jsonl_round_trips_the_events_in_time_order(small_history, tmp_path):
    for name in ("events.jsonl", "events.jsonl.gz"):
        path = tmp_path / name
        written = write_jsonl(small_history, path)
        assert written == len(small_history)
        assert list(read_jsonl(path)) == list(small_history.events_in_time_order())


def test_jsonl_lines_carry_topic_key_and_value(small_history, tmp_path):
    path = tmp_path / "events.jsonl"
    write_jsonl(small_history, path)
    first = msgspec.json.decode(path.read_bytes().splitlines()[0])
    assert set(first) == {"topic", "key", "value"}
    assert first["key"] == first["value"]["customer_id"]


def test_token_bucket_holds_the_average_rate():
    now = [0.0]
    bucket = TokenBucket(rate=100.0, capacity=10, clock=lambda: now[0])
    sent = 0
    while now[0] < 10.0:
        wait = bucket.delay(10)
        if wait > 0:
            now[0] += wait
            continue
        bucket.take(10)
        sent += 10
    # 10 s at 100/s, plus the initial burst of one batch.
    assert 1000 <= sent <= 1020


def test_cli_writes_sqlite_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "cli.db"
    assert main(["sqlite", "--customers", "30", "--days", "30", "--out", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "customers=30" in summary and "churned=" in summary
    with sqlite3.connect(out) as conn:
        assert conn.execute("SELECT COUNT(*) FROM customers").fetchone()[0] == 30


def test_default_period_is_the_year_from_july_2025():
    h = generate_history(5)
    assert h.start == DEFAULT_START
    assert (h.start.year, h.start.month, h.start.day, h.start.utcoffset()) == (
        2025,
        7,
        1,
        timedelta(0),
    )
    assert h.end - h.start == timedelta(days=365)


# --- shifts ------------------------------------------------------------------------------

SHIFT_FROM = DEFAULT_START + timedelta(days=100)
SHIFT_UNTIL = DEFAULT_START + timedelta(days=110)


@functools.cache  # each shifted shop is built once: the tests only read it
def shifted(kind: str) -> History:
    return generate_history(N, seed=11, shifts=[Shift(kind, SHIFT_FROM, SHIFT_UNTIL)])  # type: ignore[arg-type]


def during(t: datetime) -> bool:
    return SHIFT_FROM <= t < SHIFT_UNTIL


@pytest.mark.parametrize("kind", SHIFT_KINDS)
def test_a_shift_changes_nothing_before_it_starts(history, kind):
    def before(h: History) -> list[tuple[str, object]]:
        return [
            (t, e) for t, e in h.events_in_time_order() if event_time(t, e, h.start) < SHIFT_FROM
        ]

    assert before(shifted(kind)) == before(history)


def test_order_values_rise_by_the_factor_while_the_shift_lasts_and_only_then(history):
    h = shifted("order_value")
    assert [o.order_id for o in h.orders] == [o.order_id for o in history.orders]
    inside = [(o, b) for o, b in zip(h.orders, history.orders, strict=True) if during(o.order_ts)]
    outside = [
        (o, b) for o, b in zip(h.orders, history.orders, strict=True) if not during(o.order_ts)
    ]
    assert len(inside) > 300
    ratio = sum(o.total_amount for o, _ in inside) / sum(b.total_amount for _, b in inside)
    assert 1.37 < ratio < 1.43  # prices stay whole dollars less a cent
    assert all(o == b for o, b in outside)


def test_three_times_the_tickets_are_opened_while_the_shift_lasts_and_as_many_outside(history):
    h = shifted("ticket_rate")

    def count(tickets: list[SupportTicket], inside: bool) -> int:
        return sum(during(t.created_ts) == inside for t in tickets)

    base = count(history.tickets, inside=True)
    assert base > 30
    assert 2.3 < count(h.tickets, inside=True) / base < 3.7
    assert count(h.tickets, inside=False) == count(history.tickets, inside=False)
    assert len({t.ticket_id for t in h.tickets}) == len(h.tickets)
    customers = {c.customer_id for c in history.customers}
    assert {t.customer_id for t in h.tickets} <= customers


def test_a_customer_mix_shift_brings_a_young_cohort_that_buys_during_it_and_is_gone_after(
    history,
):
    h = shifted("customer_mix")
    old = {c.customer_id for c in history.customers}
    cohort = [c for c in h.customers if c.customer_id not in old]
    ids = {c.customer_id for c in cohort}
    assert all(during(c.registration_date) for c in cohort)
    assert (
        np.mean([c.age for c in cohort]) < 26 < np.mean([c.age for c in history.customers if c.age])
    )
    assert np.mean([c.email_verified for c in cohort]) < 0.4
    theirs = [o for o in h.orders if o.customer_id in ids]
    assert all(during(o.order_ts) for o in theirs)
    base = sum(during(o.order_ts) for o in history.orders)
    assert 0.8 < len(theirs) / base < 1.2  # factor 1: as many orders as the rest of the shop
    assert len({o.order_id for o in h.orders}) == len(h.orders)
    assert set(h.truth["customer_id"]) == old | ids
    # Sorted as the history promises: profiles by registration, orders by time.
    assert [c.registration_date for c in h.customers] == sorted(
        c.registration_date for c in h.customers
    )
    assert [o.order_ts for o in h.orders] == sorted(o.order_ts for o in h.orders)


def test_the_cli_takes_shifts_and_refuses_a_malformed_one(tmp_path, capsys):
    plain, moved = tmp_path / "plain.jsonl", tmp_path / "moved.jsonl"
    args = ["jsonl", "--customers", "200", "--days", "60", "--seed", "3"]
    assert main([*args, "--out", str(plain)]) == 0
    assert main([*args, "--shift", "ticket_rate,2025-08-01,2025-08-20,5", "--out", str(moved)]) == 0
    tickets = [sum(t == SUPPORT_TICKETS for t, _ in read_jsonl(p)) for p in (plain, moved)]
    assert tickets[1] > tickets[0]
    with pytest.raises(SystemExit):
        main([*args, "--shift", "prices,2025-08-01", "--out", str(moved)])
    assert "shift kind must be one of" in capsys.readouterr().err


# --- treatment ---------------------------------------------------------------------------

ACTED_BEFORE_CHURN = timedelta(days=10)


def churn_times(h: History) -> dict[str, datetime]:
    truth = h.truth
    return {
        cid: ts.to_pydatetime()
        for cid, ts in zip(truth["customer_id"], truth["churn_ts"], strict=True)
        if not pd.isna(ts)
    }


def events_by_customer(h: History) -> dict[str, list[tuple[datetime, str, bytes]]]:
    """Each customer's events in stream order, as (event time, topic, encoded event)."""
    out: dict[str, list[tuple[datetime, str, bytes]]] = defaultdict(list)
    for topic, e in h.events_in_time_order():
        out[e.customer_id].append((event_time(topic, e, h.start), topic, msgspec.json.encode(e)))
    return out


def churners_acted_on(h: History) -> dict[str, datetime]:
    """Every churner, ten days before churning."""
    return {cid: ts - ACTED_BEFORE_CHURN for cid, ts in churn_times(h).items()}


@pytest.fixture(scope="module")
def acted_on(history) -> dict[str, datetime]:
    """Every churner ten days before churning, and every fifth customer who stays."""
    acted = churners_acted_on(history)
    mid = history.start + timedelta(days=182, seconds=0.5)  # not a whole second
    stayers = [c.customer_id for c in history.customers if c.customer_id not in acted]
    return acted | dict.fromkeys(stayers[::5], mid)


@functools.cache  # each treated shop is built once: the tests only read it
def treated(effect: float, acted_on: tuple[tuple[str, datetime], ...]) -> History:
    return generate_history(N, seed=11, treatment=Treatment(effect, dict(acted_on)))


def test_a_treatment_without_effect_gives_the_untreated_history(history, acted_on):
    h = treated(0.0, tuple(acted_on.items()))
    assert encoded_events(h) == encoded_events(history)
    pd.testing.assert_frame_equal(h.truth, history.truth)


def test_customers_not_saved_are_unchanged_under_a_full_effect(history, acted_on):
    h = treated(1.0, tuple(acted_on.items()))
    saved = set(h.truth.loc[h.truth["saved"], "customer_id"])
    before, after = events_by_customer(history), events_by_customer(h)
    assert saved and set(after) == set(before)
    # Neither those not acted on nor the stayers acted on.
    for cid in set(before) - saved:
        assert after[cid] == before[cid]
    assert not (h.truth["saved"] & h.truth["churn_ts"].notna()).any()


def test_a_full_effect_saves_every_churner_acted_on_before_churning(history, acted_on):
    h = treated(1.0, tuple(acted_on.items()))
    churned = churn_times(history)
    truth = h.truth.set_index("customer_id")
    assert truth.loc[list(churned), "saved"].all()
    assert truth.loc[list(churned), "churn_ts"].isna().all()
    assert h.churned_fraction == 0.0
    before, after = events_by_customer(history), events_by_customer(h)
    for cid in churned:
        instant = acted_on[cid]
        # The scorer saw exactly these before acting; and the base's later ones stay.
        assert [e for e in after[cid] if e[0] <= instant] == [
            e for e in before[cid] if e[0] <= instant
        ]
        assert set(before[cid]) <= set(after[cid])
    # Buying again from the instant on: nearly all who have half a year left do.
    late = [cid for cid, ts in churned.items() if ts < history.start + timedelta(days=182)]

    def share_buying_after(events: dict[str, list[tuple[datetime, str, bytes]]]) -> float:
        return float(
            np.mean([any(t > acted_on[c] and k == ORDERS for t, k, _ in events[c]) for c in late])
        )

    assert len(late) > 150
    assert share_buying_after(after) > 0.9
    assert share_buying_after(before) < 0.1  # their rate had faded away


def test_saved_customers_buy_after_their_churn_date_at_their_earlier_rate(history, acted_on):
    h = treated(1.0, tuple(acted_on.items()))
    churned, by_customer = churn_times(history), orders_by_customer(h)
    day = timedelta(days=1)
    veterans = {c.customer_id for c in history.customers if c.registration_date < history.start}
    # Veterans (no first-order burst) churning mid-year: a long stretch before and after.
    chosen = {
        cid: ts
        for cid, ts in churned.items()
        if cid in veterans and history.start + 120 * day < ts < history.start + 240 * day
    }
    assert len(chosen) > 80
    before = sum(o.order_ts < ts - 60 * day for c, ts in chosen.items() for o in by_customer[c])
    after = sum(o.order_ts >= ts for c, ts in chosen.items() for o in by_customer[c])
    days_before = sum((ts - 60 * day - history.start) / day for ts in chosen.values())
    days_after = sum((history.end - ts) / day for ts in chosen.values())
    # Un-faded before, won back after: about the same rate (the seasons differ a little).
    assert 0.7 < (after / days_after) / (before / days_before) < 1.3


def test_the_added_orders_are_well_formed_and_keep_the_lists_sorted(history, acted_on):
    h = treated(1.0, tuple(acted_on.items()))
    assert len(h.orders) > 1.1 * len(history.orders)
    ids = [o.order_id for o in h.orders]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"O\d{9}", i) for i in ids)
    assert [o.order_ts for o in h.orders] == sorted(o.order_ts for o in h.orders)
    base = {o.order_id: o for o in history.orders}
    added = [o for o in h.orders if o.order_id not in base]
    assert all(h.start <= o.order_ts < h.end for o in added)
    for o in added:
        assert 1 <= len(o.items) <= 4
        assert o.total_amount == pytest.approx(round(sum(i.quantity * i.price for i in o.items), 2))
    assert all(base[o.order_id] == o for o in h.orders if o.order_id in base)
    assert len(h.tickets) == len(history.tickets)  # no tickets are added


def test_half_an_effect_saves_about_half_the_acted_on_churners(history, acted_on):
    h = treated(0.5, tuple(acted_on.items()))
    churned = list(churn_times(history))
    assert len(churned) > 400
    saved = h.truth.set_index("customer_id").loc[churned, "saved"]
    assert 0.4 < saved.mean() < 0.6
    assert h.truth["saved"].sum() == saved.sum()  # only churners can be saved


def test_who_is_saved_does_not_depend_on_the_order_of_acted_on():
    acted = churners_acted_on(generate_history(300, seed=2, days=120))
    backwards = dict(reversed(acted.items()))
    a = generate_history(300, seed=2, days=120, treatment=Treatment(0.5, acted))
    b = generate_history(300, seed=2, days=120, treatment=Treatment(0.5, backwards))
    assert 0 < a.truth["saved"].sum() < len(acted)
    assert encoded_events(a) == encoded_events(b)
    pd.testing.assert_frame_equal(a.truth, b.truth)


def test_churners_acted_on_at_the_end_of_the_period_are_not_saved():
    plain = generate_history(300, seed=2, days=120)
    acted = dict.fromkeys(churn_times(plain), plain.end)
    assert acted
    h = generate_history(300, seed=2, days=120, treatment=Treatment(1.0, acted))
    assert encoded_events(h) == encoded_events(plain)
    pd.testing.assert_frame_equal(h.truth, plain.truth)


def test_a_treatment_never_saves_a_cohort_and_leaves_its_events_as_they_were(history):
    mix = shifted("customer_mix")
    old = {c.customer_id for c in history.customers}
    cohort = [c.customer_id for c in mix.customers if c.customer_id not in old]
    acted = churners_acted_on(history) | dict.fromkeys(cohort, SHIFT_FROM)
    shift = Shift("customer_mix", SHIFT_FROM, SHIFT_UNTIL)
    h = generate_history(N, seed=11, shifts=[shift], treatment=Treatment(1.0, acted))
    truth = h.truth.set_index("customer_id")
    assert cohort and not truth.loc[cohort, "saved"].any()  # gone when the promotion ends
    assert truth["saved"].sum() == len(acted) - len(cohort)
    before, after = events_by_customer(mix), events_by_customer(h)
    assert all(after[cid] == before[cid] for cid in cohort)  # the same order ids too


def test_an_order_value_shift_raises_the_added_orders_values_too(history):
    treatment = Treatment(1.0, churners_acted_on(history))
    plain = generate_history(N, seed=11, treatment=treatment)
    shift = Shift("order_value", SHIFT_FROM, SHIFT_UNTIL)
    dearer = generate_history(N, seed=11, shifts=[shift], treatment=treatment)
    base_ids = {o.order_id for o in history.orders}
    pairs = [
        (o, p)
        for o, p in zip(dearer.orders, plain.orders, strict=True)
        if o.order_id not in base_ids and during(o.order_ts)
    ]
    assert len(pairs) > 30
    ratio = sum(o.total_amount for o, _ in pairs) / sum(p.total_amount for _, p in pairs)
    assert 1.3 < ratio < 1.5


def test_a_bad_effect_a_naive_instant_or_an_unknown_customer_is_refused():
    when = DEFAULT_START + timedelta(days=3)
    for effect in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="effect"):
            Treatment(effect, {})
    with pytest.raises(ValueError, match="timezone-aware"):
        Treatment(0.5, {"C0000001": datetime(2025, 7, 4)})
    with pytest.raises(ValueError, match="C9999999"):
        generate_history(
            20, days=30, treatment=Treatment(0.5, {"C0000001": when, "C9999999": when})
        )
