"""The scorer's core, free of Kafka, Faust and Redis: messages in, risk changes out.

For each batch: decode (bad input becomes a dead letter), apply the updates to the
feature store, score every touched customer in one model call, and decide which
risk categories changed. The adapter publishes the outcome, then calls `commit`,
then acknowledges the input, in that order: a crash anywhere before the commit
replays the batch, the store ignores what it already applied, and the same changes
come out again with the same ids.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import msgspec
import numpy as np

from feature_store.definitions import EVENT_TIME_FIELD, FEATURE_NAMES, feature_matrix
from feature_store.online import CustomerState, Position, Update, base_columns, update_for
from feature_store.redis_store import ApplyResult, RiskRecord
from schemas import INPUT_EVENTS, ChurnRiskChanged, DeadLetter, Reason, Trigger
from scoring.artifact import Model
from scoring.inactivity import first_due, next_due
from scoring.risk import RANK, RiskPolicy, is_news, transition_id

TOP_REASONS = 3
INACTIVITY = Trigger(kind="inactivity")


@dataclass(frozen=True, slots=True)
class InputMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class FeatureStore(Protocol):
    def published_through(
        self, partitions: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], int]: ...

    def apply(self, updates: Sequence[Update]) -> ApplyResult: ...

    def read(self, customer_ids: Sequence[str]) -> dict[str, CustomerState]: ...

    def due(self, partition: int, until: float, limit: int) -> list[tuple[str, float]]: ...

    def commit(
        self,
        records: Iterable[RiskRecord],
        schedule: Iterable[tuple[int, str, float | None]],
        published_through: dict[tuple[str, int], int],
    ) -> None: ...


@dataclass
class BatchOutcome:
    changes: list[ChurnRiskChanged] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    applied: ApplyResult | None = None
    # Messages whose outputs an earlier delivery already published: skipped.
    already_published: int = 0
    scored: int = 0
    # (risk, changes published so far) of each customer this batch moved.
    risk_now: dict[str, tuple[str | None, int]] = field(default_factory=dict)
    # Next inactivity rescore per (partition, customer), None for none; saved on commit.
    reschedule: dict[tuple[int, str], float | None] = field(default_factory=dict)
    # The last offset of each input topic-partition in the batch; saved on commit.
    published_through: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def risk_records(self) -> list[RiskRecord]:
        return [RiskRecord(c, risk, seq) for c, (risk, seq) in self.risk_now.items() if risk]


_DECODERS = {topic: msgspec.json.Decoder(event_type) for topic, event_type in INPUT_EVENTS.items()}


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


class Watermarks:
    """Event-time watermark per input partition: no event earlier than it is to come.

    Customers are keyed alike on every input topic, so partition p of each topic holds
    the same customers. Kafka keeps each topic-partition in order, but a consumer reads
    the topics side by side, and under a backlog they drift apart in event time: the
    tickets of March may arrive while the orders are still in January. Taking the
    latest time seen on any topic would then declare January's customers silent while
    their orders are still unread, and publish changes that are false (a spurious HIGH
    reaches marketing). So p's watermark is the earliest of the latest event times of
    p's topic-partitions that are still behind (messages unread in Kafka); one that is
    caught up holds nothing back, and when all are, it is the latest time seen.
    """

    def __init__(self) -> None:
        self.latest: dict[tuple[str, int], float] = {}  # per topic-partition
        self.current: dict[int, float] = {}  # per partition; never moves back

    def observe(self, topic: str, partition: int, event_ts: float) -> None:
        key = (topic, partition)
        self.latest[key] = max(self.latest.get(key, event_ts), event_ts)

    def advance(self, partitions: Iterable[int], lagging: Collection[tuple[str, int]]) -> None:
        for partition in partitions:
            behind = [topic for topic in EVENT_TIME_FIELD if (topic, partition) in lagging]
            if any((topic, partition) not in self.latest for topic in behind):
                continue  # a topic-partition still behind and not heard from yet
            seen = [self.latest[(t, partition)] for t in behind] or [
                ts for (_, p), ts in self.latest.items() if p == partition
            ]
            if not seen:
                continue
            mark = min(seen) if behind else max(seen)
            self.current[partition] = max(self.current.get(partition, mark), mark)

    def get(self, partition: int) -> float | None:
        return self.current.get(partition)


class Scorer:
    """Turns batches of input messages into risk changes (see module doc)."""

    def __init__(
        self,
        store: FeatureStore,
        model: Callable[[], Model],
        margin: float = 0.05,
        actions: dict[str, tuple[str, ...]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        idle_limit: int = 1000,
    ) -> None:
        self.store = store
        self.model = model  # a callable, so a reloaded model is picked up per batch
        self.margin = margin
        self.actions = actions
        self.clock = clock
        self.idle_limit = idle_limit  # most inactivity rescores per partition per batch
        self.watermarks = Watermarks()

    def policy(self, model: Model) -> RiskPolicy:
        if self.actions is None:
            return RiskPolicy(model.thresholds, self.margin)
        return RiskPolicy(model.thresholds, self.margin, self.actions)

    def process(
        self, messages: Sequence[InputMessage], lagging: Collection[tuple[str, int]] = ()
    ) -> BatchOutcome:
        """`lagging`: the input topic-partitions that still have unread messages in
        Kafka after this batch (see `Watermarks`); none for inputs that arrive in
        event-time order across topics, such as a replayed file."""
        outcome = BatchOutcome()
        for message in messages:
            key = (message.topic, message.partition)
            outcome.published_through[key] = max(
                outcome.published_through.get(key, message.offset), message.offset
            )
        # Kafka redelivers what was processed but not yet acknowledged when a worker
        # stopped or lost its partitions. Once a batch's outputs are published and
        # committed, its messages are done: scoring them again would compare old
        # states with the risk published since, and publish changes that are false.
        done = self.store.published_through(outcome.published_through)
        updates: list[Update] = []
        triggers: list[Trigger] = []
        for message in messages:
            if message.offset <= done.get((message.topic, message.partition), -1):
                outcome.already_published += 1
                continue
            decoded = self._decode(message, outcome)
            if decoded is None:
                continue
            update = update_for(message.topic, decoded, _position(message))
            updates.append(update)
            triggers.append(
                Trigger(
                    kind="event",
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    event_id=update.source_id,
                )
            )
        if not updates:
            return outcome
        # Silence is scored first: a quiet customer's due rescores all come before
        # the batch's events in event time, whatever the batch boundaries.
        self._rescore_idle(updates, lagging, outcome)
        outcome.applied = self.store.apply(updates)
        # Each event is scored as of its own arrival, then the silence after it as of
        # each due time up to the customer's next event or, failing one, up to the
        # partition's watermark: so every batch leaves nothing due behind it, and the
        # answers do not depend on where batches begin and end. A bare profile (no
        # order or ticket yet) has nothing to score.
        rows = _Rows()
        next_event = _next_event_times(updates)
        for update, state, trigger, heard_next in zip(
            updates, outcome.applied.states, triggers, next_event, strict=True
        ):
            if state.seen is None:
                continue
            rows.score(state, state.seen, trigger)
            partition = update.position.partition
            due = first_due(state.seen)
            self._silence(rows, state, state.seen, due, partition, heard_next, outcome)
        self._score(rows, outcome)
        return outcome

    def commit(self, outcome: BatchOutcome) -> None:
        """Record, atomically, the published categories, the next inactivity rescores
        and how far each input partition is published. Call after the changes are
        durable in Kafka: a crash before it replays them, with the same ids."""
        self.store.commit(
            outcome.risk_records,
            ((p, c, due) for (p, c), due in outcome.reschedule.items()),
            outcome.published_through,
        )

    def _rescore_idle(
        self,
        updates: Sequence[Update],
        lagging: Collection[tuple[str, int]],
        outcome: BatchOutcome,
    ) -> None:
        """Rescore, as of each due time, the customers whose silence reached their
        partition's watermark (this batch included, see `Watermarks`). A customer with
        an event in this batch is silent only until that event."""
        first_event: dict[str, float] = {}
        for update in updates:
            if update.event_ts is None:
                continue
            position = update.position
            self.watermarks.observe(position.topic, position.partition, update.event_ts)
            first_event[update.customer_id] = min(
                first_event.get(update.customer_id, update.event_ts), update.event_ts
            )
        partitions = sorted({u.position.partition for u in updates})
        self.watermarks.advance(partitions, lagging)
        due = [
            (partition, customer_id, due_ts)
            for partition in partitions
            if (watermark := self.watermarks.get(partition)) is not None
            for customer_id, due_ts in self.store.due(partition, watermark, self.idle_limit)
        ]
        if not due:
            return
        states = self.store.read([customer_id for _, customer_id, _ in due])
        rows = _Rows()
        for partition, customer_id, due_ts in due:
            state = states.get(customer_id)
            if state is None or state.seen is None or state.seen >= due_ts:
                # Unknown, or heard from since it was scheduled: nothing is due.
                outcome.reschedule[(partition, customer_id)] = None
                continue
            heard_at = first_event.get(customer_id)
            self._silence(rows, state, state.seen, due_ts, partition, heard_at, outcome)
        self._score(rows, outcome)

    def _silence(
        self,
        rows: _Rows,
        state: CustomerState,
        seen: float,
        due: float | None,
        partition: int,
        heard_next: float | None,
        outcome: BatchOutcome,
    ) -> None:
        """Rows for a customer's silence after `seen`, from the due time `due` on.

        Before their next event in this batch (`heard_next`), the silence is known:
        every step is scored. Without a next event, the steps up to the partition's
        watermark are scored and the later ones projected, and nothing is due unless
        a projected row finds a change (see `_score`)."""
        watermark = self.watermarks.get(partition)
        if heard_next is None:
            outcome.reschedule[(partition, state.customer_id)] = None
        while due is not None and (heard_next is None or due < heard_next):
            if heard_next is not None or (watermark is not None and due <= watermark):
                rows.score(state, due, INACTIVITY)
            else:
                rows.project(state, due, partition)
            due = next_due(seen, due)

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

    def _score(self, rows: _Rows, outcome: BatchOutcome) -> None:
        """Score every row in one model call, then walk them in order: a scored row
        may change its customer's risk; a customer's projected rows (after all their
        scored ones) say when silence would first change it, which is when the
        customer is due for a rescore (None: never, within the schedule)."""
        if not rows.states:
            return
        model = self.model()
        policy = self.policy(model)
        features = feature_matrix(base_columns(rows.states, rows.as_of), model.feature_params)
        probabilities = model.predict(features)
        current = outcome.risk_now
        changes: list[tuple[int, str | None, str, int]] = []
        settled: set[tuple[int, str]] = set()
        for row, state in enumerate(rows.states):
            customer_id = state.customer_id
            previous, sequence = current.get(customer_id, (state.risk, state.risk_seq))
            risk = policy.category(float(probabilities[row]), previous)
            projected_for = rows.projected_for[row]
            if projected_for is not None:
                if projected_for in settled:
                    continue
                if risk != previous:
                    outcome.reschedule[projected_for] = rows.as_of[row]
                    settled.add(projected_for)
                continue
            outcome.scored += 1
            if risk == previous:
                continue
            if is_news(previous, risk):
                sequence += 1
                changes.append((row, previous, risk, sequence))
            current[customer_id] = (risk, sequence)
        if not changes:
            return
        contributions = model.contributions(features[[row for row, *_ in changes]])
        scored_at = self.clock()
        for contribution, (row, previous, risk, sequence) in zip(
            contributions, changes, strict=True
        ):
            customer_id = rows.states[row].customer_id
            went_up = previous is None or RANK[risk] > RANK[previous]
            outcome.changes.append(
                ChurnRiskChanged(
                    event_id=transition_id(customer_id, sequence),
                    customer_id=customer_id,
                    previous_risk=previous,  # type: ignore[arg-type]
                    risk=risk,  # type: ignore[arg-type]
                    probability=float(probabilities[row]),
                    model_version=model.version,
                    reasons=_reasons(features[row], contribution, toward_churn=went_up),
                    recommended_actions=list(policy.actions[risk]),
                    trigger=rows.triggers[row],
                    event_time=utc(rows.as_of[row]),
                    scored_at=scored_at,
                )
            )


@dataclass
class _Rows:
    """What one model call scores: customers' states, each as of an instant.

    A scored row is a real rescore (it may publish a change). A projected row asks
    what the risk would be at a later due time should the customer stay silent:
    scoring the whole silence ahead in the same model call, and scheduling only the
    first due time that changes the risk, saves a Redis read, a parse and a schedule
    for every step that would change nothing. The outcome is the same as rescoring
    at every step: the skipped steps are those that publish nothing.
    """

    states: list[CustomerState] = field(default_factory=list)
    as_of: list[float] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)
    projected_for: list[tuple[int, str] | None] = field(default_factory=list)

    def score(self, state: CustomerState, as_of: float, trigger: Trigger) -> None:
        self._add(state, as_of, trigger, None)

    def project(self, state: CustomerState, as_of: float, partition: int) -> None:
        self._add(state, as_of, INACTIVITY, (partition, state.customer_id))

    def _add(
        self,
        state: CustomerState,
        as_of: float,
        trigger: Trigger,
        projected_for: tuple[int, str] | None,
    ) -> None:
        self.states.append(state)
        self.as_of.append(as_of)
        self.triggers.append(trigger)
        self.projected_for.append(projected_for)


def _next_event_times(updates: Sequence[Update]) -> list[float | None]:
    """For each update, the event time of its customer's next event in the batch."""
    following: dict[str, float] = {}
    result: list[float | None] = []
    for update in reversed(updates):
        result.append(following.get(update.customer_id))
        if update.event_ts is not None:
            following[update.customer_id] = update.event_ts
    return result[::-1]


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
