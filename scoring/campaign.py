"""What the HIGH campaign achieves: the churn of treated against held-out HIGH customers.

Marketing acts on every change into HIGH except those of the holdout
(`scoring.risk.Holdout`), a share of customers drawn by a hash of their id, so the two
arms differ only by chance and by the campaign. Each change into HIGH is followed
like a performance sample (`scoring.samples`): it waits in the partition's state
until its horizon has passed in event time, and is decided off the customer's state,
churned when no order came in (as_of, as_of + horizon], the label the model was
trained on. The outcomes are tallied per (weekly cohort of the change, arm), once
each through redelivery and crashes.

The uplift of a cohort is the held-out churn rate minus the treated one: churn
prevented per customer acted on. Its 95% interval is Newcombe's hybrid score interval
(from each arm's Wilson interval), which keeps its coverage at the small counts and
rates near 0 or 1 where the plain Wald interval does not; the relative reduction
(1 - the risk ratio, the guide's "reduce churn by 15%") has the log interval of the
risk ratio. Both come from scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy.stats import binomtest
from scipy.stats.contingency import relative_risk

from feature_store.store import Tally
from scoring.merge import Decoded
from scoring.outcome import PartitionOutcome
from scoring.performance import TALLY_TTL
from scoring.samples import HELD_OUT, TREATED, Sample

TALLY = "campaign"
ARMS = (TREATED, HELD_OUT)
ALL = "all"  # the cohort of every change into HIGH: the campaign's pooled figures
CONFIDENCE = 0.95


def tally_amounts(matured: Sequence[tuple[Sample, bool]]) -> dict[str, float]:
    """Counters of decided changes into HIGH, keyed `<cohort>|<arm>|churned|retained`."""
    amounts: dict[str, float] = {}
    for sample, churned in matured:
        if sample.arm in ARMS:
            key = f"{sample.cohort}|{sample.arm}|{'churned' if churned else 'retained'}"
            amounts[key] = amounts.get(key, 0.0) + 1.0
    return amounts


def campaign_tally(
    outcome: PartitionOutcome, batch: Sequence[Decoded], durable_at: float
) -> dict[str, Tally]:
    """The changes into HIGH a partition's batch decided (a TallySource)."""
    amounts = tally_amounts(outcome.matured)
    return {TALLY: Tally(TALLY_TTL, amounts, sparse=True)} if amounts else {}


@dataclass(frozen=True)
class Arm:
    customers: int  # changes into HIGH decided
    churned: int

    @property
    def rate(self) -> float | None:
        return self.churned / self.customers if self.customers else None


@dataclass(frozen=True)
class Uplift:
    """The campaign's effect on one weekly cohort of changes into HIGH (or on ALL)."""

    cohort: str
    treated: Arm
    held_out: Arm
    uplift: float | None  # held-out churn rate - treated: None until both arms have one
    low: float | None  # its 95% interval
    high: float | None
    relative: float | None  # 1 - treated rate / held-out rate: the share of churn prevented
    relative_low: float | None
    relative_high: float | None


def uplifts(tally: Mapping[str, float]) -> list[Uplift]:
    """The uplift of every cohort of a campaign tally, in order, then of ALL."""
    counts: dict[str, dict[tuple[str, str], float]] = {}
    for key, amount in tally.items():
        cohort, arm, outcome = key.split("|", 2)
        for group in (cohort, ALL):
            by = counts.setdefault(group, {})
            by[arm, outcome] = by.get((arm, outcome), 0.0) + amount
    cohorts = sorted(c for c in counts if c != ALL) + ([ALL] if counts else [])
    return [uplift(c, _arm(counts[c], TREATED), _arm(counts[c], HELD_OUT)) for c in cohorts]


def _arm(counts: Mapping[tuple[str, str], float], arm: str) -> Arm:
    churned = round(counts.get((arm, "churned"), 0.0))
    return Arm(churned + round(counts.get((arm, "retained"), 0.0)), churned)


def uplift(cohort: str, treated: Arm, held_out: Arm) -> Uplift:
    """The uplift and its intervals from the two arms' counts."""
    if not (treated.customers and held_out.customers):
        return Uplift(cohort, treated, held_out, None, None, None, None, None, None)
    p_t, p_h = treated.churned / treated.customers, held_out.churned / held_out.customers
    lt, ut = _wilson(treated)
    lh, uh = _wilson(held_out)
    low = p_h - p_t - math.hypot(p_h - lh, ut - p_t)
    high = p_h - p_t + math.hypot(uh - p_h, p_t - lt)
    relative = relative_low = relative_high = None
    if treated.churned and held_out.churned:
        ratio = relative_risk(
            treated.churned, treated.customers, held_out.churned, held_out.customers
        )
        interval = ratio.confidence_interval(CONFIDENCE)
        relative = 1 - ratio.relative_risk
        relative_low, relative_high = 1 - interval.high, 1 - interval.low
    return Uplift(
        cohort, treated, held_out, p_h - p_t, low, high, relative, relative_low, relative_high
    )


def _wilson(arm: Arm) -> tuple[float, float]:
    interval = binomtest(arm.churned, arm.customers).proportion_ci(CONFIDENCE, "wilson")
    return float(interval.low), float(interval.high)


def uplift_text(found: Sequence[Uplift]) -> str:
    """The uplifts as a table, one line per weekly cohort, then all of them."""

    def show(value: float | None, width: int = 6) -> str:
        return " " * (width - 1) + "-" if value is None else f"{value:{width}.3f}"

    def interval(low: float | None, high: float | None) -> str:
        return " " * 17 + "-" if low is None or high is None else f"[{low:7.3f}, {high:7.3f}]"

    lines = [
        "cohort      treated  churned   rate  held out  churned   rate  uplift"
        "  95% interval        reduction  95% interval"
    ]
    for u in found:
        t, h = u.treated, u.held_out
        lines.append(
            f"{u.cohort:<10}  {t.customers:7d}  {t.churned:7d} {show(t.rate)}  "
            f"{h.customers:8d}  {h.churned:7d} {show(h.rate)}  {show(u.uplift)}  "
            f"{interval(u.low, u.high)}  {show(u.relative, 9)}  "
            f"{interval(u.relative_low, u.relative_high)}"
        )
    lines.append(
        "A cohort is the week (from Monday, UTC) customers moved into HIGH; each is decided "
        "once its horizon has passed in event time. Uplift: the held-out churn rate minus "
        "the treated one (churn prevented per customer acted on); reduction: the share of "
        "churn prevented (1 - treated rate / held-out rate)."
    )
    return "\n".join(lines)
