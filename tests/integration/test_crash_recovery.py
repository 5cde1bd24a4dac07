"""Exactly-once in what users read: kill the worker with SIGKILL again and again while
it streams, restart it, and read the outputs. Every change id has one content, each
customer's changes are numbered 1, 2, 3... without a gap, they are exactly a replay's
of the same input, and every customer's features equal the offline computation."""

from __future__ import annotations

import io
import json
import random
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from feature_store.definitions import FEATURE_NAMES, FeatureParams, feature_matrix
from feature_store.keys import Keys
from feature_store.offline import History as FeatureHistory
from feature_store.offline import features_as_of
from feature_store.online import base_columns
from feature_store.redis_store import RedisStateStore
from schemas import topics
from scoring.artifact import load_model
from scoring.risk import transition_id
from simulator.history import generate_history
from simulator.jsonl_sink import write_jsonl
from stream_app.partitioning import partition_of
from stream_app.replay import replay
from tests.support import Worker, consume, encode, produce, train_soft_model

pytestmark = pytest.mark.integration

PARTITIONS = 4
MIN_KILLS = 5
MIN_KILLS_MID_BATCH = 2  # landed between publishing a batch and committing it
MAX_KILLS = 12
PRODUCE_RATE = 1_000  # events/s: the stream lasts ~50 s, so the kills land inside it


def in_flight(client: redis.Redis, namespace: str) -> int:
    """Partitions whose last batch was published (or publishing) but not committed."""
    keys = Keys(namespace)
    return sum(bool(client.hexists(keys.meta(p), "flight")) for p in range(PARTITIONS))


def comparable(change: dict) -> str:
    return json.dumps({k: v for k, v in change.items() if k != "scored_at"}, sort_keys=True)


def test_outputs_and_features_are_exact_after_the_worker_is_killed_mid_stream(
    worker_env: dict[str, str], kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    models = train_soft_model(tmp_path / "models", "recency_days", 5, 55, "soft-recency")
    env = {**worker_env, "CHURN_MODELS_DIR": str(models), "CHURN_MAX_IDLE_MS": "200"}
    history = generate_history(4000, seed=11)
    events = list(history.events_in_time_order())
    assert len(events) >= 50_000
    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    namespace = worker_env["CHURN_REDIS_NAMESPACE"]
    client = redis.Redis.from_url(redis_url)
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    print(f"kill schedule seed: {seed}")

    worker = Worker(env, tmp_path / "worker.log")
    worker.start()  # creates the topics
    producer_done = threading.Event()

    def stream() -> None:
        started = time.monotonic()
        paced = [(prefix + topic, event.customer_id, encode(event)) for topic, event in events]
        for i in range(0, len(paced), 500):
            time.sleep(max(0.0, started + i / PRODUCE_RATE - time.monotonic()))
            produce(kafka_bootstrap, paced[i : i + 500])
        producer_done.set()

    streamer = threading.Thread(target=stream)
    streamer.start()
    kills = mid_batch = 0
    try:
        while kills < MIN_KILLS or mid_batch < MIN_KILLS_MID_BATCH:
            assert kills < MAX_KILLS, f"only {mid_batch} of {kills} kills landed mid-batch"
            assert not producer_done.is_set(), f"the stream ended after {kills} kills"
            if kills % 2:
                time.sleep(rng.uniform(0.3, 2.0))  # anywhere
            else:  # between publishing a batch and committing it
                deadline = time.monotonic() + 5
                while not in_flight(client, namespace) and time.monotonic() < deadline:
                    time.sleep(0.0005)
            worker.kill()
            kills += 1
            mid_batch += in_flight(client, namespace) > 0
            worker = Worker(env, tmp_path / "worker.log")
            worker.start()
        streamer.join(180)
        live = consume_all_changes(kafka_bootstrap, prefix)
    finally:
        worker.stop()
        streamer.join(180)
    print(f"kills: {kills}, of which mid-batch: {mid_batch}")
    log = worker.log()
    assert log.count("resuming the batch in flight") >= mid_batch

    # The replay of the same input, in-process: the reference.
    events_file = tmp_path / "history.jsonl"
    write_jsonl(events, events_file)
    out = io.BytesIO()
    replay(events_file, load_model(models), out, PARTITIONS, 500, 0.05)
    expected = [json.loads(line) for line in out.getvalue().splitlines()]

    contents: dict[str, str] = {}
    for change in live:
        content = comparable(change)
        assert contents.setdefault(change["event_id"], content) == content, (
            f"{change['event_id']} was published with two contents"
        )
    per_customer: dict[str, int] = {}
    for change in expected:
        per_customer[change["customer_id"]] = per_customer.get(change["customer_id"], 0) + 1
    for customer, count in per_customer.items():  # numbered 1..n, no gap, nothing else
        assert {transition_id(customer, n) for n in range(1, count + 1)} <= contents.keys()
    assert contents == {c["event_id"]: comparable(c) for c in expected}
    duplicates = len(live) - len(contents)
    print(f"changes: {len(contents)} distinct, {duplicates} copies published again")

    store = RedisStateStore(client, namespace)
    states = [
        state
        for c in history.customers
        for state in store.read(partition_of(c.customer_id, PARTITIONS), [c.customer_id]).values()
        if state.seen is not None
    ]
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


def consume_all_changes(bootstrap: str, prefix: str) -> list[dict]:
    """Every change on `churn-risk`, once the worker has been quiet for a while."""
    seen: list[dict] = []
    quiet_since = time.monotonic()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        batch = consume(bootstrap, [prefix + topics.CHURN_RISK], lambda m: False, timeout=5)
        if len(batch) > len(seen):
            seen = [json.loads(m.value()) for m in batch]
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 15:
            return seen
    raise AssertionError("the worker kept publishing for 4 minutes")
