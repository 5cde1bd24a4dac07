"""Online features, framework-free: a customer's state, events applied to it, and the
base columns of `definitions.feature_matrix` read off it as of any later instant.

The state is plain Python, changed in memory while a batch is processed and saved
by a store (Redis in production) only once the batch's outputs are durable: so a
batch processed again starts from the same state and comes out the same.

What a state keeps, all derived from `definitions`:
    totals   lifetime total of every aggregate (integers: counts, cents, seconds)
    tiles    per event-time day, the day's totals of the windowed aggregates, as two
             lists: the days, and their totals one day after the other (`Tiles`);
             days older than the largest window as of `seen` are pruned
    times    first/last event times per topic ("last_order_ts", ...)
    profile  the profile fields, as numbers
    ids      order/ticket ids already counted ("orders:O1"), with the day they were
             first seen, kept for a largest window (the latest MAX_IDS at most) so a
             producer's duplicate is dropped; left encoded until an event needs them
             (`ids_of`): a rescore never does
    seen     the customer's latest event time; `scored_to` the latest instant scored
             (an event, or a rung of the customer's silence: see scoring.pipeline)
    risk, risk_seq   the published category and how many changes were published
    risk_probability, risk_as_of, risk_model   the score behind `risk`: the latest
             event's, or the latest rescore's that changed it; None in states stored
             before they were kept
    origin   the input position ("orders@812") that began this life of the state,
             empty for states begun before origins were kept
    recent_orders   the RECENT_ORDERS latest order times, in whole hours, sorted: the
             latest by event time, whatever order the orders arrived in
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
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
    RECENT_GAP_COLUMNS,
    RECENT_ORDERS,
    SECONDS_PER_DAY,
    SECONDS_PER_HOUR,
    WINDOWS,
    Aggregate,
    day_of,
    recent_gap_moments,
)
from schemas import Customer, topics

# An aggregate summed as a float64 in the offline path stays exact up to 2**53; a
# contribution beyond that is input the features cannot represent.
LARGEST_CONTRIBUTION = 2**53

APPLIED, DUPLICATE, LATE = "applied", "duplicate", "late"
# The most order and ticket ids a state keeps to drop a producer's duplicates: past
# it, the oldest go (a customer with this many in a largest window is no person).
MAX_IDS = 1000

WINDOWED = tuple(a for a in AGGREGATES if a.windowed)
_WINDOWED_INDEX = {a.name: i for i, a in enumerate(WINDOWED)}


# Tiles: [days, totals of WINDOWED of each day, one day after the other]. (Until
# December 2026 a map day -> totals, which `decode_state` still reads.)
Tiles = list[list[int]]
_NO_IDS = msgspec.Raw(msgspec.msgpack.encode({}))


def _no_tiles() -> Tiles:
    return [[], []]


class CustomerState(msgspec.Struct, array_like=True, gc=False):
    """A customer's state (see the module doc). Stored as MessagePack, as a list.
    (No reference cycle can run through one, so the collector need not track it.)"""

    customer_id: str
    totals: dict[str, int] = {}
    tiles: Tiles | dict[int, list[int]] = msgspec.field(default_factory=_no_tiles)
    times: dict[str, float] = {}
    profile: dict[str, float | None] = {}
    ids: msgspec.Raw = _NO_IDS  # encoded until `ids_of` reads them
    seen: float | None = None
    scored_to: float | None = None
    risk: str | None = None
    risk_seq: int = 0
    origin: str = ""
    # Last, so a state stored before them still decodes (array_like: by position).
    risk_probability: float | None = None
    risk_as_of: float | None = None
    risk_model: str | None = None
    recent_orders: list[int] = []


class InputError(ValueError):
    """A decoded event the features cannot take (the reason says why)."""


def event_time(topic: str, event: Any) -> float:
    """The event time of a decoded input event, in epoch seconds."""
    if topic == topics.CUSTOMERS:
        return float(event.changed_at.timestamp())
    return float(getattr(event, EVENT_TIME_FIELD[topic]).timestamp())


@dataclass(frozen=True)
class _Applying:
    """How one topic's events change a state, worked out once from `definitions`."""

    aggregates: tuple[Aggregate, ...]
    slots: tuple[int | None, ...]  # each aggregate's place in a tile (None: not windowed)
    id_prefix: str  # "orders:" then the order id: the key of `CustomerState.ids`
    id_field: str
    last_time: str | None
    first_time: str | None


_APPLYING = {
    topic: _Applying(
        tuple(a for a in AGGREGATES if a.topic == topic),
        tuple(_WINDOWED_INDEX.get(a.name) for a in AGGREGATES if a.topic == topic),
        f"{topic}:",
        EVENT_ID_FIELD[topic],
        LAST_TIME.get(topic),
        FIRST_TIME.get(topic),
    )
    for topic in EVENT_ID_FIELD
}


