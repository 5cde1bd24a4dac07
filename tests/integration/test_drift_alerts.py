"""The drift monitor live: two workers in one consumer group on the real broker and
Redis, a simulated shop with three shifts (tests/drift_shop.py) streamed through, and
the alerts read back from `churn-drift-alerts` by id."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest
import redis

from feature_store.redis_drift import drift_status
from schemas import DriftAlert, topics
from stream_app.kafka_admin import ensure_topics
from tests.drift_shop import SHIFTS, SINCE, check_alerts, day, shop
from tests.support import Worker, consume, encode, produce

pytestmark = pytest.mark.integration

LAST_EVENT_DAY = 145


def test_two_workers_raise_and_clear_each_shifted_feature_once_and_nothing_else(
    worker_env: dict[str, str],
    drift_models_dir: Path,
    kafka_bootstrap: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    env = {
        **worker_env,
        "CHURN_MODELS_DIR": str(drift_models_dir),
        "CHURN_DRIFT_SINCE": SINCE.isoformat(),
        "CHURN_DRIFT_INTERVAL_SECONDS": "0.5",
    }
    prefix, namespace = env["CHURN_TOPIC_PREFIX"], env["CHURN_REDIS_NAMESPACE"]
    history = shop(12_000, seed=202, days=LAST_EVENT_DAY, shifts=SHIFTS.values())
    ensure_topics({"bootstrap.servers": kafka_bootstrap}, 4, prefix)
    events = [(prefix + t, e.customer_id, encode(e)) for t, e in history.events_in_time_order()]
    produce(kafka_bootstrap, events)

    workers = [Worker(env, tmp_path / f"worker-{n}.log") for n in (1, 2)]
    client = redis.Redis.from_url(redis_url)
    try:
        for worker in workers:
            worker.start()
        started = time.monotonic()
        deadline = started + 300
        while (drift_status(client, namespace).judged_through or SINCE) < day(LAST_EVENT_DAY - 0.5):
            assert time.monotonic() < deadline, f"not judged in 300s:\n{workers[0].log()[-2000:]}"
            for worker in workers:
                assert worker.process and worker.process.poll() is None, worker.log()[-3000:]
            time.sleep(1)
        print(f"{len(events)} events judged through in {time.monotonic() - started:.0f}s")

        read = consume(kafka_bootstrap, [prefix + topics.DRIFT_ALERTS], lambda m: False, 8)
        alerts = [msgspec.json.decode(m.value(), type=DriftAlert) for m in read]
        for message, alert in zip(read, alerts, strict=True):
            assert message.key() == alert.feature.encode()
        delays = check_alerts(alerts, SHIFTS)
        print("detection delays", {k: str(v) for k, v in delays.items()})

        # One answer for the group: each alert was counted once, by whichever worker
        # judged its slice, and both workers show the same state, the one in Redis.
        distinct = {a.event_id: a for a in alerts}
        expected = Counter((a.feature, a.state) for a in distinct.values())
        for (feature, state), count in expected.items():
            sample = f'churn_drift_alerts_total{{feature="{feature}",state="{state}"}}'
            assert sum(w.metric(sample) for w in workers) == count, sample
        status = drift_status(client, namespace)
        assert status.raised() == []
        for worker in workers:
            assert all(
                worker.metric(f'churn_drift_alert{{feature="{feature}"}}') == 0
                for feature in status.alerts
            )
    finally:
        for worker in workers:
            worker.stop()
