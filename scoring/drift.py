"""The drift monitor's core, framework-free: what the model sees now against what it
saw in training.

Subjects: every model feature, the amount of the order that triggered a score
(`INPUTS`), the score (the calibrated probability) and the risk mix (the categories).
The model artifact carries each subject's reference
(`Reference`): bins cut at training's deciles plus one for a missing value, the
share of reference rows in each, and their mean. The reference rows are the scores
the worker itself would have given the training period's events (`scoring.serving`),
not training's snapshot rows: a live score is taken as of an event, a training row
as of a day's end, and the two are not comparable (every order scores recency 0).

The live side, `DriftTally`: every score an input event triggers is binned, per
event-time slice (an hour by default) of its as-of instant, into a tally committed
with its partition's batch (`feature_store.store.Tally`), so each event counts once through
redelivery and crashes. Inactivity rescores are left out, here and in the reference:
they re-read, 7 to 90 days on, what earlier events left, and would echo a past shift.

`DriftMonitor` judges a slice once the consumer group's event-time watermark has
passed its end: the window of the last `window_slices` slices, summed over the
partitions, against the reference, by PSI over the bins (the alert statistic), the
relative mean shift and KS on the binned distribution. The watermark is the smallest
stream time the partitions have recorded; a partition that has recorded none (it
never had data) is left out, so an empty partition cannot stall the monitor, and
what it brings later counts in the windows still to come.

Each subject has an alert with hysteresis: raised once PSI has stayed above
`raise_above` for `consecutive` judged slices in a row, cleared once it has stayed
below `clear_below` as long. The order amount is also judged by its relative mean
shift (`mean_shift_subjects`): a change of scale, prices up 40%, moves a spread-out
amount's deciles little (PSI 0.13 to 0.19 for the simulator's order totals, whose
log spreads by 0.96) but its mean by the factor itself. The features' means are left
to PSI: their relative shifts swing by up to 25% in a stationary shop, with the
season's order counts, and by more where the mean is near zero.

The alert states and the last slice judged live in the store (`DriftStore`) and move
on by compare-and-set, so however many workers run, each slice is judged once for the
whole group. An alert's id is uuid5(subject, state, slice): should a worker publish
and then die before its compare-and-set, the slice is judged again and the same id
published again, never a new one.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, get_args

import numpy as np

from feature_store.definitions import FEATURE_NAMES
from feature_store.store import Amounts, MemoryStore, Tally
from schemas import (
    DriftAlert,
    DriftReference,
    DriftStatistics,
    DriftThresholds,
    DriftWindow,
    Order,
)
from schemas.events import RiskLevel
from scoring.merge import Decoded
from scoring.outcome import PartitionOutcome, Scores

LEVELS: tuple[str, ...] = get_args(RiskLevel)
RANK = {level: rank for rank, level in enumerate(LEVELS)}

SCORE = "score"
RISK_MIX = "risk_mix"
ORDER_TOTAL = "order_total"
# Inputs of the event that triggered a score: (event type, field). A score another
# event triggered leaves the subject out (it is not a missing value).
INPUTS: dict[str, tuple[type, str]] = {ORDER_TOTAL: (Order, "total_amount")}
SUBJECTS: tuple[str, ...] = (*FEATURE_NAMES, *INPUTS, SCORE, RISK_MIX)
PSI, MEAN_SHIFT = "psi", "mean_shift"
STATISTICS = (PSI, MEAN_SHIFT, "ks")
RAISED, CLEARED = "raised", "cleared"
REFERENCE_FORMAT = 2  # 2: with the inputs' subjects
REFERENCE_DECILES = tuple(round(q, 1) for q in np.linspace(0.1, 0.9, 9))
# Shares below this count as this in PSI: an empty bin would make it infinite.
PSI_FLOOR = 1e-4
# Namespace of alert ids: uuid5(namespace, "subject/state/slice end").
ALERT_NAMESPACE = uuid.UUID("8d5b7a52-61c4-4f5e-9a4e-2f3c1b0d9e77")


class DriftReferenceError(ValueError):
    """An artifact's drift reference is malformed; the message says where."""


