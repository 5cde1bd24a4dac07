"""The daily report on real workers: two workers in one consumer group score a known
stream while one of them is stopped (SIGTERM) and started again, and the report of
the day counts exactly what was streamed, exactly the changes users read on
`churn-risk`, and the latency of every input: it covers every worker and survives
restarts, because each worker adds to the counters with its commits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import redis

from feature_store.redis_store import RedisStateStore
from schemas import topics
from scoring.daily import DailyCounts, tally_name
from simulator.history import generate_history
from tests.integration.outputs import PARTITIONS, everything_on, stream_in_background
from tests.support import ROOT, Worker, produce

pytestmark = pytest.mark.integration

RATE = 700  # events/s: the stream lasts ~20 s, long enough to restart a worker inside it
APPLIED = 'churn_events_total{outcome="applied"}'
NOT_JSON = [b"{not json", b"[1, 2", b'{"order_id": 5}']


def today() -> date:
    return datetime.now(UTC).date()


def counted(store: RedisStateStore, days: list[date]) -> DailyCounts:
    """The counters of `days` added up (the test may run across midnight, UTC)."""
    fields: Counter[str] = Counter()
    for day in days:
        fields.update(store.tallies(range(PARTITIONS), tally_name(day)))
    return DailyCounts.from_fields(days[-1], fields)


def report(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_app", "report", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_days_report_counts_what_every_worker_did_through_a_restart(
    worker_env: dict[str, str], kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    events = list(generate_history(1000, seed=31).events_in_time_order())
    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    store = RedisStateStore(redis.Redis.from_url(redis_url), worker_env["CHURN_REDIS_NAMESPACE"])
    first, second = Worker(worker_env, tmp_path / "a.log"), Worker(worker_env, tmp_path / "b.log")
    days = [today()]
    try:
        first.start()  # creates the topics
        second.start()
        # Three messages that cannot be decoded: dead letters, counted on `orders`.
        produce(kafka_bootstrap, [(prefix + topics.ORDERS, "C0000001", v) for v in NOT_JSON])
        streamer, streamed = stream_in_background(kafka_bootstrap, prefix, events, RATE)
        deadline = time.monotonic() + 60
        while second.metric(APPLIED) == 0:  # it owns partitions and has committed
            assert time.monotonic() < deadline, f"the second worker did nothing:\n{second.log()}"
            time.sleep(0.5)
        second.stop()  # SIGTERM, mid-stream
        assert second.process is not None and second.process.returncode == 0, second.log()
        assert not streamed.is_set(), "the stream ended before the restart"
        second.start()
        streamer.join(120)
        assert streamed.is_set()

        expected = Counter(topic for topic, _ in events) + Counter({topics.ORDERS: len(NOT_JSON)})
        deadline = time.monotonic() + 120
        while sum((counts := counted(store, days)).events.values()) < expected.total():
            assert time.monotonic() < deadline, f"counted {counts.events} of {expected}"
            days = sorted({*days, today()})
            time.sleep(0.5)
        assert first.metric(APPLIED) > 0 and second.metric(APPLIED) > 0
    finally:
        first.stop()
        second.stop()
    counts = counted(store, days)  # nothing more comes: every input is committed
    changes = {
        c["event_id"]: c
        for c in (
            json.loads(m.value())
            for m in everything_on(kafka_bootstrap, prefix + topics.CHURN_RISK)
        )
    }
    high = {
        json.loads(m.value())["event_id"]
        for m in everything_on(kafka_bootstrap, prefix + topics.CHURN_RISK_HIGH)
    }

    assert counts.events == dict(expected)
    assert sum(counts.outcomes.values()) == expected.total()
    assert counts.outcomes["dead_letter"] == len(NOT_JSON) == counts.dead_letters[topics.ORDERS]
    assert counts.changes == Counter(
        (c["previous_risk"] or "new", c["risk"]) for c in changes.values()
    )
    into_high = {i for i, c in changes.items() if c["risk"] == "HIGH"}
    held_out = {i for i in into_high if changes[i]["held_out"]}
    assert counts.into_high == len(into_high) and counts.held_out_high == len(held_out)
    assert high == into_high - held_out and counts.sent_high == len(high) > 0  # for marketing
    assert counts.models == {"recency-v1": counts.scores} and counts.scores >= len(events) / 2
    assert counts.churn_rate is not None and 0 < counts.churn_rate < 1
    assert sum(counts.latency.values()) == expected.total()  # every input has a broker time
    p50, p95, p99 = (counts.latency_quantile(q) for q in (0.5, 0.95, 0.99))
    assert p50 is not None and p95 is not None and p99 is not None
    assert 0 < p50 <= p95 <= p99 < 60, (p50, p95, p99)

    html_path = tmp_path / "report.html"
    printed = report(worker_env, "--date", days[-1].isoformat(), "--out", str(html_path))
    assert printed.returncode == 0, printed.stderr
    if len(days) == 1:
        total = re.search(r"^events by topic +([\d,]+)$", printed.stdout, re.MULTILINE)
        assert total and total.group(1) == f"{expected.total():,}", printed.stdout
    assert "drift monitor: no state recorded" in printed.stdout
    assert html_path.read_text().count('src="data:image/png;base64,') == 4

    empty = report(worker_env, "--date", "2000-01-01")
    assert empty.returncode == 1
    assert "no counts for 2000-01-01" in empty.stderr
