"""The batch runner's guarantees: the changes published do not depend on how input is
fetched and batched, and a batch processed again after a crash, a failed commit, a
takeover or a store that lost writes publishes the same changes with the same ids.

Each runs on the in-memory store (no services), and on real Redis and a real Redis
Cluster: the backends implement one port with one behaviour."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import random
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
import redis

from feature_store.online import CustomerState, encode_state, ids_of
from feature_store.redis_store import RedisStateStore
from feature_store.store import Begin, Commit, MemoryStore, StateStore, Tally
from schemas import Customer, Order, SupportTicket, topics
from scoring.artifact import load_model
from scoring.merge import Decoded, InputMessage
from scoring.model import Model
from scoring.outcome import PartitionOutcome
from scoring.performance import TALLY, figures, performance_tally
from scoring.runner import Outputs
from simulator.history import generate_history
from tests.core import (
    FakeKafka,
    Log,
    RecordingSink,
    TransientError,
    by_id,
    drive,
    logs_of,
    make_runner,
    partition_of,
    replayed,
    resume,
)
from tests.support import train_soft_model

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    models = tmp_path_factory.mktemp("models")
    return load_model(train_soft_model(models, "recency_days", 5, 55, "soft-recency"))


@pytest.fixture(scope="module")
def logs() -> Log:
    history = generate_history(150, seed=5, days=200)
    return logs_of(list(history.events_in_time_order()))


class Backend:
    """A store to test, and what a test needs to see inside it."""

    def __init__(self, kind: str, request: pytest.FixtureRequest | None) -> None:
        self.kind = kind
        self.namespace = f"runner-{uuid.uuid4().hex[:8]}"
        self.client: redis.Redis | redis.RedisCluster | None = None
        if kind == "redis" and request is not None:
            self.client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        elif kind == "cluster" and request is not None:
            self.client = redis.RedisCluster.from_url(request.getfixturevalue("redis_cluster_url"))

    def new(self) -> StateStore:
        if self.client is None:
            self.memory = MemoryStore()
            return self.memory
        return RedisStateStore(self.client, self.namespace)

    def states(self, store: StateStore, logs: Log) -> dict[str, CustomerState]:
        customers = {m.key.decode(): m.partition for log in logs.values() for m in log if m.key}
        return {c: s for c, p in customers.items() for c, s in store.read(p, [c]).items()}

    def offsets(self, store: StateStore) -> dict[int, dict[str, int]]:
        if isinstance(store, MemoryStore):
            return {p: dict(kept.offsets) for p, kept in store.partitions.items()}
        assert isinstance(store, RedisStateStore)
        return {p: store.offsets(p) for p in range(4)}

    def snapshot(self, store: StateStore) -> object:
        if isinstance(store, MemoryStore):
            return copy.deepcopy(store.partitions)
        assert isinstance(store, RedisStateStore)
        return {key: store.client.dump(key) for key in store.scan()}

    def restore(self, store: StateStore, snapshot: object) -> None:
        """As if the store restarted from a copy taken at `snapshot`."""
        if isinstance(store, MemoryStore):
            store.partitions = snapshot  # type: ignore[assignment]
            return
        assert isinstance(store, RedisStateStore) and isinstance(snapshot, dict)
        store.delete_namespace()
        for key, dumped in snapshot.items():
            store.client.restore(key, 0, dumped)

    def close(self) -> None:
        if self.client is not None:
            RedisStateStore(self.client, self.namespace).delete_namespace()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.integration),
        pytest.param("cluster", marks=pytest.mark.integration),
    ]
)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    chosen = Backend(request.param, request)
    yield chosen
    chosen.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_the_changes_do_not_depend_on_how_the_input_is_fetched_and_batched(
    model: Model, logs: Log, seed: int, backend: Backend
) -> None:
    expected = replayed(model, logs)
    assert len(expected.changes) > 30
    assert any(c.trigger.kind == "inactivity" for c in expected.changes)

    sink, store = RecordingSink(), backend.new()
    kafka = FakeKafka(logs, random.Random(seed))
    drive(make_runner(store, model, sink, kafka), kafka)

    assert by_id(sink.changes) == by_id(expected.changes)
    assert len(sink.changes) == len(expected.changes)


@pytest.mark.parametrize("seed", [4, 5])
def test_a_batch_processed_again_after_a_crash_before_its_commit_publishes_the_same_changes(
    model: Model, logs: Log, seed: int, backend: Backend
) -> None:
    rng = random.Random(seed)
    expected = by_id(replayed(model, logs).changes)
    sink, store = RecordingSink(), backend.new()
    kafka = FakeKafka(logs, rng)
    crashes = 0
    while not kafka.done() or crashes == 0:
        runner = make_runner(store, model, sink, kafka)  # a new worker takes over
        resume(runner, kafka)
        crash_at = rng.randint(1, 8)

        class Crash(Exception):
            pass

        commit = store.commit

        def crashing_commit(commits, _commit=commit, _runner=runner):  # type: ignore[no-untyped-def]
            raise Crash

        steps = 0
        try:
            while not kafka.done() or runner.buffered():
                runner.add(kafka.fetch())
                steps += 1
                if steps == crash_at:
                    store.commit = crashing_commit  # type: ignore[method-assign]
                asyncio.run(runner.step(kafka.behind))
        except Crash:
            crashes += 1
        finally:
            store.commit = commit  # type: ignore[method-assign]
    assert crashes >= 1
    # Every id has one content, and together they are exactly the replay's.
    assert by_id(sink.changes) == expected


def test_a_commit_that_fails_once_after_publishing_is_retried_without_publishing_again(
    model: Model, logs: Log, backend: Backend
) -> None:
    expected = replayed(model, logs)
    sink, store = RecordingSink(), backend.new()
    kafka = FakeKafka(logs, random.Random(7))
    commit, failures = store.commit, []

    def failing_once(commits):  # type: ignore[no-untyped-def]
        if not failures:
            failures.append(1)
            raise TransientError("connection reset")
        return commit(commits)

    store.commit = failing_once  # type: ignore[method-assign]
    sink.fail = 2  # and the first two publishes fail
    reports = drive(make_runner(store, model, sink, kafka), kafka)
    assert failures and sum(r.retries for r in reports) >= 3
    assert by_id(sink.changes) == by_id(expected.changes)
    assert len(sink.changes) == len(expected.changes)  # nothing published twice


def test_a_worker_that_lost_its_partition_cannot_commit_and_offsets_never_go_back(
    model: Model, logs: Log, backend: Backend
) -> None:
    store = backend.new()
    kafka = FakeKafka(logs, random.Random(8))
    old_sink, new_sink = RecordingSink(), RecordingSink()
    old = make_runner(store, model, old_sink, kafka)
    drive(old, kafka, steps=5)
    recorded = backend.offsets(store)
    new = make_runner(store, model, new_sink)  # claims every partition: a new epoch
    fenced: list[int] = []
    while not fenced:
        assert not kafka.done(), "the old worker never tried to commit"
        old.add(kafka.fetch())
        report = asyncio.run(old.step(kafka.behind))
        assert not report.done, "a fenced worker committed"
        fenced = report.fenced
    assert backend.offsets(store) == recorded
    assert set(report.fenced) == set(old.fenced)
    assert new.tasks.keys() == set(range(4))


def test_a_store_that_lost_writes_is_read_again_from_its_recorded_offsets(
    model: Model, logs: Log, backend: Backend
) -> None:
    expected = replayed(model, logs)
    sink, store = RecordingSink(), backend.new()
    kafka = FakeKafka(logs, random.Random(9))
    runner = make_runner(store, model, sink, kafka)
    drive(runner, kafka, steps=6)
    snapshot = backend.snapshot(store)
    drive(runner, kafka, steps=6)
    backend.restore(store, snapshot)  # restarted from an AOF short of its last writes
    reports = drive(runner, kafka)
    assert any(r.diverged for r in reports)
    assert by_id(sink.changes) == by_id(expected.changes)
    reference_store = MemoryStore()
    reference = make_runner(reference_store, model, RecordingSink())
    reference.add(m for log in logs.values() for m in log)
    asyncio.run(reference.step(lambda t, p: False))
    assert backend.states(store, logs) == Backend("memory", None).states(reference_store, logs)


def test_the_batch_in_flight_when_a_worker_stopped_is_processed_first_and_exactly(
    model: Model,
) -> None:
    # The old owner released an order of day 50 alone (the tickets were caught up);
    # a ticket of day 40 arrived just after. Merged afresh, the ticket would come
    # first and the same change ids would be scored on other states.
    customer = "INFLIGHT"
    first = Order("O0", customer, T0, 30.0, "card", "delivered")
    order = Order("O50", customer, T0 + timedelta(days=50), 30.0, "card", "delivered")
    ticket = SupportTicket("T40", customer, T0 + timedelta(days=40), "delivery")
    logs = logs_of(
        [(topics.ORDERS, first), (topics.ORDERS, order), (topics.SUPPORT_TICKETS, ticket)]
    )
    p = partition_of(customer)
    orders, tickets = logs[(topics.ORDERS, p)], logs[(topics.SUPPORT_TICKETS, p)]

    def caught_up(topic: str, partition: int) -> bool:
        return False

    store = MemoryStore()
    old_sink = RecordingSink()
    old = make_runner(store, model, old_sink)
    old.add(orders[:1])
    asyncio.run(old.step(caught_up))
    old.add(orders[1:])
    commit = store.commit
    store.commit = lambda commits: (_ for _ in ()).throw(RuntimeError("killed"))  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        asyncio.run(old.step(caught_up))
    store.commit = commit  # type: ignore[method-assign]
    assert old_sink.changes, "the order of day 50 alone publishes inactivity changes"

    new_sink = RecordingSink()
    new = make_runner(store, model, new_sink)
    new.add([*orders[1:], *tickets])
    asyncio.run(new.step(caught_up))
    asyncio.run(new.step(caught_up))
    published = by_id(old_sink.changes)
    again = by_id(new_sink.changes)
    assert {i: c for i, c in again.items() if i in published} == published


def test_an_absurd_amount_is_dead_lettered_naming_the_bound_and_the_batch_goes_on(
    model: Model,
) -> None:
    # Its cents would overflow any exact sum: the contract bounds amounts.
    absurd = Order("O1", "ABSURD", T0, 1e300, "card", "delivered")
    fine = Order("O2", "ABSURD", T0 + timedelta(days=1), 20.0, "card", "delivered")
    logs = logs_of([(topics.ORDERS, absurd), (topics.ORDERS, fine)])
    sink, store = RecordingSink(), MemoryStore()
    runner = make_runner(store, model, sink)
    runner.add(m for log in logs.values() for m in log)
    report = asyncio.run(runner.step(lambda topic, partition: False))
    [letter] = sink.dead_letters
    assert letter.offset == 0 and letter.reason == (
        "Expected `float` <= 10000000.0 - at `$.total_amount`"
    )
    [outcome] = report.outcomes
    assert outcome.counts == {("orders", "applied"): 1, ("orders", "dead_letter"): 1}
    assert outcome.refusals == {"out_of_bounds": 1}
    state = store.read(partition_of("ABSURD"), ["ABSURD"])["ABSURD"]
    assert state.totals == {"o": 1, "s": 2000}


def test_a_tombstone_erases_the_customer_and_a_customer_who_comes_back_gets_new_change_ids(
    model: Model, backend: Backend
) -> None:
    gone, other = "GONE", "OTHER"
    offsets: dict[tuple[str, int], int] = {}

    def message(
        topic: str, customer_id: str, event: object | None, days: float | None = None
    ) -> InputMessage:
        """The next message of the customer's topic-partition (None: a tombstone),
        appended `days` after T0 (None: the broker's time is not known)."""
        partition = partition_of(customer_id)
        offset = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        value = None if event is None else msgspec.json.encode(event)
        appended = None if days is None else (T0 + timedelta(days=days)).timestamp()
        return InputMessage(topic, partition, offset, customer_id.encode(), value, appended)

    def order(order_id: str, customer_id: str, days: float, amount: float) -> InputMessage:
        placed = Order(order_id, customer_id, T0 + timedelta(days=days), amount, "card", "shipped")
        return message(topics.ORDERS, customer_id, placed)

    sink, store = RecordingSink(), backend.new()
    runner = make_runner(store, model, sink)
    caught_up = lambda topic, partition: False  # noqa: E731
    runner.add(
        [
            message(topics.CUSTOMERS, gone, Customer(gone, T0 - timedelta(days=400))),
            order("O1", gone, 0, 20.0),
            order("O1", other, 0.1, 20.0),
            order("O2", other, 40, 20.0),  # GONE has been silent for 40 days
            message(topics.CUSTOMERS, gone, None, days=41),
        ]
    )
    first = asyncio.run(runner.step(caught_up))
    published_before = [c for c in sink.changes if c.customer_id == gone]
    assert published_before[-1].risk != "LOW", "the customer was at risk before the erasure"
    assert sum(o.counts["customers", "erased"] for o in first.outcomes) == 1
    partition = partition_of(gone)
    assert store.read(partition, [gone]) == {}
    claim = store.claim(partition)  # a new owner finds no state and no rescore of theirs
    assert gone not in claim.schedule
    assert store.begin([Begin(partition, claim.epoch, {}, {}, [gone])]) == {
        partition: ("committed", {})
    }
    runner.assign(partition, claim)

    # Time passes on the partition: a customer still there would be rescored as silent.
    runner.add([order(f"L{day}", other, day, 5.0) for day in range(42, 90, 3)])
    asyncio.run(runner.step(caught_up))
    assert any(c.customer_id == other and c.trigger.kind == "inactivity" for c in sink.changes)
    assert [c for c in sink.changes if c.customer_id == gone] == published_before

    # Back, then silent again: their changes count from 1, under ids of their own.
    runner.add([order("O9", gone, 95, 30.0), order("L140", other, 140, 5.0)])
    asyncio.run(runner.step(caught_up))
    again = [c for c in sink.changes if c.customer_id == gone][len(published_before) :]
    state = store.read(partition, [gone])[gone]
    assert again and state.risk_seq == len(again)
    assert not {c.event_id for c in again} & {c.event_id for c in published_before}
    assert state.totals == {"o": 1, "s": 3000} and state.profile == {}


def test_an_order_and_a_ticket_with_the_same_id_are_two_events(model: Model) -> None:
    order = Order("X1", "SAME", T0, 20.0, "card", "delivered")
    ticket = SupportTicket("X1", "SAME", T0 + timedelta(hours=1), "delivery")
    sink, store = RecordingSink(), MemoryStore()
    runner = make_runner(store, model, sink)
    logs = logs_of([(topics.ORDERS, order), (topics.SUPPORT_TICKETS, ticket)])
    runner.add(m for log in logs.values() for m in log)
    [outcome] = asyncio.run(runner.step(lambda topic, partition: False)).outcomes
    assert outcome.counts == {("orders", "applied"): 1, ("support-tickets", "applied"): 1}
    state = store.read(partition_of("SAME"), ["SAME"])["SAME"]
    assert set(ids_of(state)) == {"orders:X1", "support-tickets:X1"}


def count_inputs(outcome: PartitionOutcome, batch: Sequence[Decoded], durable_at: float) -> dict:
    """A tally of what each batch consumed and scored (the monitors keep such)."""
    amounts = {f"in:{d.message.topic}": 0.0 for d in batch}
    for d in batch:
        amounts[f"in:{d.message.topic}"] += 1
    amounts["scored"] = float(outcome.scored)
    amounts["changes"] = float(len(outcome.changes))
    return {"inputs": Tally(ttl=3600, amounts=amounts)}


def test_tallies_count_each_event_once_through_crashes_and_a_lost_commit_reply(
    model: Model, logs: Log, backend: Backend
) -> None:
    # Realised performance too: every score sampled, decided 30 days on, once.
    model = dataclasses.replace(model, metadata={**model.metadata, "horizon_days": 30})
    sources = [count_inputs, performance_tally]
    reference = MemoryStore()
    drive(
        make_runner(reference, model, RecordingSink(), tallies=sources, sample_rate=1.0),
        FakeKafka(logs, random.Random(3)),
    )
    expected = reference.tallies(range(4), "inputs")
    assert expected["in:orders"] == sum(len(v) for (t, _), v in logs.items() if t == "orders")
    decided = reference.tallies(range(4), TALLY)
    assert sum(f.samples for f in figures(decided)) > 500

    rng = random.Random(11)
    sink, store = RecordingSink(), backend.new()
    kafka = FakeKafka(logs, rng)
    commit = store.commit
    lost: list[int] = []

    def reply_lost_once(commits):  # type: ignore[no-untyped-def]
        verdicts = commit(commits)  # done in the store, but the worker never hears
        if not lost:
            lost.append(1)
            raise TransientError("connection reset after the commit")
        return verdicts

    crashes = 0
    while not kafka.done() or crashes < 2:
        runner = make_runner(store, model, sink, kafka, tallies=sources, sample_rate=1.0)
        resume(runner, kafka)
        store.commit = reply_lost_once  # type: ignore[method-assign]
        try:
            for _ in range(rng.randint(2, 6)):
                runner.add(kafka.fetch())
                asyncio.run(runner.step(kafka.behind))
            crashes += 1  # a new worker takes over, with what was not committed
        finally:
            store.commit = commit  # type: ignore[method-assign]
        if kafka.done() and not runner.buffered():
            break
    drive(runner, kafka)
    assert lost
    assert store.tallies(range(4), "inputs") == expected
    # Sums of probabilities, added in another order: equal but for rounding.
    assert store.tallies(range(4), TALLY) == pytest.approx(decided)


def test_a_step_reports_the_latency_of_each_message_with_a_broker_timestamp(
    model: Model,
) -> None:
    orders = [Order(f"O{n}", f"C{n}", T0, 20.0, "card", "delivered") for n in range(30)]
    runner = make_runner(MemoryStore(), model, RecordingSink())
    appended = time.time() - 5
    messages = [
        msgspec.structs.replace(m, timestamp=None if m.offset == 0 else appended)
        for log in logs_of([(topics.ORDERS, o) for o in orders]).values()
        for m in log
    ]
    runner.add(messages)
    report = asyncio.run(runner.step(lambda topic, partition: False))
    timestamped = [m for m in messages if m.timestamp is not None]
    assert len(report.latencies) == len(timestamped) < len(messages)
    assert all(5 <= latency < 60 for latency in report.latencies)
    # A first order: recency 0, the soft model's lowest risk.
    risks = [risk for o in report.outcomes if o.scores for risk in o.scores.risks]
    assert risks == ["LOW"] * len(orders)


def recording_begins(store: MemoryStore, asked: list[str]) -> MemoryStore:
    """`store`, noting in `asked` every customer whose state a begin reads."""
    begin = store.begin

    def recording(batches):  # type: ignore[no-untyped-def]
        asked.extend(c for b in batches for c in b.customers)
        return begin(batches)

    store.begin = recording  # type: ignore[method-assign]
    return store


def test_a_runner_reads_from_the_store_only_the_states_it_has_not_kept(
    model: Model, logs: Log
) -> None:
    asked: list[str] = []
    sink = RecordingSink()
    drive(
        make_runner(recording_begins(MemoryStore(), asked), model, sink),
        FakeKafka(logs, random.Random(8)),
    )
    customers = {m.key.decode() for log in logs.values() for m in log if m.key}
    # Each customer's state is read once, when first needed (absent then), and kept.
    assert sorted(asked) == sorted(customers)
    assert by_id(sink.changes) == by_id(replayed(model, logs).changes)
    # With room for a handful of states only, the rest are read again when needed.
    asked.clear()
    small = make_runner(recording_begins(MemoryStore(), asked), model, sink := RecordingSink())
    small.cache_size = 5
    drive(small, FakeKafka(logs, random.Random(8)))
    assert len(asked) > len(customers)
    assert sum(len(task.states) for task in small.tasks.values()) <= 5
    assert by_id(sink.changes) == by_id(replayed(model, logs).changes)


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_a_tally_kept_as_a_hash_before_it_was_a_map_still_counts(
    kind: str, request: pytest.FixtureRequest
) -> None:
    backend = Backend(kind, request)
    try:
        store = backend.new()
        assert isinstance(store, RedisStateStore)
        # As the store kept tallies until December 2026: a hash of counters.
        store.client.hset(store.keys.hash_tally(1, "daily:2026-12-01"), "events:orders", 3)
        claim = store.claim(1)
        tally = Tally(3600, {"events:orders": 2.0, "outcome:applied": 2.0})
        commit = Commit(
            1, claim.epoch, {}, {"orders": 0}, None, tallies={"daily:2026-12-01": tally}
        )
        assert store.commit([commit])[1][0] == "committed"
        assert store.tallies([0, 1], "daily:2026-12-01") == {
            "events:orders": 5.0,
            "outcome:applied": 2.0,
        }
    finally:
        backend.close()


def test_a_state_a_batch_only_read_is_left_exactly_as_it_was(model: Model, logs: Log) -> None:
    # What the runner does not write again (not in `changed`) must be unchanged, to
    # the byte: a rescore that left the category where it was, a sample decided.
    model = dataclasses.replace(model, metadata={**model.metadata, "horizon_days": 30})
    runner = make_runner(MemoryStore(), model, RecordingSink(), sample_rate=0.5)
    process = runner.scorer.process
    unchanged = 0

    def checked(partition, released, states, *rest):  # type: ignore[no-untyped-def]
        nonlocal unchanged
        before = {c: encode_state(s) for c, s in states.items()}
        outcome = process(partition, released, states, *rest)
        for customer, state in outcome.states.items():
            if customer not in outcome.changed and customer in before:
                assert encode_state(state) == before[customer], customer
                unchanged += 1
        return outcome

    runner.scorer.process = checked  # type: ignore[method-assign]
    drive(runner, FakeKafka(logs, random.Random(12), chunk=8))
    assert unchanged > 100


@dataclass
class FencedOnce(RecordingSink):
    """A sink whose next transaction of `partition` is fenced, as when a worker whose
    claim the store already refuses initialised its producer after ours."""

    partition: int = 0
    fences: int = 1

    async def publish(self, batches: Sequence[Outputs]) -> Collection[int]:
        if self.fences and any(b.partition == self.partition for b in batches):
            self.fences -= 1
            kept = [b for b in batches if b.partition != self.partition]
            await super().publish(kept)
            return {self.partition}
        return await super().publish(batches)


def test_the_owner_whose_producer_a_stale_claim_fenced_takes_the_partition_again(
    model: Model, logs: Log, caplog: pytest.LogCaptureFixture
) -> None:
    expected = replayed(model, logs)
    store, sink = MemoryStore(), FencedOnce()
    stale = make_runner(store, model, RecordingSink())  # claims crossed: this one lost
    kafka = FakeKafka(logs, random.Random(12))
    owner = make_runner(store, model, sink, kafka)
    drive(owner, kafka)
    assert sink.fences == 0 and not owner.fenced, "the owner gave the partition up"
    assert "partition 0: its producer was fenced by a stale claim" in caplog.text
    assert by_id(sink.changes) == by_id(expected.changes)
    assert stale.tasks[0].claim.epoch < store.epoch(0)  # its next begin is refused
