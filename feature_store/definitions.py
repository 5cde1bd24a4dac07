"""The one definition of every per-customer feature.

Both paths read this module and nothing else about features:

* online (`feature_store.online` + `feature_store.redis_store`): each event becomes
  increments of the aggregates below, kept in Redis as a lifetime total plus one tile
  per event-time day, and features are read off those tiles;
* offline (`feature_store.offline`): the same aggregates summed with pandas over an
  event history, as of any instant.

A window of N days, as of instant T, holds the events of the N calendar days (UTC)
ending with T's day and no event after T. Day tiles make that exact online with
bounded memory: tiles older than the largest window are pruned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Protocol

import numpy as np
import pandas as pd

from schemas import PROBLEM_DELIVERY_STATUSES, topics

SECONDS_PER_DAY = 86_400
LARGEST_WINDOW_DAYS = 90

Column = np.ndarray  # float64 vector, one entry per customer


# --- What one event contributes to an aggregate -----------------------------------
# Each contribution knows how to read one decoded event (online) and a whole column
# of events (offline); the parity test holds the two readings equal.


class Contribution(Protocol):
    def of_event(self, event: Any) -> int: ...

    def of_frame(self, frame: pd.DataFrame) -> np.ndarray: ...


@dataclass(frozen=True)
class Count:
    def of_event(self, event: Any) -> int:
        return 1

    def of_frame(self, frame: pd.DataFrame) -> np.ndarray:
        return np.ones(len(frame), dtype=np.int64)


@dataclass(frozen=True)
class Fixed:
    """A number summed as an integer count of 1/`per_unit` (cents, seconds), so online
    and offline totals agree exactly; a missing value adds nothing."""

    field: str
    per_unit: int

    def of_event(self, event: Any) -> int:
        value = getattr(event, self.field)
        return 0 if value is None else round(value * self.per_unit)

    def of_frame(self, frame: pd.DataFrame) -> np.ndarray:
        values = frame[self.field].astype("float64").fillna(0.0).to_numpy()
        return np.round(values * self.per_unit).astype(np.int64)


@dataclass(frozen=True)
class CountIf:
    """Counts events whose field passes `test` (missing values never pass)."""

    field: str
    test: Callable[[Any], bool]
    test_frame: Callable[[pd.Series], pd.Series]

    def of_event(self, event: Any) -> int:
        value = getattr(event, self.field)
        return int(value is not None and self.test(value))

    def of_frame(self, frame: pd.DataFrame) -> np.ndarray:
        column = frame[self.field]
        return (column.notna() & self.test_frame(column)).to_numpy(dtype=np.int64)


def delivery_problem() -> CountIf:
    statuses = sorted(PROBLEM_DELIVERY_STATUSES)
    return CountIf(
        "delivery_status", lambda v: v in PROBLEM_DELIVERY_STATUSES, lambda c: c.isin(statuses)
    )


def at_most(limit: float, field_name: str) -> CountIf:
    return CountIf(field_name, lambda v: v <= limit, lambda c: c <= limit)


def present(field_name: str) -> CountIf:
    return CountIf(field_name, lambda v: True, lambda c: c.notna())


# --- Aggregates: what the online store keeps per customer -------------------------


@dataclass(frozen=True)
class Aggregate:
    """A quantity summed over one topic's events: a lifetime total plus daily tiles."""

    name: str
    code: str  # short Redis field name: memory per customer is a product target
    topic: str
    value: Contribution
    windowed: bool = True


AGGREGATES: tuple[Aggregate, ...] = (
    Aggregate("orders", "o", topics.ORDERS, Count()),
    Aggregate("spend_cents", "s", topics.ORDERS, Fixed("total_amount", 100)),
    Aggregate("delivery_problems", "d", topics.ORDERS, delivery_problem()),
    Aggregate("tickets", "t", topics.SUPPORT_TICKETS, Count()),
    Aggregate("negative_tickets", "n", topics.SUPPORT_TICKETS, at_most(2, "satisfaction_score")),
    Aggregate(
        "resolution_seconds",
        "r",
        topics.SUPPORT_TICKETS,
        Fixed("resolution_time_hours", 3600),
        windowed=False,
    ),
    Aggregate(
        "resolved_tickets",
        "k",
        topics.SUPPORT_TICKETS,
        present("resolution_time_hours"),
        windowed=False,
    ),
)
AGGREGATE_BY_NAME = {a.name: a for a in AGGREGATES}

# Event time of each topic's events (the field name in the event contract).
EVENT_TIME_FIELD = {topics.ORDERS: "order_ts", topics.SUPPORT_TICKETS: "created_ts"}
# The source-event id used to drop a producer's duplicate of the same order/ticket.
EVENT_ID_FIELD = {topics.ORDERS: "order_id", topics.SUPPORT_TICKETS: "ticket_id"}

