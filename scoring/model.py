"""The model the worker serves: calibrated churn probabilities, risk cut-offs and
per-feature contributions, whichever family holds the fitted model. Loading one from
its files, and trusting it, is `scoring.artifact`'s job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from feature_store.definitions import FeatureParams
from scoring.drift import Reference
from scoring.families import FamilyModel


@dataclass(frozen=True)
class Calibration:
    """Isotonic map from the model's raw probability to a calibrated one."""

    raw: np.ndarray
    calibrated: np.ndarray

    def __call__(self, probability: np.ndarray) -> np.ndarray:
        return np.interp(probability, self.raw, self.calibrated)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "isotonic",
            "raw": self.raw.tolist(),
            "calibrated": self.calibrated.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        raw, calibrated = np.asarray(data["raw"], float), np.asarray(data["calibrated"], float)
        if data.get("method") != "isotonic" or len(raw) < 2 or len(raw) != len(calibrated):
            raise ValueError("calibration must be isotonic with matching raw/calibrated points")
        if np.any(np.diff(raw) <= 0) or np.any(np.diff(calibrated) < 0):
            raise ValueError(
                "calibration needs increasing raw and non-decreasing calibrated points"
            )
        return cls(raw, calibrated)


@dataclass(frozen=True)
class Thresholds:
    """Calibrated-probability cut-offs of the risk categories."""

    medium: float = 0.4
    high: float = 0.7

    def __post_init__(self) -> None:
        if not 0 < self.medium < self.high < 1:
            raise ValueError(f"need 0 < medium < high < 1, got {self.medium}, {self.high}")


@dataclass(frozen=True)
class Model:
    """A loaded, verified model: calibrated probabilities and per-feature reasons."""

    version: str
    estimator: FamilyModel
    calibration: Calibration
    thresholds: Thresholds
    feature_params: FeatureParams
    metadata: dict[str, Any]
    # What the drift monitor compares with (None: trained before there was one).
    drift: Reference | None = None

    @property
    def family(self) -> str:
        return self.estimator.family

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Calibrated churn probabilities, one per row of `features`."""
        return self.calibration(self.estimator.probability(features))

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """Exact per-feature contributions to the log-odds (the base value left out)."""
        return self.estimator.contributions(features)
