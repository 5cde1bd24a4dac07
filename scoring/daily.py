"""The daily report's counters: what each committed batch adds to its day's tally.

`daily_tally` is a `scoring.runner.TallySource`: the runner commits what it returns
with the partition's state, fenced and atomically, so every input counts exactly once
through redelivery, crashes and takeovers, whichever worker processed it. A day's
counters are a hash per partition (`StateStore.tallies` sums them); `DailyCounts`
reads them back and answers the report's questions.

Fields of a day's tally (each a count unless said otherwise):

    events:<topic>              input messages released, by (logical) topic
    outcome:<outcome>           applied, duplicate, late, erased, dead_letter
    dead_letter:<topic>         dead letters by the topic of their input
    risk:<level>                scores by the category they landed in
    change:<previous>:<risk>    published risk changes (previous "new" for a first one)
    model:<version>             scores made by each model version
    probability_sum             the sum of the scores' probabilities
    latency:<bucket>            inputs by end-to-end latency bucket (`latency_bucket`)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np

from feature_store.store import StateStore, Tally
from scoring.merge import Decoded, latencies
from scoring.outcome import PartitionOutcome
from scoring.risk import LEVELS

TALLY_PREFIX = "daily:"
# Long enough to report on last month; short enough that Redis forgets by itself.
TTL_SECONDS = 40 * 86_400
NEW = "new"  # the "previous risk" of a customer's first published change
HIGH = LEVELS[-1]
HELD_OUT_HIGH = "held_out_high"  # the field counting changes into HIGH held out

# End-to-end latency, from an input's broker append time to its batch's outputs being
# durable, in log-spaced buckets: bucket i holds (GAMMA**(i-1), GAMMA**i] seconds and
# stands for 2 * GAMMA**i / (GAMMA + 1), which is within RELATIVE_ERROR of everything
# in it (DDSketch's buckets, Masson et al., VLDB 2019). So a quantile read off the
# buckets is within RELATIVE_ERROR of the exact quantile of the same latencies, for
# latencies between MIN_LATENCY and MAX_LATENCY; outside they are clamped to them (a
# broker clock ahead of the worker's can even make a latency negative). Of the 1,152
# buckets a day touches a few hundred per partition, each a hash field.
RELATIVE_ERROR = 0.01
GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
MIN_LATENCY = 0.001  # seconds
MAX_LATENCY = 1e7  # seconds, ~116 days: more than Kafka keeps anything by default
_LOG_GAMMA = math.log(GAMMA)


def tally_name(day: date) -> str:
    return f"{TALLY_PREFIX}{day.isoformat()}"


def day_of(instant: float) -> date:
    """The UTC calendar day of an epoch instant."""
    return datetime.fromtimestamp(instant, tz=UTC).date()


def latency_bucket(seconds: np.ndarray) -> np.ndarray:
    """The bucket of each latency (see RELATIVE_ERROR)."""
    clamped = np.clip(seconds, MIN_LATENCY, MAX_LATENCY)
    return np.ceil(np.log(clamped) / _LOG_GAMMA).astype(np.int64)


def bucket_value(bucket: int) -> float:
    """The latency a bucket stands for, within RELATIVE_ERROR of all it holds."""
    return 2 * GAMMA**bucket / (GAMMA + 1)


def daily_tally(
    outcome: PartitionOutcome, batch: Sequence[Decoded], durable_at: float
) -> dict[str, Tally]:
    """What a partition's committed batch adds to the daily report (a TallySource).

    The batch counts on the UTC day its outputs became durable: one instant that all
    its inputs and outputs share, the end of the latency the report measures, and one
    that only moves forward, so a day's report stops changing a batch's commit after
    its midnight. Event time would not do: a late or replayed event would add to a
    day long reported on, and an inactivity rescore has no input of its own."""
    amounts: Counter[str] = Counter()
    for decoded in batch:
        amounts[f"events:{decoded.message.topic}"] += 1
    for (_, name), count in outcome.counts.items():  # by topic and outcome
        if count:
            amounts[f"outcome:{name}"] += count
    for letter in outcome.dead_letters:
        amounts[f"dead_letter:{letter.topic}"] += 1
    scores = outcome.scores
    if scores is not None and scores.risks:
        amounts.update(f"risk:{risk}" for risk in scores.risks)
        amounts[f"model:{scores.model_version}"] += len(scores.risks)
    for change in outcome.changes:
        amounts[f"change:{change.previous_risk or NEW}:{change.risk}"] += 1
        if change.held_out and change.risk == HIGH:
            amounts[HELD_OUT_HIGH] += 1
    for bucket, count in histogram(latencies(batch, durable_at)).items():
        amounts[f"latency:{bucket}"] += count
    fields: dict[str, float] = {key: float(count) for key, count in amounts.items()}
    if scores is not None and scores.risks:
        fields["probability_sum"] = float(np.sum(scores.probabilities))
    if not fields:
        return {}
    return {tally_name(day_of(durable_at)): Tally(TTL_SECONDS, fields)}


@dataclass(frozen=True)
class DailyCounts:
    """One day's counters over every partition (see the module doc)."""

    day: date
    events: dict[str, int] = field(default_factory=dict)  # by topic
    outcomes: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)  # by input topic
    risks: dict[str, int] = field(default_factory=dict)  # scores by category
    changes: dict[tuple[str, str], int] = field(default_factory=dict)  # (previous, risk)
    models: dict[str, int] = field(default_factory=dict)  # scores by model version
    probability_sum: float = 0.0
    latency: dict[int, int] = field(default_factory=dict)  # bucket -> inputs
    held_out_high: int = 0  # changes into HIGH of customers held out of the campaign

    @classmethod
    def from_fields(cls, day: date, fields: Mapping[str, float]) -> DailyCounts:
        """Parse a day's summed tally; fields this version does not know are left out."""
        counts = cls(
            day,
            probability_sum=fields.get("probability_sum", 0.0),
            held_out_high=round(fields.get(HELD_OUT_HIGH, 0.0)),
        )
        by_kind: dict[str, dict[str, int]] = {
            "events": counts.events,
            "outcome": counts.outcomes,
            "dead_letter": counts.dead_letters,
            "risk": counts.risks,
            "model": counts.models,
        }
        for key, amount in fields.items():
            kind, _, label = key.partition(":")
            if kind in by_kind:
                by_kind[kind][label] = round(amount)
            elif kind == "change":
                previous, _, risk = label.partition(":")
                counts.changes[(previous, risk)] = round(amount)
            elif kind == "latency":
                counts.latency[int(label)] = round(amount)
        return counts

    @property
    def empty(self) -> bool:
        return not (self.events or self.risks or self.outcomes)

    @property
    def scores(self) -> int:
        return sum(self.risks.values())

    @property
    def into_high(self) -> int:
        """Changes into HIGH, held out of the campaign or not."""
        return sum(n for (_, risk), n in self.changes.items() if risk == HIGH)

    @property
    def sent_high(self) -> int:
        """Changes into HIGH marketing automation received on churn-risk-high: all but
        the held-out customers'."""
        return self.into_high - self.held_out_high

    @property
    def churn_rate(self) -> float | None:
        """The mean predicted churn probability of the day's scores."""
        return self.probability_sum / self.scores if self.scores else None

    def latency_quantile(self, q: float) -> float | None:
        """The q-quantile of the day's latencies (seconds), within RELATIVE_ERROR of
        the exact lower quantile (the `floor(q * (n - 1))`-th smallest, numpy's
        method="lower"); None when no input had a broker timestamp."""
        return quantile(self.latency, q)


def quantile(histogram: Mapping[int, int], q: float) -> float | None:
    """The q-quantile of the latencies counted in `histogram` (bucket -> count)."""
    total = sum(histogram.values())
    if not total:
        return None
    rank = math.floor(q * (total - 1))  # 0-based
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen > rank:
            return bucket_value(bucket)
    raise AssertionError("unreachable: the ranks end at total - 1")


def histogram(seconds: Sequence[float]) -> dict[int, int]:
    """Latencies counted by bucket, as a day's tally holds them."""
    buckets, counts = np.unique(
        latency_bucket(np.asarray(seconds, dtype=np.float64)), return_counts=True
    )
    return {int(b): int(c) for b, c in zip(buckets, counts, strict=True)}


def read_day(store: StateStore, partitions: Iterable[int], day: date) -> DailyCounts:
    """A day's counters summed over `partitions` (empty when nothing was recorded)."""
    return DailyCounts.from_fields(day, store.tallies(list(partitions), tally_name(day)))