# First and last event time per topic, kept as trackers ("max:orders", "min:orders").
LAST_TIME = {topics.ORDERS: "last_order_ts", topics.SUPPORT_TICKETS: "last_ticket_ts"}
FIRST_TIME = {topics.ORDERS: "first_order_ts"}

# The latest order times a state keeps (whole hours), for the spread of the gaps
# between them: the one feature that needs the orders in time order.
RECENT_ORDERS = 8
SECONDS_PER_HOUR = 3_600

# Profile fields from the `customers` topic, as numbers (NaN when unknown).
PROFILE_FIELDS = ("age", "email_verified", "phone_verified", "registration_ts")


# --- Features ---------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureParams:
    """Constants fixed at training time and shipped in the model artifact."""

    # A stream cannot know the data set's maximum, so engagement is scaled by a
    # constant chosen when the model is trained (a high quantile of the raw score).
    engagement_scale: float = 25.0
    # The purchase-rhythm prior (see "Purchase rhythm" below), fitted when the model is
    # trained (`training.rhythm`): the mean gap between orders, in days, assumed for a
    # customer with no gap of their own yet, and its weight, in gaps.
    prior_gap_days: float = 30.0
    prior_gaps: float = 1.0


@dataclass(frozen=True)
class Window:
    """Sum of an aggregate over the last `days` days (None: lifetime)."""

    aggregate: str
    days: int | None
    scale: float = 1.0


# Base columns: read directly off the aggregates (online tiles, offline group sums).
WINDOWS: dict[str, Window] = {
    "orders_7d": Window("orders", 7),
    "orders_30d": Window("orders", 30),
    "orders_90d": Window("orders", 90),
    "orders_lifetime": Window("orders", None),
    "spend_7d": Window("spend_cents", 7, 0.01),
    "spend_30d": Window("spend_cents", 30, 0.01),
    "spend_90d": Window("spend_cents", 90, 0.01),
    "spend_lifetime": Window("spend_cents", None, 0.01),
    "delivery_problems_90d": Window("delivery_problems", 90),
    "tickets_30d": Window("tickets", 30),
    "tickets_90d": Window("tickets", 90),
    "negative_experiences_90d": Window("negative_tickets", 90),
    "resolution_hours_lifetime": Window("resolution_seconds", None, 1 / 3600),
    "resolved_tickets_lifetime": Window("resolved_tickets", None),
}

# The gaps between a customer's RECENT_ORDERS latest orders, in whole hours: how many,
# their sum and their sum of squares (integers, so both paths agree to the bit).
RECENT_GAP_COLUMNS = ("recent_gaps", "recent_gap_hours", "recent_gap_squares")


def recent_gap_moments(hours: Sequence[int]) -> tuple[int, int, int]:
    """(count, sum, sum of squares) of the gaps between sorted order hours."""
    gaps = [later - earlier for earlier, later in pairwise(hours)]
    return len(gaps), sum(gaps), sum(gap * gap for gap in gaps)


def _ratio(numerator: Column, denominator: Column) -> Column:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _days_since(columns: Mapping[str, Column], time_column: str) -> Column:
    return (columns["as_of_ts"] - columns[time_column]) / SECONDS_PER_DAY


def _order_frequency(c: Mapping[str, Column], p: FeatureParams) -> Column:
    # Orders per 30 days since the first order, over at least 30 days so that a
    # brand-new customer's single order does not read as a torrent.
    active_days = np.maximum(_days_since(c, "first_order_ts"), 30.0)
    return np.where(np.isnan(active_days), 0.0, c["orders_lifetime"] / active_days * 30.0)


def _engagement(c: Mapping[str, Column], p: FeatureParams) -> Column:
    # Frequency times (log) value: a customer buying often and much is engaged.
    return c["orders_90d"] * np.log1p(c["spend_90d"]) / p.engagement_scale


# --- Purchase rhythm ----------------------------------------------------------------
# Customers buy at their own pace, so a silence means more for one than another. Each
# customer's gaps between orders are taken as exponential at their own rate, the
# rates drawn from a gamma prior (shape prior_gaps + 1, mean gap prior_gap_days).
# Their gaps sum to last minus first order time whatever order the orders arrived in,
# so the order count and first/last order times every state keeps are all it takes.


