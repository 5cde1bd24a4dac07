"""The state store port: what the batch runner needs from a store, and an in-memory
backend with the same semantics (tests of the core run on it, with no services).

State is kept per input partition, as Kafka Streams and Flink keep it: a partition's
customer states, inactivity schedule, recorded offsets and stream time live
together and change together, in one atomic commit per partition and batch. A
worker that takes a partition over claims it (a new epoch); every later write
checks that epoch, so a worker that lost the partition cannot write any more.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import msgspec

from feature_store.online import CustomerState, decode_state, encode_state

# What `load` gives per partition: customer states, due (rescore time, customer), and
# the pending samples (`scoring.performance`) due before the instant, as stored.
Loaded = tuple[dict[str, CustomerState], list[tuple[float, str]], list[str]]

# committed: done; fenced: another worker claimed the partition since (drop the
# batch); diverged: the store no longer holds what this worker last committed (it
# lost writes, e.g. Redis restarted from an AOF short of its last second): claim
# the partition again and read its input again from the recorded offsets.
Verdict = Literal["committed", "fenced", "diverged"]


@dataclass(frozen=True)
class Claim:
    """A partition as its new owner finds it."""

    partition: int
    epoch: int
    offsets: dict[str, int]  # topic -> last offset processed and committed
    stream_time: float | None
    # The batch in flight when the previous owner stopped (topic -> last offset of
    # the batch), or None: it is processed first, exactly, so its outputs repeat.
    in_flight: dict[str, int] | None


@dataclass(frozen=True)
class Tally:
    """Amounts to add to a named set of counters with a partition's commit, so they
    count each event once however often it is delivered (the monitors' and the
    daily report's sketches). Kept `ttl` seconds after their last change."""

    ttl: int
    amounts: dict[str, float]


@dataclass
class Commit:
    """A partition's batch, to be committed once its outputs are durable."""

    partition: int
    epoch: int
    previous: dict[str, int]  # offsets the store must still hold (-1: none)
    offsets: dict[str, int]
    stream_time: float | None
    states: list[CustomerState] = field(default_factory=list)
    schedule: dict[str, float | None] = field(default_factory=dict)  # None: unschedule
    erased: list[str] = field(default_factory=list)  # customers whose state is deleted
    tallies: dict[str, Tally] = field(default_factory=dict)  # name -> amounts to add
    # Pending samples of realised performance: member -> due instant (None: decided,
    # remove). A member is a JSON array whose first item is the customer id.
    samples: dict[str, float | None] = field(default_factory=dict)


def sample_customer(member: str | bytes) -> str:
    """The customer a pending sample is of (see `Commit.samples`)."""
    return str(msgspec.json.decode(member)[0])


@dataclass(frozen=True)
class Begin:
    """A partition's batch about to be published: its last offset per topic."""

    partition: int
    epoch: int
    previous: dict[str, int]
    through: dict[str, int]


class StateStore(Protocol):
    """Batch-shaped, so a backend can answer each call in one round trip."""

    def claim(self, partition: int) -> Claim: ...

    def load(self, wanted: Mapping[int, tuple[Collection[str], float | None]]) -> dict[int, Loaded]:
        """Per partition: the states of the given customers and of every customer due
        for a rescore or with a sample due before the given instant, those (due time,
        customer) and those samples."""
        ...

    def begin(self, batches: Collection[Begin]) -> dict[int, Verdict]:
        """Record each batch about to be published, fenced by the epoch."""
        ...

    def commit(self, commits: Collection[Commit]) -> dict[int, Verdict]: ...

    def read(self, partition: int, customer_ids: Collection[str]) -> dict[str, CustomerState]: ...

    def snapshot(
        self, partition: int, customer_ids: Collection[str]
    ) -> tuple[dict[str, CustomerState], float | None]:
        """`read`, and the partition's committed stream time (None: nothing committed
        yet), read together."""
        ...

    def tallies(self, partitions: Collection[int], name: str) -> dict[str, float]:
        """A tally summed over the given partitions (a missing one counts as empty)."""
        ...


def check(
    stored_epoch: int, epoch: int, stored: Mapping[str, int], previous: Mapping[str, int]
) -> Verdict | None:
    """The verdict on a write by `epoch` expecting `previous` offsets, or None: go on."""
    if stored_epoch > epoch:
        return "fenced"
    if stored_epoch < epoch:
        return "diverged"  # our own claim is gone: the store went back in time
    if any(stored.get(topic, -1) != offset for topic, offset in previous.items()):
        return "diverged"
    return None


@dataclass
class _Partition:
    epoch: int = 0
    offsets: dict[str, int] = field(default_factory=dict)
    stream_time: float | None = None
    in_flight: dict[str, int] | None = None
    states: dict[str, bytes] = field(default_factory=dict)  # encoded, as a store keeps them
    schedule: dict[str, float] = field(default_factory=dict)
    samples: dict[str, float] = field(default_factory=dict)
    tallies: dict[str, dict[str, float]] = field(default_factory=dict)  # (no expiry here)


class MemoryStore:
    """A StateStore in a dict: the same rules as Redis, for tests and replays."""

    def __init__(self) -> None:
        self.partitions: dict[int, _Partition] = {}

    def _of(self, partition: int) -> _Partition:
        return self.partitions.setdefault(partition, _Partition())

    def claim(self, partition: int) -> Claim:
        p = self._of(partition)
        p.epoch += 1
        in_flight = dict(p.in_flight) if p.in_flight else None
        return Claim(partition, p.epoch, dict(p.offsets), p.stream_time, in_flight)

    def load(self, wanted: Mapping[int, tuple[Collection[str], float | None]]) -> dict[int, Loaded]:
        loaded = {}
        for partition, (customer_ids, due_before) in wanted.items():
            p = self._of(partition)
            due, samples = [], []
            if due_before is not None:
                due = sorted((t, c) for c, t in p.schedule.items() if t < due_before)
                samples = sorted(m for m, t in p.samples.items() if t < due_before)
            names = set(customer_ids) | {c for _, c in due} | set(map(sample_customer, samples))
            loaded[partition] = (
                {c: decode_state(p.states[c]) for c in names if c in p.states},
                due,
                samples,
            )
        return loaded

    def begin(self, batches: Collection[Begin]) -> dict[int, Verdict]:
        verdicts: dict[int, Verdict] = {}
        for batch in batches:
            p = self._of(batch.partition)
            verdict = check(p.epoch, batch.epoch, p.offsets, batch.previous)
            if verdict is None:
                p.in_flight = dict(batch.through)
            verdicts[batch.partition] = verdict or "committed"
        return verdicts

    def commit(self, commits: Collection[Commit]) -> dict[int, Verdict]:
        return {c.partition: self._commit(c) for c in commits}

    def _commit(self, commit: Commit) -> Verdict:
        p = self._of(commit.partition)
        if p.epoch == commit.epoch and all(
            p.offsets.get(t, -1) == o for t, o in commit.offsets.items()
        ):
            return "committed"  # already: the reply to an earlier try was lost
        verdict = check(p.epoch, commit.epoch, p.offsets, commit.previous)
        if verdict is not None:
            return verdict
        for customer_id in commit.erased:
            p.states.pop(customer_id, None)
        for state in commit.states:
            p.states[state.customer_id] = encode_state(state)
        for customer_id, due in commit.schedule.items():
            if due is None:
                p.schedule.pop(customer_id, None)
            else:
                p.schedule[customer_id] = due
        for member, due in commit.samples.items():
            if due is None:
                p.samples.pop(member, None)
            else:
                p.samples[member] = due
        for name, tally in commit.tallies.items():
            counters = p.tallies.setdefault(name, {})
            for key, amount in tally.amounts.items():
                counters[key] = counters.get(key, 0.0) + amount
        p.offsets.update(commit.offsets)
        p.stream_time = commit.stream_time
        p.in_flight = None
        return "committed"

    def read(self, partition: int, customer_ids: Collection[str]) -> dict[str, CustomerState]:
        p = self._of(partition)
        return {c: decode_state(p.states[c]) for c in customer_ids if c in p.states}

    def snapshot(
        self, partition: int, customer_ids: Collection[str]
    ) -> tuple[dict[str, CustomerState], float | None]:
        return self.read(partition, customer_ids), self._of(partition).stream_time

    def tallies(self, partitions: Collection[int], name: str) -> dict[str, float]:
        total: dict[str, float] = {}
        for partition in partitions:
            for key, amount in self._of(partition).tallies.get(name, {}).items():
                total[key] = total.get(key, 0.0) + amount
        return total
