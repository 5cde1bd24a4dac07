"""Offline features: the same definitions, computed in bulk over an event history.

Given the history as frames and one as-of instant per customer, every feature is
computed from the events at or before that instant, exactly as the online store
would hold them had it applied those events (the parity test proves it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from feature_store.definitions import (
    AGGREGATES,
    EVENT_ID_FIELD,
    FEATURE_NAMES,
    FIRST_TIME,
    LAST_TIME,
    PROFILE_FIELDS,
    RECENT_GAP_COLUMNS,
    RECENT_ORDERS,
    SECONDS_PER_DAY,
    SECONDS_PER_HOUR,
    WINDOWS,
    FeatureParams,
    feature_matrix,
    window_start_day,
)
from schemas import topics

# Frame columns: the event contract's field names, with event time as epoch seconds
# in `ts` (orders: order_ts, tickets: created_ts) and the profile's registration
# date as `registration_ts`.
ORDER_COLUMNS = ("customer_id", "order_id", "ts", "total_amount", "delivery_status")
TICKET_COLUMNS = (
    "customer_id",
    "ticket_id",
    "ts",
    "resolution_time_hours",
    "satisfaction_score",
)
CUSTOMER_COLUMNS = ("customer_id", *PROFILE_FIELDS)


@dataclass(frozen=True)
class History:
    """An event history as frames (see the *_COLUMNS above)."""

    orders: pd.DataFrame
    tickets: pd.DataFrame
    customers: pd.DataFrame

    def frame(self, topic: str) -> pd.DataFrame:
        return {topics.ORDERS: self.orders, topics.SUPPORT_TICKETS: self.tickets}[topic]

    @classmethod
    def from_events(cls, events: Iterable[tuple[str, Any]]) -> History:
        """Frames from decoded input events (`schemas.INPUT_EVENTS`), in arrival order."""
        rows: dict[str, list[dict[str, Any]]] = {t: [] for t in topics.INPUT_TOPICS}
        for topic, event in events:
            rows[topic].append(_row(topic, event))
        return cls(
            orders=pd.DataFrame(rows[topics.ORDERS], columns=list(ORDER_COLUMNS)),
            tickets=pd.DataFrame(rows[topics.SUPPORT_TICKETS], columns=list(TICKET_COLUMNS)),
            customers=pd.DataFrame(rows[topics.CUSTOMERS], columns=list(CUSTOMER_COLUMNS)),
        )


def _row(topic: str, event: Any) -> dict[str, Any]:
    if topic == topics.ORDERS:
        return {
            "customer_id": event.customer_id,
            "order_id": event.order_id,
            "ts": event.order_ts.timestamp(),
            "total_amount": event.total_amount,
            "delivery_status": event.delivery_status,
        }
    if topic == topics.SUPPORT_TICKETS:
        return {
            "customer_id": event.customer_id,
            "ticket_id": event.ticket_id,
            "ts": event.created_ts.timestamp(),
            "resolution_time_hours": event.resolution_time_hours,
            "satisfaction_score": event.satisfaction_score,
        }
    return {
        "customer_id": event.customer_id,
        "age": event.age,
        "email_verified": int(event.email_verified),
        "phone_verified": int(event.phone_verified),
        "registration_ts": event.registration_date.timestamp(),
    }


def base_columns(history: History, as_of: pd.Series) -> dict[str, np.ndarray]:
    """Base columns for the customers in `as_of` (index: customer_id, values: epoch s)."""
    customers = pd.Index(as_of.index)
    n = len(customers)
    as_of_ts = as_of.to_numpy(dtype=np.float64)
    as_of_day = np.floor(as_of_ts / SECONDS_PER_DAY).astype(np.int64)
    columns: dict[str, np.ndarray] = {"as_of_ts": as_of_ts}

    # Events at or before each customer's instant, one producer duplicate dropped.
    visible: dict[str, tuple[pd.DataFrame, np.ndarray]] = {}
    for topic in (topics.ORDERS, topics.SUPPORT_TICKETS):
        frame = history.frame(topic).drop_duplicates(
            ["customer_id", EVENT_ID_FIELD[topic]], keep="first"
        )
        rows = customers.get_indexer(frame["customer_id"])
        ts = frame["ts"].to_numpy(dtype=np.float64)
        known = rows >= 0
        keep = np.zeros(len(frame), dtype=bool)
        keep[known] = ts[known] <= as_of_ts[rows[known]]
        visible[topic] = (frame[keep], rows[keep])

    for name, window in WINDOWS.items():
        aggregate = next(a for a in AGGREGATES if a.name == window.aggregate)
        frame, rows = visible[aggregate.topic]
        amounts = aggregate.value.of_frame(frame)
        if window.days is not None:
            day = np.floor(frame["ts"].to_numpy(dtype=np.float64) / SECONDS_PER_DAY)
            amounts = np.where(day >= window_start_day(as_of_day[rows], window.days), amounts, 0)
        # Integer amounts summed as float64 stay exact below 2**53.
        total = np.bincount(rows, weights=amounts.astype(np.float64), minlength=n)
        columns[name] = total * window.scale

    columns.update(_recent_gap_moments(visible[topics.ORDERS], n))
    for topic, name in LAST_TIME.items():
        columns[name] = _per_customer(visible[topic], n, "max")
    for topic, name in FIRST_TIME.items():
        columns[name] = _per_customer(visible[topic], n, "min")

    profiles = history.customers.drop_duplicates("customer_id", keep="last").set_index(
        "customer_id"
    )
    for name in PROFILE_FIELDS:
        columns[name] = (
            profiles[name].astype("float64").reindex(customers).to_numpy(dtype=np.float64)
        )
    return columns


def _recent_gap_moments(visible: tuple[pd.DataFrame, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """`definitions.recent_gap_moments` of each customer's RECENT_ORDERS latest orders."""
    frame, rows = visible
    hours = np.floor(frame["ts"].to_numpy(dtype=np.float64) / SECONDS_PER_HOUR).astype(np.int64)
    order = np.lexsort((hours, rows))
    rows, hours = rows[order], hours[order]
    from_last = pd.Series(rows).groupby(rows).cumcount(ascending=False).to_numpy()
    recent = from_last < RECENT_ORDERS
    rows, hours = rows[recent], hours[recent]
    # A gap ends at every kept order but a customer's first kept one.
    ends = np.flatnonzero(rows[1:] == rows[:-1]) + 1
    gaps, who = hours[ends] - hours[ends - 1], rows[ends]
    moments = (np.ones_like(gaps), gaps, gaps * gaps)
    return {
        name: np.bincount(who, weights=values.astype(np.float64), minlength=n)
        for name, values in zip(RECENT_GAP_COLUMNS, moments, strict=True)
    }


def _per_customer(visible: tuple[pd.DataFrame, np.ndarray], n: int, how: str) -> np.ndarray:
    frame, rows = visible
    result = pd.Series(frame["ts"].to_numpy(dtype=np.float64)).groupby(rows).agg(how)
    out = np.full(n, np.nan)
    out[result.index.to_numpy()] = result.to_numpy()
    return out


def features_as_of(
    history: History, as_of: pd.Series, params: FeatureParams | None = None
) -> pd.DataFrame:
    """Model inputs per customer as of their instant (index: customer_id)."""
    return features_frame(base_columns(history, as_of), as_of.index, params)


def features_frame(
    base: Mapping[str, np.ndarray], customers: pd.Index, params: FeatureParams | None = None
) -> pd.DataFrame:
    """The model inputs of base columns (one row per customer, in order), as a frame
    indexed by customer_id."""
    matrix = feature_matrix(base, params or FeatureParams())
    index = pd.Index(customers, name="customer_id")
    return pd.DataFrame(matrix, index=index, columns=list(FEATURE_NAMES))
