"""Quality of churn probabilities against observed labels (sklearn.metrics)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
)

TARGET_RECALL = 0.8


def precision_at_recall(labels: np.ndarray, scores: np.ndarray, recall: float) -> float:
    """Best precision among thresholds that still catch `recall` of the churners."""
    precision, achieved, _ = precision_recall_curve(labels, scores)
    return float(precision[achieved >= recall].max())


def evaluate(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Ranking and calibration metrics; `labels` must hold both classes."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    return {
        "rows": len(y),
        "positive_rate": float(y.mean()),
        "auc_roc": float(roc_auc_score(y, p)),
        # Average precision: the step-wise area under the precision-recall curve.
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "precision_at_80_recall": precision_at_recall(y, p, TARGET_RECALL),
    }
