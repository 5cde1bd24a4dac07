"""The state store port: what the batch runner needs from a store, and an in-memory
backend with the same semantics (tests of the core run on it, with no services).

State is kept per input partition, as Kafka Streams and Flink keep it: a partition's
customer states, inactivity schedule, recorded offsets and stream time live
together and change together, in one atomic commit per partition and batch. A
worker that takes a partition over claims it (a new epoch); every later write
checks that epoch, so a worker that lost the partition cannot write any more. The
owner may therefore keep what it read and wrote (the schedule, the pending samples,
the states it touched) and read from the store only what it has not seen: a claim
gives it the partition's schedule and samples whole, and each batch's `begin`
reads the states it lacks.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, cast

import msgspec

from feature_store.online import CustomerState, decode_state

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
    # The whole inactivity schedule (customer -> next rescore) and the pending samples
    # of realised performance (member -> due, `Commit.samples`).
    schedule: dict[str, float] = field(default_factory=dict)
    samples: dict[str, float] = field(default_factory=dict)


# A tally's counters: by name, or a vector of a fixed layout (see `Tally`).
Amounts = dict[str, float] | list[float]


def added(to: Amounts, amounts: Amounts) -> Amounts:
    """`to` with `amounts` added (both of a kind)."""
    if isinstance(to, list):
        return [a + b for a, b in zip(to, cast(list[float], amounts), strict=True)]
    total = dict(to)
    for key, amount in cast(dict[str, float], amounts).items():
        total[key] = total.get(key, 0.0) + amount
    return total


@dataclass(frozen=True)
class Tally:
    """Amounts to add to a named set of counters with a partition's commit, so they
    count each event once however often it is delivered (the monitors' and the
    daily report's sketches). Kept `ttl` seconds after their last change.

    `amounts`: counters by name, or a vector, the counters of a fixed layout position
    by position (the drift monitor's). `sparse`: a few counters of many change per
    batch (realised performance): each is added to on its own. Otherwise the tally
    is one value, written whole: the batch's `amounts` are added to it, or, `whole`,
    are its new value (the owner of the partition holds what it last wrote, so it
    can add them itself)."""

    ttl: int
    amounts: Amounts
    sparse: bool = False
    whole: bool = False


@dataclass
class Commit:
    """A partition's batch, to be committed once its outputs are durable."""

    partition: int
    epoch: int
    previous: dict[str, int]  # offsets the store must still hold (-1: none)
    offsets: dict[str, int]
    stream_time: float | None
    states: dict[str, bytes] = field(default_factory=dict)  # customer -> encoded state
    schedule: dict[str, float | None] = field(default_factory=dict)  # None: unschedule
    erased: list[str] = field(default_factory=list)  # customers whose state is deleted
    tallies: dict[str, Tally] = field(default_factory=dict)  # name -> amounts to add
    # Pending samples of realised performance: member -> due instant (None: decided,
    # remove). A member is a JSON array whose first item is the customer id.
    samples: dict[str, float | None] = field(default_factory=dict)
    # The work-list index: customer -> Listing (None: unlist), of which only the
    # `list_size` highest stay listed.
    listings: dict[str, Listing | None] = field(default_factory=dict)
    list_size: int = 0
    path_bytes: int = 0


@dataclass(frozen=True)
class Listing:
    """A customer on the partition's work-list index (`scoring.worklist`): their place
    in it (`score`, highest first), their entry (replaced), and `steps` to append to
    their path, of which the store keeps the last `Commit.path_bytes` bytes (`fresh`:
    the path starts anew)."""

    score: float
    entry: bytes
    steps: bytes
    fresh: bool = False


# A listed customer as read back: partition, customer, score, entry, path.
Listed = tuple[int, str, float, bytes, bytes]


def sample_customer(member: str | bytes) -> str:
    """The customer a pending sample is of (see `Commit.samples`)."""
    return str(msgspec.json.decode(member)[0])


@dataclass(frozen=True)
class Begin:
    """A partition's batch about to be processed: its last offset per topic, and the
    customers whose states the owner has not seen yet."""

    partition: int
    epoch: int
    previous: dict[str, int]
    through: dict[str, int]
    customers: list[str] = field(default_factory=list)


# What `begin` answers per partition: the verdict, and the encoded states of the
# customers asked for (those the store holds).
Begun = tuple[Verdict, dict[str, bytes]]
# What `commit` answers per partition: the verdict, and the value each tally it added
# to (not sparse, not whole) holds now (none when the batch was committed already).
Committed = tuple[Verdict, dict[str, Amounts]]


class StateStore(Protocol):
    """Batch-shaped, so a backend can answer each call in one round trip."""

    def claim(self, partition: int) -> Claim: ...

    def epoch(self, partition: int) -> int:
        """The partition's current epoch (0: never claimed)."""
        ...

    def begin(self, batches: Collection[Begin]) -> dict[int, Begun]:
        """Record each batch about to be processed, fenced by the epoch (the next
        owner processes exactly that batch first, should this one stop), and read
        the states it asks for; in one round trip."""
        ...

    def commit(self, commits: Collection[Commit]) -> dict[int, Committed]: ...

    def read(self, partition: int, customer_ids: Collection[str]) -> dict[str, CustomerState]: ...

    def snapshot(
        self, partition: int, customer_ids: Collection[str]
    ) -> tuple[dict[str, CustomerState], float | None]:
        """`read`, and the partition's committed stream time (None: nothing committed
        yet), read together."""
        ...

    def tallies(self, partitions: Collection[int], name: str) -> dict[str, float]:
        """A tally of counters by name summed over the given partitions (a missing one
        counts as empty)."""
        ...

    def listed(
        self, partitions: Collection[int], lowest: float, highest: float, limit: int
    ) -> list[Listed]:
        """Per partition, its `limit` highest listed customers scored within
        [lowest, highest], highest first."""
        ...

    def listing(self, partition: int, customer_id: str) -> Listed | None:
        """One listed customer (None: not listed)."""
        ...

    def count_listed(self, partitions: Collection[int], lowest: float, highest: float) -> int:
        """How many customers the partitions list with scores within [lowest, highest]."""
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
    tallies: dict[str, Amounts] = field(default_factory=dict)  # (no expiry here)
    listed: dict[str, tuple[float, bytes, bytes]] = field(default_factory=dict)


class MemoryStore:
    """A StateStore in a dict: the same rules as Redis, for tests and replays."""

    def __init__(self) -> None:
        self.partitions: dict[int, _Partition] = {}

    def _of(self, partition: int) -> _Partition:
        return self.partitions.setdefault(partition, _Partition())

    def epoch(self, partition: int) -> int:
        return self._of(partition).epoch

    def claim(self, partition: int) -> Claim:
        p = self._of(partition)
        p.epoch += 1
        in_flight = dict(p.in_flight) if p.in_flight else None
        return Claim(
            partition,
            p.epoch,
            dict(p.offsets),
            p.stream_time,
            in_flight,
            dict(p.schedule),
            dict(p.samples),
        )

    def begin(self, batches: Collection[Begin]) -> dict[int, Begun]:
        begun: dict[int, Begun] = {}
        for batch in batches:
            p = self._of(batch.partition)
            verdict = check(p.epoch, batch.epoch, p.offsets, batch.previous)
            if verdict is None:
                p.in_flight = dict(batch.through)
            states = {c: p.states[c] for c in batch.customers if c in p.states}
            begun[batch.partition] = (verdict or "committed", states)
        return begun

    def commit(self, commits: Collection[Commit]) -> dict[int, Committed]:
        return {c.partition: self._commit(c) for c in commits}

    def _commit(self, commit: Commit) -> Committed:
        p = self._of(commit.partition)
        if p.epoch == commit.epoch and all(
            p.offsets.get(t, -1) == o for t, o in commit.offsets.items()
        ):
            return "committed", {}  # already: the reply to an earlier try was lost
        verdict = check(p.epoch, commit.epoch, p.offsets, commit.previous)
        if verdict is not None:
            return verdict, {}
        for customer_id in commit.erased:
            p.states.pop(customer_id, None)
        p.states.update(commit.states)
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
        _list(p.listed, commit)
        merged = {}
        for name, tally in commit.tallies.items():
            held = p.tallies.get(name)
            value = tally.amounts if tally.whole or held is None else added(held, tally.amounts)
            p.tallies[name] = copy.copy(value)
            if not (tally.sparse or tally.whole):
                merged[name] = copy.copy(value)
        p.offsets.update(commit.offsets)
        p.stream_time = commit.stream_time
        p.in_flight = None
        return "committed", merged

    def read(self, partition: int, customer_ids: Collection[str]) -> dict[str, CustomerState]:
        p = self._of(partition)
        return {c: decode_state(p.states[c]) for c in customer_ids if c in p.states}

    def snapshot(
        self, partition: int, customer_ids: Collection[str]
    ) -> tuple[dict[str, CustomerState], float | None]:
        return self.read(partition, customer_ids), self._of(partition).stream_time

    def listed(
        self, partitions: Collection[int], lowest: float, highest: float, limit: int
    ) -> list[Listed]:
        found: list[Listed] = []
        for partition in partitions:
            listed = self._of(partition).listed.items()
            within = [(c, v) for c, v in listed if lowest <= v[0] <= highest]
            within.sort(key=lambda item: (item[1][0], item[0]), reverse=True)  # as ZREVRANGE
            found += [(partition, c, *v) for c, v in within[:limit]]
        return found

    def count_listed(self, partitions: Collection[int], lowest: float, highest: float) -> int:
        return sum(
            lowest <= place <= highest
            for p in partitions
            for place, _, _ in self._of(p).listed.values()
        )

    def listing(self, partition: int, customer_id: str) -> Listed | None:
        found = self._of(partition).listed.get(customer_id)
        return None if found is None else (partition, customer_id, *found)

    def tallies(self, partitions: Collection[int], name: str) -> dict[str, float]:
        total: dict[str, float] = {}
        for partition in partitions:
            kept = self._of(partition).tallies.get(name)
            if isinstance(kept, dict):
                total = cast(dict[str, float], added(total, kept))
        return total


def _list(listed: dict[str, tuple[float, bytes, bytes]], commit: Commit) -> None:
    """Apply a commit's listings to a partition's index, as `partition.lua` does."""
    for customer, listing in commit.listings.items():
        if listing is None:
            listed.pop(customer, None)
            continue
        path = b"" if listing.fresh or customer not in listed else listed[customer][2]
        path += listing.steps
        path = path[max(0, len(path) - commit.path_bytes) :]
        listed[customer] = (listing.score, listing.entry, path)
    # Redis orders equal scores by member: the lowest of those go first.
    ranked = sorted(listed, key=lambda c: (listed[c][0], c))
    for customer in ranked[: max(0, len(listed) - commit.list_size)]:
        del listed[customer]
