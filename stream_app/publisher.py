"""Publishes outputs without a transaction, and returns once Kafka has every one.

The worker's batches go out in transactions (`stream_app.transactions`); this
publisher sends the drift alerts, the ticks (`scoring.ticks`), and the batches when
exactly-once is turned off.

Through Faust, each `Topic.send` costs about 100 us of Python, and aiokafka's sender
shipped one request per message or two (bench/PROFILE.md). librdkafka takes a
message in a couple of microseconds and batches the sending in its own threads; the
event loop only waits for the delivery reports.

A message is produced once and then waited for: librdkafka retries it itself (the
producer is idempotent, so its retries add no duplicates) until it is delivered or
its delivery times out. Only a message whose delivery failed is produced again, so
a broker that is away for a while delays the batch but duplicates nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import cast

import msgspec
from confluent_kafka import KafkaError, Producer
from confluent_kafka import Message as KafkaMessage

from schemas import DriftAlert, Tick, topics
from scoring.runner import Outputs
from stream_app import metrics

log = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0

Message = tuple[str, bytes | None, bytes | None]  # topic, key, value (None: a tombstone)


def output_messages(batch: Outputs, prefix: str = "") -> list[Message]:
    """A batch's outputs as messages, in order: each change on `churn-risk` (and on
    `churn-risk-high` when into HIGH, unless the customer is held out of the campaign:
    marketing acts on every message there) and `churn-risk-current`, keyed by customer; a
    tombstone on `churn-risk-current` for each customer whose state it deleted; then
    the dead letters, keyed by the input's key."""
    churn_risk = topics.qualified(topics.CHURN_RISK, prefix)
    churn_risk_high = topics.qualified(topics.CHURN_RISK_HIGH, prefix)
    current = topics.qualified(topics.CHURN_RISK_CURRENT, prefix)
    dead_letter = topics.qualified(topics.DEAD_LETTER, prefix)
    out: list[Message] = []
    for change in batch.changes:
        key, value = change.customer_id.encode(), msgspec.json.encode(change)
        out.append((churn_risk, key, value))
        if change.risk == "HIGH" and not change.held_out:
            out.append((churn_risk_high, key, value))
        out.append((current, key, value))
    out.extend((current, customer.encode(), None) for customer in batch.deleted)
    for letter in batch.dead_letters:
        original_key = None if letter.key is None else letter.key.encode()
        out.append((dead_letter, original_key, msgspec.json.encode(letter)))
    return out


class Publisher:
    """The drift monitor's alerts, on `churn-drift-alerts`; and, with
    CHURN_PROCESSING_GUARANTEE=at_least_once, the worker's sink (without transactions:
    a batch processed again after a crash is published again, with the same ids)."""

    def __init__(self, config: dict[str, object], prefix: str = "") -> None:
        self.producer = Producer(
            {
                **config,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 2,
                "compression.type": "lz4",
                # Java's and aiokafka's partitioner: a customer's outputs stay on one
                # partition, whichever client wrote them.
                "partitioner": "murmur2_random",
            }
        )
        self.prefix = prefix
        self.drift_alerts = topics.qualified(topics.DRIFT_ALERTS, prefix)

    async def publish(self, batches: Sequence[Outputs]) -> Collection[int]:
        """Send the outputs; return when every one is acknowledged by Kafka."""
        await self.send([m for batch in batches for m in output_messages(batch, self.prefix)])
        return ()

    async def publish_alerts(self, alerts: Sequence[DriftAlert]) -> None:
        """Send drift alerts, keyed by feature; return when Kafka has every one."""
        await self.send(
            [(self.drift_alerts, a.feature.encode(), msgspec.json.encode(a)) for a in alerts]
        )

    async def send_ticks(self, ticks: Mapping[int, float]) -> dict[int, int]:
        """A tick into each of these input partitions, at the time given; returns the
        offset each was written at (a partition missing: not written). Not sent again:
        a tick lost is written at the next round, the partition still quiet."""
        topic = topics.qualified(topics.TICKS, self.prefix)
        written: dict[int, int] = {}

        def record(error: KafkaError | None, message: KafkaMessage) -> None:
            if error is None:
                written[cast(int, message.partition())] = cast(int, message.offset())

        for partition, time in ticks.items():
            tick = Tick(datetime.fromtimestamp(time, UTC))
            self.producer.produce(
                topic, msgspec.json.encode(tick), partition=partition, on_delivery=record
            )
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.producer.flush, FLUSH_SECONDS)
        return written

    async def send(self, messages: Sequence[Message]) -> None:
        loop = asyncio.get_running_loop()
        unsent = list(range(len(messages)))
        delay = 0.1
        while unsent:
            outcome: dict[int, KafkaError | None] = {}
            for position, index in enumerate(unsent):
                topic, key, value = messages[index]
                while True:
                    try:
                        self.producer.produce(
                            topic,
                            value=value,
                            key=key,
                            on_delivery=functools.partial(_record, outcome, index),
                        )
                        break
                    except BufferError:
                        # The queue is full: let librdkafka drain some, then go on
                        # with the rest (what is queued is not produced again).
                        log.info("producer queue full after %d of %d", position, len(unsent))
                        await loop.run_in_executor(None, self.producer.poll, 0.5)
            # flush() waits in C without the GIL; the event loop goes on meanwhile.
            while await loop.run_in_executor(None, self.producer.flush, FLUSH_SECONDS):
                log.warning("outputs not yet acknowledged by Kafka; still waiting")
            failed = {i: err for i, err in outcome.items() if err is not None}
            if any(err.fatal() for err in failed.values()):
                first = next(err for err in failed.values() if err.fatal())
                raise RuntimeError(f"the producer failed for good: {first}")
            unsent = sorted(failed)
            if unsent:
                metrics.ERRORS.labels("kafka").inc()
                metrics.RETRIES.labels("kafka").inc()
                log.warning(
                    "%d of %d outputs not delivered (%s); sending them again in %.1fs",
                    len(unsent),
                    len(messages),
                    next(iter(failed.values())),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def close(self) -> None:
        self.producer.flush(10)


def _record(
    outcome: dict[int, KafkaError | None], index: int, error: KafkaError | None, _: object
) -> None:
    outcome[index] = error
