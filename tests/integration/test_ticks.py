"""Time moves on a quiet partition, live (`scoring.ticks`): one input partition of a
simulated shop receives nothing for 10 days of event time while the others flow; the
worker ticks it along, so its silent customers' inactivity changes arrive and the
drift monitor judges through to the end. The outputs, read as a read_committed
reader reads them, equal a replay of the same log, ticks included."""

from __future__ import annotations

import json
import time
from pathlib import Path

import msgspec
import pytest
import redis

from feature_store.online import event_time
from feature_store.redis_store import RedisStateStore
from schemas import Tick, topics
from stream_app.kafka_admin import ensure_topics
from stream_app.partitioning import partition_of
from stream_app.redis_drift import drift_status
from tests.drift_shop import SINCE, day, shop
from tests.integration.outputs import (
    PARTITIONS,
    assert_exactly_once,
    consume_all_changes,
    replayed_changes,
)
from tests.support import Worker, consume, encode, produce

pytestmark = pytest.mark.integration

QUIET = 0  # the partition that falls silent
SILENT_FROM, LAST_DAY = 112, 122


def test_a_partition_idle_for_10_days_of_event_time_is_ticked_along_live(
    worker_env: dict[str, str], drift_models_dir: Path, kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = {
        **worker_env,
        "CHURN_MODELS_DIR": str(drift_models_dir),
        "CHURN_DRIFT_SINCE": SINCE.isoformat(),
        "CHURN_DRIFT_INTERVAL_SECONDS": "0.5",
        "CHURN_TICK_SECONDS": "1",
        # The busy partitions end within two days of each other: only the quiet one
        # is ever that far behind.
        "CHURN_TICK_GAP_SECONDS": str(2 * 86400),
    }
    prefix, namespace = env["CHURN_TOPIC_PREFIX"], env["CHURN_REDIS_NAMESPACE"]
    silent_from = day(SILENT_FROM)
    events = [
        (t, e)
        for t, e in shop(1_500, seed=5, days=LAST_DAY).events_in_time_order()
        if partition_of(e.customer_id, PARTITIONS) != QUIET
        or event_time(t, e) < silent_from.timestamp()
    ]
    ensure_topics({"bootstrap.servers": kafka_bootstrap}, PARTITIONS, prefix)
    produce(kafka_bootstrap, [(prefix + t, e.customer_id, encode(e)) for t, e in events])
    client = redis.Redis.from_url(env["REDIS_URL"])
    store = RedisStateStore(client, namespace)
    worker = Worker(env, tmp_path / "worker.log")
    try:
        worker.start()
        deadline = time.monotonic() + 240
        while (drift_status(client, namespace).judged_through or SINCE) < day(LAST_DAY - 3):
            assert time.monotonic() < deadline, f"not judged through:\n{worker.log()[-3000:]}"
            assert worker.process and worker.process.poll() is None, worker.log()[-3000:]
            time.sleep(1)
        live = consume_all_changes(kafka_bootstrap, prefix, quiet=5, store=store)
        ticks = consume(kafka_bootstrap, [prefix + topics.TICKS], lambda m: False, 5)
        assert worker.metric("churn_ticks_total") == len(ticks)
    finally:
        worker.stop()

    assert {m.partition() for m in ticks} == {QUIET}
    lapsed = [
        c
        for c in live
        if partition_of(c["customer_id"], PARTITIONS) == QUIET
        and c["trigger"]["kind"] == "inactivity"
        and c["event_time"] > silent_from.isoformat()
    ]
    assert len(lapsed) >= 5, f"{len(lapsed)} inactivity changes in the quiet partition"
    lines = [
        {
            "topic": topics.TICKS,
            "key": None,
            "value": json.loads(m.value()),
            "timestamp": m.timestamp()[1] / 1000,
            "partition": m.partition(),
        }
        for m in ticks
    ]
    replay = replayed_changes(events, drift_models_dir, tmp_path, lines)
    counts = assert_exactly_once(live, replay, store)
    last_tick = max(msgspec.json.decode(m.value(), type=Tick).stream_time for m in ticks)
    print(f"{len(ticks)} ticks, the last to {last_tick}; {len(lapsed)} lapsed changes; {counts}")
