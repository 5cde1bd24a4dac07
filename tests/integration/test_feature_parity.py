"""Online (the batch runner, state kept in real Redis) and offline (pandas) features
agree, for any history.

Hypothesis draws histories with out-of-order arrival, Kafka redeliveries and
producer duplicates; both paths must give every feature the same value as of the
same instant: counts exactly, floats to 1e-9 relative."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_store.definitions import FEATURE_NAMES, FeatureParams, feature_matrix
from feature_store.offline import History, features_as_of
from feature_store.online import base_columns
from feature_store.redis_store import RedisStateStore
from schemas import Customer, Order, SupportTicket, topics
from scoring.artifact import load_model
from scoring.merge import InputMessage
from scoring.model import Model
from tests.core import RecordingSink, make_runner

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 1, tzinfo=UTC)
SPAN_DAYS = 200
MAX_LATENESS_DAYS = 150  # beyond the largest window: late events count in lifetime only
# Constants as training fits them, none at its default, so both paths must use them.
PARAMS = FeatureParams(engagement_scale=7.5, prior_gap_days=12.5, prior_gaps=0.8)

# Whole days plus a time of day from a few values, so events often sit exactly on
# window boundaries (the first and last second of a day), where off-by-ones hide.
seconds = st.builds(
    lambda day, second: day * 86_400 + second,
    st.integers(0, SPAN_DAYS),
    st.sampled_from([0, 1, 43_200, 86_399]),
)
customers = st.sampled_from(["C1", "C2", "C3"])
amounts = st.one_of(st.just(0.0), st.decimals(0, 500, places=2).map(float))
# Times to the second and to the hour's edge: the gaps between orders are read in whole
# hours, and several orders in one hour (even one second) must count the same way.
seconds = st.one_of(seconds, seconds.map(lambda s: s - s % 3600 - 1))
orders = st.builds(
    lambda c, t, amount, status: (
        topics.ORDERS,
        Order(f"O-{uuid.uuid4().hex[:8]}", c, START + timedelta(seconds=t), amount, "card", status),
    ),
    customers,
    seconds,
    amounts,
    st.sampled_from(["delivered", "delayed", "failed", "returned", "shipped"]),
)
tickets = st.builds(
    lambda c, t, hours, score: (
        topics.SUPPORT_TICKETS,
        SupportTicket(
            f"T-{uuid.uuid4().hex[:8]}",
            c,
            START + timedelta(seconds=t),
            "delivery",
            resolution_time_hours=hours,
            satisfaction_score=score,
        ),
    ),
    customers,
    seconds,
    st.one_of(st.none(), st.floats(0, 400, allow_nan=False)),
    st.one_of(st.none(), st.integers(1, 5)),
)
profiles = st.builds(
    lambda c, age, email: (
        topics.CUSTOMERS,
        Customer(c, START - timedelta(days=100), age=age, email_verified=email),
    ),
    customers,
    st.one_of(st.none(), st.integers(18, 90)),
    st.booleans(),
)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[tuple[str, Any]], list[InputMessage]]:
    """(unique source events, what Kafka delivers: with reorderings and repeats)."""
    events = draw(st.lists(st.one_of(orders, tickets, profiles), min_size=1, max_size=60))
    # Arrival order: event time plus a random delay, so events arrive out of order.
    delays = draw(
        st.lists(
            st.integers(0, MAX_LATENESS_DAYS * 86_400), min_size=len(events), max_size=len(events)
        )
    )

    def arrival(i: int) -> float:
        topic, event = events[i]
        if topic == topics.CUSTOMERS:
            return -1.0
        return _event_time(topic, event).timestamp() + delays[i]

    order = sorted(range(len(events)), key=arrival)
    sent = [events[i] for i in order]
    # The producer sends some events twice (same order/ticket id, a new offset).
    repeats = draw(st.lists(st.integers(0, len(sent) - 1), max_size=5))
    for i in sorted(repeats, reverse=True):
        if sent[i][0] != topics.CUSTOMERS:
            sent.insert(i + 1, sent[i])
    offsets: dict[tuple[str, int], int] = {}
    delivered: list[InputMessage] = []
    for topic, event in sent:
        partition = int(event.customer_id[1:]) % 2
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        key = event.customer_id.encode()
        delivered.append(InputMessage(topic, partition, offset, key, msgspec.json.encode(event)))
    # Kafka redelivers some stretches (a crash or rebalance before the commit).
    for start in draw(st.lists(st.integers(0, len(delivered) - 1), max_size=3)):
        delivered.extend(delivered[start : start + 5])
    unique_events = [(t, e) for t, e in sent if t == topics.CUSTOMERS] + [
        (t, e) for t, e in events if t != topics.CUSTOMERS
    ]
    # Profiles are upserts: offline takes the last one delivered per customer.
    return unique_events, delivered


def _event_time(topic: str, event: Any) -> datetime:
    return event.order_ts if topic == topics.ORDERS else event.created_ts


@pytest.fixture(scope="module")
def model(recency_models_dir: Any) -> Model:
    return load_model(recency_models_dir)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=deliveries(), batch_size=st.integers(1, 20), later_days=st.integers(0, 100))
def test_online_and_offline_features_agree(
    redis_url: str,
    model: Model,
    data: tuple[list[tuple[str, Any]], list[InputMessage]],
    batch_size: int,
    later_days: int,
) -> None:
    unique_events, delivered = data
    client = redis.Redis.from_url(redis_url)
    store = RedisStateStore(client, namespace=f"parity-{uuid.uuid4().hex[:8]}")
    try:
        runner = make_runner(store, model, RecordingSink())
        for start in range(0, len(delivered), batch_size):
            runner.add(delivered[start : start + batch_size])
            asyncio.run(runner.step(lambda topic, partition: True))
        while runner.buffered():
            asyncio.run(runner.step(lambda topic, partition: False))
        states = [
            s
            for partition in (0, 1)
            for s in store.read(partition, [c for c in ("C1", "C2", "C3")]).values()
            if s.seen is not None and int(s.customer_id[1:]) % 2 == partition
        ]
        if not states:
            return
        # As of each customer's latest event, and as of a later instant (inactivity).
        for extra in (0, later_days * 86_400, later_days * 86_400 + 86_399):
            as_of = [s.seen + extra for s in states if s.seen is not None]
            online = feature_matrix(base_columns(states, as_of), PARAMS)
            offline = features_as_of(
                History.from_events(unique_events),
                pd.Series(as_of, index=[s.customer_id for s in states]),
                PARAMS,
            ).to_numpy()
            for j, name in enumerate(FEATURE_NAMES):
                np.testing.assert_allclose(
                    online[:, j],
                    offline[:, j],
                    rtol=1e-9,
                    atol=0,
                    equal_nan=True,
                    err_msg=f"{name} differs online vs offline",
                )
    finally:
        store.delete_namespace()