def apply_event(state: CustomerState, topic: str, event: Any, ts: float | None = None) -> str:
    """Apply one decoded input event to `state`; returns applied | duplicate | late
    (applied, but older than every window: it counts in lifetime totals only). `ts`:
    its event time, when the caller has it already.

    Everything that can refuse the event is checked before the state is touched,
    so an event that raises InputError leaves the state as it was."""
    if topic == topics.CUSTOMERS:
        _apply_profile(state, event)
        return APPLIED
    applying = _APPLYING[topic]
    if ts is None:
        ts = event_time(topic, event)
    amounts = [aggregate.value.of_event(event) for aggregate in applying.aggregates]
    for aggregate, amount in zip(applying.aggregates, amounts, strict=True):
        if not -LARGEST_CONTRIBUTION < amount < LARGEST_CONTRIBUTION:
            raise InputError(f"{aggregate.name} contribution {amount} is out of range")
    source_id = f"{applying.id_prefix}{getattr(event, applying.id_field)}"
    ids = ids_of(state)
    if source_id in ids:
        return DUPLICATE
    seen = state.seen
    if seen is None or ts > seen:
        state.seen = ts
    day, newest = day_of(ts), day_of(state.seen)  # type: ignore[arg-type]
    late = newest - day >= LARGEST_WINDOW_DAYS
    tile = None if late else _tile(state, day)
    totals = state.totals
    for aggregate, slot, amount in zip(applying.aggregates, applying.slots, amounts, strict=True):
        if amount:
            totals[aggregate.code] = totals.get(aggregate.code, 0) + amount
            if tile is not None and slot is not None:
                tile[0][tile[1] + slot] += amount
    times = state.times
    if applying.last_time is not None:
        times[applying.last_time] = max(times.get(applying.last_time, ts), ts)
    if applying.first_time is not None:
        times[applying.first_time] = min(times.get(applying.first_time, ts), ts)
    if topic == topics.ORDERS:
        _remember_order(state.recent_orders, math.floor(ts / SECONDS_PER_HOUR))
    # An id is remembered for a largest window of the customer's event time from now
    # (not from the event's own time), so a late event's duplicate is caught too.
    ids[source_id] = newest
    if seen is None or day_of(seen) != newest or len(ids) > MAX_IDS:
        _prune(state, newest)  # the newest day moved on: some may be out of the window
    return LATE if late else APPLIED


def _remember_order(recent: list[int], hour: int) -> None:
    """Keep the RECENT_ORDERS latest order hours: the same set whatever the arrival order."""
    if len(recent) < RECENT_ORDERS:
        bisect.insort(recent, hour)
    elif hour > recent[0]:
        bisect.insort(recent, hour)
        del recent[0]


def _apply_profile(state: CustomerState, customer: Customer) -> None:
    state.profile = {
        "age": None if customer.age is None else float(customer.age),
        "email_verified": float(customer.email_verified),
        "phone_verified": float(customer.phone_verified),
        "registration_ts": customer.registration_date.timestamp(),
    }


def tiles_of(state: CustomerState) -> Tiles:
    """The state's tiles: [days, totals of each day one after the other]."""
    return state.tiles  # type: ignore[return-value]  # decode_state reads the old form


def ids_of(state: CustomerState) -> dict[str, int]:
    """The state's ids, decoded the first time they are needed."""
    ids = state.ids
    if isinstance(ids, msgspec.Raw):
        state.ids = ids = _IDS.decode(ids)  # type: ignore[assignment]
    return ids  # type: ignore[return-value]


def _tile(state: CustomerState, day: int) -> tuple[list[int], int]:
    """Where the day's totals start in the state's tiles (added, zero, if missing)."""
    days, totals = tiles_of(state)
    try:
        return totals, days.index(day) * len(WINDOWED)
    except ValueError:
        days.append(day)
        totals.extend([0] * len(WINDOWED))
        return totals, len(totals) - len(WINDOWED)


