"""Retraining learns from the stream: `python -m stream_app shop-sink` writes the input
topics into the shop database training reads, each message once, as the worker reads
them (what it dead-letters skipped, a duplicate order counted once, an erased customer
gone), through a kill and a restart; and training runs on the result."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from feature_store.offline import History
from schemas import topics
from simulator.history import generate_history
from simulator.sqlite_sink import write_sqlite
from stream_app.kafka_admin import ensure_topics
from tests.integration.outputs import PARTITIONS
from tests.support import ROOT, encode, produce
from training.__main__ import main as train
from training.database import load_history

pytestmark = pytest.mark.integration


def sink(env: dict[str, str], db: Path, *flags: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "stream_app", "shop-sink", "--db", str(db), *flags],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def catch_up(env: dict[str, str], db: Path) -> str:
    process = sink(env, db, "--catch-up")
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out.decode()
    return out.decode()


def sorted_frames(history: History) -> dict[str, pd.DataFrame]:
    frames = {"orders": history.orders, "tickets": history.tickets, "customers": history.customers}
    return {
        name: frame.sort_values(list(frame.columns)).reset_index(drop=True)
        for name, frame in frames.items()
    }


def test_the_shop_sink_writes_each_input_once_as_the_worker_reads_it_and_training_runs_on_it(
    worker_env: dict[str, str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CHURN_TOPIC_PREFIX": prefix}
    history = generate_history(300, seed=5)
    events = list(history.events_in_time_order())
    erased = history.customers[0].customer_id
    ensure_topics({"bootstrap.servers": kafka_bootstrap}, PARTITIONS, prefix)
    messages = [(prefix + t, e.customer_id, encode(e)) for t, e in events]
    half = len(messages) // 2
    produce(kafka_bootstrap, messages[:half])
    db = tmp_path / "stream.db"

    # Killed mid-stream, then caught up: nothing lost, nothing twice.
    running = sink(env, db)
    time.sleep(3)
    running.send_signal(signal.SIGKILL)
    running.wait(30)
    catch_up(env, db)
    duplicate = messages[half]  # the producer sends an order twice
    refused = (prefix + topics.ORDERS, "C1", b'{"order_id": "broken"}')  # dead-lettered
    tombstone = (prefix + topics.CUSTOMERS, erased, None)
    produce(kafka_bootstrap, [*messages[half:], duplicate, refused, tombstone])
    printed = catch_up(env, db)
    assert "1 erasures" in printed and "1 skipped" in printed, printed

    expected = tmp_path / "expected.db"
    write_sqlite(history, expected)
    with_erasure = load_history(expected)
    with_erasure = History(
        orders=with_erasure.orders[with_erasure.orders["customer_id"] != erased],
        tickets=with_erasure.tickets[with_erasure.tickets["customer_id"] != erased],
        customers=with_erasure.customers[with_erasure.customers["customer_id"] != erased],
    )
    got, want = sorted_frames(load_history(db)), sorted_frames(with_erasure)
    for name in want:
        pd.testing.assert_frame_equal(got[name], want[name], check_dtype=False, obj=name)

    printed_training = io.StringIO()
    with contextlib.redirect_stdout(printed_training):
        code = train(["--db", str(db), "--out", str(tmp_path / "models"), "--families", "linear"])
    assert code == 0, printed_training.getvalue()
