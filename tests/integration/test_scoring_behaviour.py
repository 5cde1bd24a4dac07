"""How the running worker scores (real Kafka, Redis and worker process): silence
raises risk, hysteresis stops flapping, a replay publishes what the live run did,
and a new model is picked up while a tampered one is refused."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pandas as pd
import pytest
import redis
from aiokafka.partitioner import DefaultPartitioner

from feature_store.offline import History, features_as_of
from feature_store.redis_store import RedisFeatureStore
from schemas import Order, SupportTicket, topics
from scoring.artifact import MODEL_FILE, load_model
from scoring.pipeline import InputMessage, Scorer
from scoring.risk import RiskPolicy
from simulator.history import generate_history
from tests.support import ROOT, Worker, consume, encode, produce, train_soft_model

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


def test_a_customer_who_goes_quiet_moves_to_medium_then_high_by_inactivity(
    worker_env: dict[str, str], kafka_bootstrap: str, soft_recency_models: Path, tmp_path: Path
) -> None:
    quiet = "QUIET"
    # A regular customer on the same partition moves that partition's event time on.
    pacer = next(f"P{i}" for i in range(1000) if partition_of(f"P{i}") == partition_of(quiet))
    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    worker = Worker({**worker_env, "CHURN_MODELS_DIR": str(soft_recency_models)}, tmp_path / "w")
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


def test_a_replay_publishes_the_same_changes_with_the_same_ids_as_the_live_run(
    worker_env: dict[str, str], kafka_bootstrap: str, soft_recency_models: Path, tmp_path: Path
) -> None:
    history = generate_history(150, seed=5, days=200)
    orders = [(t, e) for t, e in history.events_in_time_order() if t == topics.ORDERS]
    events_file = tmp_path / "orders.jsonl"
    events_file.write_text(
        "".join(
            json.dumps({"topic": t, "key": e.customer_id, "value": json.loads(encode(e))}) + "\n"
            for t, e in orders
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
    assert len(replayed) > 20
    assert any(c["trigger"]["kind"] == "inactivity" for c in replayed)

    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    worker = Worker({**worker_env, "CHURN_MODELS_DIR": str(soft_recency_models)}, tmp_path / "w")
    worker.start()
    try:
        produce(kafka_bootstrap, [(prefix + t, e.customer_id, encode(e)) for t, e in orders])
        live = changes_of(kafka_bootstrap, prefix, len(replayed), timeout=120)
    finally:
        worker.stop()

    def by_customer(changes: list[dict]) -> dict[str, list[tuple]]:
        grouped: dict[str, list[tuple]] = {}
        for c in changes:
            grouped.setdefault(c["customer_id"], []).append(
                (c["event_id"], c["previous_risk"], c["risk"], c["event_time"], c["trigger"])
            )
        return grouped

    assert by_customer(live) == by_customer(replayed)
    assert [c["probability"] for c in live if c["customer_id"] == live[0]["customer_id"]] == [
        c["probability"] for c in replayed if c["customer_id"] == live[0]["customer_id"]
    ]


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


def test_a_backlog_whose_tickets_run_ahead_of_its_orders_raises_no_false_silence(
    redis_client: redis.Redis, namespace: str, soft_recency_models: Path
) -> None:
    # A consumer reads the topics side by side: here the partition's tickets reach day
    # 60 while the regular customer's orders, one every 5 days, are still unread.
    model = load_model(soft_recency_models)
    regular, other = "REGULAR", "OTHER"
    partition = partition_of(regular)  # the other customer is put on it too
    orders = [Order(f"R{n}", regular, day(n), 40.0, "card", "delivered") for n in range(0, 61, 5)]
    tickets = [SupportTicket(f"T{n}", other, day(n), "delivery") for n in (0, 60)]

    def message(topic: str, offset: int, event: Order | SupportTicket) -> InputMessage:
        return InputMessage(topic, partition, offset, event.customer_id.encode(), encode(event))

    first = [message(topics.ORDERS, 0, orders[0])] + [
        message(topics.SUPPORT_TICKETS, i, t) for i, t in enumerate(tickets)
    ]
    rest = [message(topics.ORDERS, i, o) for i, o in enumerate(orders[1:], start=1)]

    def inactivity_changes(lagging_first: set[tuple[str, int]], run: str) -> list[str]:
        store = RedisFeatureStore(redis_client, f"{namespace}:{run}")
        scorer = Scorer(store, lambda: model)
        found = []
        for batch, lagging in ((first, lagging_first), (rest, set())):
            outcome = scorer.process(batch, lagging)
            scorer.commit(outcome)
            found += [c.risk for c in outcome.changes if c.trigger.kind == "inactivity"]
        return found

    assert inactivity_changes({(topics.ORDERS, partition)}, "behind-known") == []
    # The control: told nothing, the core takes the tickets' time for the partition's.
    assert inactivity_changes(set(), "behind-unknown") != []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_changes_do_not_depend_on_how_partitions_are_interleaved_into_batches(
    redis_client: redis.Redis, namespace: str, soft_recency_models: Path, seed: int
) -> None:
    # A live consumer gets each partition in chunks of its own size, so one batch may
    # run weeks ahead of another partition's; a replay reads the file in time order.
    model = load_model(soft_recency_models)
    history = generate_history(150, seed=5, days=200)
    by_partition: dict[int, list[InputMessage]] = {p: [] for p in range(4)}
    for topic, event in history.events_in_time_order():
        if topic == topics.ORDERS:
            partition = partition_of(event.customer_id)
            messages = by_partition[partition]
            key = event.customer_id.encode()
            messages.append(InputMessage(topic, partition, len(messages), key, encode(event)))
    in_time_order = sorted(
        (m for ms in by_partition.values() for m in ms),
        key=lambda m: msgspec.json.decode(m.value, type=Order).order_ts,
    )
    rng = random.Random(seed)
    interleaved: list[list[InputMessage]] = []
    next_of = dict.fromkeys(by_partition, 0)
    while any(next_of[p] < len(ms) for p, ms in by_partition.items()):
        batch: list[InputMessage] = []
        for _ in range(rng.randint(1, 4)):
            partition, size = rng.randrange(4), rng.randint(1, 60)
            batch += by_partition[partition][next_of[partition] : next_of[partition] + size]
            next_of[partition] += size
        interleaved.append(batch)

    def changes(batches: list[list[InputMessage]], run: str) -> list[tuple]:
        scorer = Scorer(RedisFeatureStore(redis_client, f"{namespace}:{run}"), lambda: model)
        found = []
        for batch in batches:
            outcome = scorer.process(batch)
            scorer.commit(outcome)
            found += [
                (c.customer_id, c.event_id, c.risk, c.event_time, c.trigger)
                for c in outcome.changes
            ]
        return sorted(found, key=repr)

    expected = changes([in_time_order[i : i + 500] for i in range(0, len(in_time_order), 500)], "a")
    assert any(trigger.kind == "inactivity" for *_, trigger in expected)
    assert changes(interleaved, "b") == expected
