"""End to end on the real services: events produced to Kafka come out as risk changes,
Redis holds the features we compute by hand, bad input goes to the dead-letter topic."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest
import redis

from feature_store.definitions import FEATURE_NAMES
from feature_store.redis_store import RedisStateStore
from schemas import Customer, Order, SupportTicket, schema_path, topics
from stream_app.partitioning import partition_of
from tests.support import Worker, consume, encode, produce, wait_for_orders

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


# Kafka orders messages within a partition, not across topics, so the history is
# produced in phases, each applied before the next, to make the expected changes exact.
def first_phase() -> list[tuple[str, str | None, bytes]]:
    order_b1 = Order("OB1", "B", day(0), 20.0, "paypal", "delivered")
    return [
        (topics.CUSTOMERS, "A", encode(Customer("A", day(-200), age=35, email_verified=True))),
        (topics.ORDERS, "A", encode(Order("OA1", "A", day(0), 50.0, "card", "delivered"))),
        (topics.ORDERS, "A", encode(Order("OA2", "A", day(5), 30.0, "card", "delayed"))),
        (topics.ORDERS, "B", encode(order_b1)),
        (topics.ORDERS, "B", encode(order_b1)),  # the producer sent it twice
        (topics.ORDERS, "B", b'{"order_id": "OB9", "customer_id": "B"}'),  # fields missing
    ]


def second_phase() -> list[tuple[str, str | None, bytes]]:
    return [
        (
            topics.SUPPORT_TICKETS,
            "A",
            encode(
                SupportTicket(
                    "TA1",
                    "A",
                    day(50),
                    "delivery",
                    resolved_ts=day(50) + timedelta(hours=30),
                    resolution_time_hours=30.0,
                    satisfaction_score=1,
                )
            ),
        ),
    ]


def third_phase() -> list[tuple[str, str | None, bytes]]:
    return [
        (topics.ORDERS, "B", b"not json at all"),
        (topics.ORDERS, "A", encode(Order("OA3", "A", day(51), 12.5, "card", "delivered"))),
        (topics.ORDERS, "B", encode(Order("OB2", "B", day(2), 25.0, "paypal", "delivered"))),
    ]


def test_known_history_yields_expected_risk_changes_features_and_dead_letters(
    worker: Worker, worker_env: dict[str, str], kafka_bootstrap: str, redis_url: str
) -> None:
    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    worker.start()
    produce(kafka_bootstrap, [(prefix + t, k, v) for t, k, v in first_phase()])
    wait_for_orders(worker, "A", 2)
    produce(kafka_bootstrap, [(prefix + t, k, v) for t, k, v in second_phase()])
    consume(kafka_bootstrap, [prefix + topics.CHURN_RISK], lambda messages: len(messages) >= 1)
    produce(kafka_bootstrap, [(prefix + t, k, v) for t, k, v in third_phase()])

    changes = consume(
        kafka_bootstrap,
        [prefix + topics.CHURN_RISK],
        until=lambda messages: len(messages) >= 2,
    )
    decoded = [json.loads(m.value()) for m in changes]
    # A went quiet 45 days (HIGH at its ticket), then ordered again (LOW). B never moved.
    assert [(c["customer_id"], c["previous_risk"], c["risk"]) for c in decoded] == [
        ("A", "LOW", "HIGH"),
        ("A", "HIGH", "LOW"),
    ]
    schema = json.loads(schema_path("churn-risk").read_text())
    for message, change in zip(changes, decoded, strict=True):
        jsonschema.validate(change, schema)
        assert message.key() == change["customer_id"].encode()
        assert change["model_version"] == "recency-v1"
    to_high = decoded[0]
    assert to_high["reasons"][0]["feature"] == "recency_days"
    assert to_high["reasons"][0]["value"] == pytest.approx(45.0)
    assert to_high["trigger"]["topic"] == topics.SUPPORT_TICKETS
    assert to_high["trigger"]["event_id"] == "TA1"
    assert to_high["event_time"].startswith("2026-02-20T09:00:00")
    assert to_high["recommended_actions"]
    assert len({c["event_id"] for c in decoded}) == 2

    high_only = consume(kafka_bootstrap, [prefix + topics.CHURN_RISK_HIGH], lambda m: len(m) >= 1)
    assert [json.loads(m.value())["event_id"] for m in high_only] == [to_high["event_id"]]

    dead = consume(kafka_bootstrap, [prefix + topics.DEAD_LETTER], lambda m: len(m) >= 2)
    letters = [json.loads(m.value()) for m in dead]
    assert [letter["value"] for letter in letters] == [
        '{"order_id": "OB9", "customer_id": "B"}',
        "not json at all",
    ]
    assert "missing required field" in letters[0]["reason"]
    assert "malformed" in letters[1]["reason"]
    for letter in letters:
        jsonschema.validate(letter, json.loads(schema_path("dead-letter").read_text()))

    # The worker kept going after the bad input: B's later order counted, its duplicate not.
    wait_for_orders(worker, "B", 2)

    status, body = worker.get("/customers/A")
    assert status == 200
    lookup = json.loads(body)
    assert lookup["risk"] == "LOW"
    published = lookup["published"]  # the score behind LOW, as of A's last order
    assert published["model_version"] == "recency-v1"
    expected_a = {  # by hand, as of OA3 on day 51
        "recency_days": 0.0,
        "orders_7d": 1,
        "orders_30d": 1,
        "orders_90d": 3,
        "orders_lifetime": 3,
        "spend_7d": 12.5,
        "spend_90d": 92.5,
        "spend_lifetime": 92.5,
        "avg_order_value": 92.5 / 3,
        "order_value_trend": 12.5 / (92.5 / 3),
        "delivery_problems_90d": 1,
        "tickets_30d": 1,
        "tickets_90d": 1,
        "negative_experiences_90d": 1,
        "mean_resolution_hours": 30.0,
        "days_since_last_ticket": 1.0,
        "tenure_days": 251.0,
        "age": 35,
        "email_verified": 1,
        "phone_verified": 0,
    }
    for name, value in expected_a.items():
        assert published["features"][name] == pytest.approx(value), name
    assert set(published["features"]) == set(FEATURE_NAMES)

    # The same numbers straight from Redis.
    store = RedisStateStore(redis.Redis.from_url(redis_url), worker_env["CHURN_REDIS_NAMESPACE"])
    state = store.read(partition_of("A", 4), ["A"])["A"]
    assert state.totals["o"] == 3
    assert state.totals["s"] == 9250  # cents
    assert state.risk == "LOW" and state.risk_seq == 2

    assert worker.metric('churn_events_total{topic="orders",outcome="dead_letter"}') == 2
    assert worker.metric('churn_events_total{outcome="duplicate"}') == 1
    assert worker.metric('churn_dead_letters_total{reason="missing_field"}') == 1
    assert worker.metric('churn_dead_letters_total{reason="malformed_json"}') == 1
