"""Kafka security on the real broker's SASL_SSL listener (SCRAM-SHA-512 over TLS):
the whole pipeline runs over it, clients without the right credentials are refused,
a worker with a wrong password stops at start without printing it, and the worker,
the simulator and a reader, each with its own principal and ACLs, are held to their
own parts.

The listener comes from the environment `make test` passes (scripts/services.sh
starts it): KAFKA_SASL_BOOTSTRAP_SERVERS, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD
(or KAFKA_SASL_PASSWORD_FILE), KAFKA_SASL_CA_FILE, and optionally KAFKA_SASL_CERT_FILE
and KAFKA_SASL_KEY_FILE (mutual TLS). Without them the tests fail; they never skip.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from feature_store.redis_store import RedisStateStore
from schemas import Order, SupportTicket, topics
from scoring.decoding import Limits
from scoring.risk import transition_id
from stream_app import kafka_acls
from stream_app.kafka_admin import KafkaAuthenticationError, connect_admin
from stream_app.partitioning import partition_of
from stream_app.redis_client import connect
from stream_app.shop_sink import ShopSink
from tests.integration.test_end_to_end import day
from tests.support import ROOT, Worker, consume, encode, produce, wait_for_orders

pytestmark = pytest.mark.integration

REFUSED_WITHIN = 15.0  # seconds a refused client may take to give up


@dataclass(frozen=True)
class SaslListener:
    bootstrap: str
    username: str
    password: str
    ca_file: str
    cert_file: str
    key_file: str

    def client(self) -> dict[str, Any]:
        """confluent-kafka configuration of a client with the right credentials."""
        config = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": self.username,
            "sasl.password": self.password,
            "ssl.ca.location": self.ca_file,
        }
        return config

    def worker_env(self) -> dict[str, str]:
        """The worker's settings for this listener (mutual TLS too, when a client
        certificate is given: every security setting is exercised)."""
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "CHURN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "CHURN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "CHURN_KAFKA_SASL_USERNAME": self.username,
            "CHURN_KAFKA_SASL_PASSWORD": self.password,
            "CHURN_KAFKA_SSL_CA_FILE": self.ca_file,
        }
        if self.cert_file and self.key_file:
            env["CHURN_KAFKA_SSL_CERT_FILE"] = self.cert_file
            env["CHURN_KAFKA_SSL_KEY_FILE"] = self.key_file
        return env


@pytest.fixture(scope="module")
def sasl() -> SaslListener:
    env = os.environ
    password = env.get("KAFKA_SASL_PASSWORD", "")
    password_file = env.get("KAFKA_SASL_PASSWORD_FILE", "")
    if not password and password_file and Path(password_file).is_file():
        password = Path(password_file).read_text().strip()
    listener = SaslListener(
        env.get("KAFKA_SASL_BOOTSTRAP_SERVERS", ""),
        env.get("KAFKA_SASL_USERNAME", ""),
        password,
        env.get("KAFKA_SASL_CA_FILE", ""),
        *(
            f if Path(f).is_file() else ""
            for f in (
                env.get("KAFKA_SASL_CERT_FILE", ""),
                env.get("KAFKA_SASL_KEY_FILE", ""),
            )
        ),
    )
    missing = [
        name
        for name, value in (
            ("KAFKA_SASL_BOOTSTRAP_SERVERS", listener.bootstrap),
            ("KAFKA_SASL_USERNAME", listener.username),
            ("KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE", listener.password),
            ("KAFKA_SASL_CA_FILE", listener.ca_file if Path(listener.ca_file).is_file() else ""),
        )
        if not value
    ]
    if missing:
        pytest.fail(
            f"no SASL_SSL listener configured ({', '.join(missing)} unset or missing): run "
            "`make test` (scripts/services.sh up starts the broker's SASL_SSL listener), or "
            "set them for your broker's SCRAM-SHA-512 over TLS listener",
            pytrace=False,
        )
    try:
        connect_admin(listener.client(), timeout=30)
    except (KafkaException, KafkaAuthenticationError) as err:
        pytest.fail(
            f"the SASL_SSL listener at {listener.bootstrap} does not accept user "
            f"{listener.username} ({err}): restart the broker with scripts/services.sh "
            "down and up, which creates the SCRAM user",
            pytrace=False,
        )
    return listener


def test_the_pipeline_runs_end_to_end_over_sasl_ssl(
    sasl: SaslListener, worker_env: dict[str, str], tmp_path: Path
) -> None:
    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    worker = Worker({**worker_env, **sasl.worker_env()}, tmp_path / "worker.log")
    client = sasl.client()
    try:
        worker.start()
        produce(
            sasl.bootstrap,
            [
                (
                    prefix + topics.ORDERS,
                    "S",
                    encode(Order("OS1", "S", day(0), 40.0, "card", "delivered")),
                ),
                (
                    prefix + topics.ORDERS,
                    "S",
                    encode(Order("OS2", "S", day(5), 25.0, "card", "delivered")),
                ),
            ],
            **client,
        )
        wait_for_orders(worker, "S", 2)
        ticket = SupportTicket("TS1", "S", day(50), "delivery", satisfaction_score=1)
        produce(sasl.bootstrap, [(prefix + topics.SUPPORT_TICKETS, "S", encode(ticket))], **client)
        consume(sasl.bootstrap, [prefix + topics.CHURN_RISK], lambda m: len(m) >= 1, **client)
        order = Order("OS3", "S", day(51), 12.5, "card", "delivered")
        produce(sasl.bootstrap, [(prefix + topics.ORDERS, "S", encode(order))], **client)
        changes = consume(
            sasl.bootstrap, [prefix + topics.CHURN_RISK], lambda m: len(m) >= 2, **client
        )
    finally:
        worker.stop()
    decoded = [json.loads(m.value()) for m in changes]
    # Quiet 45 days at the ticket (HIGH), back to LOW with the next order; published
    # under the ids of the customer's 1st and 2nd change.
    state = RedisStateStore(connect(worker_env["REDIS_URL"]), worker_env["CHURN_REDIS_NAMESPACE"])
    origin = state.read(partition_of("S", 4), ["S"])["S"].origin
    assert [(c["event_id"], c["previous_risk"], c["risk"]) for c in decoded] == [
        (transition_id("S", 1, origin), "LOW", "HIGH"),
        (transition_id("S", 2, origin), "HIGH", "LOW"),
    ]
    assert decoded[0]["trigger"]["event_id"] == "TS1"
    assert decoded[1]["trigger"]["event_id"] == "OS3"
    assert sasl.password not in worker.log(), "the worker logged the SASL password"


def refusal(config: dict[str, Any]) -> str:
    """How the broker refuses a client with `config`: it can neither list the topics
    nor produce. Raises AssertionError if either works."""
    started = time.monotonic()
    try:
        connect_admin(config, timeout=4)
    except KafkaAuthenticationError as err:
        listed = f"login refused ({err})"
    except KafkaException as err:
        listed = f"no metadata ({err.args[0].str()})"
    else:
        raise AssertionError(f"listed the topics with {redacted(config)}")
    errors: list[Any] = []
    producer = Producer(
        {**config, "message.timeout.ms": 4000, "error_cb": lambda _e: None, "log_level": 0}
    )
    producer.produce("churn-security-probe", b"x", on_delivery=lambda err, _m: errors.append(err))
    left = producer.flush(8)
    assert left or (errors and errors[0] is not None), f"produced with {redacted(config)}"
    took = time.monotonic() - started
    assert took < REFUSED_WITHIN, f"refusing {redacted(config)} took {took:.1f}s"
    return listed


def redacted(config: dict[str, Any]) -> dict[str, Any]:
    return {k: "***" if "password" in k else v for k, v in config.items()}


def test_clients_without_valid_credentials_are_refused(sasl: SaslListener) -> None:
    plaintext = {"bootstrap.servers": sasl.bootstrap}
    tls_without_sasl = {
        "bootstrap.servers": sasl.bootstrap,
        "security.protocol": "SSL",
        "ssl.ca.location": sasl.ca_file,
    }
    wrong_password = {**sasl.client(), "sasl.password": sasl.password + "-wrong"}
    refusals = {
        "plaintext": refusal(plaintext),
        "tls without sasl": refusal(tls_without_sasl),
        "wrong password": refusal(wrong_password),
    }
    # A wrong password is told apart from an unreachable broker, and fast.
    assert refusals["wrong password"].startswith("login refused"), refusals
    assert "invalid credentials" in refusals["wrong password"], refusals


def test_a_worker_with_a_wrong_password_stops_at_start_without_printing_it(
    sasl: SaslListener, worker_env: dict[str, str]
) -> None:
    wrong = "not-the-" + sasl.password
    env = {**os.environ, **worker_env, **sasl.worker_env(), "CHURN_KAFKA_SASL_PASSWORD": wrong}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "stream_app", "worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 2, f"exit {result.returncode}:\n{output[-3000:]}"
    assert "refused the connection" in output and "CHURN_KAFKA_SASL_PASSWORD" in output, output
    assert wrong not in output and sasl.password not in output, "the password was printed"
    assert time.monotonic() - started < 30, "the worker took long to give up"


def test_each_principal_may_do_its_own_part_and_nothing_else(
    sasl: SaslListener, worker_env: dict[str, str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With the ACLs of `stream_app/kafka_acls.py` (the broker runs an authorizer):
    the worker runs the pipeline as its own principal; the simulator's writes the
    inputs but cannot forge `churn-risk` (nor a tick); a reader's reads `churn-risk`
    and can write nothing; the shop sink's reads the inputs into its database and can
    write nothing."""
    prefix, app_id = worker_env["CHURN_TOPIC_PREFIX"], worker_env["CHURN_APP_ID"]
    names = {
        role: f"{role}-{uuid.uuid4().hex[:8]}" for role in ("worker", "simulator", "reader", "sink")
    }
    passwords = {role: secrets.token_hex(16) for role in names}
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})  # PLAINTEXT: a super user
    credential = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    users: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(names[r], credential, passwords[r].encode()) for r in names
    ]
    for future in admin.alter_user_scram_credentials(users).values():
        future.result()
    principal = {role: f"User:{name}" for role, name in names.items()}
    kafka_acls.grant(
        admin,
        prefix,
        app_id,
        principal["worker"],
        principal["simulator"],
        principal["reader"],
        principal["sink"],
    )

    def as_(role: str) -> dict[str, Any]:
        return {**sasl.client(), "sasl.username": names[role], "sasl.password": passwords[role]}

    env = {
        **worker_env,
        **sasl.worker_env(),
        "CHURN_KAFKA_SASL_USERNAME": names["worker"],
        "CHURN_KAFKA_SASL_PASSWORD": passwords["worker"],
    }
    worker = Worker(env, tmp_path / "worker.log")
    try:
        worker.start()
        orders = [Order(f"OA{n}", "A", day(n * 5), 30.0, "card", "delivered") for n in range(2)]
        ticket = SupportTicket("TA1", "A", day(60), "delivery", satisfaction_score=1)
        inputs = [(prefix + topics.ORDERS, "A", encode(o)) for o in orders]
        produce(sasl.bootstrap, inputs, **as_("simulator"))
        wait_for_orders(worker, "A", 2)
        inputs = [(prefix + topics.SUPPORT_TICKETS, "A", encode(ticket))]
        produce(sasl.bootstrap, inputs, **as_("simulator"))
        read = consume(
            sasl.bootstrap, [prefix + topics.CHURN_RISK], lambda m: len(m) >= 1, **as_("reader")
        )
    finally:
        worker.stop()
    assert json.loads(read[0].value())["customer_id"] == "A"  # the worker scored, as itself
    sink = ShopSink(tmp_path / "stream.db", as_("sink"), prefix, Limits())
    try:
        assert sink.run(catch_up=True) == {"orders": 2, "tickets": 1}
    finally:
        sink.close()
    for role, topic in (
        ("simulator", topics.CHURN_RISK),
        ("simulator", topics.TICKS),
        ("reader", topics.CHURN_RISK),
        ("reader", topics.ORDERS),
        ("sink", topics.ORDERS),
        ("sink", topics.CHURN_RISK),
    ):
        assert forged(as_(role), prefix + topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED, (
            role,
            topic,
        )


def forged(config: dict[str, Any], topic: str) -> int | None:
    """The error code of one message produced to `topic` with `config` (None: written)."""
    errors: list[KafkaError | None] = []
    producer = Producer({**config, "message.timeout.ms": 10_000})
    producer.produce(topic, b"forged", key=b"A", on_delivery=lambda err, _m: errors.append(err))
    producer.flush(15)
    assert errors, f"no delivery report for {topic}"
    return None if errors[0] is None else errors[0].code()
