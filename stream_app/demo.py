"""`make demo`: the whole product on this machine, printing risk changes as they happen.

Trains a model if none exists (on a simulated shop database), starts the worker,
streams a simulated live history into Kafka, and prints every `churn-risk` event
in a readable line. Each run uses its own topics, consumer group and Redis keys,
removed at exit, so runs never see each other's state. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from feature_store.redis_store import RedisStateStore
from schemas import topics
from scoring.artifact import ArtifactError, current_version, load_model
from stream_app import kafka_security
from stream_app.kafka_admin import ALL_TOPICS
from stream_app.redis_client import connect_with, scrubbed
from stream_app.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"HIGH": "\033[31m", "MEDIUM": "\033[33m", "LOW": "\033[32m"}
RESET = "\033[0m"
# Half the demo shop's customers buy in a rhythm of their own, as real repeat buyers do
# (the simulator's default is all memoryless, which no regularity feature can read).
REGULAR_SHARE = "0.5"


def ensure_model(settings: Settings, customers: int) -> str:
    """The served model's version, training one on a simulated shop when there is none
    this code can load (none yet, or one from before a change of features)."""
    try:
        return load_model(settings.models_dir).version
    except ArtifactError as err:
        print(f"demo: no model to serve ({err}); training one", flush=True)
    db = settings.data_dir / "shop.db"
    if not db.exists():
        print(f"demo: simulating a shop of {customers} customers into {db}", flush=True)
        run(
            "simulator",
            "sqlite",
            "--customers",
            str(customers),
            "--seed",
            "1",
            "--regular-share",
            REGULAR_SHARE,
            "--out",
            str(db),
        )
    # Through the gate: with no champion it can load, the new version is served.
    run("training", "retrain", "--db", str(db), "--models-dir", str(settings.models_dir))
    return current_version(settings.models_dir)


def run(module: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, check=True)


def describe(change: dict) -> str:
    """One readable line: customer, from -> to, probability, top reason."""
    previous = change["previous_risk"] or "new"
    risk = change["risk"]
    colour = COLOURS[risk] if sys.stdout.isatty() else ""
    reset = RESET if colour else ""
    reason = change["reasons"][0] if change["reasons"] else None
    why = ""
    if reason:
        value = "n/a" if reason["value"] is None else f"{reason['value']:.4g}"
        why = f"  because {reason['feature']}={value} ({reason['contribution']:+.2f})"
    trigger = change["trigger"]
    cause = trigger["event_id"] or trigger["kind"]
    return (
        f"{change['event_time'][:10]}  {change['customer_id']:<10} "
        f"{previous:>6} -> {colour}{risk:<6}{reset} p={change['probability']:.2f}"
        f"{why}  [{cause}]"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stream_app.demo")
    parser.add_argument("--customers", type=int, default=2000, help="live customers streamed")
    parser.add_argument("--rate", type=float, default=500, help="events per second")
    parser.add_argument("--train-customers", type=int, default=5000)
    args = parser.parse_args()
    try:
        settings = Settings.from_env()
        kafka_security.check(settings)
    except SettingsError as err:
        print(f"error: bad configuration: {err}", file=sys.stderr)
        return 2

    try:
        version = ensure_model(settings, args.train_customers)
    except KeyboardInterrupt:
        print("\ndemo: stopped while preparing the model", file=sys.stderr)
        return 130
    run_id = uuid.uuid4().hex[:8]
    prefix = f"demo-{run_id}."
    # A token for this run, unless one is set: the lookup, /predict and the work-list
    # are off without one.
    token = settings.web_token or secrets.token_urlsafe(18)
    env = {
        **os.environ,
        "CHURN_TOPIC_PREFIX": prefix,
        "CHURN_APP_ID": f"churn-demo-{run_id}",
        "CHURN_REDIS_NAMESPACE": f"demo-{run_id}",
        "CHURN_WEB_TOKEN": token,
    }
    log_dir = ROOT / ".services"
    log_dir.mkdir(exist_ok=True)
    worker_log = log_dir / "demo-worker.log"
    print(f"demo: model {version}; worker log in {worker_log}", flush=True)
    children: list[subprocess.Popen[bytes]] = []
    try:
        with worker_log.open("wb") as log:
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "stream_app", "worker"],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Its own session: Ctrl-C reaches only the demo, which stops
                    # the worker with SIGTERM so it ends its batch cleanly.
                    start_new_session=True,
                )
            )
        wait_until_ready(children[0], worker_log)
        print(web_hint(settings, token), flush=True)
        print(
            f"demo: streaming {args.customers} customers' history at {args.rate:g} events/s; "
            "Ctrl-C to stop\n",
            flush=True,
        )
        children.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "simulator",
                    "produce",
                    "--customers",
                    str(args.customers),
                    "--seed",
                    str(int(time.time()) % 100_000),
                    "--rate",
                    str(args.rate),
                    "--regular-share",
                    REGULAR_SHARE,
                    "--topic-prefix",
                    prefix,
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        children.append(start_shop_sink(settings, env))
        print_changes(settings, prefix, children)
    except KeyboardInterrupt:
        print("\ndemo: stopping", flush=True)
    finally:
        # A second Ctrl-C while stopping must not leave the children running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        clean_up(settings, prefix, f"demo-{run_id}")
        print(
            f"demo: what the worker consumed is in {stream_db(settings)} (the shop sink); "
            f"retrain on it: python -m training retrain --db {stream_db(settings)} "
            f"--models-dir {settings.models_dir}"
        )
        print("demo: stopped; Kafka and Redis keep running (`make services-down` stops them)")
    return 0


# The seed guide's example customer, as its `/predict` takes it (CustomerFeatures).
GUIDE_EXAMPLE = {
    "age": 35,
    "recency_days": 45,
    "total_orders": 12,
    "total_spent": 1500.0,
    "avg_order_value": 125.0,
    "order_frequency": 1.2,
    "engagement_score": 52.3,
    "complaint_count": 2,
    "negative_experiences": 1,
}


def web_hint(settings: Settings, token: str) -> str:
    """Where the worker's pages are, and the guide's request as a ready curl."""
    base = f"http://{settings.web_bind}:{settings.web_port}"
    body = json.dumps(GUIDE_EXAMPLE)
    return (
        f"demo: the work-list is at {base}/worklist (token {token}); the guide's request:\n"
        f"  curl -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n"
        f"    -d '{body}' {base}/predict\n"
    )


def stream_db(settings: Settings) -> Path:
    return settings.data_dir / "demo-stream.db"


def start_shop_sink(settings: Settings, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The shop sink, writing this run's stream into a database of its own (a new one
    each run: each run streams a new simulated shop)."""
    db = stream_db(settings)
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "stream_app", "shop-sink", "--db", str(db)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_until_ready(worker: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"demo: the worker stopped:\n{log.read_text()[-3000:]}")
        if "Worker ready" in log.read_text(errors="replace"):
            return
        time.sleep(0.3)
    raise SystemExit(f"demo: the worker was not ready after {timeout}s; see {log}")


