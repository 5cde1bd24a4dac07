"""Online features, framework-free: a customer's state, events applied to it, and the
base columns of `definitions.feature_matrix` read off it as of any later instant.

The state is plain Python, changed in memory while a batch is processed and saved
by a store (Redis in production) only once the batch's outputs are durable: so a
batch processed again starts from the same state and comes out the same.

What a state keeps, all derived from `definitions`:
    totals   lifetime total of every aggregate (integers: counts, cents, seconds)
    tiles    per event-time day, the day's totals of the windowed aggregates; days
             older than the largest window as of `seen` are pruned
    times    first/last event times per topic ("last_order_ts", ...)
    profile  the profile fields, as numbers
    ids      order/ticket ids already counted ("orders:O1"), with the day they were
             first seen, kept for a largest window so a producer's duplicate is dropped
    seen     the customer's latest event time; `scored_to` the latest instant scored
    risk, risk_seq   the published category and how many changes were published
    risk_probability, risk_as_of, risk_model   the score behind `risk`: the latest
             one (each score decides the category afresh, with hysteresis); None
             in states stored before they were kept
    origin   the input position ("orders@812") that began this life of the state,
             empty for states begun before origins were kept
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from feature_store.definitions import (
    AGGREGATE_BY_NAME,
    AGGREGATES,
    BASE_COLUMNS,
    EVENT_ID_FIELD,
    EVENT_TIME_FIELD,
    FIRST_TIME,
    LARGEST_WINDOW_DAYS,
    LAST_TIME,
    PROFILE_FIELDS,
    WINDOWS,
    day_of,
)
from schemas import Customer, topics

# An aggregate summed as a float64 in the offline path stays exact up to 2**53; a
# contribution beyond that is input the features cannot represent.
LARGEST_CONTRIBUTION = 2**53

APPLIED, DUPLICATE, LATE = "applied", "duplicate", "late"

WINDOWED = tuple(a for a in AGGREGATES if a.windowed)
_WINDOWED_INDEX = {a.name: i for i, a in enumerate(WINDOWED)}


class CustomerState(msgspec.Struct, array_like=True):
    """A customer's state (see the module doc). Stored as MessagePack, as a list."""

    customer_id: str
    totals: dict[str, int] = {}
    tiles: dict[int, list[int]] = {}  # day -> totals of WINDOWED on that day
    times: dict[str, float] = {}
    profile: dict[str, float | None] = {}
    ids: dict[str, int] = {}
    seen: float | None = None
    scored_to: float | None = None
    risk: str | None = None
    risk_seq: int = 0
    origin: str = ""
    # Last, so a state stored before them still decodes (array_like: by position).
    risk_probability: float | None = None
    risk_as_of: float | None = None
    risk_model: str | None = None


class InputError(ValueError):
    """A decoded event the features cannot take (the reason says why)."""


def event_time(topic: str, event: Any) -> float:
    """The event time of a decoded input event, in epoch seconds."""
    if topic == topics.CUSTOMERS:
        return float(event.changed_at.timestamp())
    return float(getattr(event, EVENT_TIME_FIELD[topic]).timestamp())


def apply_event(state: CustomerState, topic: str, event: Any) -> str:
    """Apply one decoded input event to `state`; returns applied | duplicate | late
    (applied, but older than every window: it counts in lifetime totals only).

    Everything that can refuse the event is checked before the state is touched,
    so an event that raises InputError leaves the state as it was."""
    if topic == topics.CUSTOMERS:
        _apply_profile(state, event)
        return APPLIED
    ts = event_time(topic, event)
    amounts = [(a, a.value.of_event(event)) for a in AGGREGATES if a.topic == topic]
    for aggregate, amount in amounts:
        if not -LARGEST_CONTRIBUTION < amount < LARGEST_CONTRIBUTION:
            raise InputError(f"{aggregate.name} contribution {amount} is out of range")
    source_id = f"{topic}:{getattr(event, EVENT_ID_FIELD[topic])}"
    if source_id in state.ids:
        return DUPLICATE
    if state.seen is None or ts > state.seen:
        state.seen = ts
    day, newest = day_of(ts), day_of(state.seen)
    late = newest - day >= LARGEST_WINDOW_DAYS
    tile = None if late else state.tiles.get(day)
    if tile is None and not late:
        tile = state.tiles[day] = [0] * len(WINDOWED)
    for aggregate, amount in amounts:
        if amount:
            state.totals[aggregate.code] = state.totals.get(aggregate.code, 0) + amount
            if tile is not None and aggregate.windowed:
                tile[_WINDOWED_INDEX[aggregate.name]] += amount
    if topic in LAST_TIME:
        name = LAST_TIME[topic]
        state.times[name] = max(state.times.get(name, ts), ts)
    if topic in FIRST_TIME:
        name = FIRST_TIME[topic]
        state.times[name] = min(state.times.get(name, ts), ts)
    # An id is remembered for a largest window of the customer's event time from now
    # (not from the event's own time), so a late event's duplicate is caught too.
    state.ids[source_id] = newest
    _prune(state, newest)
    return LATE if late else APPLIED


