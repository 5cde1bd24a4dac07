"""Feeds an engine's messages to the batch runner and acknowledges what it committed.

The engine (Faust in the worker) calls `deliver` with each batch it fetched,
`assigned` and `revoked` when the group moves partitions, and `release` on a timer;
the processor calls the engine back through the `scoring.source.Source` port. It
owns what is the same whatever the engine:

* one step at a time (a delivery's, or the timer's for messages held back);
* claiming a partition before its first message is buffered (the engine may deliver
  it before the group's rebalance signal arrives), and reading again from the log
  what lies between the offsets the state records and what the consumer was given;
* acknowledging to the engine only what the state store has committed, so the
  group's committed offsets never pass the store's;
* bounding what waits in the merge: a topic-partition with more than `buffer_limit`
  messages buffered is paused until half of them are processed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from scoring.batches import PartitionStopped
from scoring.merge import InputMessage
from scoring.runner import BatchRunner, StepReport
from scoring.source import Source

log = logging.getLogger(__name__)

# Messages one topic-partition may have waiting in the merge before it is paused:
# as Kafka Streams' buffered.records.per.partition (1000), a little more, as a
# backlog's topics run ahead of each other by thousands of messages.
BUFFER_LIMIT = 5_000


class Observer(Protocol):
    """What the processor reports, for metrics (the worker's are Prometheus')."""

    def took(self, messages: int, redelivered: Mapping[str, int]) -> None: ...

    def stepped(self, report: StepReport, seconds: float, runner: BatchRunner) -> None: ...

    def owned(self, partitions: Collection[int]) -> None: ...

    def reread(self, topic: str, partition: int, start: int, end: int) -> None: ...


class Unobserved:
    def took(self, messages: int, redelivered: Mapping[str, int]) -> None:
        pass

    def stepped(self, report: StepReport, seconds: float, runner: BatchRunner) -> None:
        pass

    def owned(self, partitions: Collection[int]) -> None:
        pass

    def reread(self, topic: str, partition: int, start: int, end: int) -> None:
        pass


class StreamProcessor:
    def __init__(
        self,
        runner: BatchRunner,
        source: Source,
        observer: Observer | None = None,
        buffer_limit: int = BUFFER_LIMIT,
    ) -> None:
        self.runner = runner
        self.source = source
        self.observer = observer or Unobserved()
        self.buffer_limit = buffer_limit
        # The highest offset delivered per (topic, partition): a partition claimed
        # again without a rebalance is not delivered again by the engine.
        self.delivered: dict[tuple[str, int], int] = {}
        self.paused: set[tuple[str, int]] = set()
        self.lock = asyncio.Lock()

    # --- what the engine calls ------------------------------------------------------

    async def deliver(self, messages: Sequence[InputMessage]) -> StepReport:
        """Buffer a fetched batch and process what can be released."""
        async with self.lock:
            await self._take_in(messages)
            return await self._step()

    async def release(self) -> None:
        """Process what waited for the idle time to pass, if no step is under way."""
        if self.runner.buffered() and not self.lock.locked():
            async with self.lock:
                await self._step()

    async def assigned(self, partitions: Collection[int]) -> None:
        """The group's new assignment: give up what is gone, claim what is new (under
        the lock: no step may buffer into a task about to be replaced)."""
        async with self.lock:
            for partition in set(self.runner.partitions) - set(partitions):
                self._revoke(partition)
            # At once: a claim waits on the store and on Kafka (its producer fenced,
            # its batch log read), each partition's on its own.
            new = sorted(set(partitions) - set(self.runner.partitions))
            await asyncio.gather(*(self._claim(partition) for partition in new))

    def revoked(self, partitions: Collection[int]) -> None:
        for partition in partitions:
            self._revoke(partition)

    def behind(self, topic: str, partition: int) -> bool:
        """That topic-partition has messages unread (unknown counts as behind:
        holding back only delays, releasing too early could change the order)."""
        if not self.runner.owns(partition):
            return True
        return self.source.unread(topic, partition, self.runner.position(topic, partition))

    # --- inside ----------------------------------------------------------------------

    async def _take_in(self, messages: Sequence[InputMessage]) -> None:
        delivered = self.delivered
        for message in messages:
            key = (message.topic, message.partition)
            if message.offset > delivered.get(key, -1):
                delivered[key] = message.offset
        for partition in sorted({m.partition for m in messages}):
            if (
                not self.runner.owns(partition)
                and partition not in self.runner.fenced
                and partition not in self.runner.stopped
                and self.source.owns(partition)
            ):
                await self._claim(partition)  # before the rebalance signal got to it
        self.observer.took(len(messages), self.runner.add(messages))

    async def _step(self) -> StepReport:
        started = time.perf_counter()
        report = await self.runner.step(self.behind)
        for partition in report.stopped:
            self._stop(partition)
        self._acknowledge()
        self._bound()
        self.observer.stepped(report, time.perf_counter() - started, self.runner)
        return report

    def _acknowledge(self) -> None:
        for partition in self.runner.partitions:
            for topic in self.runner.topics:
                committed = self.runner.committed(topic, partition)
                if committed >= 0:
                    self.source.acknowledge(topic, partition, committed)

    def _bound(self) -> None:
        for partition in self.runner.partitions:
            for topic in self.runner.topics:
                key = (topic, partition)
                waiting = self.runner.buffered_in(topic, partition)
                if key not in self.paused and waiting > self.buffer_limit:
                    self.source.pause(topic, partition)
                    self.paused.add(key)
                elif key in self.paused and waiting <= self.buffer_limit // 2:
                    self.source.resume(topic, partition)
                    self.paused.discard(key)

    async def _claim(self, partition: int) -> None:
        """Take a partition over; resume it from the offsets its state records,
        reading again from the log what lies between them and what the group
        committed or this consumer was already given."""
        try:
            bounds = await self.source.bounds(partition)
            claim = await self.runner.take(partition, bounds)
        except PartitionStopped as stop:
            log.error("%s", stop)
            self._stop(partition)
            return
        committed = await self.source.committed(partition)
        for topic in self.runner.topics:
            start = claim.offsets.get(topic, -1) + 1
            end = max(committed.get(topic, 0) - 1, self.delivered.get((topic, partition), -1))
            if end >= start:
                log.warning(
                    "%s-%d: reading offsets %d..%d again (the state holds up to %d)",
                    topic,
                    partition,
                    start,
                    end,
                    start - 1,
                )
                self.observer.reread(topic, partition, start, end)
                self.runner.add(await self.source.read(topic, partition, start, end))
        log.info("claimed partition %d (epoch %d)", partition, claim.epoch)
        self.observer.owned(self.runner.partitions)

    def _stop(self, partition: int) -> None:
        """Leave a stopped partition alone: paused at the source until it is revoked."""
        for topic in self.runner.topics:
            if (topic, partition) not in self.paused:
                self.source.pause(topic, partition)
                self.paused.add((topic, partition))
        self.observer.owned(self.runner.partitions)

    def _revoke(self, partition: int) -> None:
        self.runner.revoke(partition)
        for topic in self.runner.topics:
            if (topic, partition) in self.paused:
                self.source.resume(topic, partition)  # the engine's flow is its own again
                self.paused.discard((topic, partition))
        self.observer.owned(self.runner.partitions)
