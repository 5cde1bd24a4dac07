"""Quality of churn probabilities against observed labels (sklearn.metrics)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
)

from scoring.risk import ValueTargeting

TARGET_RECALL = 0.8
# The retraining gate's bound too (training/gate.py): probabilities off by 5 points on
# average move customers across the MEDIUM and HIGH cut-offs.
MAX_CALIBRATION_ERROR = 0.05


@dataclass(frozen=True)
class Criterion:
    """A success criterion on a test metric: at least (or at most) `bound`."""

    name: str
    metric: str
    bound: float
    at_least: bool
    source: str

    def passes(self, value: float) -> bool:
        return value >= self.bound if self.at_least else value <= self.bound


# The guide's success criteria, judged on the point-in-time test split.
SUCCESS_CRITERIA = (
    Criterion(
        "test AUC-ROC",
        "auc_roc",
        0.80,
        True,
        "the guide asks for a ranking worth acting on; 0.80 is this project's bar",
    ),
    Criterion(
        "precision at 80% recall",
        "precision_at_80_recall",
        0.75,
        True,
        "the guide's: precision above 75% at 80% recall",
    ),
    Criterion(
        "calibration error",
        "calibration_error",
        MAX_CALIBRATION_ERROR,
        False,
        "the guide asks for calibrated probabilities; the retraining gate's bound",
    ),
)


def success(test: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each success criterion with the test value and whether it passes."""
    return [
        {
            "criterion": c.name,
            "metric": c.metric,
            "bound": c.bound,
            "at_least": c.at_least,
            "value": float(test[c.metric]),
            "passed": c.passes(float(test[c.metric])),
            "source": c.source,
        }
        for c in SUCCESS_CRITERIA
    ]


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
        "calibration_error": calibration_error(y, p),
    }


def confusion(labels: np.ndarray, probabilities: np.ndarray, cutoff: float) -> dict[str, int]:
    """Counts at one cut-off: churners flagged (tp), missed (fn), loyal flagged (fp), ..."""
    y = np.asarray(labels, dtype=bool)
    flagged = np.asarray(probabilities, dtype=np.float64) >= cutoff
    return {
        "tp": int(np.sum(flagged & y)),
        "fp": int(np.sum(flagged & ~y)),
        "fn": int(np.sum(~flagged & y)),
        "tn": int(np.sum(~flagged & ~y)),
    }


def cutoff_curve(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, ...]:
    """(cut-offs, precision, recall) of flagging p >= cut-off, for every distinct p, descending."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    p, y = p[order], y[order]
    last_of_value = np.append(p[1:] != p[:-1], True)  # where each distinct p ends
    flagged = np.arange(1, len(p) + 1)[last_of_value]
    churners_flagged = np.cumsum(y)[last_of_value]
    return p[last_of_value], churners_flagged / flagged, churners_flagged / max(1, int(y.sum()))


def cutoff_for_precision(labels: np.ndarray, probabilities: np.ndarray, target: float) -> float:
    """The lowest cut-off whose flagged customers are at least `target` churners.

    The lowest such cut-off flags the most churners at that precision. Raises
    ValueError when no cut-off reaches the target."""
    cutoffs, precision, _ = cutoff_curve(labels, probabilities)
    reached = np.flatnonzero(precision >= target)
    if len(reached) == 0:
        raise ValueError(f"no cut-off reaches precision {target:.0%} (best {precision.max():.1%})")
    return float(cutoffs[reached[-1]])


def cutoff_for_recall(labels: np.ndarray, probabilities: np.ndarray, target: float) -> float:
    """The highest cut-off that still flags at least `target` of the churners."""
    cutoffs, _, recall = cutoff_curve(labels, probabilities)
    return float(cutoffs[np.flatnonzero(recall >= target)[0]])


CALIBRATION_BINS = 10


def calibration_error(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """Expected calibration error: over `bins` equal-width probability bins, the gap
    between the mean probability and the churn rate, weighted by the bin's rows
    (Naeini et al. 2015; Guo et al. 2017). 0 is perfect. A perfectly calibrated model
    still measures about 1.3 / sqrt(rows) at 10 bins: sampling noise."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    predicted = np.bincount(which, weights=p, minlength=bins)
    observed = np.bincount(which, weights=y, minlength=bins)
    return float(np.abs(predicted - observed).sum() / len(y))


# Shares of the test customers a capacity-bound campaign could work: the top ones.
CAPACITY_SHARES = (0.05, 0.10, 0.20)


def targeting_table(
    churned: np.ndarray,
    probabilities: np.ndarray,
    spend_90d: np.ndarray,
    high: float,
    targeting: ValueTargeting,
) -> list[dict[str, Any]]:
    """HIGH on the test split under each way of setting it (`scoring.risk`): the
    served cut-off, value (probability x value > cost) and capacity (the top share by
    probability); how many it flags, and its precision and recall on churn."""
    y = np.asarray(churned, dtype=bool)
    p = np.asarray(probabilities, dtype=np.float64)
    value = targeting.value_per_spend * np.nan_to_num(np.asarray(spend_90d, dtype=np.float64))
    ranked = np.argsort(-p, kind="stable")
    policies = [
        (f"cut-off: probability >= {high:.3g}", p >= high),
        (
            f"value: probability x {targeting.value_per_spend:g} x spend_90d > "
            f"{targeting.action_cost:g}",
            p * value > targeting.action_cost,
        ),
    ]
    for share in CAPACITY_SHARES:
        top = np.zeros(len(p), dtype=bool)
        top[ranked[: round(share * len(p))]] = True
        policies.append((f"capacity: the top {share:.0%} by probability", top))
    return [
        {
            "policy": name,
            "flagged": int(flagged.sum()),
            "precision": float(y[flagged].mean()) if flagged.any() else None,
            "recall": float((y & flagged).sum() / y.sum()) if y.any() else None,
        }
        for name, flagged in policies
    ]
