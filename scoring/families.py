"""The model families an artifact can hold, and what the worker asks of each.

Every family gives a raw churn probability per row and, per feature, its exact
contribution to the log-odds relative to a base value (LightGBM's and XGBoost's
TreeSHAP; coefficient x standardised value for the linear model), which the worker
turns into the reasons it publishes. Calibration and cut-offs are the artifact's,
the same for every family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import lightgbm as lgb
import numpy as np

LINEAR, LIGHTGBM, XGBOOST = "linear", "lightgbm", "xgboost"
# Simplest first: of families tied on validation, the first is served.
SIMPLICITY: tuple[str, ...] = (LINEAR, LIGHTGBM, XGBOOST)
# Each family's model file in a version directory (metadata.json's model_family says
# which one the version holds). None of them is pickle: loading one runs no code.
MODEL_FILES: dict[str, str] = {
    LINEAR: "linear.json",
    LIGHTGBM: "model.txt",
    XGBOOST: "xgboost.json",
}


class FamilyModel(Protocol):
    """A fitted model of one family, as the worker scores with it."""

    @property
    def family(self) -> str: ...

    def probability(self, features: np.ndarray) -> np.ndarray:
        """Raw (uncalibrated) churn probability of each row of `features`."""
        ...

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """Per row and feature, the log-odds it adds to the base value; the base value
        plus a row's contributions is that row's log-odds."""
        ...

    def serialise(self) -> bytes:
        """The bytes of the family's model file."""
        ...


@dataclass(frozen=True)
class LightGBMModel:
    """A LightGBM booster: its text model, and exact TreeSHAP (pred_contrib) reasons."""

    booster: lgb.Booster
    family = LIGHTGBM

    def probability(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(features, num_threads=1), dtype=np.float64)

    def contributions(self, features: np.ndarray) -> np.ndarray:
        contrib = self.booster.predict(features, pred_contrib=True, num_threads=1)
        return np.asarray(contrib, dtype=np.float64)[:, :-1]  # the last column is the base

    def serialise(self) -> bytes:
        return str(self.booster.model_to_string()).encode("utf-8")
