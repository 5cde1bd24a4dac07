"""Retraining behind the gate, on the real services: a worker serves the champion; a
challenger retrained on a good database is promoted, the worker hot-reloads it, and the
risk changes published afterwards carry its version; a challenger trained on damaged
data is refused and CURRENT stays; a rollback serves the champion again."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from feature_store.online import event_time
from schemas import topics
from scoring.artifact import CURRENT_POINTER
from simulator import generate_history, write_sqlite
from tests.support import Worker, consume, encode, produce, served_version, wait_until
from training.__main__ import main
from training.registry import GATE_FILE, versions

pytestmark = pytest.mark.integration

CHAMPION = "recency-v1"  # tests.support.train_recency_model: recency alone
INPUTS = "churn_events_total"
CHANGES = "churn_risk_changes_total"


def scrambled_copy(db: Path, target: Path, before: date) -> Path:
    """The shop as an ETL bug could leave it: every order placed before `before` given
    to a customer drawn at random. Training and validation rows then learn noise; the
    test rows, as of a later cutoff, still hold what customers really did."""
    shutil.copy(db, target)
    rng = np.random.default_rng(3)
    with sqlite3.connect(target) as conn:
        customers = [row[0] for row in conn.execute("SELECT customer_id FROM customers")]
        orders = [
            row[0]
            for row in conn.execute(
                "SELECT rowid FROM orders WHERE order_date < ?", (before.isoformat(),)
            )
        ]
        owners = rng.choice(customers, size=len(orders))
        conn.executemany(
            "UPDATE orders SET customer_id = ? WHERE rowid = ?",
            zip((str(owner) for owner in owners), orders, strict=True),
        )
    return target


def stream(kafka_bootstrap: str, prefix: str, events: list[tuple[str, Any]], worker: Worker) -> int:
    """Produce `events`, wait until the worker has processed them all; the number of
    risk changes it has published by then."""
    done = worker.metric(INPUTS) + len(events)
    produce(kafka_bootstrap, [(prefix + t, e.customer_id, encode(e)) for t, e in events])
    wait_until(lambda: worker.metric(INPUTS) >= done, worker, "processing the input", 120)
    return int(worker.metric(CHANGES))


def changes(kafka_bootstrap: str, prefix: str, count: int) -> list[dict[str, Any]]:
    read = consume(kafka_bootstrap, [prefix + topics.CHURN_RISK], lambda m: len(m) >= count)
    assert len(read) == count, f"{len(read)} changes on churn-risk, the worker published {count}"
    return [json.loads(message.value()) for message in read]


def current(models: Path) -> str:
    return (models / CURRENT_POINTER).read_text().strip()


def test_a_good_challenger_is_promoted_and_served_and_one_trained_on_damaged_data_is_refused(
    worker_env: dict[str, str],
    recency_models_dir: Path,
    kafka_bootstrap: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = worker_env["CHURN_TOPIC_PREFIX"]
    models = tmp_path / "models"
    shutil.copytree(recency_models_dir, models)
    db = tmp_path / "shop.db"
    write_sqlite(generate_history(2000, seed=7), db)
    events = list(generate_history(150, seed=11).events_in_time_order())
    before, after = events[: len(events) // 2], events[len(events) // 2 :]
    worker = Worker(
        {**worker_env, "CHURN_MODELS_DIR": str(models), "CHURN_MODEL_POLL_SECONDS": "1"},
        tmp_path / "worker.log",
    )
    worker.start()
    try:
        published = stream(kafka_bootstrap, prefix, before, worker)
        assert published > 0
        assert {c["model_version"] for c in changes(kafka_bootstrap, prefix, published)} == {
            CHAMPION
        }

        # A challenger trained on a good shop: promoted, then served.
        assert main(["retrain", "--db", str(db), "--models-dir", str(models)]) == 0
        challenger = current(models)
        decision = json.loads((models / challenger / GATE_FILE).read_text())
        assert decision["promoted"] and decision["champion"] == CHAMPION
        assert decision["challenger_scores"]["auc_roc"] > decision["champion_scores"]["auc_roc"]
        assert f"promoted {challenger} (was {CHAMPION})" in capsys.readouterr().out
        wait_until(lambda: served_version(worker) == challenger, worker, "the hot reload")

        # Every change scored past the first half of the input carries the new version:
        # it can only be computed from input produced after the reload.
        last_before = max(event_time(topic, event) for topic, event in before)
        total = stream(kafka_bootstrap, prefix, after, worker)
        later = [
            c
            for c in changes(kafka_bootstrap, prefix, total)
            if datetime.fromisoformat(c["event_time"]).timestamp() > last_before
        ]
        assert later, "no risk change after the reload"
        assert {c["model_version"] for c in later} == {challenger}

        # A challenger trained on scrambled orders: refused, CURRENT does not move.
        validation = date.fromisoformat(decision["split"]["test_cutoff"]) - timedelta(days=30)
        damaged = scrambled_copy(db, tmp_path / "scrambled.db", validation + timedelta(days=1))
        assert main(["retrain", "--db", str(damaged), "--models-dir", str(models)]) == 1
        refusal = capsys.readouterr().err
        assert f"is kept as a candidate and {challenger} is still served" in refusal
        assert "below the champion's" in refusal
        assert current(models) == challenger
        refused = next(v for v in versions(models) if v.status == "refused")
        assert refused.decision is not None and refused.decision.champion == challenger
        time.sleep(2)  # two polls: nothing to reload
        assert served_version(worker) == challenger

        # And back: the champion is served again.
        assert main(["models", "rollback", "--models-dir", str(models)]) == 0
        assert current(models) == CHAMPION
        wait_until(lambda: served_version(worker) == CHAMPION, worker, "the rollback's reload")
    finally:
        worker.stop()
