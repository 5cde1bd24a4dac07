"""Online features, framework-free: events -> state updates -> feature columns.

An event becomes an `Update`: a list of field operations on the customer's state,
derived from `definitions`. A store (Redis in production) applies updates atomically
per customer and idempotently: the Kafka position of every applied message is kept
with the state, so a redelivered message changes nothing. The store hands back the
customer's raw state, and `base_columns` reads the features off it.

State fields (one Redis hash per customer):
    <code>            lifetime total of an aggregate
    <code>@<day>      that aggregate's total for one event-time day (a tile)
    #<source id>      an order/ticket id already counted (value: its day)
    off:<topic>:<p>   last applied offset of that partition
    max:<topic>, min:<topic>   last / first event time of a topic
    seen              latest event time of the customer (drives pruning and lateness)
    p:<field>         profile fields
    risk, risk_seq    current risk category and how many changes were published
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from feature_store.definitions import (
    AGGREGATE_BY_NAME,
    AGGREGATES,
    BASE_COLUMNS,
    EVENT_ID_FIELD,
    EVENT_TIME_FIELD,
    FIRST_TIME,
    LAST_TIME,
    PROFILE_FIELDS,
    WINDOWS,
    day_of,
)
from schemas import Customer, topics

TILE_SEPARATOR = "@"
SOURCE_ID_PREFIX = "#"
SEEN_FIELD = "seen"
RISK_FIELD = "risk"
RISK_SEQ_FIELD = "risk_seq"


@dataclass(frozen=True, slots=True)
class Position:
    """Where a message sits in Kafka (or in a replayed file)."""

    topic: str
    partition: int
    offset: int

    @property
    def offset_field(self) -> str:
        return f"off:{self.topic}:{self.partition}"


@dataclass(frozen=True, slots=True)
class Update:
    """What one input message does to its customer's state."""

    customer_id: str
    position: Position
    # Operations: ("incr" | "max" | "min" | "set", field, value as text).
    ops: tuple[tuple[str, str, str], ...]
    event_ts: float | None = None  # None for profile upserts, which carry no event time
    source_id: str | None = None  # order/ticket id, to drop a producer's duplicate


def epoch_seconds(moment: datetime) -> float:
    return moment.timestamp()


def _number(value: float) -> str:
    # repr round-trips a float exactly; ints stay ints for HINCRBY.
    return repr(value)


def update_for(topic: str, event: Any, position: Position) -> Update:
    """The state update for one decoded input event (see `schemas.INPUT_EVENTS`)."""
    if topic == topics.CUSTOMERS:
        return _profile_update(event, position)
    ts = epoch_seconds(getattr(event, EVENT_TIME_FIELD[topic]))
    day = day_of(ts)
    ops: list[tuple[str, str, str]] = []
    for aggregate in AGGREGATES:
        if aggregate.topic != topic:
            continue
        amount = aggregate.value.of_event(event)
        if not amount:
            continue  # nothing to add: keep absent fields absent (memory per customer)
        # Every aggregate is an integer (counts, cents, seconds): exact in Redis.
        ops.append(("incr", aggregate.code, str(amount)))
        if aggregate.windowed:
            ops.append(("incr", f"{aggregate.code}{TILE_SEPARATOR}{day}", str(amount)))
    ops.append(("max", f"max:{topic}", _number(ts)))
    if topic in FIRST_TIME:
        ops.append(("min", f"min:{topic}", _number(ts)))
    return Update(
        customer_id=event.customer_id,
        position=position,
        ops=tuple(ops),
        event_ts=ts,
        source_id=getattr(event, EVENT_ID_FIELD[topic]),
    )


def _profile_update(customer: Customer, position: Position) -> Update:
    profile = {
        "age": "" if customer.age is None else str(customer.age),
        "email_verified": str(int(customer.email_verified)),
        "phone_verified": str(int(customer.phone_verified)),
        "registration_ts": _number(epoch_seconds(customer.registration_date)),
    }
    ops = tuple(("set", f"p:{name}", value) for name, value in profile.items())
    return Update(customer_id=customer.customer_id, position=position, ops=ops)


