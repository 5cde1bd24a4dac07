"""The batch runner: read, compute, publish, commit, in that order, per batch.

One runner serves the Faust worker and `replay` alike. Per batch, for the partitions
that have events to release (`scoring.merge`):

1. read the pre-batch state of every customer involved, and of every customer due
   for an inactivity rescore, in one round trip (and record, fenced by the
   partition's epoch, which offsets the batch ends at);
2. apply the events and score in Python (`scoring.pipeline`);
3. publish the outputs with the batch's record (`scoring.batches`): in the worker,
   one Kafka transaction per partition, fenced so that only its current owner's
   commits; this is where the batch commits for the readers of `churn-risk`;
4. commit, atomically per partition and fenced by its epoch: the new customer
   states, the inactivity schedule, the offsets, the stream time and the batch's
   tallies (the monitors' counters, `TallySource`), so each event counts once.

Nothing is written to the state before the outputs are committed, so a batch
processed again after any failure reads the same state. A batch whose outputs were
committed and whose state was not (a crash between 3 and 4, a store that lost
writes) is computed again from its record, as it was cut and scored, and not
published again; one whose outputs were not committed is processed anew. A
transient error retries the step that failed, never the ones before it. A partition
claimed by another worker since is fenced: its batch is dropped, unacknowledged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from feature_store.online import CustomerState, decode_state, encode_state
from feature_store.store import (
    Amounts,
    Begin,
    Claim,
    Commit,
    StateStore,
    Tally,
    Verdict,
    added,
    sample_customer,
)
from schemas import BatchRecord, ChurnRiskChanged, DeadLetter, Tick
from scoring import worklist
from scoring.batches import (
    BatchLog,
    PartitionStopped,
    batch_record,
    beyond,
    check_within,
    recorded_policy,
    to_recover,
)
from scoring.merge import Decoded, InputMessage, PartitionMerger, latencies, merged
from scoring.model import Model
from scoring.outcome import PartitionOutcome
from scoring.pipeline import Scorer
from scoring.risk import RiskPolicy
from scoring.timetable import Timetable

log = logging.getLogger(__name__)

# Customers whose encoded state the runner keeps, over all its partitions (~600 bytes
# each with their key): the states a batch needs are read from the store only when
# they are not kept.
STATES_KEPT = 100_000
DEFAULT_LIST_SIZE = worklist.DEFAULT_SIZE
# Tallies a partition's owner holds (a batch adds to a few: its day's, its drift
# slices'): it writes them whole rather than have the store read, add and write.
TALLIES_KEPT = 64

T = TypeVar("T")


@dataclass
class Outputs:
    """One partition's batch as published: its changes, dead letters and record, and
    the customers whose state it deleted (erased, or forgotten)."""

    partition: int
    changes: Sequence[ChurnRiskChanged]
    dead_letters: Sequence[DeadLetter]
    record: BatchRecord
    deleted: Sequence[str] = ()


class Sink(Protocol):
    async def publish(self, batches: Sequence[Outputs]) -> Collection[int]:
        """Return once every output is durable, with the partitions whose batch was
        fenced (another worker owns them now: none of their outputs is published);
        raise a transient error otherwise (a retry must not send again what is
        already sent or still queued)."""
        ...


class Collector:
    """A sink without transactions (a replay, a benchmark, a test): `collect` gets a
    step's changes and dead letters, all partitions' together; nothing is fenced."""

    async def publish(self, batches: Sequence[Outputs]) -> Collection[int]:
        self.collect(
            [c for b in batches for c in b.changes], [d for b in batches for d in b.dead_letters]
        )
        return ()

    def collect(
        self, changes: Sequence[ChurnRiskChanged], dead_letters: Sequence[DeadLetter]
    ) -> None:
        raise NotImplementedError


# Reads a topic-partition's messages from an offset through another, from the log
# itself: the way back when the store lost writes the consumer had moved past.
Reread = Callable[[str, int, int, int], Awaitable[list[InputMessage]]]


# What a batch adds to the counters kept with the state: its outcome and released
# messages, and the wall-clock instant its outputs became durable, in; named tallies
# out (`feature_store.store.Tally`).
TallySource = Callable[[PartitionOutcome, Sequence[Decoded], float], Mapping[str, Tally]]


def _behind(behind: Callable[[str, int], bool], partition: int, topic: str) -> bool:
    return behind(topic, partition)


@dataclass
class Task:
    """A partition this runner owns: its claim, its not yet released input, and what it
    knows of the partition's state, which no other worker can change while its epoch
    holds: the committed offsets and stream time, the schedule, the pending samples
    and the encoded states of the customers it saw last (least recent first)."""

    claim: Claim
    merger: PartitionMerger
    offsets: dict[str, int]  # committed so far
    stream_time: float | None
    schedule: Timetable = field(default_factory=Timetable)
    samples: Timetable = field(default_factory=Timetable)
    states: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    # The tallies it last wrote whole, by name: (when, by the wall clock, and the value).
    tallies: OrderedDict[str, tuple[float, Amounts]] = field(default_factory=OrderedDict)


@dataclass
class Prepared:
    """A partition's released batch, before it is processed: its last offsets, the
    stream time it reaches, the rescores and samples due before that (taken from the
    task's timetables) and the customers whose states it needs."""

    batch: list[Decoded]
    offsets: dict[str, int]
    stream_time: float | None
    due: list[tuple[float, str]]
    samples: list[tuple[float, str]]
    customers: list[str]
    missing: list[str]  # not in the task's states: read with the begin


@dataclass
class StepReport:
    """What one step did, for acknowledgements and metrics."""

    outcomes: list[PartitionOutcome] = field(default_factory=list)
    # Last offset per (topic, partition) whose processing is committed: everything at
    # or below it may be acknowledged to Kafka.
    done: dict[tuple[str, int], int] = field(default_factory=dict)
    fenced: list[int] = field(default_factory=list)
    diverged: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)  # `scoring.batches.PartitionStopped`
    skipped: int = 0  # redelivered messages already committed
    retries: int = 0
    # Seconds from each committed input's broker append time to its batch's outputs
    # being durable (inputs without a broker timestamp are left out).
    latencies: list[float] = field(default_factory=list)


