"""The scorer's core, free of Kafka, Faust and Redis: a partition's released events
and its pre-batch state in, risk changes and the post-batch state out.

Nothing here writes anywhere. The batch runner (`scoring.runner`) reads the state,
calls `Scorer.process`, publishes the outcome and only then commits the new state,
so a batch processed again starts from the same state and, the events coming in the
same order (`scoring.merge`), publishes the same changes with the same ids.

"Now" is event time. The partition's stream time is the latest event time released
so far; a customer's inactivity rescore, due at a rung of their silence
(`scoring.inactivity`), fires once the stream time has passed it, before the event
that passed it, and is scored as of the due instant. Neither depends on where
batches begin and end.

A rescore that leaves a silent customer's category where it was changes nothing a
store needs to keep, so their state is left as it was and not written again: the
score behind the category moves only with it (or with an event), and the latest
instant scored moves on with their events, which first count the rungs their
silence has passed (`_catch_up`). The customers of the performance sample are the
exception: their every score is what realised performance measures, so each of
their rescores moves their latest instant scored on.

With a holdout (`scoring.risk.Holdout`), every change into HIGH is followed to its
horizon for the campaign's uplift (`scoring.campaign`). Which rows change is known only
once the batch is scored, so each row waits as a candidate, decided in stream order as
a stored sample would be; the changes into HIGH keep their decision, or wait on.
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
    EVENT_ID_FIELD,
    FEATURE_NAMES,
    SECONDS_PER_DAY,
    feature_matrix,
)
from feature_store.online import (
    APPLIED,
    DUPLICATE,
    LATE,
    BaseRows,
    CustomerState,
    InputError,
    apply_event,
)
from schemas import ChurnRiskChanged, Reason, Tick, Trigger
from scoring.decoding import Erasure, InputDecoder
from scoring.inactivity import first_due, lapsed, next_due, rungs
from scoring.merge import Decoded, InputMessage
from scoring.model import Model
from scoring.outcome import PartitionOutcome, Scores
from scoring.risk import (
    DEFAULT_ACTIONS,
    LEVELS,
    RANK,
    Holdout,
    RiskPolicy,
    ValueTargeting,
    is_news,
    transition_id,
)
from scoring.samples import (
    HELD_OUT,
    TREATED,
    Sample,
    churned,
    decode_sample,
    first_of_week,
    horizon_days,
    in_sample,
)

TOP_REASONS = 3
SPEND_90D = FEATURE_NAMES.index("spend_90d")  # what value targeting weighs (scoring.risk)
INACTIVITY = Trigger(kind="inactivity")
ERASED = "erased"
TICKED = "ticked"  # a tick (`schemas.Tick`) moved the partition's stream time
DEAD_LETTER = "dead_letter"
OUTCOMES = (APPLIED, DUPLICATE, LATE, ERASED, TICKED, DEAD_LETTER)


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


HIGH = LEVELS[-1]


@dataclass
class _Rows:
    """What one model call scores: base columns of customers as of instants, in order."""

    customers: list[CustomerState] = field(default_factory=list)
    base: BaseRows = field(default_factory=BaseRows)
    as_of: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # Trigger.kind: event | inactivity
    messages: list[InputMessage | None] = field(default_factory=list)  # None: inactivity
    events: list[object | None] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)  # the row of each published change

    def add(
        self,
        state: CustomerState,
        as_of: float,
        message: InputMessage | None,
        event: object | None,
        advance: bool = True,
    ) -> None:
        """A row of `state` as of `as_of`; `advance`: it moves the customer's
        `scored_to` on (see the module doc)."""
        self.base.add(state, as_of)  # read now: the state moves on with later events
        self.customers.append(state)
        self.as_of.append(as_of)
        self.kinds.append(INACTIVITY.kind if message is None else "event")
        self.messages.append(message)
        self.events.append(event)
        if advance:
            state.scored_to = as_of if state.scored_to is None else max(state.scored_to, as_of)

    def trigger(self, row: int) -> Trigger:
        """What made the row: made only for the rows whose change is published."""
        message, event = self.messages[row], self.events[row]
        if message is None:
            return INACTIVITY
        id_field = EVENT_ID_FIELD.get(message.topic)
        return Trigger(
            kind="event",
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            event_id=None if id_field is None else getattr(event, id_field),
        )


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
        retention_days: int = 0,
        targeting: ValueTargeting | None = None,
        holdout: Holdout | None = None,
    ) -> None:
        self.model = model  # a callable, so a reloaded model is picked up per batch
        self.margin = margin
        self.actions = actions
        self.clock = clock
        self.decoder = decoder or InputDecoder()  # the runner decodes with it too
        self.sample_rate = sample_rate  # share of customers whose scores are sampled
        # Seconds of silence after which a customer is forgotten (None: never).
        self.retention = retention_days * SECONDS_PER_DAY if retention_days else None
        self.targeting = targeting  # HIGH by value (None: by the model's cut-off)
        self.holdout = holdout  # customers left out of the campaign (None: nobody)

    def policy(self, model: Model) -> RiskPolicy:
        actions = dict(DEFAULT_ACTIONS) if self.actions is None else self.actions
        return RiskPolicy(model.thresholds, self.margin, actions, self.targeting, self.holdout)

    def process(
        self,
        partition: int,
        released: Sequence[Decoded],
        states: Mapping[str, CustomerState],
        due: Sequence[tuple[float, str]],
        samples: Sequence[str],
        stream_time: float | None,
        model: Model | None = None,
        policy: RiskPolicy | None = None,
    ) -> PartitionOutcome:
        """Apply `released` (in order) to the pre-batch `states` of the customers
        involved and score them. `due`: the (due time, customer) rescores scheduled
        before the batch and due before its last stream time; `samples`: the pending
        samples due before it (their customers' states are in `states`). The states
        are changed in place: they must be the caller's own (a store's `load` decodes
        them afresh for each batch). `model`: the one to score with (the served one,
        by default); `policy`: the risk policy (this scorer's, with the model's
        thresholds, by default)."""
        model = model or self.model()
        policy = policy or self.policy(model)
        batch = _Batch(self, model, partition, states, due, samples, stream_time)
        batch.campaign = horizon_days(model.metadata) if policy.holdout is not None else None
        for decoded in released:
            batch.take(decoded)
        scored = self._score(model, policy, batch.rows, batch.outcome)
        days = batch.days or 0
        self._samples(model, days, batch.rows, scored, batch.decided, batch.pending, batch.outcome)
        batch.follow_high(model)
        return batch.outcome

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
        self, model: Model, policy: RiskPolicy, rows: _Rows, outcome: PartitionOutcome
    ) -> dict[int, tuple[float, str]]:
        """Score every row in one model call, then walk them in order: each may
        change its customer's risk, which the next row of that customer starts from.
        Returns the (probability, category) of each row scored."""
        if not rows.customers:
            return {}
        features = feature_matrix(rows.base.columns(), model.feature_params)
        probabilities = self._predict(model, features, rows, outcome)
        return self._walk(model, policy, rows, features, probabilities, outcome)

    def _walk(
        self,
        model: Model,
        policy: RiskPolicy,
        rows: _Rows,
        features: np.ndarray,
        probabilities: np.ndarray,
        outcome: PartitionOutcome,
    ) -> dict[int, tuple[float, str]]:
        """The rows in order through the policy: categories, changes, scores."""
        changes: list[tuple[int, str | None, str, int]] = []
        scored: list[int] = []
        risks: list[str] = []
        for row, state in enumerate(rows.customers):
            probability = probabilities[row]
            if math.isnan(probability):
                continue  # the model could not score this row: dead-lettered
            risk = policy.category(float(probability), state.risk, features[row, SPEND_90D])
            if risk != state.risk or rows.messages[row] is not None:
                # The score behind the category: an event's, or a rescore's that
                # changed it (see the module doc).
                state.risk_probability = float(probability)
                state.risk_as_of = rows.as_of[row]
                state.risk_model = model.version
                outcome.changed.add(state.customer_id)
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
            [rows.kinds[row] for row in scored],
            [rows.events[row] for row in scored],
        )
        if not changes:
            return by_row
        contributions = model.contributions(features[[row for row, *_ in changes]])
        scored_at = self.clock()
        for contribution, (row, previous, risk, sequence) in zip(
            contributions, changes, strict=True
        ):
            state = rows.customers[row]
            went_up = previous is None or RANK[risk] > RANK[previous]
            rows.changed.append(row)
            outcome.changes.append(
                ChurnRiskChanged(
                    event_id=transition_id(state.customer_id, sequence, state.origin),
                    customer_id=state.customer_id,
                    previous_risk=previous,  # type: ignore[arg-type]
                    risk=risk,  # type: ignore[arg-type]
                    probability=float(probabilities[row]),
                    model_version=model.version,
                    reasons=reasons(features[row], contribution, toward_churn=went_up),
                    recommended_actions=list(policy.actions[risk]),
                    trigger=rows.trigger(row),
                    event_time=utc(rows.as_of[row]),
                    scored_at=scored_at,
                    held_out=policy.held_out(state.customer_id),
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


class _Batch:
    """One partition's batch as the scorer goes through it, event by event."""

    def __init__(
        self,
        scorer: Scorer,
        model: Model,
        partition: int,
        states: Mapping[str, CustomerState],
        due: Sequence[tuple[float, str]],
        samples: Sequence[str],
        stream_time: float | None,
    ) -> None:
        self.scorer = scorer
        self.states = states
        self.days = horizon_days(model.metadata) if scorer.sample_rate > 0 else None
        self.horizon = 0.0 if self.days is None else self.days * SECONDS_PER_DAY
        self.outcome = PartitionOutcome(partition, stream_time=stream_time)
        self.scheduled: dict[str, float | None] = {customer: when for when, customer in due}
        self.timers = sorted(due)
        self.rows = _Rows()
        # Samples waiting for their horizon: (due, tie-break, the stored member or the
        # row of a score of this batch), and those decided: (which, churned or None
        # when the customer's state is gone).
        self.order = itertools.count()
        self.pending: list[tuple[float, int, str | int]] = []
        for member in samples:
            heapq.heappush(self.pending, (decode_sample(member).due, next(self.order), member))
        self.decided: list[tuple[str | int, bool | None]] = []
        # With a holdout, every row is a candidate change into HIGH to follow for the
        # campaign (`campaign`: the model's horizon in days): (due, row) waiting, and
        # those decided in the batch, row -> churned (None: the customer's state is gone).
        self.campaign: int | None = None
        self.candidates: list[tuple[float, int]] = []
        self.followed: set[int] = set()
        self.decided_rows: dict[int, bool | None] = {}

    def take(self, decoded: Decoded) -> None:
        """Apply one released message, after the rescores and samples it passes."""
        outcome, message = self.outcome, decoded.message
        outcome.offsets[message.topic] = message.offset
        if decoded.reason is not None or decoded.event is None:
            reason = decoded.reason or "no event"
            self.scorer._dead(outcome, message, reason, decoded.category or "contract")
            return
        event = decoded.event
        if isinstance(event, Erasure):
            self.erase(event.customer_id)
            outcome.counts[message.topic, ERASED] += 1
            return
        if outcome.stream_time is None or decoded.time > outcome.stream_time:
            outcome.stream_time = decoded.time
        now = outcome.stream_time
        self.fire_timers(now)
        self.decide(now)
        if isinstance(event, Tick):
            outcome.counts[message.topic, TICKED] += 1
            return  # time passed: nothing else happened
        customer_id: str = event.customer_id  # type: ignore[attr-defined]
        state = self.state_of(customer_id, message)
        seen_before = state.seen
        caught_up = seen_before is not None and not self.sampled(customer_id)
        if caught_up and _catch_up(state, now):
            outcome.changed.add(customer_id)
        try:
            result = apply_event(state, message.topic, event, decoded.time)
        except InputError as err:
            self.scorer._dead(outcome, message, str(err), "features_out_of_range")
            return
        outcome.counts[message.topic, result] += 1
        if result != DUPLICATE:
            outcome.changed.add(customer_id)
        if result == DUPLICATE or state.seen is None:
            return  # nothing new, or a bare profile: nothing to score yet
        as_of = state.seen if state.scored_to is None else max(state.seen, state.scored_to)
        self.add_row(state, as_of, message, event, now)
        if state.seen != seen_before:
            # Silence now counts from this event: the first rescore moves on.
            self.reschedule(customer_id, first_due(state.seen, self.scorer.retention))

    def reschedule(self, customer_id: str, due: float | None) -> None:
        self.scheduled[customer_id] = self.outcome.schedule[customer_id] = due
        if due is not None:
            heapq.heappush(self.timers, (due, customer_id))

    def erase(self, customer_id: str) -> None:
        outcome = self.outcome
        outcome.states.pop(customer_id, None)
        outcome.erased.add(customer_id)
        self.scheduled[customer_id] = outcome.schedule[customer_id] = None

    def state_of(self, customer_id: str, message: InputMessage | None = None) -> CustomerState:
        outcome = self.outcome
        state = outcome.states.get(customer_id)
        if state is None:
            if customer_id not in outcome.erased:
                state = self.states.get(customer_id)
            if state is None:
                # Where this life of the state began: a customer erased and back gets
                # change ids of their own (`transition_id`).
                origin = "" if message is None else f"{message.topic}@{message.offset}"
                state = CustomerState(customer_id, origin=origin)
            outcome.erased.discard(customer_id)
            outcome.states[customer_id] = state
        return state

    def fire_timers(self, until: float) -> None:
        """Inactivity rescores due before `until`, in due order."""
        timers, scheduled = self.timers, self.scheduled
        while timers and timers[0][0] < until:
            when, customer_id = heapq.heappop(timers)
            if scheduled.get(customer_id) != when:
                continue  # rescheduled by an event since
            state = self.state_of(customer_id)
            if state.seen is None or when <= state.seen:
                self.reschedule(customer_id, None)
                continue
            if lapsed(state.seen, when, self.scorer.retention):
                self.erase(customer_id)
                self.outcome.forgotten += 1
                continue
            self.add_row(state, when, None, None, until)
            self.reschedule(customer_id, next_due(state.seen, when, self.scorer.retention))

    def sampled(self, customer_id: str) -> bool:
        """A customer of the performance sample (see the module doc)."""
        return self.days is not None and in_sample(customer_id, self.scorer.sample_rate)

    def peek(self, customer_id: str) -> CustomerState | None:
        outcome = self.outcome
        if customer_id in outcome.states:
            return outcome.states[customer_id]
        return None if customer_id in outcome.erased else self.states.get(customer_id)

    def decide(self, until: float) -> None:
        """Samples whose horizon ends before `until`: every event applied so far is at
        or before that end, so the state tells the outcome."""
        pending, rows = self.pending, self.rows
        while pending and pending[0][0] < until:
            _, _, which = heapq.heappop(pending)
            if isinstance(which, str):
                sample = decode_sample(which)
                customer_id, as_of, origin = sample.customer_id, sample.as_of, sample.origin
            else:
                scored_state = rows.customers[which]
                customer_id, origin = scored_state.customer_id, scored_state.origin
                as_of = rows.as_of[which]
            self.decided.append((which, self.outcome_of(customer_id, origin, as_of)))
        candidates = self.candidates
        while candidates and candidates[0][0] < until:
            _, row = heapq.heappop(candidates)
            scored_state = rows.customers[row]
            self.decided_rows[row] = self.outcome_of(
                scored_state.customer_id, scored_state.origin, rows.as_of[row]
            )

    def outcome_of(self, customer_id: str, origin: str, as_of: float) -> bool | None:
        """Whether a customer scored as of `as_of` has churned by now (the horizon just
        passed); None when that life of their state is gone: not counted."""
        state = self.peek(customer_id)
        return None if state is None or state.origin != origin else churned(state, as_of)

    def add_row(
        self,
        state: CustomerState,
        as_of: float,
        message: InputMessage | None,
        event: object | None,
        now: float,
    ) -> None:
        # Sampled: the customer's first score of the week, its horizon not yet past.
        sampled = (
            self.days is not None
            and as_of + self.horizon >= now
            and in_sample(state.customer_id, self.scorer.sample_rate)  # cheaper first
            and first_of_week(state.scored_to, as_of)
        )
        if sampled:
            entry = (as_of + self.horizon, next(self.order), len(self.rows.base))
            heapq.heappush(self.pending, entry)
        if self.campaign is not None and as_of + self.campaign * SECONDS_PER_DAY >= now:
            row = len(self.rows.base)
            heapq.heappush(self.candidates, (as_of + self.campaign * SECONDS_PER_DAY, row))
            self.followed.add(row)
        advance = message is not None or self.sampled(state.customer_id)
        self.rows.add(state, as_of, message, event, advance)
        if advance:
            self.outcome.changed.add(state.customer_id)

    def follow_high(self, model: Model) -> None:
        """The batch's changes into HIGH, treated or held out, for the campaign's uplift
        (`scoring.campaign`): decided if their horizon passed within the batch (in
        stream order, as a stored one would be), else kept pending. A change whose
        horizon had passed when it was scored (a late event's) is not followed."""
        if self.campaign is None:
            return
        rows, outcome = self.rows, self.outcome
        for change, row in zip(outcome.changes, rows.changed, strict=True):
            if change.risk != HIGH or row not in self.followed:
                continue
            state = rows.customers[row]
            arm = HELD_OUT if change.held_out else TREATED
            sample = Sample(
                state.customer_id,
                rows.as_of[row],
                change.probability,
                HIGH,
                model.version,
                self.campaign,
                state.origin,
                arm,
            )
            if row not in self.decided_rows:
                outcome.samples[sample.encode()] = sample.due
            elif (churned_ := self.decided_rows[row]) is not None:
                outcome.matured.append((sample, churned_))


def _catch_up(state: CustomerState, now: float) -> bool:
    """The rungs of the state's silence that the stream time has passed count as
    scored (their rescores left the state alone): a score moves forward in time, and
    an event that leaves the silence where it was is scored as of the latest rung.
    Whether the state changed."""
    assert state.seen is not None
    passed = [rung for rung in rungs(state.seen) if rung < now]
    if passed and (state.scored_to is None or passed[-1] > state.scored_to):
        state.scored_to = passed[-1]
        return True
    return False


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
