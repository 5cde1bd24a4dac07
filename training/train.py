"""Compare, tune, calibrate and evaluate churn models, and serve the best.

Steps: purchase-rhythm prior fitted on the last training cutoff's order gaps ->
point-in-time splits, with earlier validation cutoffs -> engagement scale fixed on
the training rows -> every family tuned over its search space on the rolling folds
(each configuration fitted for each validation cutoff and judged by its mean
validation AUC: training.models) -> the servable family with the best mean validation
AUC is served (families within TIE_AUC of it are tied, and the simplest of those is
served: linear, then LightGBM, then XGBoost), refitted on all training rows ->
isotonic calibration and risk cut-offs on the validation cutoff -> metrics on
validation and test -> diagnostics (oracle, leaky label) -> reference distributions
for drift (the training rows', and the drift monitor's: the scores the worker gives
the training period's events, `training.reference`).

Validation rows choose the family and its configuration, stop the boosting, and
calibrate; nothing from test rows feeds the served model at all: test rows are only
ever scored.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import lightgbm as lgb
import numpy as np
import pandas as pd
import sklearn
from sklearn.isotonic import IsotonicRegression
from threadpoolctl import threadpool_limits

from feature_store.definitions import FEATURE_NAMES, SECONDS_PER_DAY, FeatureParams
from feature_store.offline import History
from scoring.artifact import ArtifactError, load_model, write_artifact
from scoring.decoding import Limits
from scoring.families import SIMPLICITY, XGBOOST, FamilyModel
from scoring.model import Calibration, Model, Thresholds
from scoring.risk import ValueTargeting
from training.dataset import (
    Fold,
    Splits,
    TrainingDataError,
    build_splits,
    check_within,
    cutoff_date,
    cutoffs,
    event_span,
)
from training.diagnostics import leaky_label_auc, oracle_auc
from training.metrics import (
    cutoff_for_precision,
    cutoff_for_recall,
    evaluate,
    success,
    targeting_table,
)
from training.models import (
    PATIENCE,
    Family,
    FitSettings,
    Trial,
    available_families,
    features,
    labels,
    threads_for,
    tree_count,
)
from training.reference import REFERENCE_CUSTOMERS, serving_reference
from training.rhythm import fit_gap_prior

# The served model's row in the comparison, and its curves in the report.
SERVED = "served"
ENGAGEMENT_QUANTILE = 0.99
# Isotonic end blocks are small samples and come out as exactly 0 or 1; a served
# probability should never claim certainty, and log loss punishes it without bound.
PROBABILITY_FLOOR = 1e-3
# Families this close in mean validation AUC are tied, and the simpler is served.
# Smaller gaps are noise (the AUC's standard error on 400k validation rows is about
# 0.0007), and a simpler model explains itself better, refits and scores faster.
TIE_AUC = 0.001
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
    # Validation cutoffs tuning is judged on: the validation cutoff and earlier ones,
    # step_days apart; at most n_cutoffs - 2 (each fold needs a training cutoff).
    folds: int = 3
    # The families are compared and tuned on at most this many training (and
    # validation) rows per fold, a seeded random sample; the served one is refitted on
    # all training rows (boosting at least the tuned trees, more while validation AUC
    # rises). Every configuration is boosted on every fold until 10 / learning rate
    # trees bring nothing: on 200,000 rows one LightGBM configuration at 0.05 took
    # 305 s (100,000 customers, a busy machine); a quarter of the rows, about a quarter
    # of the time.
    candidate_rows: int = 50_000
    # The families to compare (default: all of training.models.available_families()).
    families: tuple[str, ...] | None = None
    # Customers whose scores over the training period make the drift reference.
    reference_customers: int = REFERENCE_CUSTOMERS
    # The worker's bounds on input events: a history outside them is refused.
    limits: Limits = field(default_factory=Limits)
    # The value targeting the report compares with the cut-off and with capacity.
    targeting: ValueTargeting = field(default_factory=ValueTargeting)


@dataclass(frozen=True, eq=False)  # compared by identity: it holds arrays
class Candidate:
    """One family at its chosen configuration: its raw scores on the validation cutoff
    and test, its own calibration and its metrics; and every configuration tried."""

    family: Family
    trials: tuple[Trial, ...]  # in search-space order
    chosen: Trial
    validation_raw: np.ndarray
    test_raw: np.ndarray
    calibration: Calibration
    metrics: dict[str, dict[str, float]]

    @property
    def name(self) -> str:
        return self.family.name

    @property
    def servable(self) -> bool:
        return self.family.refit is not None

    @property
    def seconds(self) -> float:
        return sum(trial.seconds for trial in self.trials)

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
    estimator: FamilyModel
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
        rolling=tuple(rescaled(frame) for frame in splits.rolling),
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


def tuning_folds(splits: Splits, max_rows: int, seed: int) -> list[Fold]:
    """The rolling folds, each fold's training and validation rows sampled to at most
    `max_rows` (seeded; the latest fold's training sample is the comparison's)."""
    return [
        Fold(
            fold.cutoff,
            training_sample(fold.train, max_rows, seed),
            training_sample(fold.validation, max_rows, seed),
        )
        for fold in splits.folds()
    ]


def tune(family: Family, folds: Sequence[Fold], fit: FitSettings, timer: StepTimer) -> list[Trial]:
    """Every configuration of the family fitted on every fold, in search-space order."""
    trials = []
    for params in family.space:
        with threadpool_limits(limits=fit.threads):
            trial = family.trial(params, folds, fit)
        trials.append(trial)
        trees = "" if trial.trees is None else f"{trial.trees:>5} trees"
        timer.detail(
            f"{family.name:<22} validation AUC {trial.auc:.4f} "
            f"({' '.join(f'{v:.4f}' for v in trial.fold_auc)}) {trees:<11} "
            f"{trial.seconds:6.1f}s  {describe(params)}"
        )
    return trials


def choose(trials: Sequence[Trial]) -> Trial:
    """The configuration with the best mean validation AUC over the folds (of equal ones,
    the earlier in the search space). No tolerance here: a size-for-AUC trade picked
    fast-stopping models that every cutoff ranked below the best (issue 12)."""
    return max(trials, key=lambda trial: trial.auc)


def select(candidates: Sequence[Candidate]) -> tuple[Candidate, str]:
    """The servable family to serve, and why, in words with the numbers."""
    servable = [c for c in candidates if c.servable]
    if not servable:
        raise ValueError("no servable family was compared")
    best = max(servable, key=lambda c: c.chosen.auc)
    tied = [c for c in servable if c.chosen.auc >= best.chosen.auc - TIE_AUC]
    served = min(tied, key=lambda c: SIMPLICITY.index(c.name))
    others = (
        ", ".join(f"{c.name} {c.chosen.auc:.4f}" for c in servable if c not in (served, best))
        or "no other servable family"
    )
    folds = len(served.chosen.fold_auc)
    if served is best:
        why = (
            f"{served.name} is served: the best mean validation AUC over {folds} rolling "
            f"cutoffs of the servable families, {served.chosen.auc:.4f} ({others})."
        )
    else:
        why = (
            f"{served.name} is served: {best.name} scored {best.chosen.auc:.4f}, within "
            f"{TIE_AUC} of its {served.chosen.auc:.4f} (mean validation AUC over {folds} "
            f"rolling cutoffs), and of tied families the simpler is served "
            f"({' < '.join(SIMPLICITY)}); {others}."
        )
    better = [c for c in candidates if not c.servable and c.chosen.auc > served.chosen.auc]
    if better:
        why += (
            " Yardsticks that cannot be served scored higher: "
            + ", ".join(f"{c.name} {c.chosen.auc:.4f}" for c in better)
            + "."
        )
    return served, why


def stability(candidate: Candidate) -> dict[str, Any]:
    """How the chosen configuration held across the validation cutoffs: its AUC on
    each, its rank among the family's configurations on each, and (boosting) the trees
    each cutoff alone would have stopped at."""
    chosen, trials = candidate.chosen, candidate.trials
    aucs = np.array(chosen.fold_auc)
    ranks = [
        1 + sum(trial.fold_auc[i] > chosen.fold_auc[i] for trial in trials)
        for i in range(len(aucs))
    ]
    return {
        "params": chosen.params,
        "fold_auc": aucs.tolist(),
        "mean_auc": float(aucs.mean()),
        "std_auc": float(aucs.std()),
        "min_auc": float(aucs.min()),
        "max_auc": float(aucs.max()),
        "rank_by_fold": ranks,
        "configurations": len(trials),
        "trees": chosen.trees,
        "fold_trees": list(chosen.fold_trees),
    }


def describe(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(params.items())) or "defaults"


def compare(
    families: Sequence[Family],
    folds: Sequence[Fold],
    splits: Splits,
    fit: FitSettings,
    timer: StepTimer,
) -> list[Candidate]:
    """Every family tuned on the folds; its chosen configuration's model (fitted on the
    latest fold's rows) scores the validation cutoff and test, and is calibrated."""
    candidates = []
    for family in families:
        trials = tune(family, folds, fit, timer)
        chosen = choose(trials)
        validation_raw = chosen.model.probability(features(splits.validation))
        test_raw = chosen.model.probability(features(splits.test))
        calibration, metrics = assess(validation_raw, test_raw, splits)
        candidates.append(
            Candidate(
                family,
                tuple(trials),
                chosen,
                validation_raw,
                test_raw,
                calibration,
                metrics,
            )
        )
    return candidates


