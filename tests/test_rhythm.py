"""Purchase-rhythm features: each customer's typical gap between orders, how overdue
their next order is, and the prior behind both, fitted at training time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from feature_store.definitions import FEATURE_NAMES, FeatureParams, feature_matrix
from feature_store.offline import CUSTOMER_COLUMNS, ORDER_COLUMNS, TICKET_COLUMNS, History
from feature_store.online import CustomerState, apply_event, base_columns, decode_state
from schemas import Order, topics
from scoring.inactivity import RESCORE_AFTER_DAYS
from training.rhythm import fit_gap_prior, maximise

START = datetime(2026, 1, 1, tzinfo=UTC)
DAY = 86_400.0
PARAMS = FeatureParams(prior_gap_days=30.0, prior_gaps=2.0)
# A state of C1 (orders on days 0, 10 and 30) as the code before the rhythm features
# encoded it: the features need no field that state lacks.
STATE_BEFORE_RHYTHM = bytes.fromhex(
    "9ba2433182a16f03a173cd177083cd4fe69501cd07d0000000cd4ff09501cd07d0000000cd50049501cd07d0"
    "00000082ad6c6173745f6f726465725f7473cb41da5f5180000000ae66697273745f6f726465725f7473cb41"
    "da556e400000008083a96f72646572733a4f30cd4fe6a96f72646572733a4f31cd4ff0a96f72646572733a4f"
    "32cd5004cb41da5f5180000000c0c000a0"
)


def customer(customer_id: str, order_days: list[int]) -> CustomerState:
    state = CustomerState(customer_id)
    for i, day in enumerate(order_days):
        order = Order(f"O{i}", customer_id, START + timedelta(days=day), 20.0, "card", "delivered")
        apply_event(state, topics.ORDERS, order)
    return state


def rhythm(states: list[CustomerState], as_of: list[float]) -> dict[str, np.ndarray]:
    matrix = feature_matrix(base_columns(states, as_of), PARAMS)
    return {
        name: matrix[:, FEATURE_NAMES.index(name)] for name in ("order_gap_days", "overdue_ratio")
    }


def test_the_typical_gap_is_the_customers_mean_gap_shrunk_toward_the_prior() -> None:
    weekly = customer("C1", list(range(0, 71, 7)))  # 10 gaps of 7 days
    single = customer("C2", [5])
    features = rhythm([weekly, single], [weekly.seen or 0, single.seen or 0])
    # (10 gaps totalling 70 days + 2 prior gaps of 30 days) / 12 gaps
    assert features["order_gap_days"].tolist() == pytest.approx([130 / 12, 30.0])
    assert features["overdue_ratio"].tolist() == [0.0, 0.0]


def test_the_same_silence_at_an_inactivity_rescore_is_overdue_for_a_weekly_buyer_only() -> None:
    weekly = customer("C1", list(range(0, 71, 7)))
    monthly = customer("C2", list(range(0, 301, 30)))
    silence = RESCORE_AFTER_DAYS[2] * DAY  # the third rescore of a quiet customer: 21 days
    features = rhythm(
        [weekly, monthly], [(weekly.seen or 0) + silence, (monthly.seen or 0) + silence]
    )
    # 21 days against typical gaps of (70 + 2 * 30) / 12 and (300 + 2 * 30) / 12 days.
    assert features["overdue_ratio"].tolist() == pytest.approx([21 / (130 / 12), 21 / 30])


def test_a_state_stored_before_the_rhythm_features_gives_them_exactly() -> None:
    stored = decode_state(STATE_BEFORE_RHYTHM)
    as_of = (stored.seen or 0) + 15 * DAY
    features = rhythm([stored], [as_of])
    assert features == rhythm([customer("C1", [0, 10, 30])], [as_of])
    # (2 gaps totalling 30 days + 2 prior gaps of 30 days) / 4 gaps; 15 days of silence.
    assert features["order_gap_days"].tolist() == [22.5]
    assert features["overdue_ratio"].tolist() == [15 / 22.5]


def test_the_fitted_prior_recovers_the_gamma_the_purchase_rates_were_drawn_from() -> None:
    rng = np.random.default_rng(3)
    prior_gaps, prior_gap_days = 2.0, 30.0  # rate ~ Gamma(shape 3, rate 60 days)
    rates = rng.gamma(prior_gaps + 1.0, 1.0 / (prior_gaps * prior_gap_days), size=20_000)
    gaps = 1 + rng.poisson(4.0, size=len(rates))
    total_days = rng.gamma(gaps, 1.0 / rates)
    fitted_gaps, fitted_gap_days = maximise(gaps, total_days)
    assert fitted_gaps == pytest.approx(prior_gaps, rel=0.1)
    assert fitted_gap_days == pytest.approx(prior_gap_days, rel=0.05)


def shop(rows: list[tuple[str, str, float]]) -> History:
    orders = [(c, o, ts, 20.0, "delivered") for c, o, ts in rows]
    return History(
        pd.DataFrame(orders, columns=list(ORDER_COLUMNS)),
        pd.DataFrame(columns=list(TICKET_COLUMNS)),
        pd.DataFrame(columns=list(CUSTOMER_COLUMNS)),
    )


def test_the_prior_is_fitted_on_the_gaps_up_to_the_cutoff_only() -> None:
    before = [("C1", "O1", 0.0), ("C1", "O2", 10 * DAY), ("C2", "O3", 0.0), ("C2", "O4", 20 * DAY)]
    fitted = fit_gap_prior(shop(before), 30 * DAY, PARAMS)
    assert fitted.prior_gap_days == pytest.approx(15.0, rel=0.01)
    assert fitted.engagement_scale == PARAMS.engagement_scale
    assert fit_gap_prior(shop([*before, ("C2", "O5", 400 * DAY)]), 30 * DAY, PARAMS) == fitted


def test_without_two_customers_with_a_gap_the_prior_is_kept() -> None:
    history = shop([("C1", "O1", 0.0), ("C1", "O2", 10 * DAY), ("C2", "O3", 0.0)])
    assert fit_gap_prior(history, 30 * DAY, PARAMS) == PARAMS
