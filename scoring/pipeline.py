"""The scorer's core, free of Kafka, Faust and Redis: a partition's released events
and its pre-batch state in, risk changes and the post-batch state out.

Nothing here writes anywhere. The batch runner (`scoring.runner`) reads the state,
calls `Scorer.process`, publishes the outcome and only then commits the new state,
so a batch processed again starts from the same state and, the events coming in the
same order (`scoring.merge`), publishes the same changes with the same ids.

"Now" is event time. The partition's stream time is the latest event time released
so far; a customer's inactivity rescore, due a fixed span after their latest event,
fires once the stream time has passed it, before the event that passed it, and is
scored as of the due instant. Neither depends on where batches begin and end.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from feature_store.definitions import (
    BASE_COLUMNS,
    EVENT_ID_FIELD,
    FEATURE_NAMES,
    SECONDS_PER_DAY,
    feature_matrix,
)
from feature_store.online import (
    APPLIED,
    DUPLICATE,
    LATE,
    CustomerState,
    InputError,
    apply_event,
    base_row,
)
from schemas import ChurnRiskChanged, Reason, Trigger
from scoring.decoding import Erasure, InputDecoder
from scoring.inactivity import first_due, next_due
from scoring.merge import Decoded, InputMessage
from scoring.model import Model
from scoring.outcome import PartitionOutcome, Scores
from scoring.risk import RANK, RiskPolicy, is_news, transition_id
from scoring.samples import Sample, churned, decode_sample, first_of_week, horizon_days, in_sample

TOP_REASONS = 3
INACTIVITY = Trigger(kind="inactivity")
ERASED = "erased"
DEAD_LETTER = "dead_letter"
OUTCOMES = (APPLIED, DUPLICATE, LATE, ERASED, DEAD_LETTER)


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


@dataclass
class _Rows:
    """What one model call scores: base columns of customers as of instants, in order."""

    customers: list[CustomerState] = field(default_factory=list)
    base: list[list[float]] = field(default_factory=list)
    as_of: list[float] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)
    messages: list[InputMessage | None] = field(default_factory=list)
    events: list[object | None] = field(default_factory=list)

    def add(
        self,
        state: CustomerState,
        as_of: float,
        trigger: Trigger,
        message: InputMessage | None,
        event: object | None,
    ) -> None:
        # Read now: the state moves on with the customer's later events.
        self.base.append(base_row(state, as_of))
        self.customers.append(state)
        self.as_of.append(as_of)
        self.triggers.append(trigger)
        self.messages.append(message)
        self.events.append(event)
        state.scored_to = as_of if state.scored_to is None else max(state.scored_to, as_of)


class Scorer:
    """Turns a partition's released events into risk changes (see the module doc)."""

    def __init__(
        self,
        model: Callable[[], Model],
        margin: float = 0.05,
        actions: dict[str, tuple[str, ...]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        decoder: InputDecoder | None = None,
        sample_rate: float = 0.0,
    ) -> None:
        self.model = model  # a callable, so a reloaded model is picked up per batch
        self.margin = margin
        self.actions = actions
        self.clock = clock
        self.decoder = decoder or InputDecoder()  # the runner decodes with it too
        self.sample_rate = sample_rate  # share of customers whose scores are sampled

    def policy(self, model: Model) -> RiskPolicy:
        if self.actions is None:
            return RiskPolicy(model.thresholds, self.margin)
        return RiskPolicy(model.thresholds, self.margin, self.actions)

    def process(
        self,
        partition: int,
        released: Sequence[Decoded],
        states: Mapping[str, CustomerState],
        due: Sequence[tuple[float, str]],
        samples: Sequence[str],
        stream_time: float | None,
    ) -> PartitionOutcome:
        """Apply `released` (in order) to the pre-batch `states` of the customers
        involved and score them. `due`: the (due time, customer) rescores scheduled
        before the batch and due before its last stream time; `samples`: the pending
        samples due before it (their customers' states are in `states`). The states
        are changed in place: they must be the caller's own (a store's `load` decodes
        them afresh for each batch)."""
        model = self.model()
        days = horizon_days(model.metadata) if self.sample_rate > 0 else None
        horizon = 0.0 if days is None else days * SECONDS_PER_DAY
        outcome = PartitionOutcome(partition, stream_time=stream_time)
        touched = outcome.states
        schedule = outcome.schedule
        scheduled: dict[str, float | None] = {customer: when for when, customer in due}
        timers = sorted(due)
        rows = _Rows()
        # Samples waiting for their horizon: (due, tie-break, the stored member or the
        # row of a score of this batch), and those decided: (which, churned or None
        # when the customer's state is gone).
        order = itertools.count()
        pending: list[tuple[float, int, str | int]] = []
        for member in samples:
            heapq.heappush(pending, (decode_sample(member).due, next(order), member))
        decided: list[tuple[str | int, bool | None]] = []

        def state_of(customer_id: str, message: InputMessage | None = None) -> CustomerState:
            state = touched.get(customer_id)
            if state is None:
                if customer_id not in outcome.erased:
                    state = states.get(customer_id)
                if state is None:
                    # Where this life of the state began: a customer erased and back
                    # gets change ids of their own (`transition_id`).
                    origin = "" if message is None else f"{message.topic}@{message.offset}"
                    state = CustomerState(customer_id, origin=origin)
                outcome.erased.discard(customer_id)
                touched[customer_id] = state
            return state

        def fire_timers(until: float) -> None:
            """Inactivity rescores due before `until`, in due order."""
            while timers and timers[0][0] < until:
                when, customer_id = heapq.heappop(timers)
                if scheduled.get(customer_id) != when:
                    continue  # rescheduled by an event since
                state = state_of(customer_id)
                if state.seen is None or when <= state.seen:
                    scheduled[customer_id] = schedule[customer_id] = None
                    continue
                add_row(state, when, INACTIVITY, None, None, until)
                following = next_due(state.seen, when)
                scheduled[customer_id] = schedule[customer_id] = following
                if following is not None:
                    heapq.heappush(timers, (following, customer_id))

        def peek(customer_id: str) -> CustomerState | None:
            if customer_id in touched:
                return touched[customer_id]
            return None if customer_id in outcome.erased else states.get(customer_id)

        def decide(until: float) -> None:
            """Samples whose horizon ends before `until`: every event applied so far
            is at or before that end, so the state tells the outcome."""
            while pending and pending[0][0] < until:
                _, _, which = heapq.heappop(pending)
                if isinstance(which, str):
                    sample = decode_sample(which)
                    customer_id, as_of, origin = sample.customer_id, sample.as_of, sample.origin
                else:
                    scored_state = rows.customers[which]
                    customer_id, origin = scored_state.customer_id, scored_state.origin
                    as_of = rows.as_of[which]
                state = peek(customer_id)
                if state is None or state.origin != origin:
                    decided.append((which, None))  # erased since: not counted
                else:
                    decided.append((which, churned(state, as_of)))

        def add_row(
            state: CustomerState,
            as_of: float,
            trigger: Trigger,
            message: InputMessage | None,
            event: object | None,
            now: float,
        ) -> None:
            # Sampled: the customer's first score of the week, its horizon not yet past.
            sampled = (
                days is not None
                and as_of + horizon >= now
                and in_sample(state.customer_id, self.sample_rate)  # the cheaper test first
                and first_of_week(state.scored_to, as_of)
            )
            if sampled:
                heapq.heappush(pending, (as_of + horizon, next(order), len(rows.base)))
            rows.add(state, as_of, trigger, message, event)

        for decoded in released:
            message = decoded.message
            outcome.offsets[message.topic] = message.offset
            if decoded.reason is not None or decoded.event is None:
                reason = decoded.reason or "no event"
                self._dead(outcome, message, reason, decoded.category or "contract")
                continue
            event = decoded.event
            if isinstance(event, Erasure):
                touched.pop(event.customer_id, None)
                outcome.erased.add(event.customer_id)
                scheduled[event.customer_id] = schedule[event.customer_id] = None
                outcome.counts[message.topic, ERASED] += 1
                continue
            if outcome.stream_time is None or decoded.time > outcome.stream_time:
                outcome.stream_time = decoded.time
            fire_timers(outcome.stream_time)
            decide(outcome.stream_time)
            customer_id: str = event.customer_id  # type: ignore[attr-defined]
            state = state_of(customer_id, message)
            seen_before = state.seen
            try:
                result = apply_event(state, message.topic, event)
            except InputError as err:
                self._dead(outcome, message, str(err), "features_out_of_range")
                continue
            outcome.counts[message.topic, result] += 1
            if result == DUPLICATE or state.seen is None:
                continue  # nothing new, or a bare profile: nothing to score yet
            as_of = state.seen if state.scored_to is None else max(state.seen, state.scored_to)
            add_row(state, as_of, _trigger(message, event), message, event, outcome.stream_time)
            if state.seen != seen_before:
                # Silence now counts from this event: the first rescore moves on.
                following = first_due(state.seen)
                scheduled[customer_id] = schedule[customer_id] = following
                heapq.heappush(timers, (following, customer_id))
        scored = self._score(model, rows, outcome)
        self._samples(model, days or 0, rows, scored, decided, pending, outcome)
        return outcome

    @staticmethod
    def _samples(
        model: Model,
        days: int,
        rows: _Rows,
        scored: Mapping[int, tuple[float, str]],
        decided: Sequence[tuple[str | int, bool | None]],
        pending: Sequence[tuple[float, int, str | int]],
        outcome: PartitionOutcome,
    ) -> None:
        """The batch's samples: decided ones to the outcome, new ones kept pending."""

        def of_row(row: int) -> Sample | None:
            if row not in scored:
                return None  # the model could not score it: no sample
            probability, risk = scored[row]
            state = rows.customers[row]
            return Sample(
                state.customer_id,
                rows.as_of[row],
                probability,
                risk,
                model.version,
                days,
                state.origin,
            )

        for which, churned_ in decided:
            if isinstance(which, str):
                outcome.samples[which] = None
                sample: Sample | None = decode_sample(which)
            else:
                sample = of_row(which)
            if sample is not None and churned_ is not None:
                outcome.matured.append((sample, churned_))
        for due, _, which in pending:
            if isinstance(which, int) and (sample := of_row(which)) is not None:
                outcome.samples[sample.encode()] = due

    def _dead(
        self, outcome: PartitionOutcome, message: InputMessage, reason: str, category: str
    ) -> None:
        outcome.counts[message.topic, DEAD_LETTER] += 1
        outcome.refusals[category] += 1
        outcome.dead_letters.append(self.decoder.dead_letter(message, reason, self.clock()))

    def _score(
        self, model: Model, rows: _Rows, outcome: PartitionOutcome
    ) -> dict[int, tuple[float, str]]:
        """Score every row in one model call, then walk them in order: each may
        change its customer's risk, which the next row of that customer starts from.
        Returns the (probability, category) of each row scored."""
        if not rows.base:
            return {}
        policy = self.policy(model)
        features = feature_matrix(_columns(rows.base), model.feature_params)
        probabilities = self._predict(model, features, rows, outcome)
        changes: list[tuple[int, str | None, str, int]] = []
        scored: list[int] = []
        risks: list[str] = []
        for row, state in enumerate(rows.customers):
            probability = probabilities[row]
            if math.isnan(probability):
                continue  # the model could not score this row: dead-lettered
            risk = policy.category(float(probability), state.risk)
            state.risk_probability = float(probability)
            state.risk_as_of = rows.as_of[row]
            state.risk_model = model.version
            scored.append(row)
            risks.append(risk)
            if risk == state.risk:
                continue
            if is_news(state.risk, risk):
                state.risk_seq += 1
                changes.append((row, state.risk, risk, state.risk_seq))
            state.risk = risk
        by_row = {
            row: (float(probabilities[row]), risk) for row, risk in zip(scored, risks, strict=True)
        }
        outcome.scored = len(scored)
        outcome.scores = Scores(
            model.version,
            features[scored],
            probabilities[scored],
            risks,
            [rows.as_of[row] for row in scored],
            [rows.triggers[row].kind for row in scored],
            [rows.events[row] for row in scored],
        )
        if not changes:
            return by_row
        contributions = model.contributions(features[[row for row, *_ in changes]])
        scored_at = self.clock()
        for contribution, (row, previous, risk, sequence) in zip(
            contributions, changes, strict=True
        ):
            customer_id = rows.customers[row].customer_id
            went_up = previous is None or RANK[risk] > RANK[previous]
            outcome.changes.append(
                ChurnRiskChanged(
                    event_id=transition_id(customer_id, sequence, rows.customers[row].origin),
                    customer_id=customer_id,
                    previous_risk=previous,  # type: ignore[arg-type]
                    risk=risk,  # type: ignore[arg-type]
                    probability=float(probabilities[row]),
                    model_version=model.version,
                    reasons=reasons(features[row], contribution, toward_churn=went_up),
                    recommended_actions=list(policy.actions[risk]),
                    trigger=rows.triggers[row],
                    event_time=utc(rows.as_of[row]),
                    scored_at=scored_at,
                )
            )
        return by_row

    def _predict(
        self, model: Model, features: np.ndarray, rows: _Rows, outcome: PartitionOutcome
    ) -> np.ndarray:
        """Probabilities of all rows; should the model fail on the batch, row by row,
        and a row it fails on is dead-lettered (its event's features stay counted)."""
        try:
            return np.asarray(model.predict(features), dtype=np.float64)
        except Exception:
            probabilities = np.full(len(features), np.nan)
            for row in range(len(features)):
                try:
                    probabilities[row] = model.predict(features[row : row + 1])[0]
                except Exception as err:
                    message = rows.messages[row]
                    if message is not None:
                        reason = f"the model failed on it: {err!r}"
                        self._dead(outcome, message, reason, "model_failed")
            return probabilities


def _columns(base: list[list[float]]) -> dict[str, np.ndarray]:
    matrix = np.asarray(base, dtype=np.float64)
    return {name: matrix[:, j] for j, name in enumerate(BASE_COLUMNS)}


def _trigger(message: InputMessage, event: object) -> Trigger:
    id_field = EVENT_ID_FIELD.get(message.topic)
    return Trigger(
        kind="event",
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        event_id=None if id_field is None else getattr(event, id_field),
    )


def reasons(values: np.ndarray, contributions: np.ndarray, toward_churn: bool) -> list[Reason]:
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
