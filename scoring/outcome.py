"""What the scorer makes of a partition's batch: its outputs, the state to commit once
they are durable, and every score, for the monitors and the reports."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from feature_store.online import CustomerState
from schemas import ChurnRiskChanged, DeadLetter
from scoring.samples import Sample


@dataclass
class Scores:
    """Every score of a batch, for the monitors: each scored row's model inputs, its
    probability and category, the event-time instant it is as of, what made it
    (`Trigger.kind`: an input event, or inactivity) and that event (None: inactivity)."""

    model_version: str
    features: np.ndarray  # one row per score, FEATURE_NAMES columns
    probabilities: np.ndarray
    risks: list[str]
    as_of: list[float]
    triggers: list[str]
    events: list[object | None]


@dataclass
class PartitionOutcome:
    """What processing one partition's released events produced."""

    partition: int
    changes: list[ChurnRiskChanged] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # Everything to commit once the outputs are durable:
    states: dict[str, CustomerState] = field(default_factory=dict)  # touched customers
    # Those of `states` the batch changed (the others were only read: by a rescore
    # that left the category where it was, or to decide a sample): written back.
    changed: set[str] = field(default_factory=set)
    erased: set[str] = field(default_factory=set)  # customers whose state is deleted
    forgotten: int = 0  # of them, silent past the retention horizon
    schedule: dict[str, float | None] = field(default_factory=dict)  # next rescore
    offsets: dict[str, int] = field(default_factory=dict)  # last offset per topic
    stream_time: float | None = None
    # Input messages by (topic, outcome in OUTCOMES) and dead letters by category
    # (scoring.decoding.REFUSALS), for metrics and reports.
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    scored: int = 0
    scores: Scores | None = None
    # Realised performance (scoring.performance): pending samples to store (member ->
    # due) or to remove (None), and the samples decided, with their outcome (churned).
    samples: dict[str, float | None] = field(default_factory=dict)
    matured: list[tuple[Sample, bool]] = field(default_factory=list)
