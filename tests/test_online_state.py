"""A customer's state as the store keeps it (`feature_store.online`): read back the same
whatever form it was written in, and no more decoded than a batch needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np

from feature_store.definitions import BASE_COLUMNS, RECENT_GAP_COLUMNS
from feature_store.online import (
    CustomerState,
    apply_event,
    base_columns,
    decode_state,
    encode_state,
    ids_of,
)
from schemas import Order, SupportTicket, topics

T0 = datetime(2026, 3, 1, tzinfo=UTC)


class _Before(msgspec.Struct, array_like=True):
    """The layout until December 2026: tiles a map, day -> the day's totals."""

    customer_id: str
    totals: dict[str, int]
    tiles: dict[int, list[int]]
    times: dict[str, float]
    profile: dict[str, float | None]
    ids: dict[str, int]
    seen: float | None
    scored_to: float | None
    risk: str | None
    risk_seq: int
    origin: str


def customer() -> CustomerState:
    state = CustomerState("C1")
    for day in range(0, 60, 4):
        at = T0 + timedelta(days=day, hours=day % 5)
        apply_event(state, topics.ORDERS, Order(f"O{day}", "C1", at, 10.0 + day, "card", "delayed"))
        ticket = SupportTicket(f"T{day}", "C1", at, "delivery", at, 3.0, day % 5 + 1)
        apply_event(state, topics.SUPPORT_TICKETS, ticket)
    return state


def test_a_state_stored_with_tiles_as_a_map_reads_the_same_features() -> None:
    state = customer()
    days, totals = state.tiles
    width = len(totals) // len(days)
    before = _Before(
        "C1",
        state.totals,
        {day: totals[i * width : (i + 1) * width] for i, day in enumerate(days)},
        state.times,
        state.profile,
        ids_of(state),
        state.seen,
        state.scored_to,
        state.risk,
        state.risk_seq,
        state.origin,
    )
    loaded = decode_state(msgspec.msgpack.encode(before))
    assert loaded.tiles == state.tiles and ids_of(loaded) == ids_of(state)
    instants = [state.seen + d * 86_400 for d in (0, 3, 20, 45)]  # type: ignore[operator]
    now, then = base_columns([state] * 4, instants), base_columns([loaded] * 4, instants)
    # A state stored before recent order times were kept has none: its gaps are unknown.
    assert loaded.recent_orders == [] and then["recent_gaps"].tolist() == [0.0] * 4
    for name in set(BASE_COLUMNS) - set(RECENT_GAP_COLUMNS):
        assert np.array_equal(now[name], then[name], equal_nan=True), name


def test_ids_stay_encoded_until_an_event_needs_them_and_write_back_the_same() -> None:
    blob = encode_state(customer())
    loaded = decode_state(blob)
    assert isinstance(loaded.ids, msgspec.Raw)
    assert encode_state(loaded) == blob  # written again without being read
    duplicate = Order("O4", "C1", T0 + timedelta(days=4), 14.0, "card", "delayed")
    assert apply_event(loaded, topics.ORDERS, duplicate) == "duplicate"
    assert isinstance(loaded.ids, dict) and encode_state(loaded) == blob
