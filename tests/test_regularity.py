"""Regularity: the spread of a customer's recent gaps between orders, the same online
and offline whatever order the orders arrive in, in a state that stays small."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from feature_store.definitions import (
    FEATURE_NAMES,
    RECENT_ORDERS,
    FeatureParams,
    feature_matrix,
)
from feature_store.offline import History, features_as_of
from feature_store.online import CustomerState, apply_event, base_columns, encode_state
from schemas import Order, OrderItem, SupportTicket, topics

START = datetime(2026, 1, 1, tzinfo=UTC)
DAY = 86_400.0


def order(customer_id: str, n: int, at: datetime, amount: float = 20.0, **more: object) -> Order:
    return Order(f"{customer_id}-O{n}", customer_id, at, amount, "card", "delivered", **more)


def online(state: CustomerState, as_of: float) -> dict[str, float]:
    row = feature_matrix(base_columns([state], [as_of]), FeatureParams())[0]
    return dict(zip(FEATURE_NAMES, row.tolist(), strict=True))


def offline(events: list[tuple[str, object]], customer_id: str, as_of: float) -> dict[str, float]:
    frame = features_as_of(History.from_events(events), pd.Series([as_of], index=[customer_id]))
    return frame.iloc[0].to_dict()


def applied(customer_id: str, events: list[tuple[str, object]]) -> CustomerState:
    state = CustomerState(customer_id)
    for topic, event in events:
        apply_event(state, topic, event)
    return state


def test_a_clockwork_buyer_has_no_spread() -> None:
    events = [(topics.ORDERS, order("C1", i, START + timedelta(days=7 * i))) for i in range(12)]
    state = applied("C1", events)
    as_of = state.seen + 10 * DAY  # type: ignore[operator]
    features = online(state, as_of)
    assert features["gap_spread"] == 0.0
    assert offline(events, "C1", as_of) == pytest.approx(features, nan_ok=True)


def test_a_memoryless_buyer_spreads_about_as_much_as_the_mean_gap() -> None:
    rng = np.random.default_rng(3)
    times = START.timestamp() + np.cumsum(rng.exponential(10 * DAY, size=RECENT_ORDERS))
    events = [
        (topics.ORDERS, order("C2", i, datetime.fromtimestamp(t, UTC))) for i, t in enumerate(times)
    ]
    features = online(applied("C2", events), float(times[-1]))
    assert 0.5 < features["gap_spread"] < 1.5


def test_the_latest_orders_are_kept_whatever_order_they_arrive_in() -> None:
    days = [0, 3, 9, 10, 18, 30, 31, 44, 50, 61, 70, 75]
    events = [
        (topics.ORDERS, order("C3", i, START + timedelta(days=d))) for i, d in enumerate(days)
    ]
    in_time = applied("C3", events)
    shuffled = list(events)
    random.Random(5).shuffle(shuffled)
    out_of_order = applied("C3", shuffled)
    latest_hours = [round((START.timestamp() + d * DAY) / 3600) for d in days[-RECENT_ORDERS:]]
    assert in_time.recent_orders == out_of_order.recent_orders == latest_hours
    as_of = START.timestamp() + 80 * DAY
    assert online(in_time, as_of) == pytest.approx(online(out_of_order, as_of), nan_ok=True)
    assert online(in_time, as_of) == pytest.approx(offline(events, "C3", as_of), nan_ok=True)


def test_fewer_than_two_gaps_leave_the_rhythm_unknown() -> None:
    events = [(topics.ORDERS, order("C4", i, START + timedelta(days=5 * i))) for i in range(2)]
    features = online(applied("C4", events), START.timestamp() + 20 * DAY)
    assert np.isnan(features["gap_spread"])


def test_a_frequent_buyers_state_stays_under_a_kilobyte() -> None:
    # An order of three lines every 4 days and a ticket a fortnight, for a year (the
    # simulator's loyal customers buy about every 9 days): the ids of the last 99 days
    # and 90 days of tiles are most of the state; the gap spread adds the last
    # RECENT_ORDERS order hours.
    events: list[tuple[str, object]] = []
    for day in range(0, 365, 4):
        at = START + timedelta(days=day, hours=day % 24)
        items = [OrderItem("books", 1, 5.0)] * 3
        events.append(
            (
                topics.ORDERS,
                Order(f"O{day:07d}", "C0000042", at, 15.0, "card", "delivered", items=items),
            )
        )
        if day % 14 == 0:
            ticket = SupportTicket(f"T{day:07d}", "C0000042", at, "other", at, 2.5, 4)
            events.append((topics.SUPPORT_TICKETS, ticket))
    state = applied("C0000042", events)
    size = len(encode_state(state))
    state.recent_orders = []
    assert size < 1024 and size - len(encode_state(state)) <= 1 + 5 * RECENT_ORDERS
