"""Which model is served, and how tuning decides: the family with the best mean
validation AUC over rolling cutoffs (ties to the simpler), each fold trained only on
what was known a horizon before its validation cutoff, and boosting that waits out a
noisy dip before it stops."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from feature_store.definitions import FEATURE_NAMES, SECONDS_PER_DAY
from scoring.artifact import load_model
from scoring.families import LIGHTGBM, LINEAR, XGBOOST
from tests.support import HORIZON, VALIDATION, synthetic_splits
from training import TrainingConfig, save
from training.dataset import Splits
from training.models import FAMILIES, XGBOOST_FAMILY, Trial, best_trees, boost, patience
from training.train import TIE_AUC, Candidate, select, train_on_splits

DAY = SECONDS_PER_DAY
# At most 150 trees: these small data sets peak well before (the stopping rule has tests
# of its own below).
CONFIG = TrainingConfig(num_threads=1, families=(LINEAR, LIGHTGBM), folds=3, max_rounds=150)


def served_and_scores(splits: Splits, tmp_path: Path) -> tuple[str, dict[str, float]]:
    model = train_on_splits(splits, CONFIG)
    selection = model.metadata["metrics"]["selection"]
    written = save(model, tmp_path)
    loaded = load_model(written.parent, written.name)  # what the worker would serve
    assert loaded.family == model.metadata["model_family"] == selection["served"]
    x = splits.test[list(FEATURE_NAMES)].to_numpy()
    np.testing.assert_allclose(loaded.predict(x), model.calibration(model.estimator.probability(x)))
    return loaded.family, selection["validation_auc"]


def test_a_linear_signal_serves_the_linear_model(tmp_path: Path) -> None:
    splits = synthetic_splits(lambda x: 1.5 * x[:, 0] - 1.0 * x[:, 3] + 0.5 * x[:, 7])
    served, scores = served_and_scores(splits, tmp_path)
    assert served == LINEAR
    # It wins outright or ties within the tolerance (then the simpler family is served).
    assert scores[LINEAR] >= scores[LIGHTGBM] - TIE_AUC


def test_an_interaction_serves_lightgbm(tmp_path: Path) -> None:
    # Churn when two features agree in sign: no straight line separates that.
    splits = synthetic_splits(lambda x: 3.0 * x[:, 0] * x[:, 3])
    served, scores = served_and_scores(splits, tmp_path)
    assert served == LIGHTGBM
    assert scores[LIGHTGBM] > scores[LINEAR] + 0.1


def candidate(name: str, auc: float) -> Candidate:
    family = next(f for f in (*FAMILIES, XGBOOST_FAMILY) if f.name == name)
    trial = Trial(name, {}, (auc,), model=None, seconds=0.0)  # type: ignore[arg-type]
    empty = np.zeros(0)
    return Candidate(family, (trial,), trial, empty, empty, None, {})  # type: ignore[arg-type]


def test_a_family_within_the_tie_tolerance_yields_to_the_simpler_one() -> None:
    served, why = select([candidate(LINEAR, 0.7800), candidate(LIGHTGBM, 0.7800 + TIE_AUC)])
    assert served.name == LINEAR
    assert "within 0.001" in why and "linear < lightgbm" in why
    served, why = select([candidate(LINEAR, 0.7800), candidate(LIGHTGBM, 0.7800 + 2 * TIE_AUC)])
    assert served.name == LIGHTGBM
    assert "the best mean validation AUC" in why


def test_a_yardstick_that_scores_higher_is_named_but_not_served() -> None:
    served, why = select([candidate(LINEAR, 0.78), candidate("random_forest", 0.79)])
    assert served.name == LINEAR
    assert "cannot be served scored higher: random_forest 0.7900" in why


def test_each_fold_trains_only_on_cutoffs_a_horizon_before_its_validation_cutoff() -> None:
    folds = synthetic_splits(lambda x: x[:, 0]).folds()
    assert [fold.cutoff for fold in folds] == [
        VALIDATION,
        VALIDATION - 14 * DAY,
        VALIDATION - 28 * DAY,
    ]
    for fold in folds:
        trained_on = set(fold.train["cutoff_ts"])
        assert trained_on and max(trained_on) <= fold.cutoff - HORIZON * DAY
        assert set(fold.validation["cutoff_ts"]) == {fold.cutoff}
    # Expanding window: the latest fold trains on every training cutoff, each earlier
    # one on one cutoff fewer.
    assert [len(set(fold.train["cutoff_ts"])) for fold in folds] == [4, 3, 2]


def scripted(aucs: list[float]) -> Callable[[], float]:
    """A fold whose validation AUC after each added tree is given."""
    values: Iterator[float] = iter(aucs)
    return lambda: next(values)


def test_boosting_waits_out_a_dip_shorter_than_its_patience() -> None:
    wait = patience(0.1)
    assert wait == 100
    # Best at tree 5, then a dip of 80 trees (what stopped the old 50-tree patience),
    # then better than ever at tree 90; after that no gain.
    aucs = [0.70 + 0.01 * i for i in range(5)] + [0.70] * 80 + [0.80] * 300
    curve = boost([scripted(aucs)], learning_rate=0.1, max_rounds=1000)
    assert best_trees(curve) == 86
    assert len(curve) == 86 + wait  # stopped once 100 trees brought nothing


def test_boosting_stops_on_the_folds_mean_not_on_one_folds_noise() -> None:
    noisy = [0.7] + [0.6] * 400  # one fold peaks by luck at its first tree, and alone
    steady = [0.6 + 0.002 * i for i in range(100)] + [0.8] * 300  # would have stopped there
    curve = boost([scripted(noisy), scripted(steady)], learning_rate=0.1, max_rounds=1000)
    assert best_trees(curve) == 101
    assert curve.argmax(axis=0).tolist() == [0, 100]


def test_a_refit_keeps_at_least_the_tuned_trees() -> None:
    aucs = [0.8] + [0.7] * 400
    curve = boost([scripted(aucs)], learning_rate=0.1, max_rounds=1000, min_rounds=40)
    assert len(curve) == 101  # without the minimum it would still stop there: at 1 + 100
    assert best_trees(curve, min_rounds=40) == 40  # but keeps the 40 tuned trees


@pytest.mark.parametrize("folds", [1, 4])
def test_fewer_or_more_folds_validate_on_that_many_cutoffs(folds: int) -> None:
    splits = synthetic_splits(lambda x: x[:, 0], rows=300, folds=folds)
    model = train_on_splits(splits, replace(CONFIG, families=(LINEAR,)))
    tuning = model.metadata["metrics"]["tuning"]
    assert len(tuning["folds"]) == folds
    assert all(len(t["fold_auc"]) == folds for t in tuning["families"][LINEAR])


def test_the_reason_names_every_servable_familys_score() -> None:
    _, why = select([candidate(LINEAR, 0.70), candidate(LIGHTGBM, 0.75), candidate(XGBOOST, 0.72)])
    assert why == (
        "lightgbm is served: the best mean validation AUC over 1 rolling cutoffs of the "
        "servable families, 0.7500 (linear 0.7000, xgboost 0.7200)."
    )
