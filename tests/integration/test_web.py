"""The worker's web server, on a real worker process: where it listens, who may look
customers up, and what /health and /ready say when Redis is gone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from schemas import Order, topics
from scoring.predict_contract import MAX_BODY_BYTES
from stream_app.demo import web_hint
from stream_app.openapi import document
from stream_app.settings import Settings
from tests.support import RedisServer, Worker, encode, produce, sum_samples

pytestmark = pytest.mark.integration


def listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except ConnectionRefusedError:
        return False


def non_loopback_address() -> str | None:
    """This machine's address on its default route (None: it has none). No packet is
    sent: connecting a UDP socket only picks the source address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(sock.getsockname()[0])
    return None if address.startswith("127.") else address


def wait_for(worker: Worker, path: str, status: int, timeout: float = 60) -> dict:
    """Poll `path` until it answers `status`; its JSON body."""
    deadline = time.monotonic() + timeout
    last: tuple[int, bytes] = (0, b"")
    while time.monotonic() < deadline:
        last = worker.get(path)
        if last[0] == status:
            return json.loads(last[1])
        time.sleep(0.3)
    raise AssertionError(
        f"{path} never answered {status} (last: {last[0]} {last[1][:500]!r}):\n"
        f"{worker.log()[-2000:]}"
    )


