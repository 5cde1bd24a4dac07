"""How the running worker scores (real Kafka, Redis and worker process): silence
raises risk, hysteresis stops flapping, a replay publishes what the live run did,
and a new model is picked up while a tampered one is refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from aiokafka.partitioner import DefaultPartitioner

from feature_store.offline import History, features_as_of
from schemas import Order, topics
from scoring.artifact import MODEL_FILE, load_model
from scoring.families import LIGHTGBM, LINEAR, XGBOOST
from scoring.risk import RiskPolicy
from simulator.history import generate_history
from stream_app.kafka_admin import ensure_topics
from tests.support import (
    ROOT,
    Worker,
    consume,
    encode,
    optional_module,
    produce,
    train_soft_model,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def partition_of(key: str, partitions: int = 4) -> int:
    every = list(range(partitions))
    return int(DefaultPartitioner()(key.encode(), every, every))


def changes_of(kafka: str, prefix: str, count: int, timeout: float = 60) -> list[dict]:
    messages = consume(kafka, [prefix + topics.CHURN_RISK], lambda m: len(m) >= count, timeout)
    return [json.loads(m.value()) for m in messages]


@pytest.fixture
def soft_recency_models(tmp_path: Path) -> Path:
    return train_soft_model(tmp_path / "models", "recency_days", 5, 55, "soft-recency")


@pytest.mark.parametrize("family", [LIGHTGBM, LINEAR, XGBOOST])
def test_a_customer_who_goes_quiet_moves_to_medium_then_high_by_inactivity(
    worker_env: dict[str, str], kafka_bootstrap: str, tmp_path: Path, family: str
) -> None:
    # Each family the artifact can hold, served by a real worker: the same changes, and
    # reasons from its own exact contributions.
    if family == XGBOOST:
        optional_module("xgboost", "xgboost")
    version = f"soft-recency-{family}"
    models = train_soft_model(tmp_path / "models", "recency_days", 5, 55, version, family)
    quiet = "QUIET"
    # A regular customer on the same partition moves that partition's event time on.
    pacer = next(f"P{i}" for i in range(1000) if partition_of(f"P{i}") == partition_of(quiet))
    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    worker = Worker({**worker_env, "CHURN_MODELS_DIR": str(models)}, tmp_path / "w")
    worker.start()
    try:
        # Event time only moves with events: the pacer's last order, in a batch after
        # the quiet customer was heard of, carries the partition past 45 days.
        first = [Order("Q1", quiet, day(0), 40.0, "card", "delivered")] + [
            Order(f"P{n}", pacer, day(n), 40.0, "card", "delivered") for n in range(0, 41, 8)
        ]
        produce(
            kafka_bootstrap, [(prefix + topics.ORDERS, o.customer_id, encode(o)) for o in first]
        )
        wait_until_known(worker, quiet)
        last = Order("P48", pacer, day(48), 40.0, "card", "delivered")
        produce(kafka_bootstrap, [(prefix + topics.ORDERS, pacer, encode(last))])
        changes = changes_of(kafka_bootstrap, prefix, 2)
    finally:
        worker.stop()
    assert [(c["customer_id"], c["previous_risk"], c["risk"]) for c in changes] == [
        (quiet, "LOW", "MEDIUM"),
        (quiet, "MEDIUM", "HIGH"),
    ]
    assert {c["model_version"] for c in changes} == {version}
    assert all(
        c["trigger"]
        == {
            "kind": "inactivity",
            "topic": None,
            "partition": None,
            "offset": None,
            "event_id": None,
        }
        for c in changes
    )
    # Scored as of the due instants: 30 and 45 days of silence.
    assert [c["event_time"][:19] for c in changes] == [
        day(30).isoformat()[:19],
        day(45).isoformat()[:19],
    ]
    assert changes[1]["reasons"][0]["feature"] == "recency_days"


def test_hysteresis_stops_a_customer_at_a_threshold_from_flapping(
    worker_env: dict[str, str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    models = train_soft_model(tmp_path / "models", "avg_order_value", 0, 100, "soft-aov")
    model = load_model(models)
    amounts = [72.0, 62.0, 82.0, 58.0, 86.0, 60.0]  # average order value hovers around 70
    orders = [
        Order(f"H{i}", "HOVER", day(i), amount, "card", "delivered")
        for i, amount in enumerate(amounts)
    ]
    # What the model says after each order (the offline path, same definitions).
    history = History.from_events([])
    probabilities = []
    for i in range(len(orders)):
        history = History.from_events([(topics.ORDERS, o) for o in orders[: i + 1]])
        features = features_as_of(history, pd.Series([orders[i].order_ts.timestamp()], ["HOVER"]))
        probabilities.append(float(model.predict(features.to_numpy())[0]))

    def categories(margin: float) -> list[str]:
        policy, risk, seen = RiskPolicy(model.thresholds, margin), None, []
        for p in probabilities:
            risk = policy.category(p, risk)
            seen.append(risk)
        return seen

    def changes(levels: list[str]) -> int:
        return sum(1 for a, b in zip([None, *levels], levels, strict=False) if a != b)

    assert changes(categories(0.0)) >= 4, f"the test needs a hovering score: {probabilities}"
    assert changes(categories(0.05)) == 1

    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    worker = Worker(
        {**worker_env, "CHURN_MODELS_DIR": str(models), "CHURN_HYSTERESIS": "0.05"},
        tmp_path / "w",
    )
    worker.start()
    try:
        produce(kafka_bootstrap, [(prefix + topics.ORDERS, "HOVER", encode(o)) for o in orders])
        published = changes_of(kafka_bootstrap, prefix, 1)
        time.sleep(3)  # time for any flap to be published
        published = changes_of(kafka_bootstrap, prefix, 99, timeout=5)
    finally:
        worker.stop()
    assert [(c["previous_risk"], c["risk"]) for c in published] == [(None, "HIGH")]


@pytest.mark.parametrize("rate", [None, 600], ids=["backlog", "paced"])
def test_a_replay_and_a_live_run_publish_the_same_changes_byte_for_byte(
    worker_env: dict[str, str],
    kafka_bootstrap: str,
    soft_recency_models: Path,
    tmp_path: Path,
    rate: int | None,
) -> None:
    # Every input topic, profiles too: the worker must apply each customer's events
    # in one order however Kafka interleaves the topics (a backlog read side by side,
    # or events arriving as they happen).
    history = generate_history(1500, seed=5, days=200)
    events = list(history.events_in_time_order())
    assert len(events) > 12_000
    events_file = tmp_path / "history.jsonl"
    events_file.write_text(
        "".join(
            json.dumps({"topic": t, "key": e.customer_id, "value": json.loads(encode(e))}) + "\n"
            for t, e in events
        )
    )
    env = {**os.environ, **worker_env, "CHURN_MODELS_DIR": str(soft_recency_models)}
    replayed_file = tmp_path / "replayed.jsonl"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "stream_app",
            "replay",
            str(events_file),
            "--out",
            str(replayed_file),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )
    replayed = [json.loads(line) for line in replayed_file.read_text().splitlines()]
    assert len(replayed) > 1000
    assert any(c["trigger"]["kind"] == "inactivity" for c in replayed)

    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    messages = [(prefix + t, e.customer_id, encode(e)) for t, e in events]
    worker = Worker(
        {**worker_env, "CHURN_MODELS_DIR": str(soft_recency_models), "CHURN_MAX_IDLE_MS": "1000"},
        tmp_path / "w",
    )
    if rate is None:  # the whole history waits in Kafka before the worker starts
        ensure_topics({"bootstrap.servers": kafka_bootstrap}, 4, prefix)
        produce(kafka_bootstrap, messages)
        worker.start()
    else:  # produced as it happens, while the worker runs
        worker.start()
        for start in range(0, len(messages), rate // 10):
            began = time.monotonic()
            produce(kafka_bootstrap, messages[start : start + rate // 10])
            time.sleep(max(0.0, 0.1 - (time.monotonic() - began)))
    try:
        live = changes_of(kafka_bootstrap, prefix, len(replayed), timeout=180)
        time.sleep(2)  # time for anything extra to be published
        live = changes_of(kafka_bootstrap, prefix, len(replayed) + 1, timeout=10)
    finally:
        worker.stop()

    def contents(changes: list[dict]) -> dict[str, str]:
        return {
            c["event_id"]: json.dumps({k: v for k, v in c.items() if k != "scored_at"})
            for c in changes
        }

    assert len(live) == len(replayed)
    assert contents(live) == contents(replayed)


def test_a_new_model_is_picked_up_and_a_tampered_one_refused_while_serving_goes_on(
    worker_env: dict[str, str], kafka_bootstrap: str, soft_recency_models: Path, tmp_path: Path
) -> None:
    models = tmp_path / "served"
    shutil.copytree(soft_recency_models, models)
    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    worker = Worker(
        {**worker_env, "CHURN_MODELS_DIR": str(models), "CHURN_MODEL_POLL_SECONDS": "1"},
        tmp_path / "w",
    )
    worker.start()
    try:
        assert json.loads(worker.get("/health")[1])["model_version"] == "soft-recency"
        train_soft_model(models, "recency_days", 5, 55, "soft-recency-v2")
        wait_for_version(worker, "soft-recency-v2")

        train_soft_model(models, "recency_days", 5, 55, "tampered-v3")
        with (models / "tampered-v3" / MODEL_FILE).open("a") as model_file:
            model_file.write("\n# changed after training\n")
        time.sleep(3)  # several polls
        assert json.loads(worker.get("/health")[1])["model_version"] == "soft-recency-v2"
        assert b'churn_model_reloads_total{outcome="refused"} 1.0' in worker.get("/metrics")[1]
        assert "refused tampered-v3" in worker.log()
        assert "does not match its checksum" in worker.log()

        # Serving went on, with the last good model: 60 quiet days, then an order.
        orders = [
            Order("M1", "MODEL", day(0), 10.0, "card", "delivered"),
            Order("M2", "MODEL", day(60), 10.0, "card", "delivered"),
        ]
        produce(kafka_bootstrap, [(prefix + topics.ORDERS, "MODEL", encode(o)) for o in orders])
        changes = changes_of(kafka_bootstrap, prefix, 3)
    finally:
        worker.stop()
    assert [(c["risk"], c["model_version"]) for c in changes] == [
        ("MEDIUM", "soft-recency-v2"),
        ("HIGH", "soft-recency-v2"),
        ("LOW", "soft-recency-v2"),
    ]


def wait_until_known(worker: Worker, customer_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while worker.get(f"/customers/{customer_id}")[0] != 200:
        assert time.monotonic() < deadline, f"{customer_id} never seen:\n{worker.log()[-2000:]}"
        time.sleep(0.2)


def wait_for_version(worker: Worker, version: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = worker.get("/health")
        if status == 200 and json.loads(body)["model_version"] == version:
            return
        time.sleep(0.3)
    raise AssertionError(f"model {version} never served:\n{worker.log()[-2000:]}")


def test_lookup_of_an_unknown_customer_is_a_404(worker: Worker) -> None:
    worker.start()
    status, body = worker.get("/customers/NOBODY")
    assert status == 404
    assert json.loads(body)["error"] == "unknown customer NOBODY"
