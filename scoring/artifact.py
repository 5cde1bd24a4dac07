"""The versioned model artifact: what training writes and the worker trusts.

<models dir>/
    CURRENT                 the served version's name (written last, atomically)
    <version>/
        model.txt           LightGBM's text model (never pickle: loading runs no code)
        metadata.json       features, calibration, thresholds, metrics, references
        SHA256SUMS          checksums of the two files above, verified at load
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from feature_store.definitions import FEATURE_NAMES, FeatureParams

MODEL_FILE = "model.txt"
METADATA_FILE = "metadata.json"
CHECKSUM_FILE = "SHA256SUMS"
CURRENT_POINTER = "CURRENT"


class ArtifactError(Exception):
    """The artifact cannot be served; the message says what to fix."""


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
    booster: lgb.Booster
    calibration: Calibration
    thresholds: Thresholds
    feature_params: FeatureParams
    metadata: dict[str, Any]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Calibrated churn probabilities, one per row of `features`."""
        return self.calibration(np.asarray(self.booster.predict(features, num_threads=1)))

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """Exact TreeSHAP contributions (log-odds) per feature; bias column dropped."""
        contrib = self.booster.predict(features, pred_contrib=True, num_threads=1)
        return np.asarray(contrib)[:, :-1]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_artifact(
    models_dir: Path, version: str, booster: lgb.Booster, metadata: dict[str, Any]
) -> Path:
    """Write a new version and point CURRENT at it; returns the version directory."""
    target = models_dir / version
    target.mkdir(parents=True, exist_ok=False)
    booster.save_model(str(target / MODEL_FILE))
    full = {"version": version, "feature_names": list(FEATURE_NAMES), **metadata}
    (target / METADATA_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    sums = "".join(f"{sha256_of(target / name)}  {name}\n" for name in (MODEL_FILE, METADATA_FILE))
    (target / CHECKSUM_FILE).write_text(sums)
    point_current(models_dir, version)
    return target


def point_current(models_dir: Path, version: str) -> None:
    # Rename is atomic, so a worker polling CURRENT never reads half a name.
    tmp = models_dir / f".{CURRENT_POINTER}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, models_dir / CURRENT_POINTER)


def current_version(models_dir: Path) -> str:
    pointer = models_dir / CURRENT_POINTER
    if not pointer.is_file():
        raise ArtifactError(
            f"no model in {models_dir}: {pointer} is missing. "
            "Train one with `python -m training --db data/shop.db --out artifacts/models`."
        )
    return pointer.read_text().strip()


def load_model(models_dir: Path, version: str | None = None) -> Model:
    """Load and verify a version (default: CURRENT). Raises ArtifactError on any defect."""
    version = version or current_version(models_dir)
    directory = models_dir / version
    _verify_checksums(directory)
    try:
        metadata = json.loads((directory / METADATA_FILE).read_text())
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{directory / METADATA_FILE} is not valid JSON: {err}") from err
    names = metadata.get("feature_names")
    if names != list(FEATURE_NAMES):
        raise ArtifactError(
            f"model {version} was trained on features {names}, but this worker computes "
            f"{list(FEATURE_NAMES)}: retrain the model with this code version"
        )
    try:
        booster = lgb.Booster(model_file=str(directory / MODEL_FILE))
        calibration = Calibration.from_json(metadata["calibration"])
        thresholds = Thresholds(**metadata["thresholds"])
        params = FeatureParams(**metadata["feature_params"])
    except (lgb.basic.LightGBMError, KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"model {version} in {directory} is unusable: {err!r}") from err
    if booster.num_feature() != len(FEATURE_NAMES):
        raise ArtifactError(
            f"model {version} expects {booster.num_feature()} features, not {len(FEATURE_NAMES)}"
        )
    return Model(version, booster, calibration, thresholds, params, metadata)


def _verify_checksums(directory: Path) -> None:
    sums_file = directory / CHECKSUM_FILE
    if not sums_file.is_file():
        raise ArtifactError(f"{directory} has no {CHECKSUM_FILE}: incomplete or not an artifact")
    pairs = (line.split(maxsplit=1) for line in sums_file.read_text().splitlines() if line)
    expected = {name: digest for digest, name in pairs}
    for name in (MODEL_FILE, METADATA_FILE):
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: the artifact is incomplete")
        if expected.get(name) != sha256_of(path):
            raise ArtifactError(
                f"{path} does not match its checksum in {sums_file}: the file was changed "
                "after training; restore it or retrain"
            )


class ServedModel:
    """The model in service, swapped for a newer version once it has been verified.

    `refresh()` follows the CURRENT pointer; a version that fails verification is
    refused (and remembered, so it is not retried every poll) and the model already
    in service keeps serving.
    """

    def __init__(self, models_dir: Path, model: Model) -> None:
        self.models_dir = models_dir
        self.model = model
        self.refused: dict[str, str] = {}

    def __call__(self) -> Model:
        return self.model

    def refresh(self) -> tuple[str, str] | None:
        """Check CURRENT; returns ("loaded" | "refused", message) when something changed."""
        try:
            version = current_version(self.models_dir)
        except ArtifactError as err:
            return self._refuse("CURRENT", str(err))
        if version == self.model.version or version in self.refused:
            return None
        try:
            model = load_model(self.models_dir, version)
        except ArtifactError as err:
            return self._refuse(version, str(err))
        previous, self.model = self.model.version, model
        return "loaded", f"now serving model {version} (was {previous})"

    def _refuse(self, version: str, reason: str) -> tuple[str, str] | None:
        if self.refused.get(version) == reason:
            return None
        self.refused[version] = reason
        return "refused", f"kept model {self.model.version}; refused {version}: {reason}"