def _apply_profile(state: CustomerState, customer: Customer) -> None:
    state.profile = {
        "age": None if customer.age is None else float(customer.age),
        "email_verified": float(customer.email_verified),
        "phone_verified": float(customer.phone_verified),
        "registration_ts": customer.registration_date.timestamp(),
    }


def _prune(state: CustomerState, newest_day: int) -> None:
    first_day = newest_day - LARGEST_WINDOW_DAYS + 1
    if state.tiles and min(state.tiles) < first_day:
        state.tiles = {d: t for d, t in state.tiles.items() if d >= first_day}
    # Ids are pruned in bulk once a tenth of a window old, not on every event.
    if state.ids and min(state.ids.values()) < first_day - LARGEST_WINDOW_DAYS // 10:
        state.ids = {i: d for i, d in state.ids.items() if d >= first_day}


# Base columns, in BASE_COLUMNS order: how each is read off a state.
_WINDOW_SLOTS = [
    (BASE_COLUMNS.index(name), _WINDOWED_INDEX[w.aggregate], w.days, w.scale)
    for name, w in WINDOWS.items()
    if w.days is not None
]
_LIFETIME_SLOTS = [
    (BASE_COLUMNS.index(name), AGGREGATE_BY_NAME[w.aggregate].code, w.scale)
    for name, w in WINDOWS.items()
    if w.days is None
]
_TIME_SLOTS = [
    (BASE_COLUMNS.index(name), name) for name in (*LAST_TIME.values(), *FIRST_TIME.values())
]
_PROFILE_SLOTS = [(BASE_COLUMNS.index(name), name) for name in PROFILE_FIELDS]
_AS_OF_SLOT = BASE_COLUMNS.index("as_of_ts")
_NAN = float("nan")


def base_row(state: CustomerState, as_of: float) -> list[float]:
    """The base columns of one customer as of `as_of` (at or after `state.seen`).

    A window of N days holds the tiles of the N days ending with the as-of day."""
    row = [0.0] * len(BASE_COLUMNS)
    row[_AS_OF_SLOT] = as_of
    as_of_day = day_of(as_of)
    for day, totals in state.tiles.items():
        age = as_of_day - day
        if age < 0:
            continue
        for slot, index, days, scale in _WINDOW_SLOTS:
            if age < days:
                row[slot] += totals[index] * scale
    for slot, code, scale in _LIFETIME_SLOTS:
        row[slot] = state.totals.get(code, 0) * scale
    for slot, name in _TIME_SLOTS:
        row[slot] = state.times.get(name, _NAN)
    for slot, name in _PROFILE_SLOTS:
        value = state.profile.get(name)
        row[slot] = _NAN if value is None else value
    return row


def base_columns(states: Sequence[CustomerState], as_of: Sequence[float]) -> dict[str, np.ndarray]:
    """The base columns of `definitions.feature_matrix`, one row per state."""
    matrix = np.asarray(
        [base_row(s, t) for s, t in zip(states, as_of, strict=True)], dtype=np.float64
    ).reshape(len(states), len(BASE_COLUMNS))
    return {name: matrix[:, j] for j, name in enumerate(BASE_COLUMNS)}


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(CustomerState)


def encode_state(state: CustomerState) -> bytes:
    return _ENCODER.encode(state)


def decode_state(data: bytes) -> CustomerState:
    return _DECODER.decode(data)
