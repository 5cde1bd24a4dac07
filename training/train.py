"""Fit, calibrate and evaluate the churn model, and describe it for the artifact.

Steps: point-in-time splits -> engagement scale fixed on the training rows ->
LightGBM with early stopping on validation -> isotonic calibration on validation
-> metrics on validation and test -> reference distributions of the training rows.
Nothing computed from validation or test rows feeds the fitted trees, and nothing
from test rows feeds the model at all.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

from feature_store.definitions import FEATURE_NAMES, FeatureParams
from feature_store.offline import History
from scoring.artifact import Calibration, Thresholds, write_artifact
from training.dataset import Splits, build_splits, cutoff_date, cutoffs
from training.metrics import evaluate

MODEL_FAMILY = "lightgbm"
ENGAGEMENT_QUANTILE = 0.99
# Isotonic end blocks are small samples and come out as exactly 0 or 1; a served
# probability should never claim certainty, and log loss punishes it without bound.
PROBABILITY_FLOOR = 1e-3
REFERENCE_QUANTILES = tuple(round(q, 1) for q in np.linspace(0.0, 1.0, 11))

# step name, seconds taken, a short note on what it produced
Progress = Callable[[str, float, str], None]


@dataclass(frozen=True)
class TrainingConfig:
    horizon_days: int = 30
    n_cutoffs: int = 6
    step_days: int = 14
    seed: int = 7
    last_cutoff: date | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    num_threads: int = 2
    max_rounds: int = 2000
    early_stopping_rounds: int = 50


@dataclass(frozen=True)
class TrainedModel:
    """Everything the artifact holds; `version` is a proposal (see `save`)."""

    version: str
    booster: lgb.Booster
    calibration: Calibration
    feature_params: FeatureParams
    metadata: dict[str, Any]


class StepTimer:
    """Times named steps and reports each one as it finishes."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        notes: list[str] = []
        start = time.perf_counter()
        yield notes
        elapsed = time.perf_counter() - start
        self.seconds[name] = round(elapsed, 3)
        if self.progress is not None:
            self.progress(name, elapsed, "; ".join(notes))


def booster_params(seed: int, num_threads: int) -> dict[str, Any]:
    return {
        "objective": "binary",
        # AUC drives early stopping: is_unbalance skews raw probabilities, which the
        # calibration step corrects, so ranking is what the trees must get right.
        "metric": ["auc", "binary_logloss"],
        "is_unbalance": True,
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.9,
        "lambda_l2": 1.0,
        "seed": seed,
        "deterministic": True,
        "num_threads": num_threads,
        "force_col_wise": True,
        "verbosity": -1,
    }


def features(frame: pd.DataFrame) -> np.ndarray:
    """The model's input matrix, columns in FEATURE_NAMES order."""
    return frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)


def labels(frame: pd.DataFrame) -> np.ndarray:
    return frame["label"].to_numpy(dtype=np.int64)


def engagement_scale(train: pd.DataFrame) -> float:
    """High quantile of the raw (scale 1) engagement on training rows, at least 1."""
    raw = train["engagement_score"].to_numpy(dtype=np.float64)
    raw = raw[np.isfinite(raw)]
    high = float(np.quantile(raw, ENGAGEMENT_QUANTILE)) if len(raw) else 0.0
    return max(1.0, high)


