"""Driving the batch runner without services: histories as per-topic-partition message
logs, a sink that records what was published, and a fake Kafka's delivery plans."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiokafka.partitioner import DefaultPartitioner

from feature_store.store import MemoryStore, StateStore
from schemas import ChurnRiskChanged, DeadLetter, topics
from scoring.merge import InputMessage
from scoring.model import Model
from scoring.pipeline import Scorer
from scoring.runner import BatchRunner, Collector, StepReport, TallySource

PARTITIONS = 4
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def partition_of(key: str, partitions: int = PARTITIONS) -> int:
    every = list(range(partitions))
    return int(DefaultPartitioner()(key.encode(), every, every))


Log = dict[tuple[str, int], list[InputMessage]]


def logs_of(events: Sequence[tuple[str, Any]], partitions: int = PARTITIONS) -> Log:
    """Each topic-partition's messages, as a producer sending `events` in order makes them."""
    logs: Log = {}
    for topic, event in events:
        partition = partition_of(event.customer_id, partitions)
        log = logs.setdefault((topic, partition), [])
        value = msgspec.json.encode(event)
        log.append(InputMessage(topic, partition, len(log), event.customer_id.encode(), value))
    return logs


class TransientError(Exception):
    pass


@dataclass
class RecordingSink(Collector):
    """Publishes into lists; can be told to fail the next publishes."""

    changes: list[ChurnRiskChanged] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    fail: int = 0

    def collect(
        self, changes: Sequence[ChurnRiskChanged], dead_letters: Sequence[DeadLetter]
    ) -> None:
        if self.fail:
            self.fail -= 1
            raise TransientError("publish failed")
        self.changes.extend(changes)
        self.dead_letters.extend(dead_letters)


def comparable(change: ChurnRiskChanged) -> bytes:
    """A change's content: everything but `scored_at`, the wall clock of scoring."""
    return msgspec.json.encode(msgspec.structs.replace(change, scored_at=_EPOCH))


def by_id(changes: Sequence[ChurnRiskChanged]) -> dict[str, bytes]:
    """Each id's content; fails if one id was published with two contents."""
    seen: dict[str, bytes] = {}
    for change in changes:
        content = comparable(change)
        assert seen.setdefault(change.event_id, content) == content, (
            f"{change.event_id} published with two contents"
        )
    return seen


class FakeKafka:
    """Delivers each topic-partition's log in chunks, from a resume offset, the way
    fetches interleave partitions: `behind` tells the runner what is still unread."""

    def __init__(self, logs: Log, rng: random.Random, chunk: int = 40) -> None:
        self.logs = logs
        self.rng = rng
        self.chunk = chunk
        self.position = dict.fromkeys(logs, 0)

    def seek(self, offsets: dict[tuple[str, int], int]) -> None:
        for tp, offset in offsets.items():
            if tp in self.position:
                self.position[tp] = offset

    def behind(self, topic: str, partition: int) -> bool:
        tp = (topic, partition)
        return tp in self.logs and self.position[tp] < len(self.logs[tp])

    def fetch(self) -> list[InputMessage]:
        pending = [tp for tp in self.logs if self.behind(*tp)]
        batch: list[InputMessage] = []
        for tp in self.rng.sample(pending, k=min(len(pending), self.rng.randint(1, 3))):
            size = self.rng.randint(1, self.chunk)
            start = self.position[tp]
            batch += self.logs[tp][start : start + size]
            self.position[tp] = min(start + size, len(self.logs[tp]))
        return batch

    def done(self) -> bool:
        return not any(self.behind(*tp) for tp in self.logs)

    async def reread(self, topic: str, partition: int, start: int, end: int) -> list[InputMessage]:
        return self.logs[(topic, partition)][start : end + 1]


def make_runner(
    store: StateStore,
    model: Model,
    sink: RecordingSink,
    kafka: FakeKafka | None = None,
    idle: float = 0.0,
    tallies: Sequence[TallySource] = (),
    sample_rate: float = 0.0,
) -> BatchRunner:
    runner = BatchRunner(
        store,
        Scorer(lambda: model, sample_rate=sample_rate),
        sink,
        topics.SOURCE_TOPICS,
        idle=idle,
        transient=(TransientError,),
        reread=None if kafka is None else kafka.reread,
        tallies=tallies,
        announced=(topics.TICKS,),
    )
    for partition in range(PARTITIONS):
        runner.assign(partition)
    return runner


