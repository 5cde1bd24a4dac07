"""The scorer's core, free of Kafka, Faust and Redis: messages in, risk changes out.

For each batch: decode (bad input becomes a dead letter), apply the updates to the
feature store, score every touched customer in one model call, and decide which
risk categories changed. The adapter publishes the outcome, then calls `commit`,
then acknowledges the input, in that order: a crash anywhere before the commit
replays the batch, the store ignores what it already applied, and the same changes
come out again with the same ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import msgspec
import numpy as np

from feature_store.definitions import FEATURE_NAMES, feature_matrix
from feature_store.online import CustomerState, Position, Update, base_columns, update_for
from feature_store.redis_store import ApplyResult, RiskRecord
from schemas import INPUT_EVENTS, ChurnRiskChanged, DeadLetter, Reason, Trigger
from scoring.artifact import Model
from scoring.risk import RANK, RiskPolicy, is_news, transition_id

TOP_REASONS = 3


@dataclass(frozen=True, slots=True)
class InputMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class FeatureStore(Protocol):
    def apply(self, updates: Sequence[Update]) -> ApplyResult: ...

    def record_risk(self, records: Sequence[RiskRecord]) -> None: ...


@dataclass
class BatchOutcome:
    changes: list[ChurnRiskChanged] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    risk_records: list[RiskRecord] = field(default_factory=list)
    applied: ApplyResult | None = None
    scored: int = 0


_DECODERS = {topic: msgspec.json.Decoder(event_type) for topic, event_type in INPUT_EVENTS.items()}


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


class Scorer:
    """Turns batches of input messages into risk changes (see module doc)."""

    def __init__(
        self,
        store: FeatureStore,
        model: Callable[[], Model],
        margin: float = 0.05,
        actions: dict[str, tuple[str, ...]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.model = model  # a callable, so a reloaded model is picked up per batch
        self.margin = margin
        self.actions = actions
        self.clock = clock

    def policy(self, model: Model) -> RiskPolicy:
        if self.actions is None:
            return RiskPolicy(model.thresholds, self.margin)
        return RiskPolicy(model.thresholds, self.margin, self.actions)

    def process(self, messages: Sequence[InputMessage]) -> BatchOutcome:
        outcome = BatchOutcome()
        updates: list[Update] = []
        triggers: dict[str, Trigger] = {}
        for message in messages:
            decoded = self._decode(message, outcome)
            if decoded is None:
                continue
            update = update_for(message.topic, decoded, _position(message))
            updates.append(update)
            triggers[update.customer_id] = Trigger(
                kind="event",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                event_id=update.source_id,
            )
        if not updates:
            return outcome
        outcome.applied = self.store.apply(updates)
        # Score customers with any order or ticket; a bare profile has nothing to score.
        states = [s for s in outcome.applied.states.values() if s.seen is not None]
        as_of = [s.seen for s in states if s.seen is not None]
        self._score(states, as_of, [triggers[s.customer_id] for s in states], outcome)
        return outcome

    def commit(self, outcome: BatchOutcome) -> None:
        """Record the published categories; call after the changes are durable in Kafka."""
        if outcome.risk_records:
            self.store.record_risk(outcome.risk_records)

    def _decode(self, message: InputMessage, outcome: BatchOutcome) -> object | None:
        decoder = _DECODERS.get(message.topic)
        try:
            if decoder is None:
                raise ValueError(f"no event contract for topic {message.topic!r}")
            return decoder.decode(message.value)
        except (msgspec.DecodeError, ValueError) as err:
            outcome.dead_letters.append(
                DeadLetter(
                    reason=str(err),
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    key=None if message.key is None else message.key.decode("utf-8", "replace"),
                    value=message.value.decode("utf-8", "replace"),
                    failed_at=self.clock(),
                )
            )
            return None

    def _score(
        self,
        states: Sequence[CustomerState],
        as_of: Sequence[float],
        triggers: Sequence[Trigger],
        outcome: BatchOutcome,
    ) -> None:
        if not states:
            return
        model = self.model()
        policy = self.policy(model)
        features = feature_matrix(base_columns(states, as_of), model.feature_params)
        probabilities = model.predict(features)
        outcome.scored += len(states)
        changed: list[int] = []
        for row, state in enumerate(states):
            risk = policy.category(float(probabilities[row]), state.risk)
            if risk == state.risk:
                continue
            news = is_news(state.risk, risk)
            sequence = state.risk_seq + 1 if news else state.risk_seq
            outcome.risk_records.append(RiskRecord(state.customer_id, risk, sequence))
            if news:
                changed.append(row)
        if not changed:
            return
        contributions = model.contributions(features[changed])
        scored_at = self.clock()
        records = {r.customer_id: r for r in outcome.risk_records}
        for contribution, row in zip(contributions, changed, strict=True):
            state = states[row]
            record = records[state.customer_id]
            went_up = state.risk is None or RANK[record.risk] > RANK[state.risk]
            outcome.changes.append(
                ChurnRiskChanged(
                    event_id=transition_id(state.customer_id, record.risk_seq),
                    customer_id=state.customer_id,
                    previous_risk=state.risk,  # type: ignore[arg-type]
                    risk=record.risk,  # type: ignore[arg-type]
                    probability=float(probabilities[row]),
                    model_version=model.version,
                    reasons=_reasons(features[row], contribution, toward_churn=went_up),
                    recommended_actions=list(policy.actions[record.risk]),
                    trigger=triggers[row],
                    event_time=utc(as_of[row]),
                    scored_at=scored_at,
                )
            )


def _position(message: InputMessage) -> Position:
    return Position(message.topic, message.partition, message.offset)


def _reasons(values: np.ndarray, contributions: np.ndarray, toward_churn: bool) -> list[Reason]:
    """The features that pushed hardest in the direction the risk moved."""
    order = np.argsort(-contributions if toward_churn else contributions, kind="stable")
    return [
        Reason(
            feature=FEATURE_NAMES[i],
            value=None if np.isnan(values[i]) else float(values[i]),
            contribution=float(contributions[i]),
        )
        for i in order[:TOP_REASONS]
    ]
