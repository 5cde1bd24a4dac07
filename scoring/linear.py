"""A logistic regression the worker scores in numpy, stored as JSON (linear.json).

For feature j of a row, with m_j = 1 when its value is missing (NaN), else 0:

    z_j            = ((x_j, or impute_j when missing) - mean_j) / scale_j
    contribution_j = coefficient_j * z_j + missing_coefficient_j * (m_j - missing_rate_j)
    log-odds       = intercept + sum_j contribution_j

mean_j and missing_rate_j are the training rows' averages, so each term averages zero
over them: the intercept is the log-odds of the average training row (the base value),
and a contribution is exactly how far that feature moves this row's log-odds from
there, as TreeSHAP's do for the trees.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from feature_store.definitions import FEATURE_NAMES
from scoring.families import LINEAR

LINEAR_FORMAT = "churn-risk linear model v1"
# Per feature, in this order: the columns of the model.
LINEAR_FIELDS = (
    "coefficient",
    "missing_coefficient",
    "impute",
    "mean",
    "scale",
    "missing_rate",
)


def sigmoid(log_odds: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warning at large |log-odds|, unlike 1 / (1 + exp(-x)).
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(log_odds, dtype=np.float64)))


@dataclass(frozen=True)
class LinearModel:
    """Coefficients on standardised features, with centred missing-value indicators."""

    intercept: float
    coefficient: np.ndarray
    missing_coefficient: np.ndarray
    impute: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    missing_rate: np.ndarray
    family = LINEAR

    def design(self, features: np.ndarray) -> np.ndarray:
        """The regression's inputs: [z, m - missing_rate], one column pair per feature.
        Training fits the coefficients on exactly these columns."""
        x = np.asarray(features, dtype=np.float64)
        missing = np.isnan(x)
        z = (np.where(missing, self.impute, x) - self.mean) / self.scale
        return np.hstack([z, missing - self.missing_rate])

    def contributions(self, features: np.ndarray) -> np.ndarray:
        design = self.design(features)
        width = len(self.coefficient)
        return design[:, :width] * self.coefficient + design[:, width:] * self.missing_coefficient

    def log_odds(self, features: np.ndarray) -> np.ndarray:
        return self.intercept + self.contributions(features).sum(axis=1)

    def probability(self, features: np.ndarray) -> np.ndarray:
        return sigmoid(self.log_odds(features))

    def to_json(self) -> dict[str, Any]:
        columns = {name: getattr(self, name) for name in LINEAR_FIELDS}
        return {
            "format": LINEAR_FORMAT,
            "intercept": float(self.intercept),
            "features": [
                {"name": name, **{key: float(columns[key][j]) for key in LINEAR_FIELDS}}
                for j, name in enumerate(FEATURE_NAMES)
            ],
        }

    def serialise(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1) + "\n").encode("utf-8")

    @classmethod
    def from_columns(cls, intercept: float, columns: dict[str, np.ndarray]) -> LinearModel:
        """From LINEAR_FIELDS' columns (values already checked by the reader)."""
        return cls(intercept, **{key: np.asarray(columns[key], float) for key in LINEAR_FIELDS})
