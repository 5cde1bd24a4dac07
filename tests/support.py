"""Helpers shared by the tests: the worker as a real process, a small model whose
answers are easy to predict, and Kafka produce/consume shortcuts."""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TypedDict

import lightgbm as lgb
import msgspec
import numpy as np
import pandas as pd
import pytest
import redis
from confluent_kafka import Consumer, Producer

from feature_store.definitions import FEATURE_NAMES, SECONDS_PER_DAY
from scoring.artifact import CHECKSUM_FILE, METADATA_FILE, point_current, write_artifact
from scoring.families import LIGHTGBM, LINEAR, MODEL_FILES, XGBOOST, FamilyModel, LightGBMModel
from scoring.model import Calibration
from training.dataset import Splits
from training.models import fit_linear

ROOT = Path(__file__).resolve().parents[1]
RECENCY = FEATURE_NAMES.index("recency_days")


def model_name(directory: Path) -> str:
    """A version directory's model file: the one of the families' files it has."""
    return next(name for name in MODEL_FILES.values() if (directory / name).exists())


def resign(directory: Path) -> None:
    """Checksums that match a version's files again, after a test changed one of them."""
    sums = "".join(
        f"{hashlib.sha256((directory / name).read_bytes()).hexdigest()}  {name}\n"
        for name in (model_name(directory), METADATA_FILE)
    )
    (directory / CHECKSUM_FILE).write_text(sums)


# synthetic_splits' cutoffs: four training cutoffs 14 days apart, validation a horizon
# later, test a horizon after that.
HORIZON = 30
TEST_CUTOFF = 400 * SECONDS_PER_DAY - 1.0
TRAIN_CUTOFFS = tuple(TEST_CUTOFF - (60 + 14 * k) * SECONDS_PER_DAY for k in (3, 2, 1, 0))
VALIDATION = TEST_CUTOFF - HORIZON * SECONDS_PER_DAY


def synthetic_splits(
    log_odds: Callable[[np.ndarray], np.ndarray], rows: int = 500, folds: int = 3
) -> Splits:
    """Splits whose every cutoff holds `rows` customers with random features and labels
    drawn from `log_odds` of their features; `folds` validation cutoffs, 14 days apart."""
    rng = np.random.default_rng(5)
    rolling = tuple(VALIDATION - 14 * SECONDS_PER_DAY * j for j in range(1, folds))

    def cutoff(ts: float) -> pd.DataFrame:
        x = rng.normal(size=(rows, len(FEATURE_NAMES)))
        churned = rng.random(rows) < 1 / (1 + np.exp(-log_odds(x)))
        frame = pd.DataFrame(x, columns=list(FEATURE_NAMES))
        frame.insert(0, "cutoff_ts", ts)
        frame.insert(0, "customer_id", [f"C{i}" for i in range(rows)])
        frame["label"] = churned.astype(np.int64)
        return frame

    return Splits(
        train=pd.concat([cutoff(t) for t in TRAIN_CUTOFFS], ignore_index=True),
        validation=cutoff(VALIDATION),
        test=cutoff(TEST_CUTOFF),
        train_cutoffs=TRAIN_CUTOFFS,
        validation_cutoff=VALIDATION,
        test_cutoff=TEST_CUTOFF,
        horizon_days=HORIZON,
        rolling_cutoffs=rolling,
        rolling=tuple(cutoff(t) for t in rolling),
    )


