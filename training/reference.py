"""The drift monitor's reference: the scores the served model gives the events of the
training period, taken by the worker's own code (`scoring.serving`), binned and
counted by `scoring.drift.reference_profile`.

Training's own rows are snapshots as of a day's end; the worker scores as of each
event, so the monitor needs the latter to compare like with like. A customer's scores
depend on their own events only, so a sample of customers, with all their history up
to the end of the period, gives exactly the scores the worker would give them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from feature_store.offline import History
from schemas import Customer, Order, SupportTicket, topics
from scoring.decoding import Limits
from scoring.model import Model
from scoring.serving import served_scores

# Customers whose scores make the reference: enough for the deciles of every feature
# (about 2 scores a customer a month), in seconds rather than minutes of replay.
REFERENCE_CUSTOMERS = 5000


def serving_reference(
    history: History,
    model: Model,
    since: float,
    until: float,
    customers: int = REFERENCE_CUSTOMERS,
    seed: int = 7,
    limits: Limits | None = None,
) -> dict[str, Any]:
    """`reference.serving` for the artifact: the event-triggered scores `model` gives
    up to `customers` customers (drawn with `seed` among those with an order or a
    ticket in [since, until)) as of instants in that span."""
    active = pd.concat(
        [
            frame.loc[(frame["ts"] >= since) & (frame["ts"] < until), "customer_id"]
            for frame in (history.orders, history.tickets)
        ]
    ).unique()
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(np.sort(active), size=min(customers, len(active)), replace=False))
    events = _events(history, chosen, until)
    return served_scores(events, model, since, until, limits=limits).profile()


def _events(history: History, customers: set[str], until: float) -> Iterator[tuple[str, Any]]:
    """The customers' events before `until` as contract structs, in event-time order
    (profile, order, ticket at equal times, as the worker merges them). Fields no
    feature reads, and the database does not give training, are left empty."""
    keyed: list[tuple[float, int, int, str, Any]] = []
    profiles = _of(history.customers, customers)
    for i, (customer, age, email, phone, registered) in enumerate(
        zip(*_columns(profiles, "customer_id", *PROFILE_FIELDS_IN_ORDER), strict=True)
    ):
        if not math.isnan(registered) and registered < until:
            profile = Customer(
                str(customer),
                _utc(registered),
                age=_age(age),
                email_verified=bool(email),
                phone_verified=bool(phone),
            )
            keyed.append((registered, 0, i, topics.CUSTOMERS, profile))
    orders = _of(history.orders, customers, until)
    columns = _columns(orders, "order_id", "customer_id", "ts", "total_amount", "delivery_status")
    for i, (order_id, customer, ts, amount, status) in enumerate(zip(*columns, strict=True)):
        order = Order(str(order_id), str(customer), _utc(ts), float(amount), "", status)
        keyed.append((ts, 1, i, topics.ORDERS, order))
    tickets = _of(history.tickets, customers, until)
    columns = _columns(
        tickets, "ticket_id", "customer_id", "ts", "resolution_time_hours", "satisfaction_score"
    )
    for i, (ticket_id, customer, ts, hours, satisfaction) in enumerate(zip(*columns, strict=True)):
        ticket = SupportTicket(
            str(ticket_id),
            str(customer),
            _utc(ts),
            "",
            resolution_time_hours=None if math.isnan(hours) else float(hours),
            satisfaction_score=None if math.isnan(satisfaction) else int(satisfaction),
        )
        keyed.append((ts, 2, i, topics.SUPPORT_TICKETS, ticket))
    keyed.sort(key=lambda k: k[:3])
    for _, _, _, topic, event in keyed:
        yield topic, event


PROFILE_FIELDS_IN_ORDER = ("age", "email_verified", "phone_verified", "registration_ts")


def _of(frame: pd.DataFrame, customers: set[str], until: float | None = None) -> pd.DataFrame:
    rows = frame["customer_id"].isin(customers)
    if until is not None:
        rows &= frame["ts"] < until
    return frame[rows]


def _columns(frame: pd.DataFrame, *names: str) -> list[list[Any]]:
    return [frame[name].tolist() for name in names]


def _age(value: float) -> int | None:
    """An age the contract takes (0 to 130), or None."""
    if math.isnan(value) or not 0 <= value <= 130:
        return None
    return round(value)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)