def library_versions(family: str) -> dict[str, str]:
    versions = {"lightgbm": lgb.__version__, "scikit-learn": sklearn.__version__}
    if family == XGBOOST:
        import xgboost

        versions["xgboost"] = xgboost.__version__
    return versions


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
    """SHA-256 over every row (ids, cutoff, features, label) of every split and fold."""
    digest = hashlib.sha256()
    for name, frame in [*splits.items(), *(("rolling", f) for f in splits.rolling)]:
        digest.update(name.encode())
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _day(ts: float) -> str:
    return cutoff_date(ts).isoformat()


def families_for(config: TrainingConfig) -> tuple[Family, ...]:
    available = available_families()
    if config.families is None:
        return available
    unknown = set(config.families) - {f.name for f in available}
    if unknown:
        raise TrainingDataError(
            f"unknown or unavailable families {sorted(unknown)}: choose from "
            f"{[f.name for f in available]}"
        )
    return tuple(f for f in available if f.name in config.families)


def train(
    history: History,
    config: TrainingConfig | None = None,
    progress: Progress | None = None,
    truth: pd.Series | None = None,
) -> TrainedModel:
    """Compare, tune, calibrate and evaluate on `history` (see the module doc).

    `truth` (the simulator's churn propensity per customer) only feeds the oracle AUC."""
    config = config or TrainingConfig()
    check_within(history, config.limits)
    timer = StepTimer(progress)
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
            folds=min(config.folds, config.n_cutoffs - 2),
            step_days=config.step_days,
        )
        notes += [f"{name} {len(frame):,} rows" for name, frame in splits.items()]
        notes.append(f"prior gap {params.prior_gap_days:.4g} days, weight {params.prior_gaps:.4g}")
    trained = train_on_splits(splits, config, timer, truth, event_span(history), params)
    with timer.step("drift reference") as notes:
        # The drift monitor's: the scores the worker gives the training period's events.
        metadata = trained.metadata
        model = Model(
            "training",
            trained.estimator,
            trained.calibration,
            Thresholds(**metadata["thresholds"]),
            trained.feature_params,
            {},
        )
        metadata["reference"]["serving"] = serving_reference(
            history,
            model,
            splits.train_cutoffs[0],
            splits.validation_cutoff,
            config.reference_customers,
            config.seed,
            config.limits,
        )
        notes.append(f"{metadata['reference']['serving']['rows']:,} scores")
    metadata["timings_seconds"]["drift reference"] = timer.seconds["drift reference"]
    return trained