def _prune(state: CustomerState, newest_day: int) -> None:
    first_day = newest_day - LARGEST_WINDOW_DAYS + 1
    days, totals = tiles_of(state)
    if days and min(days) < first_day:
        width = len(WINDOWED)
        kept = [i for i, day in enumerate(days) if day >= first_day]
        state.tiles = [
            [days[i] for i in kept],
            [t for i in kept for t in totals[i * width : (i + 1) * width]],
        ]
    # Ids are pruned in bulk once a tenth of a window old, not on every event.
    ids = ids_of(state)
    if ids and min(ids.values()) < first_day - LARGEST_WINDOW_DAYS // 10:
        state.ids = ids = {i: d for i, d in ids.items() if d >= first_day}  # type: ignore[assignment]
    if len(ids) > MAX_IDS:  # keep the latest: a state stays small whatever comes
        kept_ids = sorted(ids.items(), key=lambda item: item[1])[-(MAX_IDS * 3 // 4) :]
        state.ids = dict(kept_ids)  # type: ignore[assignment]


# Base columns, in BASE_COLUMNS order: how each is read off a state.
_WINDOW_COLUMNS = [
    (name, _WINDOWED_INDEX[w.aggregate], w.days, w.scale)
    for name, w in WINDOWS.items()
    if w.days is not None
]
# The columns read straight off a state, in the order `BaseRows.add` reads them.
_LIFETIME = [
    (name, AGGREGATE_BY_NAME[w.aggregate].code, w.scale)
    for name, w in WINDOWS.items()
    if w.days is None
]
_TIMES = [*LAST_TIME.values(), *FIRST_TIME.values()]
_SCALARS = [*(name for name, _, _ in _LIFETIME), *RECENT_GAP_COLUMNS, *_TIMES, *PROFILE_FIELDS]
_LIFETIME_CODES = [code for _, code, _ in _LIFETIME]
_LIFETIME_SCALES = np.array([scale for _, _, scale in _LIFETIME])
_NAN = float("nan")


class BaseRows:
    """The base columns of `definitions.feature_matrix` for many (state, as-of) rows.

    Each row is read off its state when it is added (the state moves on with later
    events), as plain numbers; the windows are then summed for all rows at once. A
    window of N days holds the tiles of the N days ending with the as-of day, summed
    in the state's tile order (so every row comes out the same, to the last bit,
    however many rows are computed together)."""

    def __init__(self) -> None:
        self.as_of: list[float] = []
        self.scalars: list[float] = []  # _SCALARS of each row, one after the other
        self.tiles: list[int] = []  # tiles per row
        self.days: list[int] = []  # each tile's day
        self.totals: list[int] = []  # each tile's totals of WINDOWED, one after the other

    def __len__(self) -> int:
        return len(self.as_of)

    def add(self, state: CustomerState, as_of: float) -> None:
        """A row of `state` as of `as_of` (at or after `state.seen`)."""
        self.add_many(state, [as_of])

    def add_many(self, state: CustomerState, as_of: Sequence[float]) -> None:
        """A row of `state` as of each of `as_of`: what they share is read once."""
        rows = len(as_of)
        self.as_of.extend(as_of)
        days, flat = tiles_of(state)
        self.tiles.extend([len(days)] * rows)
        totals, times, profile = state.totals, state.times, state.profile
        scalars: list[float] = [totals.get(code, 0) for code in _LIFETIME_CODES]
        scalars += recent_gap_moments(state.recent_orders)
        scalars += [times.get(name, _NAN) for name in _TIMES]
        for name in PROFILE_FIELDS:
            value = profile.get(name)
            scalars.append(_NAN if value is None else value)
        self.days.extend(days * rows)
        self.totals.extend(flat * rows)
        self.scalars.extend(scalars * rows)

    def columns(self) -> dict[str, np.ndarray]:
        rows = len(self.as_of)
        as_of = np.array(self.as_of, dtype=np.float64)
        scalars = np.array(self.scalars, dtype=np.float64).reshape(rows, len(_SCALARS))
        scalars[:, : len(_LIFETIME)] *= _LIFETIME_SCALES
        columns = {"as_of_ts": as_of}
        columns.update(zip(_SCALARS, scalars.T, strict=True))
        row = np.repeat(np.arange(rows), self.tiles)
        age = np.floor(as_of / SECONDS_PER_DAY).astype(np.int64)[row] - np.array(
            self.days, dtype=np.int64
        )
        totals = np.array(self.totals, dtype=np.int64).reshape(len(row), len(WINDOWED))
        for name, index, days, scale in _WINDOW_COLUMNS:
            inside = (age >= 0) & (age < days)
            weights = totals[inside, index] * scale
            summed = np.bincount(row[inside], weights=weights, minlength=rows)
            columns[name] = summed.astype(np.float64, copy=False)
        return {name: columns[name] for name in BASE_COLUMNS}


def base_row(state: CustomerState, as_of: float) -> list[float]:
    """The base columns of one customer as of `as_of` (at or after `state.seen`)."""
    rows = BaseRows()
    rows.add(state, as_of)
    return [float(column[0]) for column in rows.columns().values()]


def base_columns(states: Sequence[CustomerState], as_of: Sequence[float]) -> dict[str, np.ndarray]:
    """The base columns of `definitions.feature_matrix`, one row per state."""
    rows = BaseRows()
    for state, instant in zip(states, as_of, strict=True):
        rows.add(state, instant)
    return rows.columns()


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(CustomerState)
_IDS = msgspec.msgpack.Decoder(dict[str, int])


def encode_state(state: CustomerState) -> bytes:
    return _ENCODER.encode(state)


def decode_state(data: bytes) -> CustomerState:
    state = _DECODER.decode(data)
    tiles = state.tiles
    if isinstance(tiles, dict):  # stored as a map, day -> totals, until December 2026
        state.tiles = [list(tiles), list(chain.from_iterable(tiles.values()))]
    return state