# --- The reference ------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """A subject's bins and reference. A value v falls in bin `searchsorted(cuts, v,
    'right')`: below the first cut, between two, or at or past the last; a missing
    value (NaN) in the last bin, or, for an input (`INPUTS`), in none."""

    name: str
    cuts: np.ndarray
    shares: np.ndarray  # reference share of each bin, len(cuts) + 2, summing to 1
    mean: float | None  # of the reference's non-missing values; None: no mean (risk mix)

    @property
    def size(self) -> int:
        return len(self.cuts) + 2

    @property
    def is_input(self) -> bool:
        return self.name in INPUTS

    def bins(self, values: np.ndarray) -> np.ndarray:
        """Each value's bin; -1 for an input's NaN (no such event): not counted."""
        found = np.searchsorted(self.cuts, values, side="right")
        return np.where(np.isnan(values), -1 if self.is_input else self.size - 1, found)


@dataclass(frozen=True)
class Reference:
    """Every subject's reference (`SUBJECTS` order), from the model artifact."""

    subjects: tuple[Subject, ...]
    rows: int
    since: float  # the reference rows' event-time span
    until: float

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> Reference | None:
        """The reference in an artifact's metadata (`reference.serving`); None for an
        artifact trained before training wrote one. Raises DriftReferenceError."""
        profiles = metadata.get("reference", {})
        data = profiles.get("serving") if isinstance(profiles, Mapping) else profiles
        if data is None:
            return None
        try:
            return cls._parse(data)
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise DriftReferenceError(f"reference.serving is malformed: {err!r}") from err

    @classmethod
    def _parse(cls, data: Mapping[str, Any]) -> Reference:
        if data["format"] != REFERENCE_FORMAT:
            raise ValueError(f"format {data['format']!r}, this worker reads {REFERENCE_FORMAT}")
        described = data["subjects"]
        if sorted(described) != sorted(SUBJECTS[:-1]):
            raise ValueError(f"subjects {sorted(described)}, expected {sorted(SUBJECTS[:-1])}")
        subjects = [_subject(name, described[name]) for name in SUBJECTS[:-1]]
        mix = data[RISK_MIX]
        if sorted(mix) != sorted(LEVELS):
            raise ValueError(f"risk_mix has {sorted(mix)}, expected {sorted(LEVELS)}")
        shares = [float(mix[level]) for level in LEVELS] + [0.0]
        subjects.append(_subject(RISK_MIX, {"cuts": [1.0, 2.0], "shares": shares, "mean": None}))
        return cls(tuple(subjects), int(data["rows"]), float(data["since"]), float(data["until"]))

    @functools.cached_property
    def layout(self) -> Layout:
        """Where each subject's counts sit in a slice's tally (built once)."""
        return Layout(self)


def _subject(name: str, data: Mapping[str, Any]) -> Subject:
    cuts = np.asarray(data["cuts"], dtype=np.float64)
    shares = np.asarray(data["shares"], dtype=np.float64)
    if cuts.ndim != 1 or not np.all(np.isfinite(cuts)) or np.any(np.diff(cuts) <= 0):
        raise ValueError(f"{name}: cuts must be finite and increasing")
    if shares.shape != (len(cuts) + 2,) or np.any(shares < 0) or abs(shares.sum() - 1) > 1e-6:
        raise ValueError(f"{name}: shares must be {len(cuts) + 2} numbers >= 0 summing to 1")
    mean = data["mean"]
    if mean is not None and not math.isfinite(float(mean)):
        raise ValueError(f"{name}: mean must be a finite number or null")
    return Subject(name, cuts, shares, None if mean is None else float(mean))


def input_values(events: Sequence[object | None]) -> np.ndarray:
    """The `INPUTS` of the events that triggered scores, one column each: NaN where
    the event is of another type (or None: an inactivity rescore)."""
    values = np.full((len(events), len(INPUTS)), np.nan)
    for j, (kind, name) in enumerate(INPUTS.values()):
        for i, event in enumerate(events):
            if isinstance(event, kind):
                values[i, j] = getattr(event, name)
    return values


def reference_profile(
    features: np.ndarray,
    probabilities: np.ndarray,
    risks: Sequence[str],
    as_of: Sequence[float],
    events: Sequence[object | None],
) -> dict[str, Any]:
    """The `reference.serving` metadata of scores (one row each: model inputs in
    FEATURE_NAMES order, probability, category, as-of instant, triggering event): bins
    cut at the deciles, every bin's share, the mean, and the risk mix."""
    columns = {name: features[:, i] for i, name in enumerate(FEATURE_NAMES)}
    inputs = input_values(events)
    for j, name in enumerate(INPUTS):
        column = inputs[:, j]
        columns[name] = column[~np.isnan(column)]  # an input's rows are its events'
    columns[SCORE] = np.asarray(probabilities, dtype=np.float64)
    subjects: dict[str, Any] = {}
    for name, values in columns.items():
        cuts = _cuts(values)
        subject = Subject(name, cuts, np.ones(len(cuts) + 2), None)
        counts = np.bincount(subject.bins(values), minlength=subject.size)
        finite = values[np.isfinite(values)]
        if not len(values):  # a subject the period never had: all "missing"
            counts[-1] = 1
        subjects[name] = {
            "cuts": cuts.tolist(),
            "shares": (counts / max(len(values), 1)).tolist(),
            "mean": float(finite.mean()) if len(finite) else None,
        }
    mix = {level: sum(r == level for r in risks) / max(len(risks), 1) for level in LEVELS}
    return {
        "format": REFERENCE_FORMAT,
        "rows": len(risks),
        "since": float(min(as_of, default=0.0)),
        "until": float(max(as_of, default=0.0)),
        "subjects": subjects,
        RISK_MIX: mix,
    }


def _cuts(values: np.ndarray) -> np.ndarray:
    """Cuts at the deciles of the finite values, above their minimum: each bin then
    holds at least one reference value (a quantile of this method is a value). When
    the minimum alone holds a decile or more (no order in 7 days, no ticket: most
    counts here), it gets a bin of its own and the values above it their own deciles,
    which a change in the tail would otherwise hide in one or two bins."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return np.empty(0)
    lowest = finite.min()
    above = finite[finite > lowest]
    if len(above) == 0:
        return np.empty(0)
    if len(above) > (1 - REFERENCE_DECILES[0]) * len(finite):
        deciles = np.quantile(finite, REFERENCE_DECILES, method="inverted_cdf")
        return np.unique(deciles[deciles > lowest])
    deciles = np.quantile(above, REFERENCE_DECILES, method="inverted_cdf")
    return np.unique(np.concatenate([[above.min()], deciles]))


# --- Counting: a tally per event-time slice -----------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where each subject's counts sit in a slice's vector, and the tally field names:
    `<subject>:<bin>` counts, `<subject>:sum` the sum of its non-missing values (for
    the mean; how many there are is the count of every bin but the last), `rows` the
    scores."""

    reference: Reference
    offsets: tuple[int, ...] = field(init=False)
    fields: tuple[str, ...] = field(init=False)
    sums: np.ndarray = field(init=False)  # where each subject's sum sits: after its bins

    def __post_init__(self) -> None:
        offsets: list[int] = []
        names: list[str] = []
        for subject in self.reference.subjects:
            offsets.append(len(names))
            names += [f"{subject.name}:{b}" for b in range(subject.size)]
            names.append(f"{subject.name}:sum")
        sizes = [subject.size for subject in self.reference.subjects]
        object.__setattr__(self, "offsets", tuple(offsets))
        object.__setattr__(self, "fields", (*names, "rows"))
        object.__setattr__(self, "sums", np.asarray(offsets) + np.asarray(sizes))

    def vector(self, parts: Sequence[Amounts]) -> np.ndarray:
        """A tally's parts summed, as a vector in `fields` order: vectors as they are,
        counters by name (as tallies were kept until December 2026) by their fields
        (a field a part lacks is 0)."""
        total = np.zeros(len(self.fields))
        for part in parts:
            if isinstance(part, dict):
                total += np.array([part.get(name, 0.0) for name in self.fields])
            else:
                total += np.asarray(part, dtype=np.float64)
        return total

    def binned(self, scores: Scores, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The subjects' values of scores[rows] (one column each), and the index of
        each value's bin in `fields` (len(fields) where it is not counted)."""
        values = np.column_stack(
            [
                scores.features[rows],
                input_values([scores.events[r] for r in rows]),
                np.asarray(scores.probabilities, dtype=np.float64)[rows],
                np.array([RANK[scores.risks[r]] for r in rows], dtype=np.float64),
            ]
        )
        where = np.empty(values.shape, dtype=np.int64)
        for j, (subject, offset) in enumerate(
            zip(self.reference.subjects, self.offsets, strict=True)
        ):
            found = subject.bins(values[:, j])
            where[:, j] = np.where(found < 0, len(self.fields), offset + found)
        return values, where

    def amounts(self, values: np.ndarray, where: np.ndarray) -> list[float]:
        """The counts of binned rows (`binned`), as a tally's vector."""
        counts = np.bincount(where.ravel(), minlength=len(self.fields) + 1)
        vector = counts[: len(self.fields)].astype(np.float64)
        vector[self.sums] = np.where(np.isfinite(values), values, 0.0).sum(axis=0)
        vector[-1] = len(values)
        return vector.tolist()


@dataclass(frozen=True)
class Threshold:
    """An alert's thresholds on one statistic (for the mean shift, its magnitude)."""

    statistic: str  # PSI or MEAN_SHIFT
    raise_above: float
    clear_below: float


# How long a tally nobody judges lives on (`DriftConfig.ttl`).
TALLY_BACKSTOP_SECONDS = 28 * 24 * 3600


@dataclass(frozen=True)
class DriftConfig:
    """The monitor's settings (CHURN_DRIFT_* in stream_app/settings.py)."""

    slice_seconds: int = 3600
    window_slices: int = 24
    raise_above: float = 0.2  # PSI
    clear_below: float = 0.1
    # The relative mean shift's magnitude, for the subjects judged by it too.
    mean_shift_raise_above: float = 0.2
    mean_shift_clear_below: float = 0.1
    mean_shift_subjects: tuple[str, ...] = (ORDER_TOTAL,)
    consecutive: int = 3
    min_scores: int = 200  # a window with fewer scores is not judged
    # Event time before which nothing is counted or judged (None: from the start): a
    # stream the group starts on without its history has incomplete features at first.
    since: float | None = None
    max_slices: int = 200  # judged per call, so a backlog is worked off in steps

    def __post_init__(self) -> None:
        if self.slice_seconds <= 0 or self.window_slices <= 0 or self.consecutive <= 0:
            raise ValueError("slice length, window and consecutive slices must be positive")
        if not 0 <= self.clear_below < self.raise_above:
            raise ValueError("need 0 <= clear threshold < raise threshold")
        if not 0 <= self.mean_shift_clear_below < self.mean_shift_raise_above:
            raise ValueError("need 0 <= mean shift clear threshold < its raise threshold")
        if not set(self.mean_shift_subjects) <= set(SUBJECTS[:-1]):
            raise ValueError(f"mean shift subjects must be among {SUBJECTS[:-1]}")
        if self.min_scores < 0 or self.max_slices <= 0:
            raise ValueError("minimum scores must be >= 0 and slices per call positive")

    @property
    def window_seconds(self) -> int:
        return self.slice_seconds * self.window_slices

    @property
    def ttl(self) -> int:
        """How long, by the wall clock, a slice's tally is kept after its last change:
        a backstop only. Retention is in event time: the judge deletes each slice once
        the watermark has left every window that needs it, however long that takes, so
        a group stalled for days loses nothing. The TTL clears what no judge will read
        again (a retired model version's slices): four weeks, or two windows if longer."""
        return max(2 * self.window_seconds, TALLY_BACKSTOP_SECONDS)

    def thresholds(self, subject: str) -> tuple[Threshold, ...]:
        """What a subject's alert is judged by: PSI, and for some the mean shift."""
        judged = [Threshold(PSI, self.raise_above, self.clear_below)]
        if subject in self.mean_shift_subjects:
            judged.append(
                Threshold(MEAN_SHIFT, self.mean_shift_raise_above, self.mean_shift_clear_below)
            )
        return tuple(judged)

    def slice_of(self, instant: float) -> int:
        """The start of the slice holding `instant` (epoch seconds)."""
        return math.floor(instant / self.slice_seconds) * self.slice_seconds


def counted(scores: Scores, since: float | None = None, until: float = math.inf) -> np.ndarray:
    """The rows of `scores` the monitor counts, live and in the reference: scores an
    input event triggered, as of an instant in [since, until). Inactivity rescores
    re-read, 7 to 90 days on, what earlier events left, and would echo a past shift."""
    as_of = np.asarray(scores.as_of, dtype=np.float64)
    by_event = np.array([kind == "event" for kind in scores.triggers], dtype=bool)
    lowest = -math.inf if since is None else since
    return np.flatnonzero(by_event & (as_of >= lowest) & (as_of < until))


def tally_name(version: str, slice_start: int) -> str:
    """A slice's tally: per model version, for the bins are that version's."""
    return f"drift:{version}:{slice_start}"


class DriftTally:
    """The monitor's `scoring.runner.TallySource`: each batch's event-triggered scores,
    binned per event-time slice. `reference(version)`: the reference of that model
    version (None: it has none, nothing is counted)."""

    def __init__(self, reference: Callable[[str], Reference | None], config: DriftConfig) -> None:
        self.reference = reference
        self.config = config

    def __call__(
        self, outcome: PartitionOutcome, batch: Sequence[Decoded], durable_at: float
    ) -> dict[str, Tally]:
        scores = outcome.scores
        if scores is None:
            return {}
        reference = self.reference(scores.model_version)
        if reference is None:
            return {}
        layout = reference.layout
        rows = counted(scores, self.config.since)
        values, where = layout.binned(scores, rows)
        as_of = np.asarray(scores.as_of, dtype=np.float64)
        slices = np.floor(as_of[rows] / self.config.slice_seconds).astype(np.int64)
        tallies = {}
        for number in np.unique(slices):
            mine = slices == number
            start = int(number) * self.config.slice_seconds
            name = tally_name(scores.model_version, start)
            tallies[name] = Tally(self.config.ttl, layout.amounts(values[mine], where[mine]))
        return tallies


# --- Judging: statistics and alerts -------------------------------------------------


@dataclass(frozen=True)
class Statistics:
    """A subject's window against its reference."""

    psi: float
    ks: float
    mean_shift: float | None  # (window mean - reference mean) / |reference mean|
    mean: float | None  # of the window's non-missing values
    scores: int


def psi(expected: np.ndarray, observed: np.ndarray) -> float:
    """Population stability index of observed shares against expected ones (both sum
    to 1), each floored at PSI_FLOOR."""
    e = np.maximum(expected, PSI_FLOOR)
    o = np.maximum(observed, PSI_FLOOR)
    return float(np.sum((o - e) * np.log(o / e)))


def binned_ks(expected: np.ndarray, observed: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance of two binned distributions over their ordered,
    non-missing bins (each renormalised); NaN when either has none."""
    e, o = expected[:-1], observed[:-1]
    if e.sum() <= 0 or o.sum() <= 0:
        return math.nan
    return float(np.max(np.abs(np.cumsum(e) / e.sum() - np.cumsum(o) / o.sum())))


def window_statistics(subject: Subject, counts: np.ndarray, totals: np.ndarray) -> list[Statistics]:
    """`statistics` of many windows at once: their bin counts (one row each) and the
    sums of their non-missing values. Row by row the same numbers, to the last bit:
    every reduction runs along a row, as it does on one window."""
    scores = counts.sum(axis=1)
    present = scores - counts[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        observed = np.where(scores[:, None] > 0, counts / scores[:, None], 0.0)
        e, o = np.maximum(subject.shares, PSI_FLOOR), np.maximum(observed, PSI_FLOOR)
        psis = np.sum((o - e) * np.log(o / e), axis=1)
        expected, seen = subject.shares[:-1], observed[:, :-1]
        sums = seen.sum(axis=1)
        gaps = np.abs(
            np.cumsum(expected) / expected.sum() - np.cumsum(seen, axis=1) / sums[:, None]
        )
        kss = np.where((expected.sum() > 0) & (sums > 0), np.max(gaps, axis=1), math.nan)
    out = []
    for k in range(len(counts)):
        mean = float(totals[k] / present[k]) if present[k] else None
        shift = None
        if mean is not None and subject.mean is not None and subject.mean != 0:
            shift = (mean - subject.mean) / abs(subject.mean)
        out.append(Statistics(float(psis[k]), float(kss[k]), shift, mean, round(float(scores[k]))))
    return out


def statistics(subject: Subject, counts: np.ndarray, total: float) -> Statistics:
    """Statistics of a window: its bin counts and the sum of its non-missing values."""
    scores = float(counts.sum())
    present = scores - float(counts[-1])
    observed = counts / scores if scores else np.zeros_like(counts)
    mean = float(total / present) if present else None
    shift = None
    if mean is not None and subject.mean is not None and subject.mean != 0:
        shift = (mean - subject.mean) / abs(subject.mean)
    return Statistics(
        psi(subject.shares, observed),
        binned_ks(subject.shares, observed),
        shift,
        mean,
        round(scores),
    )


@dataclass(frozen=True)
class AlertState:
    """A subject's alert: raised or not, how many judged slices in a row have been
    past the thresholds that would change that, when it last changed (a slice end),
    the last PSI judged, and the statistic that raised it."""

    raised: bool = False
    streak: int = 0
    since: int | None = None
    psi: float | None = None
    statistic: str = PSI

    def to_json(self) -> dict[str, Any]:
        return {
            "raised": self.raised,
            "streak": self.streak,
            "since": self.since,
            "psi": self.psi,
            "statistic": self.statistic,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AlertState:
        statistic = str(data.get("statistic") or PSI)  # books from before the mean shift
        return cls(bool(data["raised"]), int(data["streak"]), data["since"], data["psi"], statistic)


def value_of(stats: Statistics, statistic: str) -> float | None:
    """A statistic of a window as its threshold reads it (None: not defined there)."""
    if statistic == PSI:
        return stats.psi
    return None if stats.mean_shift is None else abs(stats.mean_shift)


def advance(
    state: AlertState,
    stats: Statistics,
    thresholds: Sequence[Threshold],
    consecutive: int,
    slice_end: int,
) -> tuple[AlertState, str | None]:
    """The alert after one more judged slice, and RAISED or CLEARED when it changed.
    A slice is past the raise side when any statistic is above its raise threshold,
    past the clear side when every one is below its clear threshold."""
    values = [(t, value_of(stats, t.statistic)) for t in thresholds]
    if state.raised:  # a statistic the window does not define cannot clear it
        beyond = all(v is not None and v < t.clear_below for t, v in values)
        statistic = state.statistic
    else:
        above = [t.statistic for t, v in values if v is not None and v > t.raise_above]
        beyond, statistic = bool(above), (above or [PSI])[0]
    streak = state.streak + 1 if beyond else 0
    if streak < consecutive:
        return replace(state, streak=streak, psi=stats.psi), None
    changed = AlertState(not state.raised, 0, slice_end, stats.psi, statistic)
    return changed, RAISED if changed.raised else CLEARED


@dataclass(frozen=True)
class AlertBook:
    """What the store keeps for the group: the end of the last slice judged (None:
    none yet) and every subject's alert."""

    cursor: int | None = None
    alerts: dict[str, AlertState] = field(default_factory=dict)


def alert_id(subject: str, state: str, slice_end: int) -> str:
    """Deterministic: judging the same slice again gives the same id."""
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{subject}/{state}/{slice_end}"))


class DriftStore(Protocol):
    """Where the monitor reads the tallies and keeps its alert book."""

    def watermark(self, partitions: Collection[int]) -> float | None:
        """The smallest stream time the partitions have recorded (those without one
        left out); None when none has one."""
        ...

    def slices(self, partitions: Collection[int], names: Sequence[str]) -> list[list[Amounts]]:
        """Each named tally's parts over the partitions (`Layout.vector` sums them)."""
        ...

    def drop(self, partitions: Collection[int], names: Sequence[str]) -> None: ...

    def book(self) -> AlertBook: ...

    def advance(self, expected: int | None, book: AlertBook) -> bool:
        """Store `book` if the stored cursor is still `expected`; whether it was."""
        ...


@dataclass
class Judgement:
    """What one call of `DriftMonitor.judge` found: the alerts to publish, the book to
    store once they are durable, and each subject's statistics at the last slice."""

    expected: int | None
    book: AlertBook
    alerts: list[DriftAlert] = field(default_factory=list)
    latest: dict[str, Statistics] = field(default_factory=dict)
    slices: int = 0  # judged
    unneeded: list[str] = field(default_factory=list)  # tallies no window needs any more


class DriftMonitor:
    """Judges the slices the watermark has passed (see the module doc). Runs wherever
    it is called: the store's compare-and-set makes each slice's judgement one."""

    def __init__(
        self,
        config: DriftConfig,
        partitions: Collection[int],
        store: DriftStore,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.partitions = tuple(partitions)
        self.store = store
        self.clock = clock

    def judge(
        self, reference: Reference, version: str, book: AlertBook | None = None
    ) -> Judgement | None:
        """Judge up to `max_slices` slices; None when there is nothing to do. Nothing
        is written: publish the alerts, then `commit`. `book`: the store's alert book
        when the caller has just read it (else it is read here)."""
        config, width = self.config, self.config.slice_seconds
        book = self.store.book() if book is None else book
        watermark = self.store.watermark(self.partitions)
        if watermark is None:
            return None
        last = math.floor(watermark / width) * width  # the latest slice end passed
        cursor = book.cursor
        if cursor is None:
            # The first slice judged has a whole window of counted scores behind it.
            first = last if config.since is None else self._first_end()
            if first > last:
                return None
            if config.since is None:  # start from here; nothing was counted before
                return Judgement(None, AlertBook(last, dict(book.alerts)))
            cursor = first - width
        ends = list(range(cursor + width, last + 1, width))[: config.max_slices]
        if not ends:
            return None
        starts = list(range(ends[0] - config.window_seconds, ends[-1], width))
        names = [tally_name(version, s) for s in starts]
        layout = reference.layout
        vectors = np.array([layout.vector(t) for t in self.store.slices(self.partitions, names)])
        totals = np.vstack([np.zeros(len(layout.fields)), np.cumsum(vectors, axis=0)])
        alerts = dict(book.alerts)
        judgement = Judgement(book.cursor, AlertBook(ends[-1], alerts))
        now = self.clock()
        windows = (
            totals[config.window_slices : config.window_slices + len(ends)] - totals[: len(ends)]
        )
        judged = np.flatnonzero(windows[:, -1] >= config.min_scores)
        per_subject = [
            window_statistics(
                subject,
                windows[judged, offset : offset + subject.size],
                windows[judged, offset + subject.size],
            )
            for subject, offset in zip(reference.subjects, layout.offsets, strict=True)
        ]
        for row, k in enumerate(judged):
            end = ends[k]
            for subject, judged_stats in zip(reference.subjects, per_subject, strict=True):
                stats = judged_stats[row]
                judgement.latest[subject.name] = stats
                state, change = advance(
                    alerts.get(subject.name, AlertState()),
                    stats,
                    config.thresholds(subject.name),
                    config.consecutive,
                    end,
                )
                alerts[subject.name] = state
                if change is not None:
                    judgement.alerts.append(
                        self._alert(subject, state, change, stats, end, reference, version, now)
                    )
        judgement.slices = len(ends)
        # Kept: what this call read, for a judge that read the book when this one did
        # (its compare-and-set will fail, but it must not publish a half-empty window).
        # Dropped: the call's worth of slices before, which no window needs any more.
        first = ends[0] - config.window_seconds
        unneeded = range(first - config.max_slices * width, first, width)
        judgement.unneeded = [tally_name(version, s) for s in unneeded]
        return judgement

    def _first_end(self) -> int:
        assert self.config.since is not None
        width = self.config.slice_seconds
        return math.ceil(self.config.since / width) * width + self.config.window_seconds

    def commit(self, judgement: Judgement) -> bool:
        """Store the judgement's book unless another judge moved on first (then its
        alerts were another's too: same slices, same ids); drop unneeded tallies."""
        if not self.store.advance(judgement.expected, judgement.book):
            return False
        if judgement.unneeded:
            self.store.drop(self.partitions, judgement.unneeded)
        return True

    def _alert(
        self,
        subject: Subject,
        alert: AlertState,
        change: str,
        stats: Statistics,
        end: int,
        reference: Reference,
        version: str,
        now: datetime,
    ) -> DriftAlert:
        config = self.config
        judged = config.thresholds(subject.name)
        threshold = next((t for t in judged if t.statistic == alert.statistic), judged[0])
        value = stats.psi if threshold.statistic == PSI else stats.mean_shift
        assert value is not None  # the window defines every statistic that changed it
        return DriftAlert(
            event_id=alert_id(subject.name, change, end),
            feature=subject.name,
            state=change,  # type: ignore[arg-type]
            statistic=threshold.statistic,  # type: ignore[arg-type]
            value=value,
            thresholds=DriftThresholds(
                raise_above=threshold.raise_above,
                clear_below=threshold.clear_below,
                consecutive_slices=config.consecutive,
            ),
            window=DriftWindow(
                start=_utc(end - config.window_seconds),
                end=_utc(end),
                slice_seconds=config.slice_seconds,
                scores=stats.scores,
                mean=stats.mean,
            ),
            reference=DriftReference(
                rows=reference.rows,
                since=_utc(reference.since),
                until=_utc(reference.until),
                mean=subject.mean,
            ),
            statistics=DriftStatistics(
                psi=stats.psi,
                ks=None if math.isnan(stats.ks) else stats.ks,
                mean_shift=stats.mean_shift,
            ),
            model_version=version,
            detected_at=now,
        )


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


class MemoryDriftStore:
    """A DriftStore over a `feature_store.store.MemoryStore` (tests, replays)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self._book = AlertBook()

    def watermark(self, partitions: Collection[int]) -> float | None:
        kept = self.store.partitions
        times = [kept[p].stream_time for p in partitions if p in kept]
        known = [t for t in times if t is not None]
        return min(known) if known else None

    def slices(self, partitions: Collection[int], names: Sequence[str]) -> list[list[Amounts]]:
        kept = self.store.partitions
        return [
            [kept[p].tallies[name] for p in partitions if p in kept and name in kept[p].tallies]
            for name in names
        ]

    def drop(self, partitions: Collection[int], names: Sequence[str]) -> None:
        for partition in partitions:
            tallies = self.store.partitions[partition].tallies
            for name in names:
                tallies.pop(name, None)

    def book(self) -> AlertBook:
        return AlertBook(self._book.cursor, dict(self._book.alerts))

    def advance(self, expected: int | None, book: AlertBook) -> bool:
        if self._book.cursor != expected:
            return False
        self._book = AlertBook(book.cursor, dict(book.alerts))
        return True
