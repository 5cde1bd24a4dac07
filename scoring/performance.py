"""Realised performance: how the scores turned out once their horizon had passed.

The scorer keeps a bounded sample of what it scored: the customers whose id hashes
below `sample_rate`, each at most once per weekly cohort (their first score of the
ISO week of its as-of instant). A sample waits in the partition's own state, written
with the partition's commit, until its horizon has passed in event time: the
partition's stream time has gone past `as_of + horizon`, the way an inactivity rescore
fires. Its outcome is then read off the customer's state (the same life of it: none
if they were erased since), which holds exactly the events at or before that instant
in stream order: churned when their latest order is
not after `as_of` (training's label: no order in (as_of, as_of + horizon]). An order
that arrives later than that, behind the stream time, is not seen (nor by a replay).

The outcomes are added to a tally (`feature_store.store.Tally`, so each counts once through
redelivery and crashes) per (weekly cohort, model version): score histograms of the
churned and the retained, the sum of probabilities per bin, and HIGH's confusion
counts. `figures` turns the tally back into AUC, precision, recall and calibration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from feature_store.definitions import SECONDS_PER_DAY
from feature_store.store import Tally
from scoring.merge import Decoded
from scoring.outcome import PartitionOutcome
from scoring.risk import LEVELS
from scoring.samples import Sample

TALLY = "performance"
TALLY_TTL = 400 * SECONDS_PER_DAY  # a year of weekly cohorts, and their horizon
BINS = 100  # probability bins of the score histograms (AUC error <= about 1/BINS)
# Equal-width bins of the expected calibration error, as training reports it
# (training.metrics.calibration_error; a test pins that both agree).
CALIBRATION_BINS = 10
HIGH = LEVELS[-1]


def _bin(probability: float) -> int:
    return min(max(int(probability * BINS), 0), BINS - 1)


def tally_amounts(matured: Sequence[tuple[Sample, bool]]) -> dict[str, float]:
    """Counters of decided samples, keyed `<cohort>|<version>|<counter>`."""
    amounts: dict[str, float] = {}

    def add(key: str, amount: float) -> None:
        amounts[key] = amounts.get(key, 0.0) + amount

    for sample, outcome in matured:
        if sample.arm:
            continue  # a change into HIGH, followed for the campaign (scoring.campaign)
        prefix = f"{sample.cohort}|{sample.model_version}|"
        b = _bin(sample.probability)
        add(f"{prefix}{'churned' if outcome else 'retained'}:{b}", 1.0)
        add(f"{prefix}p:{b}", sample.probability)
        flagged = sample.risk == HIGH
        if flagged:
            add(prefix + ("tp" if outcome else "fp"), 1.0)
        else:
            add(prefix + ("fn" if outcome else "tn"), 1.0)
    return amounts


def performance_tally(
    outcome: PartitionOutcome, batch: Sequence[Decoded], durable_at: float
) -> dict[str, Tally]:
    """The outcomes a partition's batch decided (a TallySource)."""
    if not outcome.matured:
        return {}
    return {TALLY: Tally(TALLY_TTL, tally_amounts(outcome.matured), sparse=True)}


@dataclass(frozen=True)
class Figures:
    """Realised performance of one model version on one weekly cohort."""

    cohort: str
    model_version: str
    samples: int
    churned: int
    auc: float | None  # None: only one outcome seen yet
    high_precision: float | None  # None: nobody was HIGH
    high_recall: float | None  # None: nobody churned
    calibration_error: float


def figures(tally: Mapping[str, float]) -> list[Figures]:
    """The figures per (cohort, model version) of a performance tally, in order."""
    groups: dict[tuple[str, str], dict[str, float]] = {}
    for key, amount in tally.items():
        cohort_, version, counter = key.split("|", 2)
        groups.setdefault((cohort_, version), {})[counter] = amount
    return [_figures(c, v, counters) for (c, v), counters in sorted(groups.items())]


def auc_drop(found: Sequence[Figures], bound: float, min_samples: int) -> Figures | None:
    """The latest cohort with at least `min_samples` samples and an AUC, if its AUC is
    below `bound`: what triggers a retrain. Fewer samples make too noisy an AUC to act
    on; an older cohort that was below is history once a later one is not."""
    judged = [f for f in found if f.auc is not None and f.samples >= min_samples]
    if not judged:
        return None
    latest = max(judged, key=lambda f: (f.cohort, f.samples))
    assert latest.auc is not None
    return latest if latest.auc < bound else None


def performance_text(found: Sequence[Figures]) -> str:
    """The figures as a table, one line per (weekly cohort, model version)."""

    def show(value: float | None) -> str:
        return "     -" if value is None else f"{value:6.3f}"

    lines = [
        "cohort      model version                 samples  churned     AUC  HIGH precision"
        "  HIGH recall  calibration error"
    ]
    for f in found:
        lines.append(
            f"{f.cohort}  {f.model_version:<28.28}  {f.samples:7d}  {f.churned:7d}  "
            f"{show(f.auc)}          {show(f.high_precision)}       {show(f.high_recall)}"
            f"             {show(f.calibration_error)}"
        )
    lines.append(
        "A cohort is the week (from Monday, UTC) a score is as of; its figures move until "
        "its week and the model's horizon have passed in event time."
    )
    return "\n".join(lines)


def _figures(cohort_: str, version: str, counters: Mapping[str, float]) -> Figures:
    churned_ = [counters.get(f"churned:{b}", 0.0) for b in range(BINS)]
    retained = [counters.get(f"retained:{b}", 0.0) for b in range(BINS)]
    n_churned, n_retained = sum(churned_), sum(retained)
    auc = None
    if n_churned and n_retained:
        # P(a churner scores above a retained customer), ties within a bin count half.
        below, wins = 0.0, 0.0
        for c, r in zip(churned_, retained, strict=True):
            wins += c * (below + r / 2)
            below += r
        auc = wins / (n_churned * n_retained)
    tp, fp, fn = (counters.get(k, 0.0) for k in ("tp", "fp", "fn"))
    gap = 0.0
    per = BINS // CALIBRATION_BINS
    for start in range(0, BINS, per):
        predicted = sum(counters.get(f"p:{b}", 0.0) for b in range(start, start + per))
        gap += abs(predicted - sum(churned_[start : start + per]))
    total = n_churned + n_retained
    return Figures(
        cohort_,
        version,
        round(total),
        round(n_churned),
        auc,
        tp / (tp + fp) if tp + fp else None,
        tp / (tp + fn) if tp + fn else None,
        gap / total if total else 0.0,
    )
