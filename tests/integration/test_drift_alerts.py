"""The drift monitor live: workers in one consumer group on the real broker and Redis,
a simulated shop streamed through (tests/drift_shop.py), and the alerts read back
from `churn-drift-alerts` by id: a stationary stream of over 200,000 events raises
none; a shop with three shifts raises and clears each shifted subject once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

from schemas import DriftAlert, topics
from stream_app.kafka_admin import ensure_topics
from stream_app.redis_drift import drift_status
from tests.drift_shop import SHIFTS, SINCE, check_alerts, day, shop
from tests.support import Worker, consume, encode, produce, sum_samples

pytestmark = pytest.mark.integration


@contextmanager
def judged(
    env: dict[str, str], history: Any, last_day: int, bootstrap: str, tmp_path: Path, timeout: float
) -> Iterator[tuple[list[DriftAlert], list[Worker]]]:
    """Stream `history` through two workers until the group has judged the slices up
    to half a day before `last_day`; yields the alerts published, and the workers."""
    prefix, namespace = env["CHURN_TOPIC_PREFIX"], env["CHURN_REDIS_NAMESPACE"]
    ensure_topics({"bootstrap.servers": bootstrap}, 4, prefix)
    events = [(prefix + t, e.customer_id, encode(e)) for t, e in history.events_in_time_order()]
    produce(bootstrap, events)
    workers = [Worker(env, tmp_path / f"worker-{n}.log") for n in (1, 2)]
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        for worker in workers:
            worker.start()
        started = time.monotonic()
        deadline = started + timeout
        while (drift_status(client, namespace).judged_through or SINCE) < day(last_day - 0.5):
            assert time.monotonic() < deadline, (
                f"not judged in {timeout:.0f}s:\n{workers[0].log()[-2000:]}"
            )
            for worker in workers:
                assert worker.process and worker.process.poll() is None, worker.log()[-3000:]
            time.sleep(1)
        print(f"{len(events)} events judged through in {time.monotonic() - started:.0f}s")
        read = consume(bootstrap, [prefix + topics.DRIFT_ALERTS], lambda m: False, 8)
        alerts = [msgspec.json.decode(m.value(), type=DriftAlert) for m in read]
        for message, alert in zip(read, alerts, strict=True):
            assert message.key() == alert.feature.encode()
        yield alerts, workers
    finally:
        for worker in workers:
            worker.stop()


@pytest.fixture
def drift_env(worker_env: dict[str, str], drift_models_dir: Path) -> dict[str, str]:
    return {
        **worker_env,
        "CHURN_MODELS_DIR": str(drift_models_dir),
        "CHURN_DRIFT_SINCE": SINCE.isoformat(),
        "CHURN_DRIFT_INTERVAL_SECONDS": "0.5",
    }


def test_a_stationary_stream_of_over_200_000_events_raises_no_drift_alert_live(
    drift_env: dict[str, str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    history = shop(38_500, seed=303, days=150)  # tests/test_drift_replay.py's, offline
    assert len(history) >= 200_000
    with judged(drift_env, history, 150, kafka_bootstrap, tmp_path, 900) as (alerts, _):
        assert alerts == []
        status = drift_status(
            redis.Redis.from_url(drift_env["REDIS_URL"]), drift_env["CHURN_REDIS_NAMESPACE"]
        )
        assert status.raised() == [] and len(status.alerts) > 0  # judged, nothing raised


def test_two_workers_raise_and_clear_each_shifted_feature_once_and_nothing_else(
    drift_env: dict[str, str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    history = shop(12_000, seed=202, days=145, shifts=SHIFTS.values())
    with judged(drift_env, history, 145, kafka_bootstrap, tmp_path, 300) as (alerts, workers):
        delays = check_alerts(alerts, SHIFTS)
        print("detection delays", {k: str(v) for k, v in delays.items()})

        # One answer for the group: each alert was counted once, by whichever worker
        # judged its slice, and both workers show the same state, the one in Redis.
        distinct = {a.event_id: a for a in alerts}
        expected = Counter((a.feature, a.state) for a in distinct.values())
        # Judging is over: each worker's /metrics read once.
        expositions = [worker.exposition() for worker in workers]
        for (feature, state), count in expected.items():
            sample = f'churn_drift_alerts_total{{feature="{feature}",state="{state}"}}'
            assert sum(sum_samples(text, sample) for text in expositions) == count, sample
        client = redis.Redis.from_url(drift_env["REDIS_URL"])
        status = drift_status(client, drift_env["CHURN_REDIS_NAMESPACE"])
        assert status.raised() == []
        for text in expositions:
            assert all(
                sum_samples(text, f'churn_drift_alert{{feature="{feature}"}}') == 0
                for feature in status.alerts
            )
