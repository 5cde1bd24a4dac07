"""Exactly once for a `read_committed` reader of `churn-risk`, read by id, under the
faults that used to publish a batch twice: the worker killed while its transaction is
open (the broker stopped mid-publish) and while its outputs are committed in Kafka
and its state not yet in Redis (Redis stopped mid-commit); and a model promoted
between such a crash and the recovery."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from feature_store.keys import Keys
from feature_store.redis_store import RedisStateStore
from scoring.batches import to_recover
from simulator.history import generate_history
from stream_app.kafka_admin import ensure_topics
from stream_app.transactions import TransactionalPublisher
from tests.integration.outputs import (
    PARTITIONS,
    assert_current_risk,
    assert_exactly_once,
    assert_features_exact,
    assert_worklist,
    comparable,
    consume_all_changes,
    replayed_changes,
)
from tests.support import (
    LONG_ON_CONFLUENT,
    RedisServer,
    Worker,
    encode,
    local_broker_pid,
    produce,
    train_soft_model,
    wait_until,
)

pytestmark = pytest.mark.integration

KILLS_EACH = 3  # while publishing, and as many while committing
MAX_KILLS = 12
RECOVERED = "was committed in Kafka, not in the store"
SESSION_SECONDS = 7  # past worker_env's session timeout
STILL_WAITING = "outputs not yet acknowledged by Kafka; still waiting"


def wait_until_busy(worker: Worker, changes: bool = False) -> None:
    """Until the worker commits batches one after another (past its claims), and with
    `changes`, has published a change."""
    first = worker.metric("churn_transactions_total")
    # A few: the confluent engine's batches are a full CHURN_BATCH_SIZE of one partition
    # (Faust's, a few hundred events across partitions), so the backlog holds fewer.
    wait_until(lambda: worker.metric("churn_transactions_total") >= first + 3, worker, "idle", 90)
    if changes:
        wait_until(lambda: worker.metric("churn_risk_changes_total") > 0, worker, "no change", 90)


def committed_ahead(bootstrap: str, env: dict[str, str], store: RedisStateStore) -> int:
    """Partitions whose last batch is committed in Kafka and not in the store (read as
    the worker's group reads its batch log)."""
    prefix, app_id = env["CHURN_TOPIC_PREFIX"], env["CHURN_APP_ID"]
    reader = TransactionalPublisher({"bootstrap.servers": bootstrap}, app_id, prefix)
    try:
        ahead = 0
        for partition in range(PARTITIONS):
            offsets = store.offsets(partition)
            records = reader.records_past(partition, offsets)
            ahead += bool(to_recover(partition, records, offsets))
        return ahead
    finally:
        reader.close()


def wait_for_recoveries(worker: Worker, batches: int) -> None:
    """Until the worker has computed `batches` again from the log, as its log and its
    metric say."""

    def recovered() -> bool:
        return worker.log().count(RECOVERED) >= batches and (
            worker.metric("churn_recovered_batches_total") >= batches
        )

    wait_until(recovered, worker, "no recovery", 60)


def kill_while_committing(worker: Worker, own: RedisServer, namespace: str) -> None:
    """Stop Redis under a busy worker once a batch has begun (its flight record is
    written): that batch commits in Kafka, then waits for Redis to commit the state.
    Kill it there. (Stopped at any instant, Redis may catch the next batch beginning,
    before anything is committed anywhere: with the confluent engine, most of the time.)"""
    assert own.process is not None
    client, keys = redis.Redis.from_url(own.url), Keys(namespace)
    deadline = time.monotonic() + 5
    while not any(client.hexists(keys.meta(p), "flight") for p in range(PARTITIONS)):
        if time.monotonic() > deadline:
            break  # no batch seen begun: stop Redis anyway, the caller counts what landed
        time.sleep(0.0005)
    own.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(3)
        worker.kill()
    finally:
        own.process.send_signal(signal.SIGCONT)
    # A command the worker sent while Redis was stopped is still in Redis's socket
    # buffer, and runs now: let it, before anyone reads the store.
    time.sleep(1)
    own.admin().ping()


def kill_while_publishing(worker: Worker, broker: int) -> None:
    """Stop the broker under a busy worker: its batch's transaction stays open,
    waiting for Kafka. Kill it there."""
    waited = worker.log().count(STILL_WAITING)
    os.kill(broker, signal.SIGSTOP)
    try:
        wait_until(lambda: worker.log().count(STILL_WAITING) > waited, worker, "no open txn", 30)
        worker.kill()
    finally:
        os.kill(broker, signal.SIGCONT)


@pytest.mark.parametrize("engine", ["faust", LONG_ON_CONFLUENT])
def test_kills_while_publishing_and_while_committing_leave_each_change_once_in_order(
    worker_env: dict[str, str], kafka_bootstrap: str, tmp_path: Path, engine: str
) -> None:
    models = train_soft_model(tmp_path / "models", "recency_days", 5, 55, "soft-recency")
    own = RedisServer(tmp_path / "redis")
    own.start()
    namespace, prefix = worker_env["CHURN_REDIS_NAMESPACE"], worker_env["CHURN_TOPIC_PREFIX"]
    env = {
        **worker_env,
        "REDIS_URL": own.url,
        "CHURN_MODELS_DIR": str(models),
        "CHURN_MAX_IDLE_MS": "1000",
        "CHURN_ENGINE": engine,
    }
    events = list(generate_history(6000, seed=31).events_in_time_order())
    ensure_topics({"bootstrap.servers": kafka_bootstrap}, PARTITIONS, prefix)
    produce(kafka_bootstrap, [(prefix + t, e.customer_id, encode(e)) for t, e in events])
    broker = local_broker_pid()
    store = RedisStateStore(redis.Redis.from_url(own.url), namespace)
    kills = {"publishing": 0, "committing": 0}
    recovered = 0
    try:
        worker = Worker(env, tmp_path / "worker-0.log")
        worker.start()
        while min(kills.values()) < KILLS_EACH:
            assert sum(kills.values()) < MAX_KILLS, f"kills that landed: {kills}"
            wait_until_busy(worker)
            if kills["publishing"] < kills["committing"]:
                kill_while_publishing(worker, broker)
                kills["publishing"] += 1
            else:
                kill_while_committing(worker, own, namespace)
            ahead = committed_ahead(kafka_bootstrap, env, store)
            kills["committing"] += ahead > 0
            time.sleep(SESSION_SECONDS)  # its partitions free: one rebalance for the next
            worker = Worker(env, tmp_path / f"worker-{sum(kills.values())}.log")
            worker.start()
            # Each partition's claim computes its batches again before it goes on; the
            # claims run side by side, so one may still be at it when others are busy.
            wait_for_recoveries(worker, ahead)
            wait_until_busy(worker)
            recovered += ahead
        live = consume_all_changes(kafka_bootstrap, prefix, store=store)
    finally:
        os.kill(broker, signal.SIGCONT)
        worker.stop()
    counts = assert_exactly_once(live, replayed_changes(events, models, tmp_path), store)
    customers = sorted({e.customer_id for _, e in events})
    current = assert_current_risk(kafka_bootstrap, prefix, store, customers)
    listed = assert_worklist(live, store)
    print(
        f"kills that landed {kills}; batches recovered from the batch log {recovered}; "
        f"{counts}; churn-risk-current holds {current} of {len(customers)} customers; "
        f"the work-list {listed}"
    )
    assert_features_exact(store, events)
    own.kill()


def test_a_batch_recovered_after_a_promotion_keeps_the_model_that_scored_it(
    worker_env: dict[str, str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    models = train_soft_model(tmp_path / "models", "recency_days", 5, 55, "first")
    own = RedisServer(tmp_path / "redis")
    own.start()
    namespace, prefix = worker_env["CHURN_REDIS_NAMESPACE"], worker_env["CHURN_TOPIC_PREFIX"]
    env = {**worker_env, "REDIS_URL": own.url, "CHURN_MODELS_DIR": str(models)}
    events = list(generate_history(3000, seed=32).events_in_time_order())
    ensure_topics({"bootstrap.servers": kafka_bootstrap}, PARTITIONS, prefix)
    produce(kafka_bootstrap, [(prefix + t, e.customer_id, encode(e)) for t, e in events])
    worker = Worker(env, tmp_path / "before.log")
    worker.start()
    store = RedisStateStore(redis.Redis.from_url(own.url), namespace)
    try:
        for attempt in range(MAX_KILLS):
            wait_until_busy(worker, changes=True)
            kill_while_committing(worker, own, namespace)
            if committed_ahead(kafka_bootstrap, env, store):
                break
            time.sleep(SESSION_SECONDS)
            worker = Worker(env, tmp_path / f"before-{attempt}.log")
            worker.start()
        else:
            raise AssertionError(f"no kill of {MAX_KILLS} landed between the two commits")
        before = consume_all_changes(kafka_bootstrap, prefix, quiet=5)
        train_soft_model(models, "recency_days", 20, 70, "second")  # promoted
        worker = Worker(env, tmp_path / "after.log")
        worker.start()
        live = consume_all_changes(kafka_bootstrap, prefix)
    finally:
        worker.stop()
        own.kill()
    log = worker.log()
    assert f"{RECOVERED}: computed again with model first" in log, log[-3000:]
    assert before, "nothing was published before the kill"
    by_id = {c["event_id"]: comparable(c) for c in live}
    assert all(by_id.get(c["event_id"]) == comparable(c) for c in before)  # kept, unchanged
    assert {c["model_version"] for c in before} == {"first"}
    later = by_id.keys() - {c["event_id"] for c in before}
    assert {c["model_version"] for c in live if c["event_id"] in later} == {"second"}
    own.start()
    assert_exactly_once(live, live, store)
    own.kill()


def test_a_second_group_on_the_same_topics_publishes_its_batches_itself(
    worker_env: dict[str, str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Two deployments reading the same inputs, each its own consumer group and store
    (a new store built beside the old): the second takes nothing from the first's batch
    log, and publishes every change itself, under the same ids and contents."""
    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    events = list(generate_history(400, seed=33).events_in_time_order())
    ensure_topics({"bootstrap.servers": kafka_bootstrap}, PARTITIONS, prefix)
    produce(kafka_bootstrap, [(prefix + t, e.customer_id, encode(e)) for t, e in events])
    second_env = {
        **worker_env,
        "CHURN_APP_ID": worker_env["CHURN_APP_ID"] + "-second",
        "CHURN_REDIS_NAMESPACE": worker_env["CHURN_REDIS_NAMESPACE"] + "-second",
    }
    published: list[list[dict]] = []
    recovered = []
    for n, env in enumerate((worker_env, second_env)):
        client = redis.Redis.from_url(env["REDIS_URL"])
        store = RedisStateStore(client, env["CHURN_REDIS_NAMESPACE"])
        worker = Worker(env, tmp_path / f"worker-{n}.log")
        try:
            worker.start()
            published.append(consume_all_changes(kafka_bootstrap, prefix, quiet=5, store=store))
            recovered.append(worker.metric("churn_recovered_batches_total"))
        finally:
            worker.stop()
    once, both = published
    assert once and recovered == [0, 0]
    assert sorted(map(comparable, both)) == sorted(map(comparable, once + once))
