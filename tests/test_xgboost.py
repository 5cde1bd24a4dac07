"""XGBoost, the optional extra: an artifact holds its JSON model, the worker scores it with
exact TreeSHAP reasons (`pred_contribs`), a damaged one is refused without harming the
worker, and where xgboost is missing the worker stops at start naming the extra.

These tests need the extra; `make venv` installs it (the dev lock holds it), so they
run here and in CI, where its absence fails them rather than skipping them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from feature_store.definitions import FEATURE_NAMES
from scoring.artifact import ArtifactError, load_model
from scoring.families import MODEL_FILES, XGBOOST
from tests.support import RECENCY, ROOT, optional_module, resign, synthetic_splits, write_model
from training import TrainingConfig, save
from training.models import features
from training.train import train_on_splits

xgb = optional_module("xgboost", "xgboost")
from scoring.xgboost_model import XGBoostModel  # noqa: E402  (needs xgboost)

XGBOOST_FILE = MODEL_FILES[XGBOOST]


@pytest.fixture(scope="module")
def recency() -> tuple[Any, np.ndarray]:
    """A real XGBoost model of one rule: no order for 30+ days means churn, and the
    features it learned from (trained once for the module; the tests only read it)."""
    rng = np.random.default_rng(7)
    features = rng.normal(size=(2000, len(FEATURE_NAMES)))
    features[:, RECENCY] = rng.uniform(0, 120, size=2000)
    labels = (features[:, RECENCY] > 30).astype(int)
    params = {"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": 7}
    return xgb.train(params, xgb.DMatrix(features, labels), num_boost_round=20), features


@pytest.fixture
def models(tmp_path: Path, recency: tuple[Any, np.ndarray]) -> Path:
    booster, _ = recency
    return write_model(tmp_path / "models", "xgb-v1", XGBoostModel(booster))


def test_an_xgboost_artifact_round_trips_with_contributions_that_sum_to_the_margin(
    models: Path, recency: tuple[Any, np.ndarray]
) -> None:
    booster, features = recency
    model = load_model(models)
    assert model.family == XGBOOST
    assert (models / "xgb-v1" / XGBOOST_FILE).read_bytes().startswith(b"{")
    x = features[:200].copy()  # the module's features stay as learned
    x[::7, 3] = np.nan  # missing values take XGBoost's default branches
    expected = booster.predict(xgb.DMatrix(x, missing=np.nan))
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-6)  # identity calibration
    margin = booster.predict(xgb.DMatrix(x, missing=np.nan), output_margin=True)
    base = booster.predict(xgb.DMatrix(x, missing=np.nan), pred_contribs=True)[:, -1]
    contributions = model.contributions(x)
    assert contributions.shape == x.shape
    np.testing.assert_allclose(contributions.sum(axis=1) + base, margin, atol=1e-5)
    recency_leads = np.abs(contributions).mean(axis=0).argmax()
    assert FEATURE_NAMES[recency_leads] == "recency_days"


def tree_edit(models: Path, change: Any) -> None:
    """Change the first tree of the stored model, and sign the files again."""
    directory = models / "xgb-v1"
    stored = json.loads((directory / XGBOOST_FILE).read_text())
    change(stored["learner"]["gradient_booster"]["model"]["trees"][0])
    (directory / XGBOOST_FILE).write_text(json.dumps(stored))
    resign(directory)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        # XGBoost reads out of bounds with either of these (it killed a process with
        # SIGSEGV here): the probe child checks every tree first.
        (lambda tree: tree["left_children"].__setitem__(0, 10**6), "a child outside the tree"),
        (lambda tree: tree["split_indices"].__setitem__(0, 99), "splits on feature 99"),
        (lambda tree: tree.pop("split_conditions"), "KeyError: 'split_conditions'"),
        (lambda tree: tree["base_weights"].pop(), "XGBoostError"),
    ],
    ids=["a child out of range", "a split on feature 99", "no split conditions", "short"],
)
def test_a_damaged_xgboost_model_is_refused_without_harm_to_the_process_loading_it(
    models: Path, change: Any, problem: str
) -> None:
    tree_edit(models, change)
    with pytest.raises(ArtifactError, match=problem):
        load_model(models)


def test_a_model_of_other_features_or_objective_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(300, 5)), rng.integers(0, 2, 300)
    five = xgb.train({"objective": "binary:logistic", "nthread": 1}, xgb.DMatrix(x, y), 3)
    write_model(tmp_path / "five", "v", XGBoostModel(five))
    with pytest.raises(ArtifactError, match=f"expects 5 features, not {len(FEATURE_NAMES)}"):
        load_model(tmp_path / "five")
    x = rng.normal(size=(300, len(FEATURE_NAMES)))
    regression = xgb.train({"objective": "reg:squarederror", "nthread": 1}, xgb.DMatrix(x, y), 3)
    write_model(tmp_path / "reg", "v", XGBoostModel(regression))
    with pytest.raises(ArtifactError, match="objective is 'reg:squarederror'"):
        load_model(tmp_path / "reg")


def test_without_xgboost_the_worker_stops_at_start_naming_the_extra(models: Path) -> None:
    # A Python where `import xgboost` fails, as it does without the extra installed.
    start = (
        "import runpy, sys; sys.modules['xgboost'] = None; sys.argv = ['stream_app', 'worker']; "
        "runpy.run_module('stream_app', run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", start],
        cwd=ROOT,
        env={**os.environ, "CHURN_MODELS_DIR": str(models)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "cannot serve the model: model xgb-v1 is an XGBoost model" in result.stderr
    assert "pip install '.[xgboost]'" in result.stderr


def test_an_xgboost_winner_is_served_through_its_json_model(tmp_path: Path) -> None:
    # Only XGBoost compared, so it wins; the path from tuning to the worker's scores.
    splits = synthetic_splits(lambda x: 3.0 * x[:, 0] * x[:, 3])
    config = TrainingConfig(num_threads=1, families=(XGBOOST,), max_rounds=150)
    trained = train_on_splits(splits, config)
    metadata = trained.metadata
    assert metadata["model_family"] == XGBOOST
    assert metadata["served_model"]["libraries"]["xgboost"] == xgb.__version__
    stability = metadata["metrics"]["tuning"]["stability"][XGBOOST]
    assert stability["trees"] == metadata["served_model"]["tuned_trees"] > 1
    assert metadata["served_model"]["trees"] == stability["trees"]  # all rows tuned: no refit
    written = save(trained, tmp_path)
    model = load_model(written.parent, written.name)
    assert model.family == XGBOOST and isinstance(model.estimator, XGBoostModel)
    x = features(splits.test)
    np.testing.assert_allclose(
        model.predict(x), trained.calibration(trained.estimator.probability(x))
    )
    margin = model.estimator.booster.predict(xgb.DMatrix(x), output_margin=True)
    base = model.estimator.booster.predict(xgb.DMatrix(x), pred_contribs=True)[:, -1]
    np.testing.assert_allclose(model.contributions(x).sum(axis=1) + base, margin, atol=1e-4)
    assert metadata["metrics"]["test"]["auc_roc"] > 0.7  # it learned the interaction