def rescale_engagement(splits: Splits, scale: float) -> Splits:
    # The feature is raw / scale; raw / 1.0 is raw exactly, so dividing once more
    # gives the very values a rebuild with FeatureParams(scale) would (see tests).
    def rescaled(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(engagement_score=frame["engagement_score"] / scale)

    return replace(
        splits,
        train=rescaled(splits.train),
        validation=rescaled(splits.validation),
        test=rescaled(splits.test),
    )


def fit_booster(splits: Splits, config: TrainingConfig) -> lgb.Booster:
    names = list(FEATURE_NAMES)
    train_set = lgb.Dataset(features(splits.train), labels(splits.train), feature_name=names)
    valid_set = lgb.Dataset(
        features(splits.validation), labels(splits.validation), reference=train_set
    )
    return lgb.train(
        booster_params(config.seed, config.num_threads),
        train_set,
        num_boost_round=config.max_rounds,
        valid_sets=[valid_set],
        valid_names=["validation"],
        callbacks=[
            lgb.early_stopping(config.early_stopping_rounds, first_metric_only=True, verbose=False)
        ],
    )


def fit_calibration(raw: np.ndarray, outcome: np.ndarray) -> Calibration:
    """Isotonic map raw -> calibrated probability, as breakpoints np.interp can use."""
    isotonic = IsotonicRegression(
        y_min=PROBABILITY_FLOOR, y_max=1.0 - PROBABILITY_FLOOR, out_of_bounds="clip"
    )
    isotonic.fit(raw, outcome)
    x = np.asarray(isotonic.X_thresholds_, dtype=np.float64)
    y = np.asarray(isotonic.y_thresholds_, dtype=np.float64)
    # np.interp needs strictly increasing breakpoints: of equal x keep the last (the
    # highest y, as y never decreases).
    keep = np.append(np.diff(x) > 0, True)
    x, y = x[keep], y[keep]
    if len(x) < 2:
        # All validation scores equal: a flat map over the whole probability range.
        level = float(y[0])
        x, y = np.array([0.0, 1.0]), np.array([level, level])
    # Outside [x[0], x[-1]] np.interp holds the end values, as out_of_bounds="clip" does.
    return Calibration(raw=x, calibrated=y)


def predict_raw(booster: lgb.Booster, frame: pd.DataFrame, num_threads: int) -> np.ndarray:
    return np.asarray(booster.predict(features(frame), num_threads=num_threads), dtype=float)


def reference_profile(train: pd.DataFrame, scores: np.ndarray) -> dict[str, Any]:
    """Training-row quantiles of every feature and of the score, for drift monitoring."""

    def quantiles(values: np.ndarray) -> list[float | None]:
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            return [None] * len(REFERENCE_QUANTILES)
        return [float(v) for v in np.quantile(finite, REFERENCE_QUANTILES)]

    matrix = features(train)
    return {
        "quantiles": list(REFERENCE_QUANTILES),
        "rows": len(train),
        "features": {
            name: {
                "quantiles": quantiles(matrix[:, i]),
                "missing_rate": float(np.mean(~np.isfinite(matrix[:, i]))),
            }
            for i, name in enumerate(FEATURE_NAMES)
        },
        "score": {"quantiles": quantiles(np.asarray(scores, dtype=np.float64))},
    }


def data_hash(splits: Splits) -> str:
    """SHA-256 over every row (ids, cutoff, features, label) of every split."""
    digest = hashlib.sha256()
    for name, frame in splits.items():
        digest.update(name.encode())
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def train(
    history: History, config: TrainingConfig | None = None, progress: Progress | None = None
) -> TrainedModel:
    """Train, calibrate and evaluate a model on `history` (see the module doc)."""
    config = config or TrainingConfig()
    timer = StepTimer(progress)
    trained_at = datetime.now(UTC)

    with timer.step("build datasets") as notes:
        # Engagement at scale 1 first: its scale is itself learned from training rows.
        cutoff_list = cutoffs(
            history, config.horizon_days, config.n_cutoffs, config.step_days, config.last_cutoff
        )
        splits = build_splits(
            history, cutoff_list, config.horizon_days, FeatureParams(engagement_scale=1.0)
        )
        notes += [
            f"{name} {len(frame):,} rows ({frame['label'].mean():.1%} churned)"
            for name, frame in splits.items()
        ]

    with timer.step("scale engagement") as notes:
        params = FeatureParams(engagement_scale=engagement_scale(splits.train))
        splits = rescale_engagement(splits, params.engagement_scale)
        notes.append(f"engagement_scale {params.engagement_scale:.4g}")

    with timer.step("fit lightgbm") as notes:
        booster = fit_booster(splits, config)
        notes.append(f"{booster.best_iteration} trees")

    with timer.step("calibrate") as notes:
        raw = {name: predict_raw(booster, f, config.num_threads) for name, f in splits.items()}
        calibration = fit_calibration(raw["validation"], labels(splits.validation))
        notes.append(f"isotonic, {len(calibration.raw)} breakpoints")

    with timer.step("evaluate") as notes:
        metrics = {}
        for name in ("validation", "test"):
            frame = getattr(splits, name)
            metrics[name] = evaluate(labels(frame), calibration(raw[name]))
            # Calibration makes ties; the raw score's AUC shows what that costs.
            metrics[name]["auc_roc_raw"] = evaluate(labels(frame), raw[name])["auc_roc"]
        notes.append(f"test AUC {metrics['test']['auc_roc']:.4f}")

    with timer.step("reference"):
        reference = reference_profile(splits.train, calibration(raw["train"]))
        digest = data_hash(splits)

    metadata = {
        "model_family": MODEL_FAMILY,
        "trained_at": trained_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "data_hash": digest,
        "horizon_days": config.horizon_days,
        "step_days": config.step_days,
        "seed": config.seed,
        "cutoffs": {
            "time_of_day": "23:59:59Z",
            "train": [cutoff_date(t).isoformat() for t in splits.train_cutoffs],
            "validation": cutoff_date(splits.validation_cutoff).isoformat(),
            "test": cutoff_date(splits.test_cutoff).isoformat(),
        },
        "rows": {name: len(frame) for name, frame in splits.items()},
        "positive_rate": {name: float(frame["label"].mean()) for name, frame in splits.items()},
        "metrics": metrics,
        "calibration": calibration.to_json(),
        "thresholds": {"medium": config.thresholds.medium, "high": config.thresholds.high},
        "feature_params": {"engagement_scale": params.engagement_scale},
        "lightgbm": {
            "params": booster_params(config.seed, config.num_threads),
            "best_iteration": booster.best_iteration,
            "version": lgb.__version__,
        },
        "reference": reference,
        "timings_seconds": dict(timer.seconds),
    }
    version = f"{trained_at:%Y%m%dT%H%M%SZ}-{digest[:8]}"
    return TrainedModel(version, booster, calibration, params, metadata)


def save(model: TrainedModel, models_dir: Path) -> Path:
    """Write the artifact and point CURRENT at it; returns the version directory.

    Two runs on the same data within one second would propose the same version, so
    a numeric suffix keeps every run's directory distinct.
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    version, attempt = model.version, 1
    while True:
        try:
            return write_artifact(models_dir, version, model.booster, model.metadata)
        except FileExistsError:
            attempt += 1
            version = f"{model.version}-{attempt}"
