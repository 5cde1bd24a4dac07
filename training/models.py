"""The model families compared, their search spaces, and how each is tuned.

A family's configurations are each fitted on every rolling fold (`Splits.folds`) and
judged by their mean validation AUC over the folds: one cutoff's validation set can
favour a configuration by luck, several rarely agree by luck. The boosted families
grow every fold's model together, one tree a round, and stop on the folds' mean
validation AUC (`boost`), so the number of trees is chosen by the folds together too.

Three families can be served, each with an artifact format the worker checks and
scores (scoring/families.py): the linear model, LightGBM and, where installed,
XGBoost. Random forest and HistGradientBoosting are compared as yardsticks only (no
pickle-free format to serve them in).

Every family handles the class imbalance its own way (class weights, is_unbalance,
scale_pos_weight) and returns a raw churn score in [0, 1]; calibration comes after.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline

from feature_store.definitions import FEATURE_NAMES
from scoring.families import LIGHTGBM, LINEAR, XGBOOST, FamilyModel, LightGBMModel
from scoring.linear import LinearModel
from training.dataset import Fold

# Below this many rows a second OpenMP thread costs more than it saves. On a busy
# machine it costs at any size: every parallel region waits for the descheduled thread
# (measured at load 3-6 on 2 cores: 17k rows 2.3 s with one thread, 58 s with two;
# 200k rows 21 s with one, 113 s with two). Hence the CLI's default of one thread.
PARALLEL_MIN_ROWS = 100_000

# Boosting stops once the folds' mean validation AUC has not improved for
# PATIENCE / learning_rate trees: the same amount of boosting (trees x learning rate)
# at any learning rate, 100 trees at 0.1 and 200 at 0.05. A validation AUC on a few
# thousand rows wanders by more than a tree's gain, and a patience of 50 trees at
# 0.1 (5) stopped models on a small, sparse purchase log after 7 to 35 trees: the
# first wobble looked like the peak. 10 outwaits such wobbles (a model that has
# really peaked costs its extra trees once, in tuning) without growing the tuning of
# a 500,000-customer shop by more than the trees it adds.
PATIENCE = 10.0


def threads_for(rows: int, max_threads: int) -> int:
    return max_threads if rows >= PARALLEL_MIN_ROWS else 1


def features(frame: pd.DataFrame) -> np.ndarray:
    """The model's input matrix, columns in FEATURE_NAMES order."""
    return frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)


def labels(frame: pd.DataFrame) -> np.ndarray:
    return frame["label"].to_numpy(dtype=np.int64)


def auc(frame: pd.DataFrame, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels(frame), scores))


def patience(learning_rate: float) -> int:
    return math.ceil(PATIENCE / learning_rate)


@dataclass(frozen=True)
class FitSettings:
    seed: int
    threads: int
    max_rounds: int = 2000