def print_changes(settings: Settings, prefix: str, children: list[subprocess.Popen[bytes]]) -> None:
    consumer = Consumer(
        {
            **kafka_security.confluent_config(settings),
            "group.id": f"{prefix}printer",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([prefix + topics.CHURN_RISK, prefix + topics.DEAD_LETTER])
    counts: dict[str, int] = {}
    try:
        while children[0].poll() is None:
            message = consumer.poll(0.5)
            if message is None or message.error() or message.value() is None:
                continue
            body = json.loads(message.value() or b"")
            if message.topic() == prefix + topics.DEAD_LETTER:
                print(f"dead letter: {body['reason']}", flush=True)
                continue
            counts[body["risk"]] = counts.get(body["risk"], 0) + 1
            print(describe(body), flush=True)
        raise SystemExit("demo: the worker stopped; see .services/demo-worker.log")
    finally:
        consumer.close()
        if counts:
            print(f"\ndemo: risk changes published: {counts}", flush=True)


def clean_up(settings: Settings, prefix: str, namespace: str) -> None:
    """Delete this run's topics and Redis keys (best effort: say what was left)."""
    admin = AdminClient(kafka_security.confluent_config(settings))
    futures = admin.delete_topics([prefix + name for name in ALL_TOPICS], operation_timeout=10)
    # Wait: the process ends right after, and over SASL_SSL the login alone outlasted
    # the request, which then never left.
    for name, future in futures.items():
        try:
            future.result(timeout=20)
        except Exception as err:
            print(f"demo: could not delete topic {name} ({err})", file=sys.stderr)
    try:
        RedisStateStore(connect_with(settings, timeout=5), namespace).delete_namespace()
    except (redis.RedisError, redis.exceptions.RedisClusterException) as err:
        reason = scrubbed(str(err), settings.redis_url)
        print(f"demo: could not remove the Redis keys of {namespace} ({reason})", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