@dataclass
class CustomerState:
    """A customer's raw state as the store keeps it, parsed."""

    customer_id: str
    totals: dict[str, float] = field(default_factory=dict)
    tiles: dict[str, dict[int, float]] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)  # "max:orders" -> ts
    profile: dict[str, float] = field(default_factory=dict)
    seen: float | None = None
    risk: str | None = None
    risk_seq: int = 0

    @classmethod
    def parse(cls, customer_id: str, fields: Mapping[str, str]) -> CustomerState:
        """Parse the store's fields (source ids and offsets are left out by the store)."""
        state = cls(customer_id)
        for name, value in fields.items():
            at = name.find(TILE_SEPARATOR)
            if name[0] == SOURCE_ID_PREFIX:  # an order/ticket id may contain anything
                continue
            if at > 0:  # tiles first: they are most of the fields
                code = name[:at]
                tiles = state.tiles.get(code)
                if tiles is None:
                    tiles = state.tiles[code] = {}
                tiles[int(name[at + 1 :])] = float(value)
            elif name in _AGGREGATE_CODES:
                state.totals[name] = float(value)
            elif name[:4] in ("max:", "min:"):
                state.times[name] = float(value)
            elif name[:2] == "p:":
                state.profile[name[2:]] = float(value) if value != "" else np.nan
            elif name == SEEN_FIELD:
                state.seen = float(value)
            elif name == RISK_FIELD:
                state.risk = value
            elif name == RISK_SEQ_FIELD:
                state.risk_seq = int(value)
        return state


_AGGREGATE_CODES = frozenset(a.code for a in AGGREGATES)
# Per aggregate code, the windowed base columns it feeds: (column, days, scale).
_WINDOWS_BY_CODE: dict[str, list[tuple[str, int, float]]] = {}
for _name, _window in WINDOWS.items():
    if _window.days is not None:
        _code = AGGREGATE_BY_NAME[_window.aggregate].code
        _WINDOWS_BY_CODE.setdefault(_code, []).append((_name, _window.days, _window.scale))
_LIFETIME = [
    (name, AGGREGATE_BY_NAME[w.aggregate].code, w.scale)
    for name, w in WINDOWS.items()
    if w.days is None
]
_TIMES = [(name, f"max:{topic}") for topic, name in LAST_TIME.items()] + [
    (name, f"min:{topic}") for topic, name in FIRST_TIME.items()
]


def base_columns(states: Sequence[CustomerState], as_of: Sequence[float]) -> dict[str, np.ndarray]:
    """The base columns of `definitions.feature_matrix`, one row per state.

    `as_of[i]` must be at or after every event applied to `states[i]` (the store
    guarantees it for the customer's `seen` time). A window of N days holds the
    tiles of the N days ending with the as-of day.
    """
    rows: dict[str, list[float]] = {name: [] for name in BASE_COLUMNS if name != "as_of_ts"}
    nan = float("nan")
    for state, ts in zip(states, as_of, strict=True):
        as_of_day = day_of(ts)
        sums = dict.fromkeys(WINDOWS, 0.0)
        for code, windows in _WINDOWS_BY_CODE.items():
            for day, value in state.tiles.get(code, {}).items():
                age = as_of_day - day
                for name, days, _ in windows:
                    if 0 <= age < days:
                        sums[name] += value
        for windows in _WINDOWS_BY_CODE.values():
            for name, _, scale in windows:
                rows[name].append(sums[name] * scale)
        for name, code, scale in _LIFETIME:
            rows[name].append(state.totals.get(code, 0.0) * scale)
        for name, field_name in _TIMES:
            rows[name].append(state.times.get(field_name, nan))
        for name in PROFILE_FIELDS:
            rows[name].append(state.profile.get(name, nan))
    columns = {name: np.asarray(values, dtype=np.float64) for name, values in rows.items()}
    columns["as_of_ts"] = np.asarray(as_of, dtype=np.float64)
    return columns
