"""Fuzzing through the live worker: thousands of hostile inputs (tests/hostile.py),
mixed into a valid stream, on the real broker and Redis. The worker never stops;
every hostile input is dead-lettered with a reason, or erased or processed where
its contract says so; and the valid customers come out exactly as if the hostile
inputs had never been sent: the same risk changes as a replay of the valid events
alone, and features equal to the offline computation.

CHURN_FUZZ_INPUTS sets how many hostile inputs (default 10,000; `make fuzz` runs
100,000)."""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from confluent_kafka import Producer

from feature_store.online import event_time
from feature_store.redis_store import RedisStateStore
from schemas import schema_path, topics
from scoring.decoding import REFUSALS
from simulator.history import generate_history
from stream_app.kafka_admin import ensure_topics
from stream_app.partitioning import partition_of
from stream_app.redis_client import connect
from tests.hostile import Factory, Hostile, generate
from tests.integration.outputs import (
    PARTITIONS,
    assert_features_exact,
    consume_all_changes,
    replayed_changes,
)
from tests.support import Worker, consume, sum_samples

pytestmark = pytest.mark.integration

FUZZ_INPUTS = int(os.environ.get("CHURN_FUZZ_INPUTS", "10000"))
MAX_MESSAGE_BYTES = 16_384  # small, so "huge" inputs stay cheap to produce
DEAD_LETTER_VALUE_BYTES = 512
Position = tuple[str, int, int]  # topic, partition, offset


