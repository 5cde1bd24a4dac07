"""The model families compared on the same rows, and LightGBM's small tuning grid.

Every family handles the class imbalance its own way (class weights, is_unbalance,
scale_pos_weight) and returns a raw churn score in [0, 1]; calibration comes after.
Families that cannot take missing values get a median imputer with missing-value
indicators (a column that is missing everywhere, such as an all-NULL age, is kept).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

from feature_store.definitions import FEATURE_NAMES
from scoring.linear import LinearModel

# Below this many rows a second OpenMP thread costs more than it saves. On a busy
# machine it costs at any size: every parallel region waits for the descheduled thread
# (measured at load 3-6 on 2 cores: 17k rows 2.3 s with one thread, 58 s with two;
# 200k rows 21 s with one, 113 s with two). Hence the CLI's default of one thread.
PARALLEL_MIN_ROWS = 100_000

LIGHTGBM = "lightgbm"


def threads_for(rows: int, max_threads: int) -> int:
    return max_threads if rows >= PARALLEL_MIN_ROWS else 1


def features(frame: pd.DataFrame) -> np.ndarray:
    """The model's input matrix, columns in FEATURE_NAMES order."""
    return frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)


def labels(frame: pd.DataFrame) -> np.ndarray:
    return frame["label"].to_numpy(dtype=np.int64)


# --- LightGBM ---------------------------------------------------------------------


def booster_params(seed: int, num_threads: int, **overrides: Any) -> dict[str, Any]:
    return {
        "objective": "binary",
        # AUC drives early stopping: is_unbalance skews raw probabilities, which the
        # calibration step corrects, so ranking is what the trees must get right.
        "metric": ["auc", "binary_logloss"],
        "is_unbalance": True,
        "learning_rate": 0.1,
        "num_leaves": 31,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.9,
        "lambda_l2": 1.0,
        "seed": seed,
        "deterministic": True,
        "num_threads": num_threads,
        "force_col_wise": True,
        "verbosity": -1,
        **overrides,
    }


# The time-aware search: each configuration trains on the training cutoffs and is
# judged on the later validation cutoff. The first is the comparison's default.
# A learning rate of 0.1 (not 0.05) halves the trees for the same validation AUC here
# (0.7946 either way on 1.65M rows), which keeps a 500k-customer run within minutes.
TUNING_GRID: tuple[dict[str, Any], ...] = (
    {},
    {"num_leaves": 15, "min_data_in_leaf": 100, "feature_fraction": 0.8},
    {"num_leaves": 63, "min_data_in_leaf": 100, "feature_fraction": 0.8},
    {"num_leaves": 31, "min_data_in_leaf": 200, "feature_fraction": 0.7},
    {"num_leaves": 127, "min_data_in_leaf": 400, "feature_fraction": 0.9},
    {"num_leaves": 31, "min_data_in_leaf": 50, "learning_rate": 0.05, "feature_fraction": 0.6},
)


def fit_lightgbm(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    params: dict[str, Any],
    max_rounds: int,
    early_stopping_rounds: int,
    progress: Callable[[str], None] | None = None,
) -> lgb.Booster:
    """LightGBM on `train`, stopped when validation AUC stops improving.

    `progress` hears the validation AUC every PROGRESS_ROUNDS trees."""
    names = list(FEATURE_NAMES)
    train_set = lgb.Dataset(features(train), labels(train), feature_name=names)
    valid_set = lgb.Dataset(features(validation), labels(validation), reference=train_set)
    callbacks: list[Callable[..., Any]] = [
        lgb.early_stopping(early_stopping_rounds, first_metric_only=True, verbose=False)
    ]
    if progress is not None:
        callbacks.append(_report_every(PROGRESS_ROUNDS, progress))
    return lgb.train(
        params,
        train_set,
        num_boost_round=max_rounds,
        valid_sets=[valid_set],
        valid_names=["validation"],
        callbacks=callbacks,
    )


PROGRESS_ROUNDS = 100


def _report_every(rounds: int, progress: Callable[[str], None]) -> Callable[[Any], None]:
    def callback(env: Any) -> None:
        trees = env.iteration + 1
        if trees % rounds == 0:
            _, metric, value, _ = env.evaluation_result_list[0]
            progress(f"{trees} trees, validation {metric} {value:.4f}")

    return callback


# --- The compared families ----------------------------------------------------------


class Scorer:
    """A fitted model of any family: raw churn scores for a frame of rows."""

    def __init__(self, predict: Callable[[np.ndarray], Any]) -> None:
        self._predict = predict

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self._predict(features(frame)), dtype=np.float64)


@dataclass(frozen=True)
class Family:
    name: str
    description: str  # how it is configured, for the report
    fit: Callable[[pd.DataFrame, pd.DataFrame, int, int], Scorer]  # train, valid, seed, threads


def _imputer() -> SimpleImputer:
    return SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)


def _sklearn_scorer(model: Pipeline | HistGradientBoostingClassifier) -> Scorer:
    return Scorer(lambda x: model.predict_proba(x)[:, 1])


