"""The confluent-kafka engine's source: the input topics through one plain librdkafka
consumer, as `scoring.source.Source`.

Faust costs about 60 us of CPU per message before any work is done; librdkafka hands
over a whole batch for about 1 us a message. The consumer joins the same group as the
Faust engine would (the group id is the app id, so committed offsets carry over when
a deployment switches engines; the two cannot share a group at once, as their
assignors differ and the broker refuses the second).

* **Assignment.** The `range` assignor gives each member the same partition numbers of
  every co-partitioned input topic (equal partition counts, members sorted the same
  way for each topic), so a partition's orders, tickets, profiles and ticks stay on
  one worker, as the runner needs.
* **Rebalances.** librdkafka calls `on_assign` and `on_revoke` from inside `consume`,
  on the thread that consumes; each hands the change to the event loop and waits for
  it, so a partition is claimed before its first message is handed over and given up
  before another member may take it.
* **Acknowledging.** Offsets are stored (`store_offsets`) only once the processor says
  the state store has committed them; librdkafka commits what is stored every
  `auto.commit.interval.ms` and on a revoke or close. So the group's committed offsets
  never pass the store's, as with Faust.
* **Pausing.** `pause` stops fetching a topic-partition; what librdkafka had fetched
  for it is fetched again from the consumer's position on `resume`, so nothing is
  skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, TopicPartition

from schemas import topics
from scoring.merge import InputMessage
from stream_app.log_reader import LogBacked, LogReader

log = logging.getLogger(__name__)

# librdkafka commits the stored offsets this often (and on a revoke or close).
COMMIT_INTERVAL_MS = 2_000


class ConfluentSource(LogBacked):
    def __init__(
        self,
        config: Mapping[str, Any],
        group_id: str,
        prefix: str,
        reader: LogReader,
        session_timeout_s: float,
    ) -> None:
        self.reader = reader
        self.logical = {topics.qualified(name, prefix): name for name in topics.SOURCE_TOPICS}
        self.qualified = {name: full for full, name in self.logical.items()}
        self.consumer = Consumer(
            {
                **config,
                "group.id": group_id,
                "partition.assignment.strategy": "range",
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,  # stored only once the store committed
                "auto.commit.interval.ms": COMMIT_INTERVAL_MS,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": int(session_timeout_s * 1000),
                "heartbeat.interval.ms": int(min(3.0, session_timeout_s / 3) * 1000),
            }
        )
        self.assignment: set[int] | None = None  # None: the group has not assigned yet
        self.on_assigned: Callable[[set[int]], None] = lambda partitions: None
        self.on_revoked: Callable[[set[int]], None] = lambda partitions: None

    def subscribe(
        self,
        on_assigned: Callable[[set[int]], None],
        on_revoked: Callable[[set[int]], None],
    ) -> None:
        """Join the group; the callbacks run on the consuming thread and return once
        the processor has taken the change in."""
        self.on_assigned, self.on_revoked = on_assigned, on_revoked
        self.consumer.subscribe(list(self.logical), on_assign=self._assign, on_revoke=self._revoke)

    def _assign(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        partitions = {tp.partition for tp in tps}
        self.assignment = partitions
        self.on_assigned(partitions)

    def _revoke(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        revoked = {tp.partition for tp in tps}
        self.on_revoked(revoked)
        self.assignment = (self.assignment or set()) - revoked

    def fetch(self, most: int, within: float) -> list[InputMessage]:
        """Up to `most` messages, waiting at most `within` seconds (blocking: run it
        off the event loop). Rebalance callbacks run in here."""
        out = []
        logical = self.logical
        for message in self.consumer.consume(most, within):
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer: %s", error)
                continue
            kind, millis = message.timestamp()
            out.append(
                InputMessage(
                    logical[message.topic()],  # type: ignore[index]  # set on a message
                    message.partition(),  # type: ignore[arg-type]
                    message.offset(),  # type: ignore[arg-type]
                    message.key(),
                    message.value(),
                    None if kind == TIMESTAMP_NOT_AVAILABLE or millis <= 0 else millis / 1000,
                )
            )
        return out

    def close(self) -> None:
        """Leave the group, committing what was stored."""
        self.consumer.close()

    # --- scoring.source.Source ----------------------------------------------------------

    def _tp(self, topic: str, partition: int, offset: int = -1001) -> TopicPartition:
        return TopicPartition(self.qualified[topic], partition, offset)

    def unread(self, topic: str, partition: int, after: int) -> bool:
        if not self.owns(partition):
            return True
        # The end offset of the latest fetch response: no request, never blocks.
        _, high = self.consumer.get_watermark_offsets(self._tp(topic, partition), cached=True)
        return high < 0 or after + 1 < high

    def owns(self, partition: int) -> bool:
        return self.assignment is not None and partition in self.assignment

    def pause(self, topic: str, partition: int) -> None:
        self.consumer.pause([self._tp(topic, partition)])

    def resume(self, topic: str, partition: int) -> None:
        self.consumer.resume([self._tp(topic, partition)])

    def acknowledge(self, topic: str, partition: int, through: int) -> None:
        if self.owns(partition):  # a revoked partition's offsets are its new owner's
            self.consumer.store_offsets(offsets=[self._tp(topic, partition, through + 1)])
