"""The scores the worker gives a history of events: the batch runner over them, on the
in-memory store, as `stream_app replay` runs it. Training takes the drift reference
from these (`scoring.drift.reference_profile`): the same rows, by the same code, as
the live monitor counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from feature_store.definitions import FEATURE_NAMES
from feature_store.store import MemoryStore, Tally
from schemas import ChurnRiskChanged, DeadLetter, topics
from scoring.decoding import InputDecoder, Limits
from scoring.drift import counted, reference_profile
from scoring.merge import Decoded, InputMessage
from scoring.model import Model
from scoring.outcome import PartitionOutcome
from scoring.pipeline import Scorer
from scoring.runner import BatchRunner, Collector, run_backlog


@dataclass
class ServedScores:
    """Event-triggered scores as of instants in [since, until): model inputs
    (FEATURE_NAMES columns), probabilities, categories, as-of instants and the events
    that triggered them."""

    since: float
    until: float
    features: list[np.ndarray] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    risks: list[str] = field(default_factory=list)
    as_of: list[float] = field(default_factory=list)
    events: list[object | None] = field(default_factory=list)

    def __call__(
        self, outcome: PartitionOutcome, batch: Sequence[Decoded], durable_at: float
    ) -> dict[str, Tally]:
        """A `TallySource` that keeps the scores the monitor counts instead of counting
        them (`scoring.drift.counted`)."""
        scores = outcome.scores
        if scores is not None:
            for row in counted(scores, self.since, self.until):
                self.features.append(scores.features[row])
                self.probabilities.append(float(scores.probabilities[row]))
                self.risks.append(scores.risks[row])
                self.as_of.append(scores.as_of[row])
                self.events.append(scores.events[row])
        return {}

    def matrix(self) -> np.ndarray:
        return np.array(self.features).reshape(len(self.features), len(FEATURE_NAMES))

    def profile(self) -> dict[str, Any]:
        """The drift reference of these scores (`reference.serving`)."""
        return reference_profile(
            self.matrix(), np.array(self.probabilities), self.risks, self.as_of, self.events
        )


class _Discard(Collector):
    def collect(
        self, changes: Sequence[ChurnRiskChanged], dead_letters: Sequence[DeadLetter]
    ) -> None:
        return None


def served_scores(
    events: Iterable[tuple[str, Any]],
    model: Model,
    since: float,
    until: float,
    margin: float = 0.05,
    batch_size: int = 500,
    limits: Limits | None = None,
) -> ServedScores:
    """The event-triggered scores `model` gives `events` (contract structs, in event
    time order, keyed alike) as of instants in [since, until), decoded within the
    worker's `limits`."""
    kept = ServedScores(since, until)
    runner = BatchRunner(
        MemoryStore(),
        Scorer(lambda: model, margin=margin, decoder=InputDecoder(limits)),
        _Discard(),
        topics.INPUT_TOPICS,
        tallies=[kept],
    )
    # A customer's scores do not depend on who shares their partition: one will do.
    runner.assign(0)
    asyncio.run(run_backlog(runner, _messages(events), batch_size))
    return kept


def _messages(events: Iterable[tuple[str, Any]]) -> Iterator[InputMessage]:
    encoder = msgspec.json.Encoder()
    offsets = dict.fromkeys(topics.INPUT_TOPICS, 0)
    for topic, event in events:
        offset = offsets[topic]
        offsets[topic] = offset + 1
        key = event.customer_id.encode()
        yield InputMessage(topic, 0, offset, key, encoder.encode(event))