def _order_gap(c: Mapping[str, Column], p: FeatureParams) -> Column:
    # The posterior mean: the customer's gaps and prior_gaps more of prior_gap_days,
    # averaged, so a customer with few gaps stays near the prior.
    gaps = np.maximum(c["orders_lifetime"] - 1.0, 0.0)
    span = np.nan_to_num((c["last_order_ts"] - c["first_order_ts"]) / SECONDS_PER_DAY)
    return (span + p.prior_gaps * p.prior_gap_days) / (gaps + p.prior_gaps)


def _overdue(c: Mapping[str, Column], p: FeatureParams) -> Column:
    # Silence counted in the customer's own gaps: 3 is three typical gaps without an order.
    return _days_since(c, "last_order_ts") / _order_gap(c, p)


# --- Regularity ---------------------------------------------------------------------
# Some customers buy like clockwork, others at random: the same silence is alarming
# for the first and nothing for the second. The spread of the recent gaps tells them
# apart (for a memoryless buyer it is about the mean gap; for a regular one far less).


def _gap_spread(c: Mapping[str, Column], p: FeatureParams) -> Column:
    # The coefficient of variation of the recent gaps: about 1 for a memoryless buyer,
    # near 0 for clockwork (NaN with fewer than 2 gaps).
    n, total, squares = c["recent_gaps"], c["recent_gap_hours"], c["recent_gap_squares"]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n >= 2, total / n, np.nan)
        variance = (squares - total * mean) / (n - 1)
    return _ratio(np.sqrt(np.maximum(variance, 0.0)), mean)


DerivedFn = Callable[[Mapping[str, Column], FeatureParams], Column]

# The model's inputs, in order. Each is a base column or a formula over them; the
# formulas are vectorised, so the online batch and the offline set share one code path.
FEATURES: dict[str, DerivedFn] = {
    "recency_days": lambda c, p: _days_since(c, "last_order_ts"),
    "orders_7d": lambda c, p: c["orders_7d"],
    "orders_30d": lambda c, p: c["orders_30d"],
    "orders_90d": lambda c, p: c["orders_90d"],
    "orders_lifetime": lambda c, p: c["orders_lifetime"],
    "spend_7d": lambda c, p: c["spend_7d"],
    "spend_30d": lambda c, p: c["spend_30d"],
    "spend_90d": lambda c, p: c["spend_90d"],
    "spend_lifetime": lambda c, p: c["spend_lifetime"],
    "avg_order_value": lambda c, p: _ratio(c["spend_lifetime"], c["orders_lifetime"]),
    "order_value_trend": lambda c, p: _ratio(
        _ratio(c["spend_30d"], c["orders_30d"]), _ratio(c["spend_90d"], c["orders_90d"])
    ),
    "order_frequency_30d": _order_frequency,
    "delivery_problems_90d": lambda c, p: c["delivery_problems_90d"],
    "tickets_30d": lambda c, p: c["tickets_30d"],
    "tickets_90d": lambda c, p: c["tickets_90d"],
    "negative_experiences_90d": lambda c, p: c["negative_experiences_90d"],
    "mean_resolution_hours": lambda c, p: _ratio(
        c["resolution_hours_lifetime"], c["resolved_tickets_lifetime"]
    ),
    "days_since_last_ticket": lambda c, p: _days_since(c, "last_ticket_ts"),
    "tenure_days": lambda c, p: _days_since(c, "registration_ts"),
    "age": lambda c, p: c["age"],
    "email_verified": lambda c, p: c["email_verified"],
    "phone_verified": lambda c, p: c["phone_verified"],
    "engagement_score": _engagement,
    "order_gap_days": _order_gap,
    "overdue_ratio": _overdue,
    "gap_spread": _gap_spread,
}
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURES)

# Every base column the formulas may read, in one list both paths must fill.
BASE_COLUMNS: tuple[str, ...] = (
    "as_of_ts",
    *WINDOWS,
    *RECENT_GAP_COLUMNS,
    *LAST_TIME.values(),
    *FIRST_TIME.values(),
    *PROFILE_FIELDS,
)


def feature_matrix(base: Mapping[str, Column], params: FeatureParams) -> np.ndarray:
    """Rows of model inputs (in FEATURE_NAMES order) from the base columns."""
    missing = [name for name in BASE_COLUMNS if name not in base]
    if missing:
        raise KeyError(f"base columns missing: {missing}")
    columns = {name: np.asarray(base[name], dtype=np.float64) for name in BASE_COLUMNS}
    return np.column_stack([fn(columns, params) for fn in FEATURES.values()]).astype(np.float64)


def day_of(ts: float) -> int:
    """The UTC calendar day number of an epoch-seconds instant."""
    return math.floor(ts / SECONDS_PER_DAY)


def window_start_day(as_of_day: int, days: int) -> int:
    """First day inside a `days`-long window ending on `as_of_day`."""
    return as_of_day - days + 1
