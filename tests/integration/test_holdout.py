"""The campaign's holdout on a live worker: held-out customers' changes into HIGH are
flagged on `churn-risk` and never reach `churn-risk-high`; once their horizon has
passed in event time, the churn of each arm is counted exactly, and shown by
`python -m stream_app performance` and on /metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas import Order, topics
from scoring.risk import Holdout
from stream_app.partitioning import partition_of
from tests.integration.outputs import PARTITIONS, everything_on
from tests.support import ROOT, Worker, encode, produce, train_soft_model, wait_until

pytestmark = pytest.mark.integration

HOLDOUT = Holdout(0.5, "live-test")
CUSTOMERS = [f"C{i}" for i in range(40)]
START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=120)


def order(order_id: str, customer: str, days: float) -> tuple[str, str, bytes]:
    event = Order(order_id, customer, START + timedelta(days=days), 40.0, "card", "delivered")
    return topics.ORDERS, customer, encode(event)


def the_shop() -> list[tuple[str, str, bytes]]:
    """Every customer orders on day 0 and goes quiet: the recency model has them HIGH
    45 days in. Those of even number are back on day 55, within the 30 days after:
    retained; the others churned. A regular customer in each partition, ordering every
    other day, moves its stream time on, to day 100, past every horizon."""
    messages = [order(f"O-{c}", c, 0) for c in CUSTOMERS]
    messages += [order(f"O2-{c}", c, 55) for c in CUSTOMERS[::2]]
    clocks = {partition_of(f"K{n}", PARTITIONS): f"K{n}" for n in range(100)}
    assert len(clocks) == PARTITIONS
    for clock in clocks.values():
        messages += [order(f"{clock}-{day}", clock, day) for day in range(0, 101, 2)]
    return sorted(messages, key=lambda m: json.loads(m[2])["order_ts"])


def test_held_out_customers_are_flagged_not_sent_to_marketing_and_measure_the_uplift(
    worker_env: dict[str, str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    models = train_soft_model(
        tmp_path / "models", "recency_days", 5, 55, "soft-recency", horizon_days=30
    )
    env = {
        **worker_env,
        "CHURN_MODELS_DIR": str(models),
        "CHURN_HOLDOUT_SHARE": str(HOLDOUT.share),
        "CHURN_HOLDOUT_SALT": HOLDOUT.salt,
        "CHURN_PERFORMANCE_SAMPLE": "1",
        "CHURN_PERFORMANCE_REFRESH_SECONDS": "1",
    }
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    held_out = [c for c in CUSTOMERS if HOLDOUT.held_out(c)]
    treated = [c for c in CUSTOMERS if not HOLDOUT.held_out(c)]
    churned = set(CUSTOMERS[1::2])
    try:
        prefix = worker_env["CHURN_TOPIC_PREFIX"]
        produce(kafka_bootstrap, [(prefix + t, k, v) for t, k, v in the_shop()])
        figure = 'churn_campaign_uplift{cohort="all",figure="%s"}'
        wait_until(
            lambda: worker.metric(figure % "held_out") + worker.metric(figure % "treated") == 40,
            worker,
            "every change into HIGH decided, on /metrics",
            90,
        )
        shown = worker.exposition()
        performance = subprocess.run(
            [sys.executable, "-m", "stream_app", "performance"],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        worker.stop()

    published = everything_on(kafka_bootstrap, prefix + topics.CHURN_RISK)
    changes = [json.loads(m.value()) for m in published]
    into_high = [c for c in changes if c["risk"] == "HIGH"]
    assert sorted(c["customer_id"] for c in into_high) == sorted(CUSTOMERS)
    assert all(c["held_out"] == HOLDOUT.held_out(c["customer_id"]) for c in changes)
    sent = everything_on(kafka_bootstrap, prefix + topics.CHURN_RISK_HIGH)
    assert sorted(json.loads(m.value())["customer_id"] for m in sent) == sorted(treated)

    def sample(name: str) -> float:
        found = re.search(rf"^{re.escape(figure % name)} (\S+)$", shown, re.M)
        assert found, f"no {name} in /metrics"
        return float(found.group(1))

    assert held_out and treated
    rate_t = len(churned.intersection(treated)) / len(treated)
    rate_h = len(churned.intersection(held_out)) / len(held_out)
    assert sample("treated") == len(treated) and sample("held_out") == len(held_out)
    assert sample("treated_churn_rate") == pytest.approx(rate_t)
    assert sample("held_out_churn_rate") == pytest.approx(rate_h)
    assert sample("uplift") == pytest.approx(rate_h - rate_t)
    assert sample("uplift_low") < rate_h - rate_t < sample("uplift_high")

    assert performance.returncode == 0, performance.stderr
    row = re.search(r"^all +(\d+) +(\d+) +\S+ +(\d+) +(\d+) ", performance.stdout, re.M)
    assert row, performance.stdout
    assert [int(n) for n in row.groups()] == [
        len(treated),
        len(churned.intersection(treated)),
        len(held_out),
        len(churned.intersection(held_out)),
    ]
