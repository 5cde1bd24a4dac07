"""Both Kafka engines (`CHURN_ENGINE`: Faust, confluent-kafka) publish what the replay
publishes for the same backlog: the same changes, id for id and content for content
(but `scored_at`), read as users read them, and the same features in the store; so
the same as each other. Two workers share the backlog, so partitions move between
them while it is processed."""

from __future__ import annotations

from pathlib import Path

import pytest

from feature_store.redis_store import RedisStateStore
from simulator.history import generate_history
from stream_app.redis_client import connect
from tests.integration.outputs import (
    assert_exactly_once,
    assert_features_exact,
    consume_all_changes,
    replayed_changes,
    stream_in_background,
)
from tests.support import ENGINES, Worker, train_soft_model

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_publishes_what_the_replay_publishes_id_for_id(
    worker_env: dict[str, str], kafka_bootstrap: str, redis_url: str, tmp_path: Path, engine: str
) -> None:
    models = train_soft_model(tmp_path / "models", "recency_days", 5, 55, "soft-recency")
    env = {
        **worker_env,
        "CHURN_ENGINE": engine,
        "CHURN_MODELS_DIR": str(models),
        "CHURN_MAX_IDLE_MS": "1000",  # as the fault tests: live equals replay
    }
    events = list(generate_history(1500, seed=5).events_in_time_order())
    prefix, namespace = worker_env["CHURN_TOPIC_PREFIX"], worker_env["CHURN_REDIS_NAMESPACE"]
    first = Worker(env, tmp_path / "first.log")
    first.start()  # creates the topics
    streamer, _ = stream_in_background(kafka_bootstrap, prefix, events, 2_000)
    second = Worker(env, tmp_path / "second.log")
    try:
        second.start()  # joins mid-stream: the group rebalances
        streamer.join(180)
        store = RedisStateStore(connect(redis_url), namespace)
        live = consume_all_changes(kafka_bootstrap, prefix, store=store)
        assert ("consuming with confluent-kafka" in first.log()) == (engine == "confluent")
        assert first.metric("churn_events_total") + second.metric("churn_events_total") > 0
    finally:
        first.stop()
        second.stop()
    counts = assert_exactly_once(live, replayed_changes(events, models, tmp_path), store)
    print(f"{engine} engine, two workers: {len(events)} events, changes {counts}")
    assert_features_exact(store, events)
    store.delete_namespace()
