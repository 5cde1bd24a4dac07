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

from collections.abc import Sequence
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
    SECONDS_PER_DAY,
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
    # Day tiles as parallel lists: aggregate code, event-time day, that day's total.
    tile_codes: list[str] = field(default_factory=list)
    tile_days: list[int] = field(default_factory=list)
    tile_values: list[int] = field(default_factory=list)
    totals: dict[str, float] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)  # "max:orders" -> ts
    profile: dict[str, float] = field(default_factory=dict)
    seen: float | None = None
    risk: str | None = None
    risk_seq: int = 0

    @classmethod
    def from_store(
        cls, customer_id: str, tiles: Sequence[Any], scalars: Sequence[str]
    ) -> CustomerState:
        """Parse the store's reply: tiles as flat (code, day, total) triples, the
        other fields as flat (name, value) pairs (see `apply.lua`)."""
        state = cls(customer_id, list(tiles[0::3]), list(tiles[1::3]), list(tiles[2::3]))
        for name, value in zip(scalars[0::2], scalars[1::2], strict=True):
            if name in _AGGREGATE_CODES:
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
# The windowed base columns, grouped by the aggregate code they sum: code -> [(column,
# days, scale)].
_WINDOWS_BY_CODE: dict[str, list[tuple[str, int, float]]] = {}
for _name, _window in WINDOWS.items():
    if _window.days is not None:
        _code = AGGREGATE_BY_NAME[_window.aggregate].code
        _WINDOWS_BY_CODE.setdefault(_code, []).append((_name, _window.days, _window.scale))
_CODE_INDEX = {code: index for index, code in enumerate(_WINDOWS_BY_CODE)}
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

    Vectorised over the batch: a state given for several rows (a customer scored as
    of several instants) is read once, and every (row, tile) pair is summed by numpy.
    """
    distinct: dict[int, int] = {}  # id(state) -> its index among the distinct states
    unique: list[CustomerState] = []
    row_state = np.empty(len(states), dtype=np.intp)
    for row, state in enumerate(states):
        index = distinct.setdefault(id(state), len(unique))
        if index == len(unique):
            unique.append(state)
        row_state[row] = index

    # Every tile of every distinct state, grouped by state: (code index, day, value).
    tile_code: list[int] = []
    tile_day: list[int] = []
    tile_value: list[int] = []
    tile_count = np.zeros(len(unique), dtype=np.intp)
    for index, state in enumerate(unique):
        tile_code.extend([_CODE_INDEX[code] for code in state.tile_codes])
        tile_day.extend(state.tile_days)
        tile_value.extend(state.tile_values)
        tile_count[index] = len(state.tile_days)
    codes = np.asarray(tile_code, dtype=np.intp)
    days = np.asarray(tile_day, dtype=np.int64)
    values = np.asarray(tile_value, dtype=np.float64)

    # Pair each row with each tile of its state.
    as_of_ts = np.asarray(as_of, dtype=np.float64)
    as_of_day = np.floor(as_of_ts / SECONDS_PER_DAY).astype(np.int64)
    per_row = tile_count[row_state]
    first_tile = (np.cumsum(tile_count) - tile_count)[row_state]
    pair_row = np.repeat(np.arange(len(states)), per_row)
    pair_start = np.repeat(np.cumsum(per_row) - per_row, per_row)
    pair_tile = np.arange(len(pair_row)) - pair_start + np.repeat(first_tile, per_row)
    age = as_of_day[pair_row] - days[pair_tile]
    pair_code, pair_value = codes[pair_tile], values[pair_tile]

    columns: dict[str, np.ndarray] = {"as_of_ts": as_of_ts}
    for code_index, windows in enumerate(_WINDOWS_BY_CODE.values()):
        of_code = (pair_code == code_index) & (age >= 0)
        for name, window_days, scale in windows:
            inside = of_code & (age < window_days)
            sums = np.bincount(pair_row[inside], pair_value[inside], minlength=len(states))
            columns[name] = sums * scale
    nan = float("nan")
    per_state: dict[str, list[float]] = {name: [] for name, _, _ in _LIFETIME}
    per_state.update({name: [] for name, _ in _TIMES})
    per_state.update({name: [] for name in PROFILE_FIELDS})
    for state in unique:
        for name, code, scale in _LIFETIME:
            per_state[name].append(state.totals.get(code, 0.0) * scale)
        for name, field_name in _TIMES:
            per_state[name].append(state.times.get(field_name, nan))
        for name in PROFILE_FIELDS:
            per_state[name].append(state.profile.get(name, nan))
    for name, values_of_states in per_state.items():
        columns[name] = np.asarray(values_of_states, dtype=np.float64)[row_state]
    return columns
