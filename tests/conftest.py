"""Fixtures for tests against the real services: a Kafka broker, a Redis server, and
the worker run as a real process. A missing service fails the test with a message
saying how to start it; nothing is skipped."""

from __future__ import annotations

import contextlib
import io
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from feature_store.offline import History
from feature_store.redis_store import RedisStateStore
from scoring.artifact import load_model
from simulator import generate_history, write_sqlite
from stream_app.settings import redacted
from tests.drift_shop import drift_model
from tests.support import Worker, train_recency_model
from training import load_history
from training.__main__ import main

HOW_TO_START = "start the services with `make services` (scripts/services.sh up)"


# --- a simulated shop and one training run on it, shared by the training tests ----------
# Read only: a test that changes the database or the models directory works on a copy.


@pytest.fixture(scope="session")
def shop_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated shop of 300 customers over a year, in the seed SQLite schema, with the
    simulator's truth table."""
    path = tmp_path_factory.mktemp("shop") / "shop.db"
    write_sqlite(generate_history(300, seed=7), path)
    return path


@pytest.fixture(scope="session")
def history(shop_db: Path) -> History:
    return load_history(shop_db)


@pytest.fixture(scope="session")
def cli_run(shop_db: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `python -m training` run on `shop_db` (every family, one thread): its output,
    artifact directory, models directory and metadata."""
    out = tmp_path_factory.mktemp("models")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["--db", str(shop_db), "--out", str(out), "--threads", "1"])
    assert code == 0
    model = load_model(out)
    return {
        "printed": printed.getvalue(),
        "directory": out / model.version,
        "models_dir": out,
        "metadata": model.metadata,
    }


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    try:
        AdminClient({"bootstrap.servers": servers}).list_topics(timeout=10)
    except Exception as err:
        pytest.fail(
            f"Kafka is not reachable at {servers} ({err}): {HOW_TO_START} "
            "or set KAFKA_BOOTSTRAP_SERVERS",
            pytrace=False,
        )
    join_a_consumer_group(servers)
    return servers


def join_a_consumer_group(servers: str, timeout: float = 180) -> None:
    """On a brand-new broker the first group join waits for the group coordinator
    (creating and loading __consumer_offsets): pay that once here, not inside the
    first test's worker start-up timeout."""
    topic = "test-warm-up"
    producer = Producer({"bootstrap.servers": servers})
    producer.produce(topic, b"warm-up")
    producer.flush(30)
    consumer = Consumer(
        {"bootstrap.servers": servers, "group.id": "test-warm-up", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and not message.error():
                consumer.commit(message, asynchronous=False)
                return
        pytest.fail(f"Kafka at {servers} never let a consumer group join in {timeout}s")
    finally:
        consumer.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=5).ping()
    except redis.RedisError as err:
        pytest.fail(
            f"Redis is not reachable at {redacted(url)} ({err}): {HOW_TO_START} or set REDIS_URL",
            pytrace=False,
        )
    return url


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A fresh Redis key namespace and topic prefix for one test, removed after it."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    RedisStateStore(redis.Redis.from_url(redis_url), name).delete_namespace()


@pytest.fixture(scope="session")
def recency_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_recency_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def drift_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The recency model with a drift reference (`tests.drift_shop`)."""
    return drift_model(tmp_path_factory.mktemp("drift-models"))


@pytest.fixture
def worker_env(
    kafka_bootstrap: str, redis_url: str, namespace: str, recency_models_dir: Path
) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "REDIS_URL": redis_url,
        "CHURN_APP_ID": f"churn-{namespace}",
        "CHURN_TOPIC_PREFIX": f"{namespace}.",
        "CHURN_REDIS_NAMESPACE": namespace,
        "CHURN_MODELS_DIR": str(recency_models_dir),
        "CHURN_BATCH_WAIT_MS": "20",
        # A killed worker's partitions move on after 6 s (the broker's minimum).
        "CHURN_SESSION_TIMEOUT_SECONDS": "6",
        # The lookup is off without one; Worker.get sends it.
        "CHURN_WEB_TOKEN": f"token-{uuid.uuid4().hex}",
        # No ticks (scoring.ticks) unless a test is about them: the tests compare the
        # outputs with a replay of the events they sent, which has none.
        "CHURN_TICK_SECONDS": "0",
    }


@pytest.fixture
def worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Worker]:
    """The real worker process (started by the test with `worker.start()`)."""
    process = Worker(worker_env, tmp_path / "worker.log")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def redis_cluster_url() -> str:
    url = os.environ.get("REDIS_CLUSTER_URL", "redis://127.0.0.1:7001/0")
    try:
        client = redis.RedisCluster.from_url(url, decode_responses=True)
        try:
            client.ping()
        finally:
            client.close()
    # RedisClusterException (e.g. no reachable node, or cluster mode off) is not a RedisError.
    except (redis.RedisError, redis.exceptions.RedisClusterException) as err:
        pytest.fail(
            f"Redis Cluster is not reachable at {redacted(url)} ({err}): {HOW_TO_START} "
            "or set REDIS_CLUSTER_URL",
            pytrace=False,
        )
    return url
