"""Reads input straight from the Kafka log, by offset, beside Faust's consumer.

Faust's consumer resumes where the group committed. The worker commits there only
what the state store has committed, so the two agree, unless the store lost writes
(Redis restarted from an AOF short of its last second): then the input behind those
writes is read again from here, from the offsets the store still holds.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, TopicPartition

from scoring.merge import InputMessage

POLL_SECONDS = 1.0
READ_TIMEOUT_SECONDS = 120.0


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
            found = self.consumer.committed(wanted, timeout=30)
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
        with self.lock:
            return {
                (t, p): self.consumer.get_watermark_offsets(
                    TopicPartition(self.prefix + t, p), timeout=timeout, cached=False
                )
                for t, p in partitions
            }

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
