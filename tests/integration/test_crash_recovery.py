"""Effectively-once features: kill the worker with SIGKILL mid-stream, restart it, and
every customer's Redis features still equal the offline computation over the whole
history, as if each event had been applied exactly once."""

from __future__ import annotations

import random
import re
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from feature_store.definitions import FEATURE_NAMES, FeatureParams, feature_matrix
from feature_store.offline import History as FeatureHistory
from feature_store.offline import features_as_of
from feature_store.online import base_columns
from feature_store.redis_store import RedisFeatureStore
from schemas import topics
from simulator.history import generate_history
from tests.support import Worker, encode, produce

pytestmark = pytest.mark.integration

KILLS = 3
PRODUCE_RATE = 2_500  # events/s: the stream lasts ~20 s, so the kills land inside it


def lag(bootstrap: str, group: str, topic_names: list[str]) -> int:
    """Messages not yet committed by `group` on `topic_names`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        metadata = consumer.list_topics(timeout=10)
        partitions = [
            TopicPartition(name, p)
            for name in topic_names
            for p in metadata.topics[name].partitions
        ]
        committed = consumer.committed(partitions, timeout=10)
        behind = 0
        for tp in committed:
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            behind += high - max(tp.offset, 0)
        return behind
    finally:
        consumer.close()


def redelivered(worker: Worker) -> int:
    status, body = worker.get("/metrics")
    match = re.search(rb'churn_events_total\{outcome="redelivered"\} ([0-9.e+]+)', body)
    return int(float(match.group(1))) if status == 200 and match else 0


def test_features_are_exact_after_the_worker_is_killed_mid_stream(
    worker_env: dict[str, str], kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    history = generate_history(4000, seed=11)
    events = list(history.events_in_time_order())
    assert len(events) >= 50_000
    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    group = worker_env["CHURN_APP_ID"]
    input_topics = [prefix + name for name in topics.INPUT_TOPICS]
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    print(f"kill schedule seed: {seed}")

    worker = Worker(worker_env, tmp_path / "worker.log")
    worker.start()  # creates the topics

    def stream() -> None:
        started = time.monotonic()
        paced = ((prefix + topic, event.customer_id, encode(event)) for topic, event in events)
        for i, message in enumerate(paced):
            if i % 500 == 0:
                time.sleep(max(0.0, started + i / PRODUCE_RATE - time.monotonic()))
            produce_one(message)
        producer_done.set()

    messages: list[tuple[str, str | None, bytes]] = []
    producer_done = threading.Event()
    batch_lock = threading.Lock()

    def produce_one(message: tuple[str, str | None, bytes]) -> None:
        with batch_lock:
            messages.append(message)
            if len(messages) >= 500:
                produce(kafka_bootstrap, messages)
                messages.clear()

    streamer = threading.Thread(target=stream)
    streamer.start()
    redeliveries = 0
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(1.0, 4.0))
            behind = lag(kafka_bootstrap, group, input_topics)
            assert behind > 0 or not producer_done.is_set(), "stream ended before the kill"
            redeliveries += redelivered(worker)
            worker.kill()
            worker = Worker(worker_env, tmp_path / "worker.log")
            worker.start()
        streamer.join(120)
        with batch_lock:
            produce(kafka_bootstrap, messages)
        deadline = time.monotonic() + 180
        while lag(kafka_bootstrap, group, input_topics) > 0:
            assert time.monotonic() < deadline, f"worker never caught up:\n{worker.log()[-3000:]}"
            time.sleep(1)
        redeliveries += redelivered(worker)
    finally:
        worker.stop()
        streamer.join(120)

    # Kafka redelivered messages the killed workers had applied but not committed.
    assert redeliveries > 0

    store = RedisFeatureStore(
        redis.Redis.from_url(redis_url, decode_responses=True), worker_env["CHURN_REDIS_NAMESPACE"]
    )
    customer_ids = [c.customer_id for c in history.customers]
    states = [s for s in store.read(customer_ids).values() if s.seen is not None]
    expected_customers = {e.customer_id for t, e in events if t != topics.CUSTOMERS}
    assert {s.customer_id for s in states} == expected_customers
    as_of = [s.seen for s in states if s.seen is not None]
    online = feature_matrix(base_columns(states, as_of), FeatureParams())
    offline = features_as_of(
        FeatureHistory.from_events(events),
        pd.Series(as_of, index=[s.customer_id for s in states]),
    ).to_numpy()
    for j, name in enumerate(FEATURE_NAMES):
        np.testing.assert_allclose(
            online[:, j], offline[:, j], rtol=1e-9, atol=0, equal_nan=True, err_msg=name
        )