def optional_module(name: str, extra: str) -> ModuleType:
    """`name`, imported for the tests of an optional extra. `make venv` installs the
    dev lock, which holds the extra, so a missing one fails those tests, saying how to
    install it (never a silent skip)."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        how = f"install the {extra} extra: pip install '.[{extra}]' (make venv does)"
        pytest.fail(f"{name} cannot be imported ({err}): {how}", pytrace=False)


def train_recency_model(
    models_dir: Path, version: str = "recency-v1", family: str = LIGHTGBM
) -> Path:
    """A real model (of any family) that learned one rule: no order for over 30 days
    means churn.

    Its probabilities sit near 0 or 1, so tests can tell the expected category of
    any customer from the recency alone."""
    rng = np.random.default_rng(7)
    features = rng.normal(size=(4000, len(FEATURE_NAMES)))
    features[:, RECENCY] = rng.uniform(0, 120, size=4000)
    # A tenth of the rows exactly at 30 days (a value LightGBM then bins on its own):
    # the learned cut lies just above it, so a customer silent exactly 30 days (an
    # inactivity rescore) is LOW whatever the random draw.
    features[::10, RECENCY] = 30.0
    labels = (features[:, RECENCY] > 30).astype(int)
    if family == LINEAR:
        return _write_linear(models_dir, version, RECENCY, features[:, RECENCY], labels)
    if family == XGBOOST:
        return _write_xgboost(models_dir, version, features, labels, 30)
    return _write_lightgbm(models_dir, version, {"objective": "binary"}, features, labels, 30)


def train_soft_model(
    models_dir: Path,
    feature: str,
    low: float,
    high: float,
    version: str,
    family: str = LIGHTGBM,
    horizon_days: int | None = None,
) -> Path:
    """A real model whose probability rises smoothly from 0 to 1 as `feature` goes from
    `low` to `high`, for tests that need a score that moves gradually: inactivity,
    hysteresis. LightGBM and XGBoost: cross-entropy on the soft labels; the linear
    family: a logistic regression on labels drawn from them (0.5 at the midpoint).
    `horizon_days`: the churn horizon its metadata names, as training writes it (with
    it, the worker follows its scores to their outcome)."""
    rng = np.random.default_rng(7)
    column = FEATURE_NAMES.index(feature)
    features = rng.normal(size=(6000, len(FEATURE_NAMES)))
    features[:, column] = rng.uniform(low - (high - low), high + (high - low), size=6000)
    labels = np.clip((features[:, column] - low) / (high - low), 0, 1)
    if family == LINEAR:
        drawn = (rng.random(len(labels)) < labels).astype(int)
        return _write_linear(models_dir, version, column, features[:, column], drawn)
    if family == XGBOOST:
        return _write_xgboost(models_dir, version, features, labels, 100)
    params = {
        "objective": "cross_entropy",
        "num_leaves": 15,
        "learning_rate": 0.2,
        "min_data_in_leaf": 5,
    }
    return _write_lightgbm(models_dir, version, params, features, labels, 200, horizon_days)


def _write_linear(
    models_dir: Path, version: str, column: int, values: np.ndarray, labels: np.ndarray
) -> Path:
    """The linear family fitted by training's own code on one feature. The others are
    constant in these rows, so their coefficients stay exactly 0 and the feature alone
    decides (an unrelated noise column would weigh in on real customers' values)."""
    frame = pd.DataFrame(0.0, index=range(len(values)), columns=list(FEATURE_NAMES))
    frame[FEATURE_NAMES[column]] = values
    frame["label"] = labels
    return write_model(models_dir, version, fit_linear(frame, seed=7))


def _write_xgboost(
    models_dir: Path, version: str, features: np.ndarray, labels: np.ndarray, rounds: int
) -> Path:
    """XGBoost (the optional extra: imported only here) trained deterministically."""
    import xgboost as xgb

    from scoring.xgboost_model import XGBoostModel

    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": 7}
    booster = xgb.train(params, xgb.DMatrix(features, labels), rounds)
    return write_model(models_dir, version, XGBoostModel(booster))


def _write_lightgbm(
    models_dir: Path,
    version: str,
    params: dict[str, object],
    features: np.ndarray,
    labels: np.ndarray,
    rounds: int,
    horizon_days: int | None = None,
) -> Path:
    """LightGBM trained deterministically, written as `write_model` does."""
    booster = lgb.train(
        {"verbose": -1, "num_threads": 1, "seed": 7, "deterministic": True, **params},
        lgb.Dataset(features, labels),
        num_boost_round=rounds,
    )
    return write_model(models_dir, version, LightGBMModel(booster), horizon_days)


def write_model(
    models_dir: Path, version: str, estimator: FamilyModel, horizon_days: int | None = None
) -> Path:
    """A served artifact (CURRENT names it) with identity calibration."""
    identity = Calibration(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    metadata: dict[str, object] = {
        "calibration": identity.to_json(),
        "thresholds": {"medium": 0.4, "high": 0.7},
        "feature_params": {"engagement_scale": 25.0},
    }
    if horizon_days is not None:
        metadata["horizon_days"] = horizon_days
    write_artifact(models_dir, version, estimator, metadata)
    point_current(models_dir, version)
    return models_dir


def prometheus_tool(name: str) -> str:
    """The path of `prometheus` or `promtool`; fails the test, saying how to install
    them, when missing."""
    binary = shutil.which(name)
    if binary is None:
        pytest.fail(
            f"{name} is not installed: run `make tools` (scripts/services.sh tools installs "
            "Debian's prometheus package, which has prometheus and promtool)",
            pytrace=False,
        )
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The worker's Kafka engines (CHURN_ENGINE): the fault tests that matter most run on each.
ENGINES = ("faust", "confluent")
# The confluent engine in a fault run too long for make test: make test-engines runs it.
LONG_ON_CONFLUENT = pytest.param("confluent", marks=pytest.mark.engine_matrix)


class Worker:
    """`python -m stream_app worker` as a child process, killable like in production."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "CHURN_WEB_PORT": str(self.port)}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> tuple[subprocess.Popen[bytes], int]:
        """Start the process, its output appended to the log; where its output begins."""
        with self.log_path.open("ab") as log:
            since = log.tell()  # restarts append to the same log
            self.process = process = subprocess.Popen(
                [sys.executable, "-m", "stream_app", "worker"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return process, since

    def start(self, timeout: float = 120.0) -> None:
        process, since = self._spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"worker exited with {process.returncode}:\n{self.log()}")
            if "Worker ready" in self.log()[since:]:
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log()[-3000:]}")

    def start_expecting_exit(self, timeout: float = 120.0) -> int:
        """Start a worker that should stop during start-up; its exit code."""
        process, _ = self._spawn()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"the worker did not stop in {timeout}s:\n{self.log()[-3000:]}"
            ) from None

    def get(self, path: str) -> tuple[int, bytes]:
        """GET on the worker's web port, with its bearer token when it has one
        (status 0: nothing answered)."""
        status, _, body = self.request(path)
        return status, body

    def request(
        self,
        path: str,
        headers: dict[str, str] | None = None,
        host: str | None = None,
        body: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """GET (POST when there is a `body`) with these headers (default: the worker's
        bearer token, if set) on this address (default: the one the worker binds);
        (status, headers, body)."""
        if headers is None:
            token = self.env.get("CHURN_WEB_TOKEN")
            headers = {"Authorization": f"Bearer {token}"} if token else {}
        host = host or self.env.get("CHURN_WEB_BIND") or "127.0.0.1"
        url = f"http://{host}:{self.port}{path}"
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, data=body, headers=headers), timeout=5
            ) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()
        except (urllib.error.URLError, OSError):  # refused, reset or timed out
            return 0, {}, b""

    def metric(self, sample: str) -> float:
        """A sample's value on /metrics, e.g. 'churn_events_total{outcome="late"}': the
        sum of the series of that name whose labels include the ones given (0 when
        there are none or the worker does not answer)."""
        return sum_samples(self.exposition(), sample)

    def exposition(self) -> str:
        """/metrics once, to read several samples from with `sum_samples` ('' when the
        worker does not answer)."""
        status, body = self.get("/metrics")
        return body.decode() if status == 200 else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown, no commit, as when a machine dies."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_bytes().decode(errors="replace") if self.log_path.exists() else ""


def served_version(worker: Worker) -> str | None:
    """The model version the worker's /health names (None: it does not answer)."""
    status, body = worker.get("/health")
    return json.loads(body)["model_version"] if status == 200 else None


class Logging(Protocol):
    """A process with a log to show when a test fails: a Worker, a Prometheus, ..."""

    def log(self) -> str: ...


def wait_until(
    condition: Callable[[], bool], worker: Logging, what: str, timeout: float = 30
) -> None:
    """Wait for `condition`; fail with the worker's (or another process's) log when it
    does not come."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} never happened:\n{worker.log()[-3000:]}")


LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def sum_samples(exposition: str, sample: str) -> float:
    """In Prometheus' text format, the sum of the series named like `sample` whose
    labels include those of `sample` ('name' or 'name{label="value",...}')."""
    name, _, labels = sample.partition("{")
    wanted = set(LABEL.findall(labels))
    total = 0.0
    for line in exposition.splitlines():
        series, _, value = line.rpartition(" ")
        if line.startswith("#") or series.partition("{")[0] != name:
            continue
        if wanted <= set(LABEL.findall(series.partition("{")[2])):
            total += float(value)
    return total


def produce(
    bootstrap: str, messages: Iterable[tuple[str, str | None, bytes]], **config: Any
) -> int:
    """Produce (topic, key, value) messages in order and wait until all are acked."""
    producer = _producer(bootstrap, tuple(sorted(config.items())))
    errors: list[Any] = []
    count = 0
    for topic, key, value in messages:
        deadline = time.monotonic() + 120
        while True:
            try:
                producer.produce(
                    topic,
                    key=None if key is None else key.encode(),
                    value=value,
                    on_delivery=lambda err, _msg: errors.append(err) if err else None,
                )
                break
            except BufferError:  # the local queue is full: wait for the broker's acks
                assert time.monotonic() < deadline, "the broker took nothing for 2 minutes"
                producer.poll(0.1)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0, "messages left unsent"
    assert not errors, f"delivery failed: {errors[:3]}"
    return count


@functools.cache
def _producer(bootstrap: str, config: tuple[tuple[str, Any], ...]) -> Producer:
    # One per configuration for the whole session: a new one costs a connection and a
    # metadata round trip, which paced producing would pay every few milliseconds.
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            # The Java client's (and aiokafka's) key hashing, so keys land where Faust
            # would put them.
            "partitioner": "murmur2_random",
            **dict(config),
        }
    )


def encode(event: msgspec.Struct) -> bytes:
    return msgspec.json.encode(event)


def consume(
    bootstrap: str,
    topics: list[str],
    until: Callable[[list[Any]], bool],
    timeout: float = 60.0,
    **config: Any,
) -> list[Any]:
    """Read messages from the start of `topics` until `until(messages)` holds.
    `config` adds to the consumer's configuration (security settings)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **config,
        }
    )
    consumer.subscribe(topics)
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while not until(messages) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                messages.append(message)
    finally:
        consumer.close()
    return messages


