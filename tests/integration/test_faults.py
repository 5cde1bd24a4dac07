"""Faults a production worker meets, each proven by reading what users read: the
changes on `churn-risk` (every id once, none missing, equal to a replay) and the
features in the store (equal to the offline computation).

- the broker stalls for 45 s in the middle of a publish, then Redis dies and comes
  back from an AOF that lost its last writes;
- a worker stops (SIGSTOP) past its session timeout while another takes its
  partitions over, then resumes;
- the worker is stopped (SIGTERM) while Redis is down;
- Redis refuses writes, full (maxmemory) and then read-only (a replica), while a
  batch waits to commit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient

from feature_store.keys import Keys
from feature_store.redis_store import RedisStateStore
from schemas import Order, topics
from simulator.history import generate_history
from stream_app.kafka_admin import ensure_topics
from tests.integration.outputs import (
    PARTITIONS,
    assert_exactly_once,
    assert_features_exact,
    assert_worklist,
    consume_all_changes,
    replayed_changes,
    stream_in_background,
)
from tests.support import (
    ENGINES,
    LONG_ON_CONFLUENT,
    RedisServer,
    Worker,
    consume,
    encode,
    local_broker_pid,
    produce,
    train_soft_model,
)

pytestmark = pytest.mark.integration

BROKER_STALL_SECONDS = 45


def wait_for_batch_in_flight(client: redis.Redis, namespace: str, timeout: float = 30) -> None:
    """Until some partition has published (or is publishing) a batch not yet committed."""
    keys = Keys(namespace)
    deadline = time.monotonic() + timeout
    while not any(client.hexists(keys.meta(p), "flight") for p in range(PARTITIONS)):
        assert time.monotonic() < deadline, "no batch was ever in flight"
        time.sleep(0.001)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return train_soft_model(tmp_path / "models", "recency_days", 5, 55, "soft-recency")


def first_and_fifty_days_later(customer: str) -> tuple[bytes, bytes]:
    """A customer's first order, and one 50 days later: the later one's batch publishes
    QUIET_THEN_BACK (30 and 45 quiet days, then the order)."""
    t0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
    first = Order("O1", customer, t0, 40.0, "card", "delivered")
    later = Order("O2", customer, t0 + timedelta(days=50), 40.0, "card", "delivered")
    return encode(first), encode(later)


QUIET_THEN_BACK = [
    ("LOW", "MEDIUM", "inactivity"),
    ("MEDIUM", "HIGH", "inactivity"),
    ("HIGH", "LOW", "event"),
]


def transitions(changes: list[dict]) -> list[tuple[str, str, str]]:
    return [(c["previous_risk"], c["risk"], c["trigger"]["kind"]) for c in changes]


@pytest.mark.parametrize("engine", ["faust", LONG_ON_CONFLUENT])
def test_nothing_is_lost_or_doubled_when_the_broker_stalls_and_redis_loses_its_last_writes(
    worker_env: dict[str, str], kafka_bootstrap: str, models: Path, tmp_path: Path, engine: str
) -> None:
    broker = local_broker_pid()
    own = RedisServer(tmp_path / "redis")
    own.start()
    client = redis.Redis.from_url(own.url)
    namespace, prefix = worker_env["CHURN_REDIS_NAMESPACE"], worker_env["CHURN_TOPIC_PREFIX"]
    env = {
        **worker_env,
        "REDIS_URL": own.url,
        "CHURN_MODELS_DIR": str(models),
        "CHURN_MAX_IDLE_MS": "1000",
        "CHURN_ENGINE": engine,
    }
    events = list(generate_history(4000, seed=21).events_in_time_order())
    # A backlog: the worker always has fetched input to process and publish.
    ensure_topics({"bootstrap.servers": kafka_bootstrap}, PARTITIONS, prefix)
    produce(kafka_bootstrap, [(prefix + t, e.customer_id, encode(e)) for t, e in events])
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        # Well into the backlog, so that the AOF cut below loses batches' commits.
        wait_until(
            lambda: worker.metric("churn_transactions_total") >= 40, "no batches", worker, 90
        )
        wait_for_batch_in_flight(client, namespace)
        os.kill(broker, signal.SIGSTOP)  # mid-publish: the batch waits for its acks
        time.sleep(BROKER_STALL_SECONDS)
        os.kill(broker, signal.SIGCONT)
        time.sleep(3)
        own.kill()  # the machine dies: what was not fsynced is lost
        cut = own.truncate_aof(keep=0.6)
        own.start()
        try:
            live = consume_all_changes(
                kafka_bootstrap, prefix, store=RedisStateStore(client, namespace)
            )
        except AssertionError as stuck:
            ends = worker.log()[-5000:]
            raise AssertionError(f"{stuck}\nthe worker's log ends:\n{ends}") from None
    finally:
        os.kill(broker, signal.SIGCONT)
        worker.stop()
    log = worker.log()
    assert "outputs not yet acknowledged by Kafka" in log  # the stall hit a publish
    # The lost writes were noticed: by the commit they made diverge, or, when the
    # stall's rebalance came first, by the claim that found the store behind Kafka.
    assert "the store lost writes" in log or "was committed in Kafka, not in the store" in log
    store = RedisStateStore(client, namespace)
    counts = assert_exactly_once(live, replayed_changes(events, models, tmp_path), store)
    listed = assert_worklist(live, store)
    print(f"AOF bytes cut: {cut}; changes: {counts}; the work-list: {listed}")
    assert_features_exact(store, events)
    own.kill()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_worker_stopped_past_its_session_timeout_cannot_commit_when_it_resumes(
    worker_env: dict[str, str],
    kafka_bootstrap: str,
    redis_url: str,
    models: Path,
    tmp_path: Path,
    engine: str,
) -> None:
    namespace, prefix = worker_env["CHURN_REDIS_NAMESPACE"], worker_env["CHURN_TOPIC_PREFIX"]
    env = {
        **worker_env,
        "CHURN_MODELS_DIR": str(models),
        "CHURN_MAX_IDLE_MS": "1000",
        "CHURN_ENGINE": engine,
    }
    client = redis.Redis.from_url(redis_url)
    store = RedisStateStore(client, namespace)
    events = list(generate_history(1500, seed=22, days=200).events_in_time_order())
    stalled, other = Worker(env, tmp_path / "a.log"), Worker(env, tmp_path / "b.log")
    stalled.start()
    other.start()

    # Recorded offsets, sampled all along: none may ever move back.
    went_back: list[str] = []
    sampling = threading.Event()

    def sample() -> None:
        last: dict[tuple[int, str], int] = {}
        while not sampling.is_set():
            for p in range(PARTITIONS):
                for topic, offset in store.offsets(p).items():
                    if offset < last.get((p, topic), -1):
                        went_back.append(f"{topic}-{p}: {last[(p, topic)]} -> {offset}")
                    last[(p, topic)] = offset
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    streamer, _ = stream_in_background(kafka_bootstrap, prefix, events, rate=250)
    try:
        time.sleep(8)  # both workers own partitions and process
        keys = Keys(namespace)
        mine = stalled_partitions(stalled, other)
        assert mine, "the stalled worker owned no partition"
        assert stalled.process is not None
        deadline = time.monotonic() + 30
        while True:  # stopped with a batch begun and not committed
            while not any(client.hexists(keys.meta(p), "flight") for p in mine):
                assert time.monotonic() < deadline, "the stalled worker never had a batch in flight"
                time.sleep(0.001)
            stalled.process.send_signal(signal.SIGSTOP)
            time.sleep(0.05)  # a commit already sent when the signal landed is done by now
            if any(client.hexists(keys.meta(p), "flight") for p in mine):
                break
            stalled.process.send_signal(signal.SIGCONT)  # it had committed: try again
        time.sleep(15)  # past the 6 s session timeout: the other worker takes over
        stalled.process.send_signal(signal.SIGCONT)
        time.sleep(10)
        fenced = stalled.metric("churn_fenced_batches_total")
        streamer.join(300)
        live = consume_all_changes(kafka_bootstrap, prefix, store=store)
    finally:
        if stalled.process is not None and stalled.process.poll() is None:
            stalled.process.send_signal(signal.SIGCONT)
        sampling.set()
        stalled.stop()
        other.stop()
        streamer.join(300)
    assert fenced >= 1, "the resumed worker's commit was not refused"
    assert "was claimed by another worker" in stalled.log()
    assert not went_back, went_back
    counts = assert_exactly_once(live, replayed_changes(events, models, tmp_path), store)
    print(f"fenced batches: {fenced:g}; changes: {counts}")
    assert_features_exact(store, events)


def stalled_partitions(stalled: Worker, other: Worker) -> set[int]:
    """The partitions the first worker owns now: those the other did not claim last."""
    claims = re.findall(r"claimed partition (\d+)", other.log())
    return set(range(PARTITIONS)) - {int(p) for p in claims}


def test_a_batch_caught_in_a_redis_outage_at_sigterm_is_published_after_a_restart(
    worker_env: dict[str, str], kafka_bootstrap: str, models: Path, tmp_path: Path
) -> None:
    own = RedisServer(tmp_path / "redis")
    own.start()
    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    env = {**worker_env, "REDIS_URL": own.url, "CHURN_MODELS_DIR": str(models)}
    first, later = first_and_fifty_days_later("OUTAGE")
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        produce(kafka_bootstrap, [(prefix + topics.ORDERS, "OUTAGE", first)])
        deadline = time.monotonic() + 30
        while worker.get("/customers/OUTAGE")[0] != 200:
            assert time.monotonic() < deadline, worker.log()[-2000:]
            time.sleep(0.2)
        own.kill()
        produce(kafka_bootstrap, [(prefix + topics.ORDERS, "OUTAGE", later)])
        deadline = time.monotonic() + 30
        while "transient error" not in worker.log():
            assert time.monotonic() < deadline, "the worker never met the outage"
            time.sleep(0.2)
        assert worker.process is not None
        worker.process.terminate()
        worker.process.wait(30)  # it stops by itself, without acknowledging the batch
        assert consume(kafka_bootstrap, [prefix + topics.CHURN_RISK], lambda m: False, 3) == []

        own.start()
        worker = Worker(env, tmp_path / "worker2.log")
        worker.start()
        changes = consume(
            kafka_bootstrap, [prefix + topics.CHURN_RISK], lambda m: len(m) >= 3, timeout=60
        )
    finally:
        worker.stop()
        own.kill()
    assert transitions([json.loads(m.value()) for m in changes]) == QUIET_THEN_BACK


def wait_until(
    condition: Callable[[], bool], what: str, worker: Worker, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}; worker log: {worker.log()[-2000:]}"
        time.sleep(0.2)


def test_a_worker_whose_redis_is_full_then_read_only_stays_up_and_resumes_when_it_takes_writes(
    worker_env: dict[str, str], kafka_bootstrap: str, models: Path, tmp_path: Path
) -> None:
    own = RedisServer(tmp_path / "redis")
    own.start()
    admin = redis.Redis.from_url(own.url)
    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    env = {**worker_env, "REDIS_URL": own.url, "CHURN_MODELS_DIR": str(models)}
    first, later = first_and_fifty_days_later("REFUSED")
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        produce(kafka_bootstrap, [(prefix + topics.ORDERS, "REFUSED", first)])
        wait_until(lambda: worker.get("/customers/REFUSED")[0] == 200, "first order", worker)
        admin.config_set("maxmemory", 1)  # noeviction (the default): every write refused
        produce(kafka_bootstrap, [(prefix + topics.ORDERS, "REFUSED", later)])
        full = 'churn_store_write_refusals_total{reason="full"}'
        wait_until(lambda: worker.metric(full) >= 2, "no write refused as full", worker)

        admin.config_set("maxmemory", 0)
        admin.replicaof("127.0.0.1", 1)  # a primary that never answers: read-only, data kept
        read_only = 'churn_store_write_refusals_total{reason="read_only"}'
        wait_until(lambda: worker.metric(read_only) >= 2, "no write refused as read-only", worker)
        assert worker.process is not None and worker.process.poll() is None, worker.log()[-2000:]
        # The batch is begun (recorded in Redis) before it is published: refused, so
        # nothing of it is out yet.
        early = consume(kafka_bootstrap, [prefix + topics.CHURN_RISK], lambda m: False, 3)

        admin.replicaof("NO", "ONE")
        # Read for 30 s: a fourth message would be one published twice.
        changes = consume(
            kafka_bootstrap, [prefix + topics.CHURN_RISK], lambda m: len(m) > 3, timeout=30
        )
        assert worker.process.poll() is None, worker.log()[-2000:]
        assert worker.metric('churn_infrastructure_retries_total{system="redis"}') >= 4
    finally:
        worker.stop()
        own.kill()
    assert early == []
    # Published once when Redis took writes again: 30 and 45 quiet days, then day 50.
    values = [json.loads(m.value()) for m in changes]
    assert len({c["event_id"] for c in values}) == len(values) == 3, values
    assert transitions(values) == QUIET_THEN_BACK


def test_a_recreated_input_topic_is_refused_at_the_claim_with_a_message_and_the_worker_stays_up(
    worker_env: dict[str, str], kafka_bootstrap: str, models: Path, tmp_path: Path
) -> None:
    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    env = {**worker_env, "CHURN_MODELS_DIR": str(models)}
    events = list(generate_history(300, seed=23, days=60).events_in_time_order())
    ensure_topics({"bootstrap.servers": kafka_bootstrap}, PARTITIONS, prefix)
    produce(kafka_bootstrap, [(prefix + t, e.customer_id, encode(e)) for t, e in events])
    worker = Worker(env, tmp_path / "before.log")
    worker.start()
    orders = prefix + topics.ORDERS
    try:
        wait_until(lambda: worker.metric("churn_events_total") >= len(events), "busy", worker, 90)
    finally:
        worker.stop()
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.delete_topics([orders])[orders].result()
    wait_until(lambda: orders not in admin.list_topics(timeout=10).topics, "deleted", worker)
    ensure_topics({"bootstrap.servers": kafka_bootstrap}, PARTITIONS, prefix)
    worker = Worker(env, tmp_path / "after.log")
    worker.start()
    try:
        wait_until(lambda: "the topic was recreated" in worker.log(), "no refusal", worker, 60)
        time.sleep(2)
        assert worker.process is not None and worker.process.poll() is None, "it stopped"
    finally:
        worker.stop()
    refusal = re.search(r"partition \d+: the state store has processed .*", worker.log())
    assert refusal is not None
    assert orders.removeprefix(prefix) in refusal.group(0)
    assert "(docs/operating.md, 'When a claim is refused')" in refusal.group(0)
