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
    EVENT_ID_FIELD,
    EVENT_TIME_FIELD,
    FIRST_TIME,
    LAST_TIME,
    PROFILE_FIELDS,
    WINDOWS,
    day_of,
    window_start_day,
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
        state = cls(customer_id)
        for name, value in fields.items():
            head = name[0]
            if head == SOURCE_ID_PREFIX or name.startswith("off:"):
                continue
            if name.startswith("max:") or name.startswith("min:"):
                state.times[name] = float(value)
            elif name.startswith("p:"):
                state.profile[name[2:]] = float(value) if value != "" else np.nan
            elif name == SEEN_FIELD:
                state.seen = float(value)
            elif name == RISK_FIELD:
                state.risk = value
            elif name == RISK_SEQ_FIELD:
                state.risk_seq = int(value)
            elif TILE_SEPARATOR in name:
                code, day = name.split(TILE_SEPARATOR)
                state.tiles.setdefault(code, {})[int(day)] = float(value)
            else:
                state.totals[name] = float(value)
        return state

    def window_total(self, code: str, days: int | None, as_of_day: int) -> float:
        if days is None:
            return self.totals.get(code, 0.0)
        first = window_start_day(as_of_day, days)
        return sum(v for day, v in self.tiles.get(code, {}).items() if first <= day <= as_of_day)


def base_columns(states: Sequence[CustomerState], as_of: Sequence[float]) -> dict[str, np.ndarray]:
    """The base columns of `definitions.feature_matrix`, one row per state.

    `as_of[i]` must be at or after every event applied to `states[i]` (the store
    guarantees it for the customer's `seen` time).
    """
    n = len(states)
    columns: dict[str, np.ndarray] = {"as_of_ts": np.asarray(as_of, dtype=np.float64)}
    for name in (*WINDOWS, *LAST_TIME.values(), *FIRST_TIME.values(), *PROFILE_FIELDS):
        columns[name] = np.full(n, np.nan)
    for row, (state, ts) in enumerate(zip(states, as_of, strict=True)):
        as_of_day = day_of(ts)
        for name, window in WINDOWS.items():
            code = AGGREGATE_BY_NAME[window.aggregate].code
            columns[name][row] = state.window_total(code, window.days, as_of_day) * window.scale
        for topic, name in LAST_TIME.items():
            columns[name][row] = state.times.get(f"max:{topic}", np.nan)
        for topic, name in FIRST_TIME.items():
            columns[name][row] = state.times.get(f"min:{topic}", np.nan)
        for name in PROFILE_FIELDS:
            columns[name][row] = state.profile.get(name, np.nan)
    return columns