def train_on_splits(
    splits: Splits,
    config: TrainingConfig,
    timer: StepTimer | None = None,
    truth: pd.Series | None = None,
    data_span: tuple[float, float] | None = None,
    built_with: FeatureParams | None = None,
) -> TrainedModel:
    """Everything after the data sets: see the module doc. `data_span`: the first and last
    event time of the history (default: the cutoffs); `built_with`: the constants the
    splits' features were computed with, at engagement scale 1 (default: FeatureParams's)."""
    timer = timer or StepTimer()
    trained_at = datetime.now(UTC)
    with timer.step("scale engagement") as notes:
        params = built_with or FeatureParams(engagement_scale=1.0)
        params = replace(params, engagement_scale=engagement_scale(splits.train))
        splits = rescale_engagement(splits, params.engagement_scale)
        folds = tuning_folds(splits, config.candidate_rows, config.seed)
        sample = folds[0].train
        notes.append(f"engagement_scale {params.engagement_scale:.4g}")

    fit = FitSettings(config.seed, threads_for(len(sample), config.num_threads), config.max_rounds)
    with timer.step("tune and compare") as notes:
        candidates = compare(families_for(config), folds, splits, fit, timer)
        served, why = select(candidates)
        notes.append(why)

    refit = len(sample) < len(splits.train)
    # A servable family's trials hold its FamilyModel.
    estimator = cast(FamilyModel, served.chosen.model)
    if refit and served.family.refit is not None:
        with timer.step("fit served model") as notes:
            threads = threads_for(len(splits.train), config.num_threads)
            all_rows = replace(fit, threads=threads)
            with threadpool_limits(limits=threads):
                estimator = served.family.refit(
                    served.chosen, splits.train, splits.validation, all_rows
                )
            notes.append(f"{len(splits.train):,} rows, {tree_count(estimator)} trees")

    with timer.step("calibrate") as notes:
        raw = {
            name: estimator.probability(features(frame))
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
        reference = reference_profile(sample, calibration(estimator.probability(features(sample))))
        digest = data_hash(splits)

    first_ts, last_ts = data_span or (
        min(splits.train_cutoffs),
        splits.test_cutoff + splits.horizon_days * SECONDS_PER_DAY,
    )
    best = max(candidates, key=lambda c: c.chosen.auc)
    tuned = {c.name: c for c in candidates}
    metadata = {
        "model_family": served.name,
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
            "rolling_validation": [_day(fold.cutoff) for fold in folds],
            "test": _day(splits.test_cutoff),
        },
        "rows": {name: len(frame) for name, frame in splits.items()},
        "positive_rate": {name: float(frame["label"].mean()) for name, frame in splits.items()},
        "success_criteria": success(metrics["test"]),
        "targeting": targeting_table(
            labels(splits.test),
            calibration(raw["test"]),
            splits.test["spend_90d"].to_numpy(),
            thresholds.high,
            config.targeting,
        ),
        "metrics": {
            **metrics,
            "candidates": {c.name: c.metrics for c in candidates},
            "selection": {
                "criterion": "mean validation AUC (raw score) over the rolling validation cutoffs",
                "tie_auc": TIE_AUC,
                "simplest_first": list(SIMPLICITY),
                "validation_auc": {c.name: c.chosen.auc for c in candidates},
                "servable": [c.name for c in candidates if c.servable],
                "best_on_validation": best.name,
                "served": served.name,
                "why": why,
                "candidate_training_rows": len(sample),
                "refitted_on_all_training_rows": refit,
                "families": {c.name: c.family.description for c in candidates},
            },
            "tuning": {
                "folds": [
                    {
                        "validation_cutoff": _day(fold.cutoff),
                        "train_cutoffs": sorted({_day(t) for t in fold.train["cutoff_ts"]}),
                        "train_rows": len(fold.train),
                        "validation_rows": len(fold.validation),
                    }
                    for fold in folds
                ],
                "patience": f"{PATIENCE:g} / learning rate trees",
                "families": {
                    c.name: [
                        {
                            "params": trial.params,
                            "validation_auc": trial.auc,
                            "fold_auc": list(trial.fold_auc),
                            "trees": trial.trees,
                            "chosen": trial is c.chosen,
                        }
                        for trial in c.trials
                    ]
                    for c in candidates
                },
                "stability": {name: stability(c) for name, c in tuned.items()},
            },
            "diagnostics": diagnostics,
        },
        "calibration": calibration.to_json(),
        "thresholds": {"medium": thresholds.medium, "high": thresholds.high},
        "threshold_source": threshold_source,
        "feature_params": asdict(params),
        "served_model": {
            "family": served.name,
            "params": served.chosen.params,
            "tuned_trees": served.chosen.trees,
            "trees": tree_count(estimator),
            "libraries": library_versions(served.name),
        },
        "reference": reference,
        "timings_seconds": {
            **timer.seconds,
            **{f"tune {c.name}": round(c.seconds, 3) for c in candidates},
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
    return TrainedModel(version, estimator, calibration, params, metadata, evidence)


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
            path = write_artifact(models_dir, version, model.estimator, model.metadata)
            break
        except FileExistsError:
            attempt += 1
            version = f"{model.version}-{attempt}"
    try:  # read back as the worker will: never leave a version its loader refuses
        load_model(models_dir, version)
    except ArtifactError:
        shutil.rmtree(path)
        raise
    return path
