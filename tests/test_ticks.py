"""Ticks (`scoring.ticks`, `schemas.Tick`): which quiet partitions are ticked, and to
what time; a tick in the log moves its partition's stream time on, so the silent
customers there are rescored, the same when read in chunks as when replayed; a tick
is bounded in time as an event is."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import msgspec
import pytest
from confluent_kafka import KafkaException

from feature_store.store import MemoryStore
from schemas import Order, Tick, topics
from scoring import ticks
from scoring.artifact import load_model
from scoring.decoding import InputDecoder
from scoring.merge import InputMessage
from scoring.model import Model
from scoring.runner import BatchRunner
from stream_app.jobs import Ticker
from tests.core import FakeKafka, Log, RecordingSink, by_id, drive, logs_of, make_runner
from tests.core import partition_of as partition_of_key
from tests.support import train_soft_model

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = 3600.0


def test_a_quiet_partition_far_behind_the_group_is_ticked_to_the_groups_latest_time() -> None:
    owned = {0: 100.0, 1: 100.0, 2: 88_000.0, 3: None}
    before = {0: 100.0, 1: 90.0, 2: 88_000.0, 3: None}
    group = {**owned, 4: 90_000.0}  # partition 4 is another worker's
    # 1 moved since the last round, 2 is within the gap, 3 never had an event.
    assert ticks.due(owned, before, [0, 1, 2, 3], group, gap=HOUR) == {0: 90_000.0}
    # A partition with input left to process is not quiet, whatever its time says.
    assert ticks.due(owned, before, [1, 2, 3], group, gap=HOUR) == {}
    assert ticks.due({0: None}, {0: None}, [0], {0: None}, gap=HOUR) == {}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return load_model(train_soft_model(tmp_path_factory.mktemp("m"), "recency_days", 5, 55, "t"))


def tick(partition: int, offset: int, at: datetime) -> InputMessage:
    value = msgspec.json.encode(Tick(at))
    return InputMessage(topics.TICKS, partition, offset, None, value)


def shop(with_tick: bool) -> tuple[Log, str]:
    """One customer orders on three days and falls silent; another, on another
    partition, keeps ordering for 90 days. With a tick, the first's partition is
    moved to day 90 (as the worker would, its partition being quiet)."""
    silent = next(f"c-{n}" for n in range(99) if partition_of_key(f"c-{n}") == 0)
    busy = next(f"c-{n}" for n in range(99) if partition_of_key(f"c-{n}") != 0)

    def order(customer: str, day: int) -> tuple[str, Order]:
        at = T0 + timedelta(days=day)
        return topics.ORDERS, Order(f"{customer}-{day}", customer, at, 30.0, "card", "delivered")

    events = [order(silent, day) for day in range(3)] + [order(busy, d) for d in range(0, 90, 3)]
    logs = logs_of(events)
    if with_tick:
        logs[(topics.TICKS, 0)] = [tick(0, 0, T0 + timedelta(days=90))]
    return logs, silent


def changes_of(model: Model, logs: Log) -> RecordingSink:
    sink = RecordingSink()
    runner = make_runner(MemoryStore(), model, sink)
    drive(runner, FakeKafka(logs, random.Random(5), chunk=3))
    return sink


def test_a_tick_rescores_the_silent_customers_of_its_partition_the_same_as_a_replay(
    model: Model,
) -> None:
    logs, silent = shop(with_tick=False)
    untouched = changes_of(model, logs)
    assert not [
        c for c in untouched.changes if c.customer_id == silent and c.trigger.kind == "inactivity"
    ]

    logs, silent = shop(with_tick=True)
    ticked = changes_of(model, logs)
    lapsed = [
        c for c in ticked.changes if c.customer_id == silent and c.trigger.kind == "inactivity"
    ]
    assert lapsed and lapsed[-1].risk == "HIGH"
    assert lapsed[-1].event_time <= T0 + timedelta(days=90)
    assert not ticked.dead_letters
    replay = RecordingSink()
    runner = make_runner(MemoryStore(), model, replay)
    runner.add(m for log in logs.values() for m in log)
    drive(runner, FakeKafka({}, random.Random(0)))
    assert by_id(ticked.changes) == by_id(replay.changes)


def test_a_tick_ahead_of_its_broker_time_or_not_a_tick_is_refused() -> None:
    decoder = InputDecoder()
    sent = (T0 + timedelta(days=1)).timestamp()
    ahead = InputMessage(
        topics.TICKS, 0, 0, None, msgspec.json.encode(Tick(T0 + timedelta(days=2))), sent
    )
    assert decoder(ahead).category == "beyond_skew"
    garbage = InputMessage(topics.TICKS, 0, 1, None, b'{"stream_time": "soon"}', sent)
    assert decoder(garbage).reason is not None
    fine = InputMessage(topics.TICKS, 0, 2, None, msgspec.json.encode(Tick(T0)), sent)
    assert decoder(fine).time == T0.timestamp()


class TickWriter:
    """The publisher's send_ticks, seen from the Ticker: writes each tick at offset 7,
    noting what the partition's merge expected while it did (or fails)."""

    def __init__(self, runner: BatchRunner, fail: bool = False) -> None:
        self.runner, self.fail = runner, fail
        self.expected_while_writing: dict[int, float] = {}

    async def send_ticks(self, due: Mapping[int, float]) -> dict[int, int]:
        for partition in due:
            merger = self.runner.tasks[partition].merger
            self.expected_while_writing[partition] = merger.expected[topics.TICKS]
        if self.fail:
            raise KafkaException("broker down")
        return {partition: 7 for partition in due}


@pytest.mark.parametrize("fail", [False, True])
def test_a_tick_is_announced_to_its_partitions_merge_while_it_is_written(
    model: Model, fail: bool
) -> None:
    runner = make_runner(MemoryStore(), model, RecordingSink())
    writer = TickWriter(runner, fail)
    ticker = Ticker(runner, cast(Any, None), cast(Any, None), cast(Any, writer), 4, 3600)
    if fail:
        with pytest.raises(KafkaException):
            asyncio.run(ticker._send({0: 90_000.0}))
    else:
        asyncio.run(ticker._send({0: 90_000.0}))
    # Written: an event arriving now waits for the tick at its offset; failed: for nothing.
    assert writer.expected_while_writing == {0: math.inf}
    assert runner.tasks[0].merger.expected[topics.TICKS] == (-1 if fail else 7)
    assert topics.TICKS not in runner.tasks[1].merger.expected
