"""Realised performance against the training report's test figures: a model trained on
a simulated shop, then the shop's year streamed through the core runner (the in-memory
store; the Redis backends run the same commits in test_batch_runner), every customer
sampled. Cohorts after the validation cutoff are out of time for training's labels,
as its test split is.

The test split holds every customer who ever ordered, a quarter of them silent for
more than 90 days: easy churners, and many of its HIGH ones. The worker stops
rescoring a customer after 90 days of silence, so its samples never include them. The
realised figures are compared with the test split's customers silent at most 90 days;
the whole split's are printed beside them."""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from feature_store.store import MemoryStore
from scoring.artifact import load_model
from scoring.inactivity import RESCORE_AFTER_DAYS
from scoring.performance import TALLY, figures, performance_tally
from simulator import generate_history, write_sqlite
from tests.core import PARTITIONS, FakeKafka, RecordingSink, drive, logs_of, make_runner
from training import TrainingConfig, load_history, save, train
from training.metrics import calibration_error
from training.train import SERVED

CUSTOMERS = 1500


def test_realised_figures_of_a_simulated_year_are_close_to_the_training_reports_test_figures(
    tmp_path: Path,
) -> None:
    history = generate_history(CUSTOMERS, seed=7)
    db = tmp_path / "shop.db"
    write_sqlite(history, db)
    trained = train(load_history(db), TrainingConfig(num_threads=1))
    model = load_model(tmp_path / "models", save(trained, tmp_path / "models").name)
    assert trained.evidence is not None
    labels = trained.evidence.test["label"].to_numpy()
    tested = trained.evidence.probabilities[SERVED]
    flagged = tested >= model.thresholds.high
    # The worker rescores a quiet customer up to 90 days into their silence, never
    # after: the test split's customers it would still score are the comparable ones.
    quiet = trained.evidence.test["recency_days"].to_numpy() <= RESCORE_AFTER_DAYS[-1]
    comparable_auc = roc_auc_score(labels[quiet], tested[quiet])
    test_auc = model.metadata["metrics"]["test"]["auc_roc"]
    horizon = model.metadata["horizon_days"]

    store = MemoryStore()
    runner = make_runner(
        store, model, RecordingSink(), tallies=[performance_tally], sample_rate=1.0
    )
    drive(runner, FakeKafka(logs_of(list(history.events_in_time_order())), random.Random(1), 2000))

    # Out of time (after the validation cutoff) and matured (week and horizon ended).
    start = date.fromisoformat(model.metadata["cutoffs"]["validation"])
    end = history.end.date() - timedelta(days=7 + horizon)
    tally = store.tallies(range(PARTITIONS), TALLY)
    pooled: dict[str, float] = {}
    for key, amount in tally.items():
        cohort, version, counter = key.split("|", 2)
        if start <= date.fromisoformat(cohort) <= end:
            pooled[f"{start}|{version}|{counter}"] = (
                pooled.get(f"{start}|{version}|{counter}", 0) + amount
            )
    [realised] = figures(pooled)

    print(
        f"\n{realised.samples} samples in cohorts {start}..{end}; test split {len(labels)} "
        f"rows, {quiet.sum()} of them silent <= {RESCORE_AFTER_DAYS[-1]} days (comparable)"
        f"\n  AUC        realised {realised.auc:.3f}  test {test_auc:.3f}  "
        f"comparable {comparable_auc:.3f}"
        f"\n  precision  realised {realised.high_precision:.3f}  "
        f"test {precision_score(labels, flagged):.3f}  "
        f"comparable {precision_score(labels[quiet], flagged[quiet]):.3f}"
        f"\n  recall     realised {realised.high_recall:.3f}  "
        f"test {recall_score(labels, flagged):.3f}  "
        f"comparable {recall_score(labels[quiet], flagged[quiet]):.3f}"
        f"\n  ECE        realised {realised.calibration_error:.3f}  "
        f"test {calibration_error(labels, tested):.3f}  "
        f"comparable {calibration_error(labels[quiet], tested[quiet]):.3f}"
    )
    assert realised.samples > 2000
    # Within sampling noise (about 0.02 at these counts) and the gap between cut-off
    # and event-time instants; the whole test split is easier (see the module doc).
    assert realised.auc == pytest.approx(comparable_auc, abs=0.05)
    assert realised.calibration_error < 0.06