def test_the_web_server_listens_only_on_the_configured_address(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    worker = Worker({**worker_env, "CHURN_WEB_BIND": "127.0.0.2"}, tmp_path / "worker.log")
    worker.start()
    try:
        status, _, body = worker.request("/health", host="127.0.0.2")
        assert status == 200, body
        assert not listening("127.0.0.1", worker.port), "answered on 127.0.0.1 too"
    finally:
        worker.stop()


def test_with_default_settings_the_server_is_loopback_only_and_the_lookup_is_off(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**worker_env, "CHURN_WEB_TOKEN": ""}
    env.pop("CHURN_WEB_BIND", None)
    worker = Worker(env, tmp_path / "worker.log")
    worker.env.pop("CHURN_WEB_BIND", None)  # nor from the environment pytest runs in
    worker.start()
    try:
        assert worker.get("/health")[0] == 200
        assert not listening("127.0.0.2", worker.port), "the default bind is not 127.0.0.1"
        other = non_loopback_address()
        if other is not None:
            assert not listening(other, worker.port), f"reachable on {other}"

        status, _, body = worker.request("/customers/C0000042", headers={})
        assert status == 403
        assert "CHURN_WEB_TOKEN" in json.loads(body)["error"]
        # A token sent to a worker that has none opens nothing.
        status, _, _ = worker.request(
            "/customers/C0000042", headers={"Authorization": "Bearer anything"}
        )
        assert status == 403
    finally:
        worker.stop()


def test_the_lookup_answers_only_requests_with_the_right_bearer_token(
    worker: Worker, worker_env: dict[str, str], kafka_bootstrap: str
) -> None:
    token = worker_env["CHURN_WEB_TOKEN"]
    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    worker.start()
    order = Order("W1", "WEB1", datetime(2026, 1, 1, 9, tzinfo=UTC), 20.0, "card", "delivered")
    produce(kafka_bootstrap, [(prefix + topics.ORDERS, "WEB1", encode(order))])
    found = wait_for(worker, "/customers/WEB1", 200)  # Worker.get sends the right token
    assert found["customer_id"] == "WEB1"
    assert found["current"]["features"]["orders_lifetime"] == 1

    status, headers, body = worker.request("/customers/WEB1", headers={})
    assert status == 401, body
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert b"WEB1" not in body

    status, headers, body = worker.request(
        "/customers/WEB1", headers={"Authorization": f"Bearer {token}x"}
    )
    assert status == 401, body
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    assert b"WEB1" not in body

    status, _, _ = worker.request("/customers/WEB1", headers={"Authorization": f"Basic {token}"})
    assert status == 401

    status, _, body = worker.request("/customers/" + "X" * 129)
    assert status == 400, body
    status, _, body = worker.request("/customers/WEB1%00")
    assert status == 400, body

    assert token not in worker.log(), "the token was logged"


def test_ready_names_redis_when_it_is_down_while_health_and_the_event_loop_keep_answering(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    own = RedisServer(tmp_path / "redis")
    own.start()
    assert own.process is not None
    worker = Worker({**worker_env, "REDIS_URL": own.url}, tmp_path / "worker.log")
    worker.start()
    try:
        ready = wait_for(worker, "/ready", 200)
        assert ready["failed"] == []
        for check in ("kafka", "redis", "model", "agent"):
            assert ready[check]["ok"] is True, ready
        assert ready["model"]["version"] == "recency-v1"

        # Redis hangs (SIGSTOP): a PING on the event loop would freeze it for the
        # client's 10 s socket timeout.
        os.kill(own.process.pid, signal.SIGSTOP)
        answers: list[tuple[int, bytes, float]] = []

        def ask_ready() -> None:
            started = time.monotonic()
            status, body = worker.get("/ready")
            answers.append((status, body, time.monotonic() - started))

        probes = [threading.Thread(target=ask_ready) for _ in range(3)]
        for probe in probes:
            probe.start()
        slowest = 0.0
        while any(probe.is_alive() for probe in probes):
            started = time.monotonic()
            assert worker.get("/health")[0] == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.1)
        for probe in probes:
            probe.join()
        assert slowest < 1.5, f"/health took {slowest:.2f} s while Redis hung"
        for status, body, took in answers:
            assert status == 503, body
            report = json.loads(body)
            assert report["failed"] == ["redis"], report
            assert "no answer to PING" in report["redis"]["detail"]
            assert took < 4.5, f"/ready took {took:.1f} s"
        # Lookups are refused without waiting on Redis: a bad id before any call,
        # a good one after the timeout.
        assert worker.get("/customers/bad%20id")[0] == 400
        started = time.monotonic()
        assert worker.get("/customers/WEB1")[0] == 503
        assert time.monotonic() - started < 4.5

        # Redis gone (connections refused).
        own.kill()
        status, body = worker.get("/ready")
        assert status == 503, body
        report = json.loads(body)
        assert report["failed"] == ["redis"], report
        assert "PING failed" in report["redis"]["detail"]
        assert worker.get("/health")[0] == 200

        own.start()
        assert wait_for(worker, "/ready", 200, timeout=30)["failed"] == []
    finally:
        if own.process and own.process.poll() is None:
            os.kill(own.process.pid, signal.SIGCONT)
        worker.stop()
        own.kill()


def test_on_demand_scores_use_the_served_model_and_the_workers_actions_and_need_the_token(
    worker_env: dict[str, str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    token = worker_env["CHURN_WEB_TOKEN"]
    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    actions = {"HIGH": ["call them today"], "MEDIUM": ["email them"], "LOW": ["nothing"]}
    actions_file = tmp_path / "actions.json"
    actions_file.write_text(json.dumps(actions))
    worker = Worker({**worker_env, "CHURN_ACTIONS_FILE": str(actions_file)}, tmp_path / "w.log")
    worker.start()
    try:
        check_predict(worker, token, actions)
        check_guide_predict(worker, token, actions)
        check_the_demos_curl(worker, token)
        check_stored_customer_scores(worker, token, prefix, kafka_bootstrap, actions)
        check_api_document_and_metrics(worker)
        assert token not in worker.log(), "the token was logged"
    finally:
        worker.stop()


def check_predict(worker: Worker, token: str, actions: dict[str, list[str]]) -> None:
    wait_for(worker, "/health", 200)
    as_of = datetime(2026, 3, 2, 10, tzinfo=UTC)
    silent = json.dumps(
        {
            "as_of_ts": as_of.isoformat(),
            "orders_lifetime": 3,
            "last_order_ts": (as_of - timedelta(days=60)).isoformat(),
        }
    ).encode()
    json_type = {"Content-Type": "application/json"}
    with_token = {**json_type, "Authorization": f"Bearer {token}"}

    status, _, body = worker.request("/predict", headers=with_token, body=silent)
    assert status == 200, body
    answer = json.loads(body)
    # The recency model: 60 days without an order is churn.
    assert answer["risk"] == "HIGH"
    assert answer["probability"] > 0.9
    assert answer["model_version"] == "recency-v1"
    assert answer["features"]["recency_days"] == 60
    assert answer["reasons"][0]["feature"] == "recency_days"
    assert answer["recommended_actions"] == actions["HIGH"]

    # The same customer in the guide's names.
    guide = json.dumps({"as_of_ts": as_of.isoformat(), "frequency": 3, "recency_days": 60})
    status, _, body = worker.request("/predict", headers=with_token, body=guide.encode())
    assert status == 200, body
    assert json.loads(body) == answer

    status, headers, body = worker.request("/predict", headers=json_type, body=silent)
    assert status == 401, body
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert b"probability" not in body

    status, _, body = worker.request(
        "/predict", headers=with_token, body=silent[:-1] + b', "support_tickets": 2}'
    )
    assert status == 422, body
    assert "support_tickets" in json.loads(body)["error"]
    status, _, body = worker.request("/predict", headers=with_token, body=b"orders=1")
    assert status == 400, body
    oversized = b" " * (MAX_BODY_BYTES + 1)
    status, _, body = worker.request("/predict", headers=with_token, body=oversized)
    assert status == 413, body


def check_guide_predict(worker: Worker, token: str, actions: dict[str, list[str]]) -> None:
    """The seed guide's request, as its client sends it, answered in its fields."""
    guide = {
        "age": 35,
        "recency_days": 60,
        "total_orders": 3,
        "total_spent": 90.0,
        "avg_order_value": 30.0,
        "order_frequency": 1.5,
        "engagement_score": 12.0,
        "complaint_count": 0,
        "negative_experiences": 0,
        "is_email_verified": True,
        "is_phone_verified": True,
    }
    with_token = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    status, _, body = worker.request(
        "/predict", headers=with_token, body=json.dumps(guide).encode()
    )
    assert status == 200, body
    answer = json.loads(body)
    assert answer["risk_category"] == "HIGH"  # 60 days without an order
    assert answer["predicted_churn"] is True
    assert answer["churn_probability"] > 0.9
    assert answer["customer_id"] is None
    assert answer["recommended_actions"] == actions["HIGH"]
    assert answer["model_version"] == "recency-v1"
    assert answer["features"]["recency_days"] == 60
    assert any(note.startswith("engagement_score") for note in answer["notes"])
    # Now, by the worker's clock: the guide's body says no instant.
    as_of = datetime.fromisoformat(answer["as_of_ts"])
    assert abs((datetime.now(UTC) - as_of).total_seconds()) < 60
    contradicting = json.dumps({**guide, "avg_order_value": 45.0}).encode()
    status, _, body = worker.request("/predict", headers=with_token, body=contradicting)
    assert status == 422, body
    assert "avg_order_value" in json.loads(body)["error"]


def check_the_demos_curl(worker: Worker, token: str) -> None:
    """The curl `make demo` prints, run as printed: the guide's request, answered."""
    hint = web_hint(Settings.from_env(worker.env), token)
    command = hint.split("\n", 1)[1].replace("\\\n", " ")
    done = subprocess.run(["bash", "-c", command], capture_output=True, timeout=30, check=True)
    answer = json.loads(done.stdout)
    assert set(answer) >= {"churn_probability", "predicted_churn", "risk_category"}, answer
    assert answer["recommended_actions"]


def check_api_document_and_metrics(worker: Worker) -> None:
    """/openapi.json is open and valid to a third party; on-demand scores are counted
    and timed under the guide's metric names, by endpoint."""
    status, _, body = worker.request("/openapi.json", headers={})
    assert status == 200, body
    validate(json.loads(body))
    assert json.loads(body) == document()
    exposition = worker.exposition()
    # check_predict: 2 scored; the guide's: 1 (its 422 is not a score); the demo's: 1.
    assert sum_samples(exposition, 'ml_predictions_total{endpoint="predict"}') == 4
    assert sum_samples(exposition, 'ml_predictions_total{risk_category="HIGH"}') >= 3
    assert sum_samples(exposition, 'ml_prediction_latency_seconds_count{endpoint="predict"}') == 4
    assert sum_samples(exposition, 'ml_predictions_total{endpoint="lookup"}') >= 1
    assert sum_samples(exposition, 'ml_predictions_total{endpoint="score"}') >= 1


def check_stored_customer_scores(
    worker: Worker, token: str, prefix: str, kafka_bootstrap: str, actions: dict[str, list[str]]
) -> None:
    ordered = datetime(2026, 1, 1, 9, tzinfo=UTC)
    order = Order("S1", "SCORE1", ordered, 20.0, "card", "delivered")
    produce(kafka_bootstrap, [(prefix + topics.ORDERS, "SCORE1", encode(order))])
    found = wait_for(worker, "/customers/SCORE1", 200)
    # Just ordered: LOW, and the score behind it is as of the order.
    assert found["risk"] == found["published"]["risk"] == "LOW"
    assert found["published"]["as_of_ts"] == ordered.isoformat().replace("+00:00", "Z")
    assert found["published"]["recomputed"] is False
    assert found["published"]["probability"] < 0.4
    assert found["current"]["recommended_actions"] == actions["LOW"]

    with_token = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    def score(body: bytes, customer: str = "SCORE1", **headers: str) -> tuple[int, dict]:
        status, _, answer = worker.request(
            f"/customers/{customer}/score", headers=headers or with_token, body=body
        )
        return status, json.loads(answer)

    # What if they stay silent for 60 days?
    later = (ordered + timedelta(days=60)).isoformat()
    status, what_if = score(json.dumps({"as_of": later}).encode())
    assert status == 200, what_if
    assert what_if["risk"] == "HIGH"
    assert what_if["features"]["recency_days"] == 60
    assert what_if["recommended_actions"] == actions["HIGH"]
    assert what_if["model_version"] == "recency-v1"
    # No instant: as of the partition's event time, the lookup's current score.
    status, now = score(b"")
    assert status == 200, now
    assert now["as_of_ts"] == found["current"]["as_of_ts"]

    earlier = (ordered - timedelta(days=1)).isoformat()
    status, refused = score(json.dumps({"as_of": earlier}).encode())
    assert status == 422, refused
    assert "before the customer's last event" in refused["error"]
    status, refused = score(b'{"as_of": "2026-03-01 10:00"}')
    assert (status, "as_of" in refused["error"]) == (422, True)
    assert score(b"{}", customer="NOBODY")[0] == 404
    status, _ = score(b"{}", Authorization="Bearer wrong")
    assert status == 401