def produce_all(
    bootstrap: str, prefix: str, messages: list[tuple[str, bytes | None, bytes | None, int | None]]
) -> list[Position]:
    """Produce in order; returns where each message landed."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
            "linger.ms": 20,
        }
    )
    landed: list[Position | None] = [None] * len(messages)

    def delivered(index: int) -> Any:
        def report(err: Any, message: Any) -> None:
            assert err is None, f"delivery failed: {err}"
            landed[index] = (message.topic()[len(prefix) :], message.partition(), message.offset())

        return report

    for index, (topic, key, value, partition) in enumerate(messages):
        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                producer.produce(prefix + topic, value, key, on_delivery=delivered(index), **extra)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0, "messages left unsent"
    assert all(position is not None for position in landed)
    return [p for p in landed if p is not None]


def canonical(change: dict[str, Any]) -> tuple[Any, ...]:
    """A change as its readers see it, without what depends on input positions (ids
    and trigger offsets, which the hostile messages in between shift) or the clock."""
    trigger = change["trigger"]
    return (
        change["customer_id"],
        change["previous_risk"],
        change["risk"],
        change["probability"],
        json.dumps(change["reasons"]),
        change["event_time"],
        trigger["kind"],
        trigger.get("topic"),
        trigger.get("event_id"),
    )


@pytest.mark.timeout(max(1200, FUZZ_INPUTS // 20))
def test_hostile_input_never_stops_the_worker_nor_changes_what_valid_customers_get(
    worker: Worker,
    worker_env: dict[str, str],
    kafka_bootstrap: str,
    redis_url: str,
    recency_models_dir: Path,
    tmp_path: Path,
) -> None:
    prefix, namespace = worker_env["CHURN_TOPIC_PREFIX"], worker_env["CHURN_REDIS_NAMESPACE"]
    history = generate_history(300, seed=23, days=180)
    valid = list(history.events_in_time_order())
    first_instant = min(event_time(topic, event) for topic, event in valid)
    factory = Factory(
        history.start.fromtimestamp(first_instant, history.start.tzinfo),
        PARTITIONS,
        MAX_MESSAGE_BYTES,
    )
    started = time.monotonic()
    hostile = generate(factory, FUZZ_INPUTS)
    generated_in = time.monotonic() - started
    assert len(hostile) == FUZZ_INPUTS

    # Hostile inputs at random places among the valid ones; erasures last, as a live
    # erasure request comes after the customer's history (it is placed at its broker
    # time, which is later than all of this simulated history).
    rng = random.Random(5)
    stream: list[tuple[str, bytes | None, bytes | None, int | None, Hostile | None]] = [
        (t, e.customer_id.encode(), msgspec.json.encode(e), None, None) for t, e in valid
    ]
    for h in hostile:
        if h.expect != "erased":
            stream.insert(rng.randrange(len(stream) + 1), (h.topic, h.key, h.value, h.partition, h))
    stream += [(h.topic, h.key, h.value, h.partition, h) for h in hostile if h.expect == "erased"]

    ensure_topics(
        {"bootstrap.servers": kafka_bootstrap}, PARTITIONS, prefix, 30
    )  # as the worker does
    landed = produce_all(kafka_bootstrap, prefix, [s[:4] for s in stream])
    placed = {position: s[4] for position, s in zip(landed, stream, strict=True)}
    expected_dead = {p for p, h in placed.items() if h is not None and h.expect == "dead"}

    worker.env.update(
        CHURN_MAX_MESSAGE_BYTES=str(MAX_MESSAGE_BYTES),
        CHURN_DEAD_LETTER_VALUE_BYTES=str(DEAD_LETTER_VALUE_BYTES),
    )
    worker.start()
    started = time.monotonic()

    def all_dead(messages: list[Any]) -> bool:
        if len(messages) < len(expected_dead):
            return False
        letters = (json.loads(m.value()) for m in messages)
        return {(x["topic"], x["partition"], x["offset"]) for x in letters} >= expected_dead

    letters = consume(kafka_bootstrap, [prefix + topics.DEAD_LETTER], all_dead, timeout=400)
    live = consume_all_changes(kafka_bootstrap, prefix, quiet=10)
    processed_in = time.monotonic() - started

    assert worker.process is not None and worker.process.poll() is None, worker.log()[-3000:]
    assert "Traceback" not in worker.log(), worker.log()[-3000:]

    # Every hostile input meant for the dead-letter topic is there, once per position,
    # with a reason; nothing else is.
    schema = json.loads(schema_path("dead-letter").read_text())
    by_position: dict[Position, dict[str, Any]] = {}
    for message in letters:
        letter = json.loads(message.value())
        assert len(message.value()) < 8 * DEAD_LETTER_VALUE_BYTES + 4096
        assert message.key() == (None if letter["key"] is None else letter["key"].encode())
        by_position[(letter["topic"], letter["partition"], letter["offset"])] = letter
    missing = expected_dead - by_position.keys()
    unexpected = by_position.keys() - expected_dead
    assert not missing, [(placed[p], "no dead letter") for p in sorted(missing)[:3]]
    assert not unexpected, [
        (placed.get(p), by_position[p]["reason"]) for p in sorted(unexpected)[:3]
    ]
    for letter in by_position.values():
        assert letter["reason"] and letter["value_bytes"] >= len(letter["value"] or "") * 0

    for letter in list(by_position.values())[:500]:
        jsonschema.validate(letter, schema)

    # Valid customers: exactly what they get without any hostile input.
    valid_customers = {e.customer_id for _, e in valid}
    expected = replayed_changes(valid, recency_models_dir, tmp_path)
    live_valid = [c for c in live if c["customer_id"] in valid_customers]
    by_id = {c["event_id"]: c for c in live_valid}  # at least once: copies share an id
    assert sorted(map(canonical, by_id.values())) == sorted(map(canonical, expected))
    store = RedisStateStore(connect(redis_url), namespace)
    assert_features_exact(store, valid)

    # What the contracts allow was done: unknown fields ignored, tombstones erased.
    processed = [h for h in hostile if h.expect == "processed"]
    for h in processed:
        customer_id = (h.key or b"").decode()
        states = store.read(partition_of(h.key or b"", PARTITIONS), [customer_id])
        assert customer_id in states, f"not processed: {h}"
    erased = sum(h.expect == "erased" for h in hostile)
    assert worker.metric('churn_events_total{outcome="erased"}') == erased

    # Each dead letter counted once, in its rule's category.
    exposition = worker.get("/metrics")[1].decode()
    reasons = Counter(
        {
            r: int(sum_samples(exposition, f'churn_dead_letters_total{{reason="{r}"}}'))
            for r in REFUSALS
        }
    )
    assert reasons.total() == len(by_position)
    kinds = Counter(h.kind for h in hostile)
    print(
        f"\nfuzz: {len(hostile)} hostile inputs generated in {generated_in:.1f} s, mixed with "
        f"{len(valid)} valid events; processed in {processed_in:.1f} s; worker exits: 0"
        f"\n  by kind: {dict(kinds.most_common())}"
        f"\n  dead-lettered: {len(by_position)}, by reason: {dict((+reasons).most_common())}"
        f"\n  processed as the contract allows: {len(processed)}; erased: {erased}"
        f"\n  valid customers' changes: {len(by_id)} (replay of the valid events alone: "
        f"{len(expected)})"
    )
