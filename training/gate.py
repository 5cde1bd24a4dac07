"""The retraining gate: a challenger replaces the champion only if it is no worse.

Both are judged as the worker would serve them: each version's artifact (load_model)
scores the same rows, the challenger's test split (the latest cutoff of its training
run, with its labels), with features computed from the one feature definition and
each model's own fitted parameters. The challenger is promoted when

- there is no champion to compare with (none yet, or one this code cannot load, which
  no worker running this code can serve either), or
- its AUC is at most `auc_tolerance` below the champion's and its calibration error
  (training.metrics.calibration_error) is at most `max_calibration_error`.

Otherwise it stays a candidate, and the decision says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from feature_store.offline import History
from scoring.artifact import ArtifactError, load_model
from scoring.model import Model
from training.dataset import CutoffRows, cutoff_rows, dataset_rows, day_end, with_integer_ids
from training.metrics import MAX_CALIBRATION_ERROR, evaluate
from training.models import features, labels

# Models of equal quality (trained on three independent simulated shops of one kind)
# differ by up to 0.009 AUC on the same 1,800 test rows, and 0.003 on 9,000: a fresh
# model is not refused for that noise, but a point of AUC lost is.
AUC_TOLERANCE = 0.01
# MAX_CALIBRATION_ERROR (training.metrics, also a success criterion): well-calibrated
# models measure 0.016-0.024 on 9,000 test rows (a 20,000-customer shop's test split
# is twice that). Below about 2,000 test rows the sampling noise alone (about
# 1.3 / sqrt(rows)) approaches the bound.
# AUCs are ratios of counts: a challenger exactly at the tolerance must not be refused
# for a rounding error in the subtraction.
ROUNDING = 1e-9


@dataclass(frozen=True)
class Criteria:
    """What a challenger must meet to be promoted."""

    auc_tolerance: float = AUC_TOLERANCE
    max_calibration_error: float = MAX_CALIBRATION_ERROR


@dataclass(frozen=True)
class Scores:
    """One model on the gate's split."""

    auc_roc: float
    calibration_error: float
    brier: float


@dataclass(frozen=True)
class Split:
    """The rows both models are judged on: the challenger's test split."""

    test_cutoff: str
    horizon_days: int
    rows: int
    positive_rate: float


@dataclass(frozen=True)
class Decision:
    """The gate's verdict on a challenger, as recorded beside it."""

    challenger: str
    champion: str | None
    promoted: bool
    reasons: tuple[str, ...]  # what failed when refused; what held when promoted
    split: Split
    challenger_scores: Scores
    champion_scores: Scores | None
    criteria: Criteria
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decision:
        champion = data["champion_scores"]
        return cls(
            challenger=data["challenger"],
            champion=data["champion"],
            promoted=bool(data["promoted"]),
            reasons=tuple(data["reasons"]),
            split=Split(**data["split"]),
            challenger_scores=Scores(**data["challenger_scores"]),
            champion_scores=None if champion is None else Scores(**champion),
            criteria=Criteria(**data["criteria"]),
            decided_at=data["decided_at"],
        )


def decide(
    challenger: Scores, champion: Scores | None, criteria: Criteria
) -> tuple[bool, tuple[str, ...]]:
    """Promote or not, and why: the checks that failed, or all that held."""
    if champion is None:
        return True, ("no champion to compare with",)
    failed, held = [], []
    drop = champion.auc_roc - challenger.auc_roc
    if drop > criteria.auc_tolerance + ROUNDING:
        failed.append(
            f"AUC {challenger.auc_roc:.4f} is {drop:.4f} below the champion's "
            f"{champion.auc_roc:.4f}, more than the tolerance {criteria.auc_tolerance:g}"
        )
    else:
        held.append(
            f"AUC {challenger.auc_roc:.4f} against the champion's {champion.auc_roc:.4f} "
            f"(tolerance {criteria.auc_tolerance:g})"
        )
    error = challenger.calibration_error
    if error > criteria.max_calibration_error + ROUNDING:
        failed.append(
            f"calibration error {error:.4f} is above the bound {criteria.max_calibration_error:g}"
        )
    else:
        held.append(f"calibration error {error:.4f} (bound {criteria.max_calibration_error:g})")
    return not failed, tuple(failed or held)


def judge(
    models_dir: Path,
    challenger: str,
    champion: str | None,
    history: History,
    criteria: Criteria,
) -> Decision:
    """Score both versions on the challenger's test split of `history` and decide.

    Raises ArtifactError when the challenger itself cannot be loaded."""
    challenger_model = load_model(models_dir, challenger)
    test_cutoff, horizon_days = _test_split(challenger_model)
    coded, _ = with_integer_ids(history)  # the same rows, built faster
    # The rows and base columns are the same for both models: only the features
    # differ, by each model's own parameters.
    test_rows = cutoff_rows(coded, day_end(test_cutoff), horizon_days)
    challenger_scores, rows, positive_rate = _score(challenger_model, test_rows)
    split = Split(test_cutoff.isoformat(), horizon_days, rows, positive_rate)
    champion_scores: Scores | None = None
    note: tuple[str, ...] = ()
    if champion is not None:
        try:
            champion_model = load_model(models_dir, champion)
        except ArtifactError as err:
            note = (f"champion {champion} cannot be loaded ({err})",)
        else:
            champion_scores, *_ = _score(champion_model, test_rows)
    promoted, reasons = decide(challenger_scores, champion_scores, criteria)
    return Decision(
        challenger=challenger,
        champion=champion,
        promoted=promoted,
        reasons=note + reasons,
        split=split,
        challenger_scores=challenger_scores,
        champion_scores=champion_scores,
        criteria=criteria,
    )


def _test_split(model: Model) -> tuple[date, int]:
    """The test cutoff day and horizon the model's training run measured it on."""
    try:
        return date.fromisoformat(model.metadata["cutoffs"]["test"]), int(
            model.metadata["horizon_days"]
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(
            f"model {model.version}'s metadata names no test cutoff and horizon ({err}): "
            "the gate judges a challenger on its own test split; retrain it"
        ) from err


def _score(model: Model, test_rows: CutoffRows) -> tuple[Scores, int, float]:
    """The model's scores on the split, its rows and its churn rate."""
    rows = dataset_rows(test_rows, model.feature_params)
    outcome = labels(rows)
    probability = model.predict(features(rows))
    metrics = evaluate(outcome, probability)
    scores = Scores(
        auc_roc=metrics["auc_roc"],
        calibration_error=metrics["calibration_error"],
        brier=metrics["brier"],
    )
    return scores, len(rows), metrics["positive_rate"]