def resume(runner: BatchRunner, kafka: FakeKafka) -> None:
    """Where a new owner resumes: after each partition's recorded offsets."""
    kafka.seek(
        {
            (topic, p): task.offsets.get(topic, -1) + 1
            for p, task in runner.tasks.items()
            for topic in topics.SOURCE_TOPICS
        }
    )


def drive(
    runner: BatchRunner,
    kafka: FakeKafka,
    steps: int | None = None,
    on_step: list[int] | None = None,
) -> list[StepReport]:
    """Fetch and step until Kafka has nothing unread and nothing is buffered (or for
    `steps` steps); `on_step[0]` counts the steps made, as they are made."""
    reports = []

    async def loop() -> None:
        count = 0
        while not kafka.done() or runner.buffered():
            runner.add(kafka.fetch())
            reports.append(await runner.step(kafka.behind))
            count += 1
            if on_step is not None:
                on_step[0] = count
            if steps is not None and count >= steps:
                return

    asyncio.run(loop())
    return reports


def replayed(model: Model, logs: Log) -> RecordingSink:
    """Everything at once, in one step: the reference answer."""
    sink = RecordingSink()
    runner = make_runner(MemoryStore(), model, sink)
    runner.add(m for log in logs.values() for m in log)
    asyncio.run(runner.step(lambda topic, partition: False))
    assert not runner.buffered()
    return sink


class LogSource:
    """The `scoring.source.Source` port over in-memory logs, fetched in random chunks
    (as `FakeKafka`), that records what the processor asked of it."""

    def __init__(
        self, logs: Log, rng: random.Random, chunk: int = 40, until: dict | None = None
    ) -> None:
        self.logs = logs
        self.rng = rng
        self.chunk = chunk
        self.position = dict.fromkeys(logs, 0)  # the next offset to fetch
        # Where fetching stops (the consumer stops there), per topic-partition.
        self.until = until or {tp: len(log) for tp, log in logs.items()}
        self.assigned = {p for _, p in logs}
        self.paused: set[tuple[str, int]] = set()
        self.pauses = 0
        self.acknowledged: dict[tuple[str, int], int] = {}

    def fetch(self) -> list[InputMessage]:
        pending = [
            tp
            for tp in self.logs
            if tp[1] in self.assigned
            and tp not in self.paused
            and self.position[tp] < self.until[tp]
        ]
        batch: list[InputMessage] = []
        for tp in self.rng.sample(pending, k=min(len(pending), self.rng.randint(1, 3))):
            start = self.position[tp]
            end = min(start + self.rng.randint(1, self.chunk), self.until[tp])
            chunk = self.logs[tp][start:end]
            self.position[tp] = start + len(chunk)
            batch += chunk
        return batch

    def done(self) -> bool:
        return all(self.position[tp] >= self.until[tp] for tp in self.logs)

    def unread(self, topic: str, partition: int, after: int) -> bool:
        return after + 1 < len(self.logs.get((topic, partition), []))

    def owns(self, partition: int) -> bool:
        return partition in self.assigned

    def pause(self, topic: str, partition: int) -> None:
        self.paused.add((topic, partition))
        self.pauses += 1

    def resume(self, topic: str, partition: int) -> None:
        self.paused.discard((topic, partition))

    def acknowledge(self, topic: str, partition: int, through: int) -> None:
        # As a Kafka group: an acknowledgement below what it committed changes nothing.
        previous = self.acknowledged.get((topic, partition), -1)
        self.acknowledged[(topic, partition)] = max(previous, through)

    async def committed(self, partition: int) -> dict[str, int]:
        return {t: o + 1 for (t, p), o in self.acknowledged.items() if p == partition}

    async def read(self, topic: str, partition: int, start: int, end: int) -> list[InputMessage]:
        return self.logs[(topic, partition)][start : end + 1]

    async def bounds(self, partition: int) -> dict[str, tuple[int, int]]:
        return {t: (0, len(log)) for (t, p), log in self.logs.items() if p == partition}
