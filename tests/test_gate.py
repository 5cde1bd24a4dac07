"""The retraining gate: its calibration measure, its decision, and both versions judged
on the same rows through their own artifacts."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scoring.artifact import load_model
from tests.support import model_name
from training import load_history
from training.gate import Criteria, Scores, decide, judge
from training.metrics import calibration_error

CRITERIA = Criteria(auc_tolerance=0.01, max_calibration_error=0.05)


def scores(auc: float, error: float = 0.02) -> Scores:
    return Scores(auc_roc=auc, calibration_error=error, brier=0.2)


# --- calibration error --------------------------------------------------------------


def test_calibration_error_is_zero_when_each_bin_churns_at_its_probability() -> None:
    probability = np.array([0.25] * 4 + [0.75] * 4)
    churned = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert calibration_error(churned, probability) == 0.0


def test_calibration_error_is_the_row_weighted_gap_between_probability_and_churn_rate() -> None:
    # 6 rows at 0.2 of which half churn (gap 0.3), 2 rows at 0.9 that both churn (0.1).
    probability = np.array([0.2] * 6 + [0.9] * 2)
    churned = np.array([1, 1, 1, 0, 0, 0, 1, 1])
    assert calibration_error(churned, probability) == pytest.approx((6 * 0.3 + 2 * 0.1) / 8)


# --- the decision ---------------------------------------------------------------------


def test_without_a_champion_the_challenger_is_promoted() -> None:
    assert decide(scores(0.6, error=0.2), None, CRITERIA) == (
        True,
        ("no champion to compare with",),
    )


def test_a_challenger_within_the_auc_tolerance_and_the_calibration_bound_is_promoted() -> None:
    promoted, reasons = decide(scores(0.79, error=0.05), scores(0.80), CRITERIA)
    assert promoted  # exactly at the tolerance and at the bound
    assert reasons == (
        "AUC 0.7900 against the champion's 0.8000 (tolerance 0.01)",
        "calibration error 0.0500 (bound 0.05)",
    )


def test_a_challenger_losing_more_auc_than_the_tolerance_is_refused_saying_by_how_much() -> None:
    promoted, reasons = decide(scores(0.785), scores(0.80), CRITERIA)
    assert not promoted
    assert reasons == (
        "AUC 0.7850 is 0.0150 below the champion's 0.8000, more than the tolerance 0.01",
    )


def test_a_challenger_above_the_calibration_bound_is_refused_whatever_its_auc() -> None:
    promoted, reasons = decide(scores(0.95, error=0.0501), scores(0.80), CRITERIA)
    assert not promoted
    assert reasons == ("calibration error 0.0501 is above the bound 0.05",)


def test_a_looser_configuration_promotes_what_the_default_refuses() -> None:
    loose = Criteria(auc_tolerance=0.02, max_calibration_error=0.1)
    challenger, champion = scores(0.785, error=0.08), scores(0.80)
    assert decide(challenger, champion, CRITERIA)[1] == (
        "AUC 0.7850 is 0.0150 below the champion's 0.8000, more than the tolerance 0.01",
        "calibration error 0.0800 is above the bound 0.05",
    )
    assert decide(challenger, champion, loose)[0]


# --- judging real versions --------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(shop_db: Path, cli_run: dict[str, Any]) -> tuple[Path, str, Path]:
    """A simulated shop of 300 customers, and one version trained on it (every family,
    one thread; tests/conftest.py's, shared with the training tests): (database,
    version, models directory). Read only: the tests below change copies."""
    return shop_db, cli_run["directory"].name, cli_run["models_dir"]


def test_the_gate_measures_the_challenger_on_its_test_split_as_training_did(
    trained: tuple[Path, str, Path],
) -> None:
    db, version, models = trained
    decision = judge(models, version, None, load_history(db), CRITERIA)
    metadata = load_model(models, version).metadata
    assert decision.promoted and decision.champion_scores is None
    assert decision.split.test_cutoff == metadata["cutoffs"]["test"]
    assert decision.split.rows == metadata["rows"]["test"]
    assert decision.challenger_scores.auc_roc == pytest.approx(
        metadata["metrics"]["test"]["auc_roc"], abs=1e-12
    )


@pytest.fixture
def models(trained: tuple[Path, str, Path], tmp_path: Path) -> Path:
    """A models directory with the trained version and a copy of it named champion."""
    _, version, source = trained
    for name in (version, "champion"):
        shutil.copytree(source / version, tmp_path / "models" / name)
    return tmp_path / "models"


def test_a_champion_identical_to_the_challenger_scores_the_same_on_the_same_rows(
    trained: tuple[Path, str, Path], models: Path
) -> None:
    db, version, _ = trained
    # A bound the 300-customer shop's noisy calibration error passes: AUC decides.
    loose = Criteria(max_calibration_error=0.5)
    decision = judge(models, version, "champion", load_history(db), loose)
    assert decision.champion_scores == decision.challenger_scores
    auc = decision.challenger_scores.auc_roc
    assert decision.promoted
    assert decision.reasons[0] == f"AUC {auc:.4f} against the champion's {auc:.4f} (tolerance 0.01)"


def test_a_champion_that_cannot_be_loaded_is_no_champion_and_the_reason_says_so(
    trained: tuple[Path, str, Path], models: Path
) -> None:
    db, version, _ = trained
    champion = models / "champion"
    (champion / model_name(champion)).write_text("tree\n")  # whichever family it is
    decision = judge(models, version, "champion", load_history(db), CRITERIA)
    assert decision.promoted and decision.champion_scores is None
    assert decision.reasons[0].startswith("champion champion cannot be loaded (")
    assert "does not match its checksum" in decision.reasons[0]
    assert decision.reasons[1] == "no champion to compare with"