def fit_linear(train: pd.DataFrame, seed: int, c: float = 1.0) -> LinearModel:
    """A logistic regression (L2, strength 1/c, balanced classes) on LinearModel's design:
    standardised features, missing values at the training median, centred indicators."""
    x = features(train)
    missing = np.isnan(x)
    width = x.shape[1]
    # A column missing everywhere (an all-NULL age) is imputed with 0: it then adds nothing.
    impute = np.array(
        [np.median(x[~missing[:, j], j]) if (~missing[:, j]).any() else 0.0 for j in range(width)]
    )
    filled = np.where(missing, impute, x)
    spread = filled.std(axis=0)
    unfitted = LinearModel(
        intercept=0.0,
        coefficient=np.zeros(width),
        missing_coefficient=np.zeros(width),
        impute=impute,
        mean=filled.mean(axis=0),
        scale=np.where(spread > 0, spread, 1.0),
        missing_rate=missing.mean(axis=0),
    )
    regression = LogisticRegression(
        C=c, class_weight="balanced", max_iter=1000, random_state=seed
    ).fit(unfitted.design(x), labels(train))
    coefficients = regression.coef_[0]
    return replace(
        unfitted,
        intercept=float(regression.intercept_[0]),
        coefficient=coefficients[:width],
        missing_coefficient=coefficients[width:],
    )


def _logistic(train: pd.DataFrame, _: pd.DataFrame, seed: int, threads: int) -> Scorer:
    return Scorer(fit_linear(train, seed).probability)


def _random_forest(train: pd.DataFrame, _: pd.DataFrame, seed: int, threads: int) -> Scorer:
    forest = RandomForestClassifier(
        n_estimators=60,
        max_depth=12,
        min_samples_leaf=20,
        max_samples=0.5,  # each tree sees half the rows: 2x faster, no worse here
        class_weight="balanced_subsample",
        n_jobs=threads,
        random_state=seed,
    )
    model = make_pipeline(_imputer(), forest)
    model.fit(features(train), labels(train))
    return _sklearn_scorer(model)


def _hist_gradient_boosting(
    train: pd.DataFrame, _: pd.DataFrame, seed: int, threads: int
) -> Scorer:
    # Missing values are native to this family; its own early stopping holds out 10%.
    model = HistGradientBoostingClassifier(
        max_iter=300,
        learning_rate=0.1,
        max_leaf_nodes=31,
        min_samples_leaf=50,
        class_weight="balanced",
        early_stopping=True,
        random_state=seed,
    )
    x = features(train)
    # A column missing everywhere (an all-NULL age) carries nothing, and this family
    # fails to bin it ("window shape cannot be larger than input array"): zero it.
    empty = np.isnan(x).all(axis=0)

    def usable(matrix: np.ndarray) -> np.ndarray:
        return np.where(empty, 0.0, matrix)

    model.fit(usable(x), labels(train))
    return Scorer(lambda matrix: model.predict_proba(usable(matrix))[:, 1])


def _lightgbm(train: pd.DataFrame, validation: pd.DataFrame, seed: int, threads: int) -> Scorer:
    booster = fit_lightgbm(train, validation, booster_params(seed, threads), 2000, 50)
    return Scorer(lambda x: booster.predict(x, num_threads=threads))


def _xgboost(train: pd.DataFrame, validation: pd.DataFrame, seed: int, threads: int) -> Scorer:
    import xgboost as xgb  # optional: compared only where installed

    y = labels(train)
    model = xgb.XGBClassifier(
        n_estimators=2000,
        learning_rate=0.05,
        max_depth=6,
        tree_method="hist",
        scale_pos_weight=float((y == 0).sum() / max(1, (y == 1).sum())),
        eval_metric="auc",
        early_stopping_rounds=50,
        n_jobs=threads,
        random_state=seed,
    )
    model.fit(
        features(train), y, eval_set=[(features(validation), labels(validation))], verbose=False
    )
    return Scorer(lambda x: model.predict_proba(x)[:, 1])


FAMILIES: tuple[Family, ...] = (
    Family(
        "logistic_regression",
        "median imputation + centred indicators, standardised, class_weight=balanced "
        "(served as linear.json)",
        _logistic,
    ),
    Family(
        "random_forest",
        "60 trees, depth <= 12, leaves >= 20, half the rows per tree, balanced_subsample",
        _random_forest,
    ),
    Family(
        "hist_gradient_boosting",
        "scikit-learn HistGradientBoosting, 31 leaves, lr 0.1, early stopping, balanced",
        _hist_gradient_boosting,
    ),
    Family(
        LIGHTGBM,
        "31 leaves, lr 0.1, is_unbalance, early stopping on validation AUC",
        _lightgbm,
    ),
)
XGBOOST = Family(
    "xgboost",
    "depth 6, lr 0.05, scale_pos_weight, early stopping on validation AUC",
    _xgboost,
)


def available_families() -> tuple[Family, ...]:
    """The families compared: XGBoost too when it is installed."""
    if importlib.util.find_spec("xgboost") is None:
        return FAMILIES
    return (*FAMILIES, XGBOOST)