class TLSFiles(TypedDict):
    """connect()'s TLS arguments."""

    ca_file: Path
    cert_file: Path
    key_file: Path


class RedisServer:
    """A redis-server of the test's own, with AOF on, that the test may kill, restart
    and damage (the shared one other tests use is never touched).

    `certs` (a directory from scripts/certs.sh) makes it TLS only: no plain-text port,
    client certificates required. `users` (ACL rules, `<name> on ><password> ...`)
    turns the default user off; the helper itself then logs in as an `admin` user
    with every right (`self.admin()`). `config` adds redis.conf lines."""

    def __init__(
        self,
        directory: Path,
        *,
        certs: Path | None = None,
        users: Sequence[str] = (),
        config: Sequence[str] = (),
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server is not installed: run `make services` first")
        self.binary = binary
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.certs = certs
        self.users = list(users)
        self.admin_password = secrets.token_hex(16) if users else None
        self.config = list(config)
        self.url = self.url_for()
        self.process: subprocess.Popen[bytes] | None = None

    def url_for(self, user: str | None = None, password: str | None = None) -> str:
        scheme = "rediss" if self.certs else "redis"
        auth = f"{user or ''}:{password}@" if password is not None else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    @property
    def tls_files(self) -> TLSFiles:
        """connect()'s TLS arguments: this server's CA and a client certificate."""
        assert self.certs, "not a TLS server"
        return TLSFiles(
            ca_file=self.certs / "ca.pem",
            cert_file=self.certs / "client.pem",
            key_file=self.certs / "client.key",
        )

    @property
    def tls_env(self) -> dict[str, str]:
        """The worker's settings for the same files."""
        files = self.tls_files
        return {
            "CHURN_REDIS_SSL_CA_FILE": str(files["ca_file"]),
            "CHURN_REDIS_SSL_CERT_FILE": str(files["cert_file"]),
            "CHURN_REDIS_SSL_KEY_FILE": str(files["key_file"]),
        }

    def admin(self) -> redis.Redis:
        """A client with every right (the default user when there are no ACL users)."""
        options: dict[str, Any] = {"socket_timeout": 10, "socket_connect_timeout": 10}
        if self.certs:
            options.update(
                ssl_ca_certs=str(self.certs / "ca.pem"),
                ssl_certfile=str(self.certs / "client.pem"),
                ssl_keyfile=str(self.certs / "client.key"),
            )
        if self.admin_password:
            return redis.Redis.from_url(self.url_for("admin", self.admin_password), **options)
        return redis.Redis.from_url(self.url, **options)

    def config_lines(self) -> list[str]:
        lines = [
            "bind 127.0.0.1",
            f"dir {self.directory}",
            "appendonly yes",
            "appendfsync everysec",
            "aof-load-truncated yes",
            'save ""',
        ]
        if self.certs:
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {self.certs / 'server.pem'}",
                f"tls-key-file {self.certs / 'server.key'}",
                f"tls-ca-cert-file {self.certs / 'ca.pem'}",
                "tls-auth-clients yes",
            ]
        else:
            lines.append(f"port {self.port}")
        if self.users:
            lines += [
                "user default off",
                f"user admin on >{self.admin_password} ~* &* +@all",
                *(f"user {rule}" for rule in self.users),
            ]
        return lines + self.config

    def start(self) -> None:
        conf = self.directory / "redis.conf"
        conf.write_text("\n".join(self.config_lines()) + "\n")
        conf.chmod(0o600)  # it holds passwords
        self.process = subprocess.Popen(
            [self.binary, str(conf)],
            stdout=(self.directory / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        client = self.admin()
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                pass
            assert self.process.poll() is None, (self.directory / "redis.log").read_text()
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync, as when the machine dies."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def truncate_aof(self, keep: float) -> int:
        """Cut the tail of the newest AOF part to `keep` of its size; returns the bytes
        cut (the writes Redis had acknowledged but not fsynced, and then some)."""
        newest = max((self.directory / "appendonlydir").glob("*.incr.aof"), key=os.path.getmtime)
        size = newest.stat().st_size
        with newest.open("r+b") as aof:
            aof.truncate(int(size * keep))
        return size - int(size * keep)


def local_broker_pid() -> int:
    """The pid of the broker `scripts/services.sh` started (fault tests stop it)."""
    pid_file = ROOT / ".services" / "kafka" / "kafka.pid"
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError) as err:
        raise AssertionError(
            f"this test stops the local broker, and found none ({err}): start it with "
            "`make services` (scripts/services.sh up)"
        ) from err
    assert b"kafka.Kafka" in cmdline, f"pid {pid} in {pid_file} is not the broker"
    return pid


def wait_for_orders(worker: Worker, customer_id: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = worker.get(f"/customers/{customer_id}")
        if status == 200 and json.loads(body)["current"]["features"]["orders_lifetime"] == count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{customer_id} never reached {count} orders:\n{worker.log()[-2000:]}")