class Scores(Protocol):
    """A fitted model of any family: raw churn scores for a feature matrix."""

    def probability(self, features: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Trial:
    """One configuration of a family, fitted on every fold and judged on its validation."""

    family: str
    params: dict[str, Any]
    fold_auc: tuple[float, ...]  # validation AUC per fold, latest cutoff first
    model: Scores  # fitted on the latest fold (the served one's rows, or a sample)
    seconds: float
    trees: int | None = None  # boosting: trees at the best mean validation AUC
    fold_trees: tuple[int, ...] = ()  # the trees each fold alone would have chosen

    @property
    def auc(self) -> float:
        return float(np.mean(self.fold_auc))


@dataclass(frozen=True)
class Family:
    name: str
    description: str  # how it is configured, for the report
    space: tuple[dict[str, Any], ...]  # the configurations tried; the first is the default
    trial: Callable[[dict[str, Any], Sequence[Fold], FitSettings], Trial]
    # Fits the chosen configuration on the served model's rows (train, validation);
    # None: compared as a yardstick, not servable.
    refit: Callable[[Trial, pd.DataFrame, pd.DataFrame, FitSettings], FamilyModel] | None = None


# --- boosting, every fold at once ----------------------------------------------------


def boost(
    steps: Sequence[Callable[[], float]], learning_rate: float, max_rounds: int, min_rounds: int = 1
) -> np.ndarray:
    """Grow every fold's model by a tree a round (each step adds one and returns that
    fold's validation AUC) until the folds' mean AUC has not improved for
    `patience(learning_rate)` rounds, nor before `min_rounds`. Returns every fold's AUC
    after every round: rounds x folds."""
    wait = patience(learning_rate)
    curve: list[list[float]] = []
    best, best_round = -math.inf, 0
    for round_ in range(max_rounds):
        curve.append([step() for step in steps])
        mean = float(np.mean(curve[-1]))
        if mean > best:
            best, best_round = mean, round_
        elif round_ - best_round >= wait and round_ + 1 >= min_rounds:
            break
    return np.asarray(curve)


def best_trees(curve: np.ndarray, min_rounds: int = 1) -> int:
    """The number of trees (at least `min_rounds`) with the best mean validation AUC;
    of equal ones, the fewest."""
    means = curve.mean(axis=1)
    return min_rounds + int(np.argmax(means[min_rounds - 1 :]))


class Growth(Protocol):
    """A boosted model on one fold's rows: each call adds a tree and gives the fold's
    validation AUC."""

    booster: Any

    def __call__(self) -> float: ...


@dataclass(frozen=True)
class Boosting:
    """How a boosted family is tuned on the folds and refitted to be served."""

    family: str
    params: Callable[..., dict[str, Any]]  # (seed, threads, **overrides) -> full params
    learning_rate: str  # its parameter's name
    growth: Callable[[dict[str, Any], pd.DataFrame, pd.DataFrame], Growth]
    truncated: Callable[[Any, int], FamilyModel]  # the model of its first n trees

    def trial(self, params: dict[str, Any], folds: Sequence[Fold], fit: FitSettings) -> Trial:
        start = time.perf_counter()
        full = self.params(fit.seed, fit.threads, **params)
        steps = [self.growth(full, fold.train, fold.validation) for fold in folds]
        curve = boost(steps, full[self.learning_rate], fit.max_rounds)
        trees = best_trees(curve)
        return Trial(
            self.family,
            params,
            tuple(float(v) for v in curve[trees - 1]),
            self.truncated(steps[0].booster, trees),
            time.perf_counter() - start,
            trees,
            tuple(int(v) + 1 for v in curve.argmax(axis=0)),
        )

    def refit(
        self, trial: Trial, train: pd.DataFrame, validation: pd.DataFrame, fit: FitSettings
    ) -> FamilyModel:
        """On all training rows: at least the tuned trees, more while validation AUC rises."""
        full = self.params(fit.seed, fit.threads, **trial.params)
        step = self.growth(full, train, validation)
        least = trial.trees or 1
        curve = boost([step], full[self.learning_rate], fit.max_rounds, min_rounds=least)
        return self.truncated(step.booster, best_trees(curve, min_rounds=least))


# --- LightGBM -----------------------------------------------------------------------


def booster_params(seed: int, num_threads: int, **overrides: Any) -> dict[str, Any]:
    return {
        "objective": "binary",
        # AUC drives the stopping: is_unbalance skews raw probabilities, which the
        # calibration step corrects, so ranking is what the trees must get right.
        "metric": "auc",
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


# From the default towards fewer, larger-leaved trees, and towards smaller, more
# regularised ones (fewer leaves, more rows per leaf, L2 10, slower learning), which
# small and sparse data need. A learning rate of 0.1 halves the trees of 0.05 for the
# same validation AUC on the 500,000-customer shop (0.7946 either way).
LIGHTGBM_SPACE: tuple[dict[str, Any], ...] = (
    {},
    {"num_leaves": 63, "min_data_in_leaf": 100, "feature_fraction": 0.8},
    {"num_leaves": 127, "min_data_in_leaf": 400},
    {"num_leaves": 15, "min_data_in_leaf": 100, "feature_fraction": 0.8, "learning_rate": 0.05},
    {"num_leaves": 31, "min_data_in_leaf": 200, "feature_fraction": 0.7, "lambda_l2": 10.0},
    {"num_leaves": 7, "min_data_in_leaf": 200, "lambda_l2": 10.0, "learning_rate": 0.05},
    {"num_leaves": 15, "min_data_in_leaf": 50, "lambda_l1": 1.0, "learning_rate": 0.05},
)


class _LightGBMGrowth:
    """A LightGBM model on one fold's rows; each call adds a tree and gives the AUC."""

    def __init__(
        self, params: dict[str, Any], train: pd.DataFrame, validation: pd.DataFrame
    ) -> None:
        names = list(FEATURE_NAMES)
        train_set = lgb.Dataset(features(train), labels(train), feature_name=names)
        self.booster = lgb.Booster(params, train_set)
        valid_set = lgb.Dataset(features(validation), labels(validation), reference=train_set)
        self.booster.add_valid(valid_set, "validation")

    def __call__(self) -> float:
        self.booster.update()
        return float(self.booster.eval_valid()[0][2])  # (data, metric, value, higher better)


def _lightgbm_truncated(booster: lgb.Booster, trees: int) -> LightGBMModel:
    # A fresh booster of the first `trees` trees: what is saved is what was chosen.
    return LightGBMModel(lgb.Booster(model_str=booster.model_to_string(num_iteration=trees)))


# --- XGBoost (optional) -------------------------------------------------------------


def xgboost_params(seed: int, num_threads: int, **overrides: Any) -> dict[str, Any]:
    return {
        "objective": "binary:logistic",
        "eval_metric": "auc",
        "tree_method": "hist",
        "eta": 0.1,
        "max_depth": 6,
        "min_child_weight": 1.0,
        "lambda": 1.0,
        "seed": seed,
        "nthread": num_threads,
        **overrides,
    }


XGBOOST_SPACE: tuple[dict[str, Any], ...] = (
    {},
    {"max_depth": 4, "min_child_weight": 5.0, "lambda": 5.0, "eta": 0.05},
    {"max_depth": 3, "min_child_weight": 10.0, "lambda": 10.0, "subsample": 0.8},
    {"max_depth": 8, "min_child_weight": 5.0, "colsample_bytree": 0.8},
)


class _XGBoostGrowth:
    """An XGBoost model on one fold's rows; each call adds a tree and gives the AUC."""

    def __init__(
        self, params: dict[str, Any], train: pd.DataFrame, validation: pd.DataFrame
    ) -> None:
        import xgboost as xgb

        y, threads = labels(train), params["nthread"]
        self.train = xgb.DMatrix(features(train), y, missing=np.nan, nthread=threads)
        self.validation = xgb.DMatrix(
            features(validation), labels(validation), missing=np.nan, nthread=threads
        )
        balance = float((y == 0).sum() / max(1, (y == 1).sum()))
        self.booster = xgb.Booster(
            {**params, "scale_pos_weight": balance}, cache=[self.train, self.validation]
        )
        self.rounds = itertools.count()

    def __call__(self) -> float:
        round_ = next(self.rounds)
        self.booster.update(self.train, round_)
        evaluation = self.booster.eval(self.validation, "validation", round_)
        return float(evaluation.rsplit(":", 1)[1])  # "[round]\tvalidation-auc:0.78"


def _xgboost_truncated(booster: Any, trees: int) -> FamilyModel:
    from scoring.xgboost_model import XGBoostModel

    return XGBoostModel.from_bytes(bytes(booster[:trees].save_raw("json")))


LIGHTGBM_BOOSTING = Boosting(
    LIGHTGBM,
    booster_params,
    "learning_rate",
    _LightGBMGrowth,
    _lightgbm_truncated,
)
XGBOOST_BOOSTING = Boosting(
    XGBOOST,
    xgboost_params,
    "eta",
    _XGBoostGrowth,
    _xgboost_truncated,
)


def tree_count(model: FamilyModel) -> int | None:
    """The trees of a boosted model (None for the linear one)."""
    if isinstance(model, LightGBMModel):
        return int(model.booster.num_trees())
    if model.family == XGBOOST:
        return int(model.booster.num_boosted_rounds())  # type: ignore[attr-defined]
    return None


# --- the linear model ---------------------------------------------------------------


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


# Regularisation strength: the default, then stronger (small data overfits a little).
LINEAR_SPACE: tuple[dict[str, Any], ...] = ({"c": 1.0}, {"c": 0.1}, {"c": 0.01})


def _fold_trial(
    family: str, params: dict[str, Any], folds: Sequence[Fold], fit_one: Callable[[Fold], Scores]
) -> Trial:
    """Fit one model per fold (`fit_one`), then judge each on its fold's validation."""
    start = time.perf_counter()
    models = [fit_one(fold) for fold in folds]
    fold_auc = tuple(
        auc(fold.validation, model.probability(features(fold.validation)))
        for fold, model in zip(folds, models, strict=True)
    )
    return Trial(family, params, fold_auc, models[0], time.perf_counter() - start)


def _linear_trial(params: dict[str, Any], folds: Sequence[Fold], fit: FitSettings) -> Trial:
    def fit_one(fold: Fold) -> LinearModel:
        return fit_linear(fold.train, fit.seed, **params)

    return _fold_trial(LINEAR, params, folds, fit_one)


def _linear_refit(
    trial: Trial, train: pd.DataFrame, validation: pd.DataFrame, fit: FitSettings
) -> FamilyModel:
    return fit_linear(train, fit.seed, **trial.params)


# --- yardsticks: compared, not served -----------------------------------------------


@dataclass(frozen=True)
class _Fitted:
    model: Any  # a fitted scikit-learn classifier
    transform: Callable[[np.ndarray], np.ndarray]  # what its inputs need first

    def probability(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_proba(self.transform(features))[:, 1], float)


def _yardstick_trial(
    family: str, make: Callable[[FitSettings], Any], transform: Callable[[np.ndarray], np.ndarray]
) -> Callable[[dict[str, Any], Sequence[Fold], FitSettings], Trial]:
    def trial(params: dict[str, Any], folds: Sequence[Fold], fit: FitSettings) -> Trial:
        def fit_one(fold: Fold) -> _Fitted:
            model = make(fit)
            model.fit(transform(features(fold.train)), labels(fold.train))
            return _Fitted(model, transform)

        return _fold_trial(family, params, folds, fit_one)

    return trial


def _random_forest(fit: FitSettings) -> Any:
    imputer = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)
    forest = RandomForestClassifier(
        n_estimators=60,
        max_depth=12,
        min_samples_leaf=20,
        max_samples=0.5,  # each tree sees half the rows: 2x faster, no worse here
        class_weight="balanced_subsample",
        n_jobs=fit.threads,
        random_state=fit.seed,
    )
    return make_pipeline(imputer, forest)


def _hist_gradient_boosting(fit: FitSettings) -> Any:
    # Missing values are native to this family; its own early stopping holds out 10%.
    return HistGradientBoostingClassifier(
        max_iter=300,
        learning_rate=0.1,
        max_leaf_nodes=31,
        min_samples_leaf=50,
        class_weight="balanced",
        early_stopping=True,
        random_state=fit.seed,
    )


def _nan_to_zero(matrix: np.ndarray) -> np.ndarray:
    # A column missing everywhere (an all-NULL age) carries nothing, and
    # HistGradientBoosting fails to bin it ("window shape cannot be larger than input
    # array"): zero such columns (elsewhere NaN stays missing).
    empty = np.isnan(matrix).all(axis=0)
    return np.where(empty, 0.0, matrix)


FAMILIES: tuple[Family, ...] = (
    Family(
        LINEAR,
        "logistic regression: median imputation + centred missing indicators, "
        "standardised, class_weight=balanced, L2 strength 1/c",
        LINEAR_SPACE,
        _linear_trial,
        _linear_refit,
    ),
    Family(
        LIGHTGBM,
        "is_unbalance; leaves, rows per leaf, L1/L2, feature fraction and learning rate "
        "tuned; trees stop on the folds' mean validation AUC",
        LIGHTGBM_SPACE,
        LIGHTGBM_BOOSTING.trial,
        LIGHTGBM_BOOSTING.refit,
    ),
    Family(
        "random_forest",
        "60 trees, depth <= 12, leaves >= 20, half the rows per tree, balanced_subsample",
        ({},),
        _yardstick_trial("random_forest", _random_forest, np.asarray),
    ),
    Family(
        "hist_gradient_boosting",
        "scikit-learn HistGradientBoosting, 31 leaves, lr 0.1, its own early "
        "stopping on 10% of the rows, balanced",
        ({},),
        _yardstick_trial("hist_gradient_boosting", _hist_gradient_boosting, _nan_to_zero),
    ),
)
XGBOOST_FAMILY = Family(
    XGBOOST,
    "optional extra: hist, scale_pos_weight; depth, min child weight, L2, sampling and "
    "learning rate tuned; trees stop on the folds' mean validation AUC",
    XGBOOST_SPACE,
    XGBOOST_BOOSTING.trial,
    XGBOOST_BOOSTING.refit,
)


def available_families() -> tuple[Family, ...]:
    """The families compared: XGBoost too when it is installed."""
    if importlib.util.find_spec("xgboost") is None:
        return FAMILIES
    return (*FAMILIES, XGBOOST_FAMILY)
