"""Compare, tune, calibrate and evaluate churn models, and describe the served one.

Steps: purchase-rhythm prior fitted on the last training cutoff's order gaps ->
point-in-time splits -> engagement scale fixed on the training rows ->
every model family fitted on the same training rows and judged on validation ->
LightGBM tuned over a small grid on validation and refitted on all training rows ->
isotonic calibration and risk cut-offs on validation -> metrics on validation and
test -> diagnostics (oracle, leaky label) -> reference distributions for drift.

Nothing computed from validation or test rows feeds the fitted trees, and nothing
from test rows feeds the served model at all: test rows are only ever scored.

LightGBM is served whichever family wins on validation: its text model loads without
running code, the worker's reasons are its exact TreeSHAP contributions, and it
scores a batch in microseconds per row. The metadata says by how much it trails.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from threadpoolctl import threadpool_limits

from feature_store.definitions import FEATURE_NAMES, FeatureParams
from feature_store.offline import History
from scoring.artifact import Calibration, Thresholds, write_artifact
from scoring.families import LightGBMModel
from training.dataset import (
    Splits,
    TrainingDataError,
    build_splits,
    cutoff_date,
    cutoffs,
    event_span,
)
from training.diagnostics import leaky_label_auc, oracle_auc
from training.metrics import cutoff_for_precision, cutoff_for_recall, evaluate
from training.models import (
    LIGHTGBM,
    TUNING_GRID,
    Family,
    available_families,
    booster_params,
    features,
    fit_lightgbm,
    labels,
    threads_for,
)
from training.rhythm import fit_gap_prior

MODEL_FAMILY = LIGHTGBM
SERVED = "lightgbm_tuned"
WHY_LIGHTGBM = (
    "LightGBM is served: its text model loads without running code (no pickle), the "
    "worker's per-event reasons are its exact TreeSHAP contributions (pred_contrib), "
    "and it scores a batch in microseconds per row."
)
ENGAGEMENT_QUANTILE = 0.99
# Isotonic end blocks are small samples and come out as exactly 0 or 1; a served
# probability should never claim certainty, and log loss punishes it without bound.
PROBABILITY_FLOOR = 1e-3
# Tuning: configurations this close to the best validation AUC count as tied.
TUNING_TIE_AUC = 0.001
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
    # Cut-offs on the calibrated probability; a target below replaces its default.
    thresholds: Thresholds = field(default_factory=Thresholds)
    medium_recall: float | None = None  # MEDIUM flags at least this share of churners
    high_precision: float | None = None  # at least this share of HIGH customers churn
    num_threads: int = 1
    max_rounds: int = 2000
    early_stopping_rounds: int = 50
    # The families are compared, and LightGBM tuned, on at most this many training
    # rows (a seeded random sample); the served model is refitted on all of them.
    candidate_rows: int = 200_000


@dataclass(frozen=True)
class Candidate:
    """One fitted model: its raw scores, its own calibration and its metrics."""

    name: str
    description: str
    validation_raw: np.ndarray
    test_raw: np.ndarray
    calibration: Calibration
    metrics: dict[str, dict[str, float]]
    seconds: float

    @property
    def test_probability(self) -> np.ndarray:
        return self.calibration(self.test_raw)


@dataclass(frozen=True)
class Evidence:
    """What the report draws and metadata cannot hold: the test rows and every model's
    calibrated test probabilities (the served model's under SERVED)."""

    test: pd.DataFrame
    probabilities: dict[str, np.ndarray]
    served_test_raw: np.ndarray
    training_rows: int
    candidate_rows: int


@dataclass(frozen=True)
class TrainedModel:
    """Everything the artifact holds; `version` is a proposal (see `save`)."""

    version: str
    booster: lgb.Booster
    calibration: Calibration
    feature_params: FeatureParams
    metadata: dict[str, Any]
    evidence: Evidence | None = None


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

    def detail(self, text: str) -> None:
        """A line of progress inside a long step."""
        if self.progress is not None:
            self.progress("", -1.0, text)


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


def training_sample(train: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most `max_rows` training rows, drawn at random (seeded), in their order."""
    if len(train) <= max_rows:
        return train
    return train.sample(n=max_rows, random_state=seed).sort_index()


def assess(
    validation_raw: np.ndarray, test_raw: np.ndarray, splits: Splits
) -> tuple[Calibration, dict[str, dict[str, float]]]:
    """Isotonic calibration fitted on validation, and metrics on both splits.

    Every model gets this same treatment, so their Brier scores and log losses compare;
    `auc_roc_raw` is the uncalibrated score's AUC (calibration makes ties)."""
    calibration = fit_calibration(validation_raw, labels(splits.validation))
    metrics = {}
    for name, frame, raw in (
        ("validation", splits.validation, validation_raw),
        ("test", splits.test, test_raw),
    ):
        metrics[name] = evaluate(labels(frame), calibration(raw))
        metrics[name]["auc_roc_raw"] = evaluate(labels(frame), raw)["auc_roc"]
    return calibration, metrics


def compare(
    families: tuple[Family, ...],
    sample: pd.DataFrame,
    splits: Splits,
    config: TrainingConfig,
    timer: StepTimer,
) -> list[Candidate]:
    """Fit every family on the same training rows; score validation and test."""
    threads = threads_for(len(sample), config.num_threads)
    results = []
    for family in families:
        start = time.perf_counter()
        with threadpool_limits(limits=threads):
            scorer = family.fit(sample, splits.validation, config.seed, threads)
            validation_raw, test_raw = scorer(splits.validation), scorer(splits.test)
        calibration, metrics = assess(validation_raw, test_raw, splits)
        seconds = time.perf_counter() - start
        results.append(
            Candidate(
                family.name,
                family.description,
                validation_raw,
                test_raw,
                calibration,
                metrics,
                seconds,
            )
        )
        timer.detail(
            f"{family.name:<24} validation AUC {metrics['validation']['auc_roc_raw']:.4f} "
            f"({seconds:.1f}s)"
        )
    return results


def tune(
    sample: pd.DataFrame, splits: Splits, config: TrainingConfig, timer: StepTimer
) -> list[tuple[dict[str, Any], lgb.Booster]]:
    """Every grid configuration fitted on the training rows, judged on validation;
    best first (ties keep grid order)."""
    threads = threads_for(len(sample), config.num_threads)
    fitted = []
    for overrides in TUNING_GRID:
        start = time.perf_counter()
        params = booster_params(config.seed, threads, **overrides)
        booster = fit_lightgbm(
            sample, splits.validation, params, config.max_rounds, config.early_stopping_rounds
        )
        fitted.append((overrides, booster))
        timer.detail(
            f"{_describe(overrides):<75} validation AUC {validation_auc(booster):.4f}, "
            f"{booster.best_iteration} trees ({time.perf_counter() - start:.1f}s)"
        )
    return sorted(fitted, key=lambda pair: -validation_auc(pair[1]))


def validation_auc(booster: lgb.Booster) -> float:
    return float(booster.best_score["validation"]["auc"])


def model_size(overrides: dict[str, Any], booster: lgb.Booster) -> int:
    """Leaves in the model: what refitting and scoring it cost."""
    leaves = overrides.get("num_leaves", booster_params(0, 1)["num_leaves"])
    return int(leaves) * max(1, booster.best_iteration)


def choose_config(
    tuned: list[tuple[dict[str, Any], lgb.Booster]],
) -> tuple[dict[str, Any], lgb.Booster]:
    """The smallest model among those within TUNING_TIE_AUC of the best validation AUC.

    Smaller gaps are noise (the AUC's standard error on 400k validation rows is about
    0.0007), and a smaller model refits and scores faster."""
    best = validation_auc(tuned[0][1])
    close = [pair for pair in tuned if validation_auc(pair[1]) >= best - TUNING_TIE_AUC]
    return min(close, key=lambda pair: model_size(*pair))


def _describe(overrides: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in overrides.items()) or "defaults"


def predict_raw(booster: lgb.Booster, frame: pd.DataFrame, num_threads: int) -> np.ndarray:
    return np.asarray(booster.predict(features(frame), num_threads=num_threads), dtype=float)


def choose_thresholds(
    config: TrainingConfig, validation_labels: np.ndarray, validation_probability: np.ndarray
) -> tuple[Thresholds, dict[str, str]]:
    """The MEDIUM and HIGH cut-offs: configured, or met on validation for a target."""
    medium, high = config.thresholds.medium, config.thresholds.high
    how = {"medium": "configured", "high": "configured"}
    try:
        if config.medium_recall is not None:
            medium = cutoff_for_recall(
                validation_labels, validation_probability, config.medium_recall
            )
            how["medium"] = f"recall >= {config.medium_recall:g} on validation"
        if config.high_precision is not None:
            high = cutoff_for_precision(
                validation_labels, validation_probability, config.high_precision
            )
            how["high"] = f"precision >= {config.high_precision:g} on validation"
        return Thresholds(medium=medium, high=high), how
    except ValueError as err:
        raise TrainingDataError(f"cannot place the risk cut-offs: {err}") from err


def reference_profile(rows: pd.DataFrame, scores: np.ndarray) -> dict[str, Any]:
    """Training-row quantiles of every feature and of the score, for drift monitoring."""

    def quantiles(values: np.ndarray) -> list[float | None]:
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            return [None] * len(REFERENCE_QUANTILES)
        return [float(v) for v in np.quantile(finite, REFERENCE_QUANTILES)]

    matrix = features(rows)
    return {
        "quantiles": list(REFERENCE_QUANTILES),
        "rows": len(rows),
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


def _day(ts: float) -> str:
    return cutoff_date(ts).isoformat()


def train(
    history: History,
    config: TrainingConfig | None = None,
    progress: Progress | None = None,
    truth: pd.Series | None = None,
) -> TrainedModel:
    """Compare, tune, calibrate and evaluate on `history` (see the module doc).

    `truth` (the simulator's churn propensity per customer) only feeds the oracle AUC."""
    config = config or TrainingConfig()
    timer = StepTimer(progress)
    trained_at = datetime.now(UTC)

    with timer.step("build datasets") as notes:
        # Engagement at scale 1 first: its scale is itself learned from training rows.
        cutoff_list = cutoffs(
            history, config.horizon_days, config.n_cutoffs, config.step_days, config.last_cutoff
        )
        # The rhythm prior from the gaps as of the last training cutoff: nothing after it.
        last_train_cutoff = sorted(cutoff_list)[-3]
        params = fit_gap_prior(history, last_train_cutoff, FeatureParams(engagement_scale=1.0))
        splits = build_splits(
            history,
            cutoff_list,
            config.horizon_days,
            params,
            progress=timer.detail,
        )
        notes += [f"{name} {len(frame):,} rows" for name, frame in splits.items()]
        notes.append(f"prior gap {params.prior_gap_days:.4g} days, weight {params.prior_gaps:.4g}")

    with timer.step("scale engagement") as notes:
        params = replace(params, engagement_scale=engagement_scale(splits.train))
        splits = rescale_engagement(splits, params.engagement_scale)
        sample = training_sample(splits.train, config.candidate_rows, config.seed)
        notes.append(f"engagement_scale {params.engagement_scale:.4g}")

    with timer.step("compare models") as notes:
        candidates = compare(available_families(), sample, splits, config, timer)
        best = max(candidates, key=lambda c: c.metrics["validation"]["auc_roc_raw"])
        notes.append(f"{len(sample):,} training rows each; best on validation: {best.name}")

    with timer.step("tune lightgbm") as notes:
        tuned = tune(sample, splits, config, timer)
        best_overrides, chosen = choose_config(tuned)
        booster = chosen
        notes.append(f"chosen: {_describe(best_overrides)}")

    threads = threads_for(len(splits.train), config.num_threads)
    served_params = booster_params(config.seed, threads, **best_overrides)
    if len(sample) < len(splits.train):
        with timer.step("fit served model") as notes:
            booster = fit_lightgbm(
                splits.train,
                splits.validation,
                served_params,
                config.max_rounds,
                config.early_stopping_rounds,
                progress=timer.detail,
            )
            notes.append(f"{len(splits.train):,} rows, {booster.best_iteration} trees")

    with timer.step("calibrate") as notes:
        raw = {
            name: predict_raw(booster, frame, threads)
            for name, frame in (("validation", splits.validation), ("test", splits.test))
        }
        calibration, metrics = assess(raw["validation"], raw["test"], splits)
        thresholds, threshold_source = choose_thresholds(
            config, labels(splits.validation), calibration(raw["validation"])
        )
        notes.append(
            f"isotonic, {len(calibration.raw)} breakpoints; "
            f"MEDIUM >= {thresholds.medium:.3g}, HIGH >= {thresholds.high:.3g}"
        )

    with timer.step("diagnostics") as notes:
        diagnostics = {
            "oracle": oracle_auc(splits.test, truth),
            "leaky_label": leaky_label_auc(
                splits.test, config.seed, config.num_threads, config.candidate_rows
            ),
        }
        notes.append(f"test AUC {metrics['test']['auc_roc']:.4f}")

    with timer.step("reference"):
        # Quantiles of the sampled training rows: as exact as the monitor needs.
        reference = reference_profile(
            sample, calibration(predict_raw(booster, sample, threads_for(len(sample), threads)))
        )
        digest = data_hash(splits)

    served_validation_auc = metrics["validation"]["auc_roc_raw"]
    first_ts, last_ts = event_span(history)
    metadata = {
        "model_family": MODEL_FAMILY,
        "trained_at": trained_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "data_hash": digest,
        "horizon_days": config.horizon_days,
        "step_days": config.step_days,
        "seed": config.seed,
        "training_window": {
            "data_from": _day(first_ts),
            "data_to": _day(last_ts),
            # Features and labels of the fitted model end here (validation's horizon).
            "labels_to": (
                cutoff_date(splits.validation_cutoff) + timedelta(days=config.horizon_days)
            ).isoformat(),
        },
        "cutoffs": {
            "time_of_day": "23:59:59Z",
            "train": [_day(t) for t in splits.train_cutoffs],
            "validation": _day(splits.validation_cutoff),
            "test": _day(splits.test_cutoff),
        },
        "rows": {name: len(frame) for name, frame in splits.items()},
        "positive_rate": {name: float(frame["label"].mean()) for name, frame in splits.items()},
        "metrics": {
            **metrics,
            "candidates": {c.name: c.metrics for c in candidates},
            "selection": {
                "criterion": "validation auc_roc_raw",
                "candidate_training_rows": len(sample),
                "best_on_validation": best.name,
                "served": SERVED,
                "served_minus_best_validation_auc": served_validation_auc
                - best.metrics["validation"]["auc_roc_raw"],
                "served_minus_best_test_auc": metrics["test"]["auc_roc_raw"]
                - best.metrics["test"]["auc_roc_raw"],
                "why_lightgbm": WHY_LIGHTGBM,
                "families": {c.name: c.description for c in candidates},
            },
            "tuning": [
                {
                    "params": overrides,
                    "validation_auc": validation_auc(fitted),
                    "trees": fitted.best_iteration,
                    "chosen": fitted is chosen,
                }
                for overrides, fitted in tuned
            ],
            "diagnostics": diagnostics,
        },
        "calibration": calibration.to_json(),
        "thresholds": {"medium": thresholds.medium, "high": thresholds.high},
        "threshold_source": threshold_source,
        "feature_params": asdict(params),
        "lightgbm": {
            "params": served_params,
            "best_iteration": booster.best_iteration,
            "version": lgb.__version__,
        },
        "reference": reference,
        "timings_seconds": {
            **timer.seconds,
            **{f"fit {c.name}": round(c.seconds, 3) for c in candidates},
        },
    }
    evidence = Evidence(
        test=splits.test,
        probabilities={
            **{c.name: c.test_probability for c in candidates},
            SERVED: calibration(raw["test"]),
        },
        served_test_raw=raw["test"],
        training_rows=len(splits.train),
        candidate_rows=len(sample),
    )
    version = f"{trained_at:%Y%m%dT%H%M%SZ}-{digest[:8]}"
    return TrainedModel(version, booster, calibration, params, metadata, evidence)


def save(model: TrainedModel, models_dir: Path) -> Path:
    """Write the artifact as a candidate (CURRENT does not move); returns the version
    directory.

    Two runs on the same data within one second would propose the same version, so
    a numeric suffix keeps every run's directory distinct.
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    version, attempt = model.version, 1
    while True:
        try:
            return write_artifact(models_dir, version, LightGBMModel(model.booster), model.metadata)
        except FileExistsError:
            attempt += 1
            version = f"{model.version}-{attempt}"
