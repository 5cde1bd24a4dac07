"""The stream processor between an engine and the batch runner (`scoring.processor`),
over the Source port implemented on in-memory logs: what it acknowledges, what it
pauses, and what it reads again when it claims a partition."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest

from feature_store.store import MemoryStore
from schemas import ChurnRiskChanged, Customer, Order, topics
from scoring.artifact import load_model
from scoring.batches import PartitionStopped, check_within
from scoring.model import Model
from scoring.processor import StreamProcessor
from simulator.history import generate_history
from tests.core import Log, LogSource, RecordingSink, by_id, logs_of, make_runner, replayed
from tests.support import train_soft_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    models = tmp_path_factory.mktemp("models")
    return load_model(train_soft_model(models, "recency_days", 5, 55, "soft-recency"))


@pytest.fixture(scope="module")
def logs() -> Log:
    return logs_of(list(generate_history(150, seed=5, days=200).events_in_time_order()))


def run(processor: StreamProcessor, source: LogSource) -> int:
    """Fetch and deliver until the source has nothing more to give and nothing more
    can be released; returns the largest number of messages one topic-partition had
    waiting."""
    most = 0

    async def loop() -> None:
        nonlocal most
        await processor.assigned(sorted(source.assigned))
        while True:
            report = await processor.deliver(source.fetch())
            if source.done() and not report.outcomes:
                return
            for partition in processor.runner.partitions:
                for topic in topics.INPUT_TOPICS:
                    most = max(most, processor.runner.buffered_in(topic, partition))

    asyncio.run(loop())
    return most


def new_processor(
    model: Model, store: MemoryStore, sink: RecordingSink, **kw: int
) -> StreamProcessor:
    runner = make_runner(store, model, sink)
    for partition in list(runner.partitions):
        runner.revoke(partition)  # the processor claims what the group assigns
    return StreamProcessor(runner, kw.pop("source"), **kw)  # type: ignore[arg-type]


def test_what_is_acknowledged_never_passes_what_the_store_committed(
    model: Model, logs: Log
) -> None:
    store, sink = MemoryStore(), RecordingSink()
    source = LogSource(logs, random.Random(3))
    processor = new_processor(model, store, sink, source=source)
    original = source.acknowledge

    def checked(topic: str, partition: int, through: int) -> None:
        assert through <= store.partitions[partition].offsets.get(topic, -1)
        original(topic, partition, through)

    source.acknowledge = checked  # type: ignore[method-assign]
    run(processor, source)
    assert by_id(sink.changes) == by_id(replayed(model, logs).changes)
    assert source.acknowledged == {tp: len(log) - 1 for tp, log in logs.items()}


def test_a_topic_partition_that_runs_ahead_is_paused_until_half_of_it_is_processed(
    model: Model,
) -> None:
    # A year of profiles upfront, then each customer's orders: the customers topic
    # runs far ahead of the orders in event time, and would wait in the merge.
    start = datetime(2026, 1, 1, tzinfo=UTC)
    customers = [f"C{i:03d}" for i in range(400)]
    profiles = [(topics.CUSTOMERS, Customer(c, start, updated_at=start)) for c in customers]
    orders = [
        (
            topics.ORDERS,
            Order(
                f"O{i}",
                c,
                datetime.fromtimestamp(start.timestamp() + i * 600, UTC),
                10.0,
                "card",
                "delivered",
            ),
        )
        for i, c in enumerate(customers * 3)
    ]
    logs = logs_of(profiles + orders)
    store, sink = MemoryStore(), RecordingSink()
    source = LogSource(logs, random.Random(4), chunk=60)
    processor = new_processor(model, store, sink, source=source, buffer_limit=30)
    most = run(processor, source)
    assert source.pauses > 0
    assert most <= 30 + 60  # the limit, and at most one fetch beyond it
    assert by_id(sink.changes) == by_id(replayed(model, logs).changes)


def test_a_claim_reads_again_what_the_group_committed_past_the_state(
    model: Model, logs: Log
) -> None:
    # The store lost its last writes (a restart from an older copy): the group's
    # committed offsets are past what the state records, so the new owner reads the
    # difference again from the log, and publishes what is missing, under the same ids.
    store, sink = MemoryStore(), RecordingSink()
    first = LogSource(logs, random.Random(5), until={tp: len(log) // 2 for tp, log in logs.items()})
    processor = new_processor(model, store, sink, source=first)
    run(processor, first)
    older = MemoryStore()
    older.partitions = {p: kept for p, kept in store.partitions.items() if p % 2 == 0}

    resumed = LogSource(logs, random.Random(6))
    resumed.acknowledged = dict(first.acknowledged)
    resumed.position = {tp: first.acknowledged.get(tp, -1) + 1 for tp in logs}  # the group's
    again = RecordingSink()
    run(new_processor(model, older, again, source=resumed), resumed)

    everything: list[ChurnRiskChanged] = sink.changes + again.changes
    assert by_id(everything) == by_id(replayed(model, logs).changes)


def test_a_claim_past_the_end_of_a_recreated_input_log_is_refused_and_the_partition_left_alone(
    model: Model, logs: Log
) -> None:
    store, first = MemoryStore(), LogSource(logs, random.Random(5))
    run(new_processor(model, store, RecordingSink(), source=first), first)
    # orders-1 is recreated: its log now holds 3 messages, the store is past them.
    recreated = {tp: log[:3] if tp == (topics.ORDERS, 1) else log for tp, log in logs.items()}
    source = LogSource(recreated, random.Random(6))
    processor = new_processor(model, store, RecordingSink(), source=source)
    asyncio.run(processor.assigned(sorted(source.assigned)))
    assert 1 not in processor.runner.partitions
    assert "orders-1 through offset" in processor.runner.stopped[1]
    assert "its log ends at 2: the topic was recreated" in processor.runner.stopped[1]
    assert {(t, 1) for t in topics.INPUT_TOPICS} <= source.paused  # left alone
    assert {0, 2, 3} <= set(processor.runner.partitions)


def test_offsets_must_lie_within_the_input_logs() -> None:
    check_within(0, {"orders": 9}, {"orders": (0, 10)})
    check_within(0, {}, {"orders": (5, 10)})  # never processed: from the log's start
    with pytest.raises(PartitionStopped, match="log ends at 2: the topic was recreated"):
        check_within(0, {"orders": 9}, {"orders": (0, 3)})
    with pytest.raises(PartitionStopped, match=r"offsets 5\.\.6 were deleted"):
        check_within(0, {"orders": 4}, {"orders": (7, 20)})
