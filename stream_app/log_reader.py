"""Reads input straight from the Kafka log, by offset, beside Faust's consumer.

Faust's consumer resumes where the group committed. The worker commits there only
what the state store has committed, so the two agree, unless the store lost writes
(Redis restarted from an AOF short of its last second): then the input behind those
writes is read again from here, from the offsets the store still holds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from scoring.merge import InputMessage

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL_SECONDS = 1.0
READ_TIMEOUT_SECONDS = 120.0
# What a broker answers while the group's coordinator moves or reloads (after a broker
# stalled or restarted): the request succeeds once it is back. librdkafka does not flag
# all of them retriable on `committed`.
TRANSIENT = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
    }
)


def retrying(call: Callable[[], T], what: str, timeout: float = READ_TIMEOUT_SECONDS) -> T:
    """`call()`, again after a transient Kafka error, with backoff, for up to `timeout`
    seconds; then (or on any other error) the error propagates."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            return call()
        except KafkaException as err:
            error = err.args[0]
            transient = isinstance(error, KafkaError) and (
                error.retriable() or error.code() in TRANSIENT
            )
            if not transient or time.monotonic() + delay > deadline:
                raise
            log.warning("%s: %s; retrying in %.1fs", what, error, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class LogReader:
    def __init__(self, config: dict[str, object], group_id: str, prefix: str = "") -> None:
        # Never subscribes, so it never joins the group: it only reads the group's
        # committed offsets and assigns itself partitions to read.
        self.consumer = Consumer(
            {
                **config,
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                # A claim or a recovery waits on each read: don't let fetches idle.
                "fetch.wait.max.ms": 10,
            }
        )
        self.prefix = prefix
        self.lock = threading.Lock()

    def committed(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The group's committed offset (the next one to read) per topic-partition."""
        wanted = [TopicPartition(self.prefix + t, p) for t, p in partitions]
        with self.lock:
            found = retrying(
                lambda: self.consumer.committed(wanted, timeout=30), "reading committed offsets"
            )
        return {
            (tp.topic.removeprefix(self.prefix), tp.partition): tp.offset
            for tp in found
            if tp.offset >= 0
        }

    def lag(
        self, partitions: Iterable[tuple[str, int]], timeout: float
    ) -> dict[tuple[str, int], int]:
        """Messages past the group's committed offset per topic-partition (past the
        log's start where the group has committed nothing), asked of the brokers."""
        wanted = [TopicPartition(self.prefix + t, p) for t, p in partitions]
        with self.lock:
            committed = self.consumer.committed(wanted, timeout=timeout)
            lag = {}
            for tp in committed:
                low, high = self.consumer.get_watermark_offsets(tp, timeout=timeout)
                start = tp.offset if tp.offset >= 0 else low
                lag[(tp.topic.removeprefix(self.prefix), tp.partition)] = max(0, high - start)
        return lag

    def bounds(
        self, partitions: Iterable[tuple[str, int]], timeout: float = 30.0
    ) -> dict[tuple[str, int], tuple[int, int]]:
        """Each topic-partition's log start and end offsets, asked of the brokers."""

        def ends(topic: str, partition: int) -> tuple[int, int]:
            tp = TopicPartition(self.prefix + topic, partition)
            return retrying(
                lambda: self.consumer.get_watermark_offsets(tp, timeout=timeout, cached=False),
                "reading the log's bounds",
            )

        with self.lock:
            return {(t, p): ends(t, p) for t, p in partitions}

    def read(self, topic: str, partition: int, start: int, end: int) -> list[InputMessage]:
        """The messages of offsets start..end (inclusive) that still exist."""
        out: list[InputMessage] = []
        with self.lock:
            self.consumer.assign([TopicPartition(self.prefix + topic, partition, start)])
            try:
                waited = 0.0
                while True:
                    message = self.consumer.poll(POLL_SECONDS)
                    if message is None:
                        waited += POLL_SECONDS
                        if waited > READ_TIMEOUT_SECONDS:
                            raise TimeoutError(f"{topic}-{partition}: nothing after {start}")
                        continue
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            return out
                        raise RuntimeError(f"reading {topic}-{partition}: {error}")
                    offset = message.offset() or 0
                    if offset > end:
                        return out
                    kind, millis = message.timestamp()
                    out.append(
                        InputMessage(
                            topic,
                            partition,
                            offset,
                            message.key(),
                            message.value(),
                            None if kind == TIMESTAMP_NOT_AVAILABLE else millis / 1000,
                        )
                    )
                    if offset == end:
                        return out
            finally:
                self.consumer.unassign()

    async def reread(self, topic: str, partition: int, start: int, end: int) -> list[InputMessage]:
        return await asyncio.get_running_loop().run_in_executor(
            None, self.read, topic, partition, start, end
        )

    def close(self) -> None:
        self.consumer.close()


class LogBacked:
    """The `scoring.source.Source` methods every engine answers from the log itself,
    through a `LogReader`, beside its own consumer."""

    reader: LogReader
    qualified: Mapping[str, str]  # logical topic name -> the prefixed one

    async def committed(self, partition: int) -> Mapping[str, int]:
        wanted = [(topic, partition) for topic in self.qualified]
        found = await asyncio.to_thread(self.reader.committed, wanted)
        return {topic: offset for (topic, _), offset in found.items()}

    async def read(self, topic: str, partition: int, start: int, end: int) -> list[InputMessage]:
        return await self.reader.reread(topic, partition, start, end)

    async def bounds(self, partition: int) -> Mapping[str, tuple[int, int]]:
        wanted = [(topic, partition) for topic in self.qualified]
        found = await asyncio.to_thread(self.reader.bounds, wanted)
        return {topic: offsets for (topic, _), offsets in found.items()}
