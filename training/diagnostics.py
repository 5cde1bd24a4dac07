"""Yardsticks for the test AUC: what a perfect-knowledge score achieves, and what the
seed article's leaky label claims. Neither feeds the served model.

* Oracle: the simulator's latent churn propensity, scored against the same test
  labels. A simulated shop knows why each customer churns; a real one does not.
* Leaky label: the seed defined churn as "no order in the last 30 days", computed from
  the very features the model sees (recency_days > 30), and evaluated on a random split
  of one snapshot. The model then only relearns its own label from recency, and the AUC
  looks near perfect. The same model scored on the same rows against what those
  customers really did next (our label) shows what it is worth.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from feature_store.definitions import FEATURE_NAMES
from training.models import booster_params, features, labels, threads_for

LEAKY_RECENCY_DAYS = 30
LEAKY_HOLDOUT = 0.3
LEAKY_ROUNDS = 100


def _auc(y: np.ndarray, scores: np.ndarray) -> float | None:
    return float(roc_auc_score(y, scores)) if 0 < y.sum() < len(y) else None


def oracle_auc(test: pd.DataFrame, propensity: pd.Series | None) -> dict[str, Any] | None:
    """AUC of the true latent propensity against the test labels (None without truth)."""
    if propensity is None:
        return None
    scores = propensity.reindex(test["customer_id"]).to_numpy(dtype=np.float64)
    known = np.isfinite(scores)
    if not known.any():
        return None
    return {
        "auc_roc": _auc(labels(test)[known], scores[known]),
        "rows": int(known.sum()),
        "score": "simulator_truth.churn_propensity",
    }


def leaky_label_auc(
    snapshot: pd.DataFrame, seed: int, max_threads: int, max_rows: int
) -> dict[str, Any] | None:
    """The seed-style model on one snapshot: leaky label, random split.

    `snapshot` holds one cutoff's rows (features and our point-in-time label)."""
    rows = snapshot if len(snapshot) <= max_rows else snapshot.sample(max_rows, random_state=seed)
    leaky = (rows["recency_days"].to_numpy(dtype=np.float64) > LEAKY_RECENCY_DAYS).astype(int)
    holdout = np.random.default_rng(seed).random(len(rows)) < LEAKY_HOLDOUT
    fit_labels = leaky[~holdout]
    if not 0 < fit_labels.sum() < len(fit_labels):
        return None  # one class only: nothing to learn
    threads = threads_for(len(rows), max_threads)
    x = features(rows)
    booster = lgb.train(
        booster_params(seed, threads),
        lgb.Dataset(x[~holdout], fit_labels, feature_name=list(FEATURE_NAMES)),
        num_boost_round=LEAKY_ROUNDS,
    )
    scores = np.asarray(booster.predict(x[holdout], num_threads=threads), dtype=np.float64)
    return {
        "label": f"recency_days > {LEAKY_RECENCY_DAYS} (seed article), random split",
        "rows": int(holdout.sum()),
        "inflated_auc_roc": _auc(leaky[holdout], scores),
        "auc_roc_against_point_in_time_label": _auc(labels(rows)[holdout], scores),
    }