class BatchRunner:
    def __init__(
        self,
        store: StateStore,
        scorer: Scorer,
        sink: Sink,
        topics: Sequence[str],
        idle: float = 0.0,
        transient: tuple[type[BaseException], ...] = (),
        reread: Reread | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        tallies: Sequence[TallySource] = (),
        wall: Callable[[], float] = time.time,
        on_retry: Callable[[str, BaseException], None] = lambda port, error: None,
        cache_size: int = STATES_KEPT,
        step_limit: int | None = None,
        batch_log: BatchLog | None = None,
        versions: Callable[[str], Model] | None = None,
        on_recovered: Callable[[int], None] = lambda partition: None,
        list_size: int = DEFAULT_LIST_SIZE,
        announced: Collection[str] = (),
    ) -> None:
        self.store = store
        self.scorer = scorer
        self.sink = sink
        self.topics = tuple(topics)  # the input topics, in tie-break rank
        self.idle = idle
        # Topics the workers write themselves, announced before they are (`expect`):
        # a quiet one holds nothing back (`scoring.merge`).
        self.announced = tuple(announced)
        self.transient = transient
        self.reread = reread
        self.monotonic = monotonic
        self.tally_sources = tuple(tallies)
        self.wall = wall
        # Told of each transient error as it is retried, with its port ("store" or
        # "sink") and the error: a step that keeps failing never returns its report.
        self.on_retry = on_retry
        self.cache_size = cache_size  # customers' states kept in memory, over all tasks
        # Most messages of one partition per step: no commit writes thousands of keys.
        self.step_limit = step_limit
        # Where batches commit for readers (None: the sink's outputs are at least once),
        # and the model versions its records name, loaded (None: only the served one).
        self.batch_log = batch_log
        self.versions = versions
        self.on_recovered = on_recovered  # told of each batch computed again from the log
        self.list_size = list_size  # customers each partition's work-list index keeps
        self.tasks: dict[int, Task] = {}
        self.fenced: set[int] = set()
        self.stopped: dict[int, str] = {}  # partition -> why (`PartitionStopped`)

    # --- ownership -------------------------------------------------------------

    def assign(self, partition: int, claim: Claim | None = None) -> Claim:
        """Take a partition over: a new epoch (`claim`, when `take` made it already);
        resume after its recorded offsets."""
        claim = claim or self.store.claim(partition)
        merger = PartitionMerger(self.topics, self.idle, self.announced)
        merger.skip_through(claim.offsets)
        if claim.in_flight and any(
            o > claim.offsets.get(t, -1) for t, o in claim.in_flight.items()
        ):
            merger.replay_through = {
                t: o for t, o in claim.in_flight.items() if o > claim.offsets.get(t, -1)
            }
            log.info(
                "partition %d: resuming the batch in flight through %s",
                partition,
                merger.replay_through,
            )
        self.tasks[partition] = Task(
            claim,
            merger,
            dict(claim.offsets),
            claim.stream_time,
            Timetable(claim.schedule),
            Timetable(claim.samples),
        )
        self.fenced.discard(partition)
        return claim

    async def take(
        self, partition: int, bounds: Mapping[str, tuple[int, int]] | None = None
    ) -> Claim:
        """`assign`, the store's claim made off the event loop (retried like a step's);
        then, with a batch log, fence the partition's earlier writers and compute again
        the batches committed in the log that the store has not (`scoring.batches`).
        Returns the claim as the store holds it now. Raises PartitionStopped when the
        store's offsets lie outside the input logs' `bounds` (start, end per topic),
        or the log's batches cannot be computed again (the partition is not taken)."""
        claim = await self._retry(lambda: self.store.claim(partition), StepReport())
        claim = self.assign(partition, claim)
        log_ = self.batch_log
        try:
            if bounds is not None:
                check_within(partition, claim.offsets, bounds)
            if log_ is None:
                return claim
            records = await self._retry_async(
                lambda: log_.claim(partition, claim.offsets), StepReport(), "sink"
            )
            await self._catch_up(partition, to_recover(partition, records, claim.offsets))
        except PartitionStopped as stop:
            self.revoke(partition)
            self.stopped[partition] = str(stop)
            raise
        task = self.tasks[partition]
        through = task.merger.replay_through
        if through is not None and not beyond(through, task.offsets):
            task.merger.replay_through = None  # the batch in flight was committed in the log
        return dataclasses.replace(claim, offsets=dict(task.offsets), stream_time=task.stream_time)

    def revoke(self, partition: int) -> None:
        self.tasks.pop(partition, None)
        self.fenced.discard(partition)
        self.stopped.pop(partition, None)
        if self.batch_log is not None:
            self.batch_log.release(partition)

    async def _catch_up(self, partition: int, records: Sequence[BatchRecord]) -> None:
        """Compute again, as they were cut and scored and without publishing them, the
        batches the log committed past the store (oldest first)."""
        task = self.tasks[partition]
        for record in records:
            model = self._version(partition, record.model_version)
            policy = recorded_policy(record, model.thresholds)
            parts: list[Decoded] = []
            for topic in self.topics:
                start, end = record.after.get(topic, -1) + 1, record.through.get(topic, -1)
                if start <= end:
                    messages = await self._read(topic, partition, start, end)
                    parts += map(self.scorer.decoder, messages)
            report = StepReport()
            await self._run({partition: merged(parts, task.merger.rank)}, report, model, policy)
            if self.tasks.get(partition) is not task or report.fenced:
                return  # claimed by another worker meanwhile: theirs to do
            task.merger.skip_through(task.offsets)
            self.on_recovered(partition)
            log.warning(
                "partition %d: the batch through %s was committed in Kafka, not in the "
                "store: computed again with model %s, not published again",
                partition,
                record.through,
                record.model_version,
            )

    def _version(self, partition: int, version: str) -> Model:
        served = self.scorer.model()
        if version == served.version:
            return served
        try:
            if self.versions is None:
                raise LookupError("only the served model can be loaded here")
            return self.versions(version)
        except Exception as err:
            raise PartitionStopped(
                f"partition {partition}: a batch committed in Kafka but not in the state "
                f"store was scored by model {version}, which cannot be loaded ({err}). "
                f"Put version {version} back in the models directory (docs/operating.md, "
                "'When a claim is refused'); the partition is left alone until then"
            ) from err

    async def _read(self, topic: str, partition: int, start: int, end: int) -> list[InputMessage]:
        if self.reread is None:
            raise RuntimeError(f"partition {partition}: input must be read again; nothing can")
        return await self.reread(topic, partition, start, end)

    # --- what the engine's processor asks -------------------------------------------

    @property
    def partitions(self) -> list[int]:
        """The partitions this runner owns."""
        return sorted(self.tasks)

    def owns(self, partition: int) -> bool:
        return partition in self.tasks

    def committed(self, topic: str, partition: int) -> int:
        """The last offset of the topic-partition whose processing is committed (-1:
        none, or a partition not owned)."""
        task = self.tasks.get(partition)
        return -1 if task is None else task.offsets.get(topic, -1)

    def position(self, topic: str, partition: int) -> int:
        """The last offset of the topic-partition this runner has read: buffered, or
        committed."""
        task = self.tasks.get(partition)
        if task is None:
            return -1
        return max(task.merger.last_offset.get(topic, -1), task.offsets.get(topic, -1))

    def buffered_in(self, topic: str, partition: int) -> int:
        """Messages of the topic-partition waiting in the merge."""
        task = self.tasks.get(partition)
        return 0 if task is None else len(task.merger.buffers[topic])

    def stream_times(self) -> dict[int, float | None]:
        """Each owned partition's stream time (None: it has processed no event yet)."""
        return {partition: task.stream_time for partition, task in self.tasks.items()}

    # --- input -------------------------------------------------------------------

    def add(self, messages: Iterable[InputMessage]) -> Counter[str]:
        """Buffer delivered messages; returns, per topic, how many were redeliveries of
        messages already committed or buffered (those of a partition not owned are
        left alone, uncounted)."""
        skipped: Counter[str] = Counter()
        now = self.monotonic()
        for message in messages:
            task = self.tasks.get(message.partition)
            if task is None:
                continue
            if message.offset <= task.offsets.get(message.topic, -1):
                skipped[message.topic] += 1
                continue
            if not task.merger.add(self.scorer.decoder(message), now):
                skipped[message.topic] += 1
        return skipped

    def buffered(self) -> int:
        return sum(len(task.merger) for task in self.tasks.values())

    def expect(self, topic: str, partition: int, offset: float) -> None:
        """A message of an announced topic is on its way to an owned partition, at
        `offset` (math.inf: not known yet; -1: it will not come): its merge waits for it."""
        task = self.tasks.get(partition)
        if task is not None:
            task.merger.expect(topic, offset)

    # --- one step ---------------------------------------------------------------

    async def step(self, behind: Callable[[str, int], bool]) -> StepReport:
        """Process what can be released now. `behind(topic, partition)`: that
        topic-partition still has messages unread in Kafka."""
        report = StepReport()
        now = self.monotonic()
        released: dict[int, list[Decoded]] = {}
        for partition, task in self.tasks.items():
            batch = task.merger.release(
                now, functools.partial(_behind, behind, partition), self.step_limit
            )
            if batch:
                released[partition] = batch
        if not released:
            return report
        model = self.scorer.model()  # one model and policy for the whole step
        await self._run(released, report, model, self.scorer.policy(model), publish=True)
        self._keep_within_budget()
        return report

    async def _run(
        self,
        released: Mapping[int, list[Decoded]],
        report: StepReport,
        model: Model,
        policy: RiskPolicy,
        publish: bool = False,
    ) -> None:
        """Read, compute, publish (or not: a batch the log committed already), commit."""
        owned = {p: self.tasks[p] for p in released}
        prepared = {p: _prepare(owned[p], batch) for p, batch in released.items()}
        begins = [
            Begin(
                p, owned[p].claim.epoch, self._previous(owned[p], b.offsets), b.offsets, b.missing
            )
            for p, b in prepared.items()
        ]
        begun = await self._retry(lambda: self.store.begin(begins), report)
        verdicts = {p: verdict for p, (verdict, _) in begun.items()}
        prepared = await self._settle(prepared, owned, released, verdicts, report)
        outcomes = {
            p: self.scorer.process(
                p,
                b.batch,
                _states(owned[p], b, begun[p][1]),
                b.due,
                [member for _, member in b.samples],
                owned[p].stream_time,
                model,
                policy,
            )
            for p, b in prepared.items()
        }
        if publish:
            outputs = [
                Outputs(
                    p,
                    o.changes,
                    o.dead_letters,
                    self._record(owned[p], o, model, policy),
                    sorted(o.erased),
                )
                for p, o in outcomes.items()
            ]
            fenced = await self._publish(outputs, report)
            verdicts = {p: "committed" for p in outcomes}
            for p in fenced:
                verdicts[p] = await self._fenced_in_kafka(p, owned[p], report)
            outcomes = await self._settle(outcomes, owned, released, verdicts, report)
        durable_at = self.wall()
        encoded = {p: _changed(o) for p, o in outcomes.items()}
        commits = [
            Commit(
                p,
                owned[p].claim.epoch,
                self._previous(owned[p], o.offsets),
                o.offsets,
                o.stream_time,
                encoded[p],
                o.schedule,
                sorted(o.erased),
                _held(owned[p], self._tallies(o, released[p], durable_at), durable_at),
                o.samples,
                worklist.moves(o.changes, o.erased) if self.list_size else {},
                self.list_size,
                worklist.PATH_BYTES,
            )
            for p, o in outcomes.items()
        ]
        committed = await self._retry(lambda: self.store.commit(commits), report)
        verdicts = {p: verdict for p, (verdict, _) in committed.items()}
        outcomes = await self._settle(outcomes, owned, released, verdicts, report)
        for commit in commits:
            if commit.partition in outcomes:
                _hold(owned[commit.partition], commit, committed[commit.partition][1], durable_at)
        for partition, outcome in outcomes.items():
            task = owned[partition]
            _committed(task, prepared[partition], outcome, encoded[partition], begun[partition][1])
            for topic, offset in outcome.offsets.items():
                report.done[(topic, partition)] = offset
            report.outcomes.append(outcome)
            report.latencies.extend(latencies(released[partition], durable_at))

    async def _fenced_in_kafka(self, partition: int, task: Task, report: StepReport) -> Verdict:
        """A batch whose transaction was fenced: by a newer owner (the store's epoch has
        moved on too), or by a worker whose claim the store already refuses (two claims
        crossed in a rebalance: the store's epoch says who owns the partition). Only
        the newer owner takes it again, fencing the other's producer in turn."""
        epoch = await self._retry(lambda: self.store.epoch(partition), report)
        if epoch != task.claim.epoch:
            return "fenced"
        log.warning("partition %d: its producer was fenced by a stale claim", partition)
        return "diverged"

    def _record(
        self, task: Task, outcome: PartitionOutcome, model: Model, policy: RiskPolicy
    ) -> BatchRecord:
        after = {topic: task.offsets.get(topic, -1) for topic in self.topics}
        return batch_record(
            task.claim.partition,
            task.claim.epoch,
            after,
            {**after, **outcome.offsets},
            model.version,
            policy,
        )

    def _keep_within_budget(self) -> None:
        """Forget the least recently seen states beyond the cache's size, from the
        partitions that keep the most."""
        excess = sum(len(task.states) for task in self.tasks.values()) - self.cache_size
        while excess > 0:
            largest = max(self.tasks.values(), key=lambda task: len(task.states))
            for _ in range(min(excess, len(largest.states))):
                largest.states.popitem(last=False)
                excess -= 1

    def _tallies(
        self, outcome: PartitionOutcome, batch: Sequence[Decoded], durable_at: float
    ) -> dict[str, Tally]:
        merged: dict[str, Tally] = {}
        for source in self.tally_sources:
            for name, tally in source(outcome, batch, durable_at).items():
                if name in merged:
                    amounts = added(merged[name].amounts, tally.amounts)
                    ttl = max(tally.ttl, merged[name].ttl)
                    tally = Tally(ttl, amounts, tally.sparse or merged[name].sparse)
                merged[name] = tally
        return merged

    @staticmethod
    def _previous(task: Task, offsets: Mapping[str, int]) -> dict[str, int]:
        return {topic: task.offsets.get(topic, -1) for topic in offsets}

    async def _settle(
        self,
        outcomes: dict[int, T],
        owned: Mapping[int, Task],
        released: Mapping[int, list[Decoded]],
        verdicts: Mapping[int, Verdict],
        report: StepReport,
    ) -> dict[int, T]:
        """Keep the committed partitions; drop the fenced and those given up while the
        batch was under way (a rebalance); read the diverged again."""
        kept = {}
        for partition, outcome in outcomes.items():
            verdict = verdicts[partition]
            still_ours = self.tasks.get(partition) is owned[partition]
            if verdict == "fenced":
                # Reported even when the rebalance that revoked it came first (the
                # store's call runs off the event loop, so it may): the store refused.
                log.warning("partition %d was claimed by another worker: batch dropped", partition)
                report.fenced.append(partition)
                if still_ours:
                    self.tasks.pop(partition, None)
                    self.fenced.add(partition)
            elif not still_ours:
                continue  # revoked meanwhile: the new owner processes it again
            elif verdict == "committed":
                kept[partition] = outcome
            else:
                log.warning(
                    "partition %d: claiming it again and reading its input again from the "
                    "recorded offsets (the store lost writes, or a stale claim fenced its "
                    "producer)",
                    partition,
                )
                try:
                    await self._recover(partition, released[partition])
                except PartitionStopped as stop:
                    log.error("%s", stop)
                    report.stopped.append(partition)
                    continue
                report.diverged.append(partition)
        return kept

    async def _recover(self, partition: int, batch: list[Decoded]) -> None:
        """The store went back in time: take the partition again and read its input
        again from the offsets it now holds, through everything seen so far."""
        task = self.tasks[partition]
        seen = dict(task.merger.last_offset)
        for decoded in batch:
            topic = decoded.message.topic
            seen[topic] = max(seen.get(topic, -1), decoded.message.offset)
        task.merger.drain()
        claim = await self.take(partition)
        if self.reread is None:
            raise RuntimeError(
                f"partition {partition}: the store lost writes and nothing can re-read"
            )
        merger = self.tasks[partition].merger
        for topic, through in seen.items():
            start = claim.offsets.get(topic, -1) + 1
            if start <= through:
                for message in await self.reread(topic, partition, start, through):
                    merger.add(self.scorer.decoder(message), self.monotonic())

    async def _retry(self, action: Callable[[], T], report: StepReport) -> T:
        """Run the store's `action` until it succeeds (`_retry_async`). It runs in a
        thread: a store's calls block on the network, and the event loop must keep
        serving Kafka's heartbeats and the web while they wait (one hop, ~0.1 ms)."""
        return await self._retry_async(lambda: asyncio.to_thread(action), report, "store")

    async def _retry_async(
        self, action: Callable[[], Awaitable[T]], report: StepReport, port: str
    ) -> T:
        """Await `action` until it succeeds; transient errors are logged and retried
        with backoff (capped at 5 s), anything else propagates."""
        delay = 0.1
        while True:
            try:
                return await action()
            except self.transient as err:
                report.retries += 1
                self.on_retry(port, err)
                log.warning("%s: transient error (%r); retrying in %.1fs", port, err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _publish(self, outputs: Sequence[Outputs], report: StepReport) -> Collection[int]:
        """Publish the step's batches; returns the partitions fenced."""
        return await self._retry_async(lambda: self.sink.publish(outputs), report, "sink")


def _prepare(task: Task, batch: list[Decoded]) -> Prepared:
    offsets: dict[str, int] = {}
    customers: dict[str, None] = {}  # in order, once each
    stream_time = task.stream_time
    for decoded in batch:
        offsets[decoded.message.topic] = decoded.message.offset
        if decoded.event is not None:
            if not isinstance(decoded.event, Tick):
                customers[decoded.event.customer_id] = None  # type: ignore[attr-defined]
            if not math.isinf(decoded.time) and (stream_time is None or decoded.time > stream_time):
                stream_time = decoded.time
    due, samples = [], []
    if stream_time is not None:
        due = task.schedule.take_before(stream_time)
        samples = task.samples.take_before(stream_time)
    customers.update((customer, None) for _, customer in due)
    customers.update((sample_customer(member), None) for _, member in samples)
    missing = [c for c in customers if c not in task.states]
    return Prepared(batch, offsets, stream_time, due, samples, list(customers), missing)


def _states(task: Task, prepared: Prepared, read: Mapping[str, bytes]) -> dict[str, CustomerState]:
    """The pre-batch states of the batch's customers, decoded afresh (the scorer
    changes them in place): from the task's, else as `begin` read them."""
    kept = task.states
    found = {}
    for customer in prepared.customers:
        blob = kept.get(customer)
        if blob is None:
            blob = read.get(customer)
        if blob is not None:
            found[customer] = decode_state(blob)
    return found


def _held(task: Task, tallies: Mapping[str, Tally], now: float) -> dict[str, Tally]:
    """The batch's tallies as the commit writes them: those the task holds (written
    by it within half their time to live, so still in the store), whole; the others
    as amounts to add."""
    out = {}
    for name, tally in tallies.items():
        held = None if tally.sparse else task.tallies.get(name)
        if held is None or now - held[0] > tally.ttl / 2:
            out[name] = tally
            continue
        out[name] = Tally(tally.ttl, added(held[1], tally.amounts), whole=True)
    return out


def _hold(task: Task, commit: Commit, sums: Mapping[str, Amounts], now: float) -> None:
    """What the store now holds of the tallies the commit wrote whole or added to."""
    held = task.tallies
    for name, tally in commit.tallies.items():
        value = tally.amounts if tally.whole else sums.get(name)
        if value is None:
            held.pop(name, None)  # a reply that was lost: not known, added to next time
            continue
        held[name] = (now, value)
        held.move_to_end(name)
    while len(held) > TALLIES_KEPT:
        held.popitem(last=False)


def _changed(outcome: PartitionOutcome) -> dict[str, bytes]:
    """The states the batch changed, encoded (one it only read is not written again)."""
    states = outcome.states
    return {c: encode_state(states[c]) for c in outcome.changed if c in states}


def _committed(
    task: Task,
    prepared: Prepared,
    outcome: PartitionOutcome,
    encoded: Mapping[str, bytes],
    read: Mapping[str, bytes],
) -> None:
    """What the store now holds, in the task: offsets, stream time, states, and the
    timetables (a due entry the batch left alone goes back)."""
    task.offsets.update(outcome.offsets)
    task.stream_time = outcome.stream_time
    states = task.states
    for customer, blob in read.items():  # committed states read with the begin
        if customer not in states:
            states[customer] = blob
    for customer in outcome.erased:
        states.pop(customer, None)
    for customer, blob in encoded.items():
        states[customer] = blob
        states.move_to_end(customer)
    for when, customer in prepared.due:
        if customer not in outcome.schedule:
            task.schedule.set(customer, when)
    for customer, next_due in outcome.schedule.items():
        task.schedule.set(customer, next_due)
    for when, member in prepared.samples:
        if member not in outcome.samples:
            task.samples.set(member, when)
    for member, due in outcome.samples.items():
        task.samples.set(member, due)


async def run_backlog(
    runner: BatchRunner,
    messages: Iterable[InputMessage],
    batch_size: int,
    after_step: Callable[[StepReport], None] | None = None,
) -> int:
    """Feed `messages` (a whole log, in offset order per topic-partition) to the runner
    in batches, as a consumer reading a backlog gets them, and step until all are
    processed; `after_step` sees each step's report. Returns the number of messages.
    How `replay` and the offline uses of the core (training's drift reference) run."""
    finished = False

    def behind(topic: str, partition: int) -> bool:
        return not finished  # until the end, more may come

    async def step() -> None:
        report = await runner.step(behind)
        if after_step is not None:
            after_step(report)

    count = 0
    batch: list[InputMessage] = []
    for message in messages:
        batch.append(message)
        if len(batch) >= batch_size:
            count += len(batch)
            runner.add(batch)
            batch = []
            await step()
    count += len(batch)
    runner.add(batch)
    finished = True
    while runner.buffered():
        await step()
    return count
