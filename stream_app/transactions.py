"""Exactly once for the readers of `churn-risk`: each batch in one Kafka transaction.

Per input partition, one transactional producer, `transactional.id` =
`<app id>.<topic prefix>batches.<partition>`. Claiming the partition initialises a
new producer under that id, which aborts a transaction the previous owner left open
and fences its producer: from then on none of its batches can commit (Kafka Streams'
exactly-once, one producer per input partition, as before KIP-447's v2). Each
batch's changes, HIGH changes and dead letters, and its record
(`schemas.BatchRecord`, to the compacted `churn-batches`, partition = the input
partition), go out in one transaction: a `read_committed` reader sees all of the
batch or none, once, in order per customer.

A record's key is `<app id>.<partition>`: the log is the consumer group's, and its
state store's. Another deployment reading the same topics (a second group, a new
store taking over beside the old) writes records of its own, which a claim skips,
and compaction keeps each group's latest.

Why a producer per partition and not one per worker with the group's metadata
(KIP-447): the group's consumer is Faust's (aiokafka), whose group metadata
librdkafka's `send_offsets_to_transaction` cannot take, and the offsets of record are
the state store's and the batch log's, not the group's (`scoring.runner`).

A partition's transactions run in a thread each (`commit_transaction` blocks), all of
a step's partitions at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from schemas import BatchRecord, topics
from scoring.batches import beyond
from scoring.runner import Outputs
from stream_app import metrics
from stream_app.log_reader import retrying
from stream_app.publisher import Message, output_messages

log = logging.getLogger(__name__)

COMMIT_WAIT_SECONDS = 5.0  # per attempt; a broker that is away is waited for
INIT_SECONDS = 30.0
# Records read back from a partition's batch log at first, and the factor by which the
# window grows while it does not reach back to the state store.
FIRST_WINDOW = 32
FENCED = {
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.INVALID_PRODUCER_ID_MAPPING,
}
READ_SECONDS = 60.0


class Fenced(Exception):
    pass


class TransactionalPublisher:
    """The worker's sink (`scoring.runner.Sink`) and batch log (`scoring.batches.BatchLog`)."""

    def __init__(self, config: Mapping[str, object], app_id: str, prefix: str = "") -> None:
        self.config = dict(config)
        self.app_id = app_id
        self.prefix = prefix
        self.batches_topic = topics.qualified(topics.BATCHES, prefix)
        self.producers: dict[int, Producer] = {}
        self.executor = ThreadPoolExecutor(64, thread_name_prefix="transaction")
        self.reader = Consumer(
            {
                **self.config,
                "group.id": f"{app_id}.batch-log",  # never joins: assigns itself
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,  # a claim waits for this read
            }
        )
        self.reading = threading.Lock()

    def transactional_id(self, partition: int) -> str:
        return f"{self.app_id}.{self.prefix}batches.{partition}"

    def record_key(self, partition: int) -> bytes:
        return f"{self.app_id}.{partition}".encode()

    # --- scoring.batches.BatchLog ------------------------------------------------------

    async def claim(self, partition: int, offsets: Mapping[str, int]) -> list[BatchRecord]:
        loop = asyncio.get_running_loop()
        self.release(partition)
        producer = await loop.run_in_executor(self.executor, self._initialised, partition)
        self.producers[partition] = producer
        return await loop.run_in_executor(self.executor, self.records_past, partition, offsets)

    def release(self, partition: int) -> None:
        """Forget the partition's producer (a batch still using it finishes or is fenced)."""
        producer = self.producers.pop(partition, None)
        if producer is not None:
            self.executor.submit(producer.flush, 1.0)

    def _initialised(self, partition: int) -> Producer:
        producer = Producer(
            {
                **self.config,
                "transactional.id": self.transactional_id(partition),
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 2,
                "compression.type": "lz4",
                # Java's and aiokafka's partitioner: a customer's outputs stay on one
                # partition, whichever client wrote them.
                "partitioner": "murmur2_random",
            }
        )
        while True:
            try:
                producer.init_transactions(INIT_SECONDS)
                return producer
            except KafkaException as err:
                if not err.args[0].retriable():
                    raise
                log.warning("partition %d: initialising its producer (%s)", partition, err)

    def records_past(self, partition: int, offsets: Mapping[str, int]) -> list[BatchRecord]:
        """The partition's committed records, oldest first, back to the first that
        starts at or before `offsets` (or the log's start): every record of a batch
        that runs past them is among them."""
        tp = TopicPartition(self.batches_topic, partition)
        with self.reading:
            low, high = retrying(
                lambda: self.reader.get_watermark_offsets(tp, timeout=READ_SECONDS, cached=False),
                "reading the batch log's bounds",
            )
            if high <= low:
                return []
            window = FIRST_WINDOW
            while True:
                start = max(low, high - window)
                records = self._read(partition, start)
                if start == low or (records and not beyond(records[0].after, offsets)):
                    return records
                window *= 8

    def _read(self, partition: int, start: int) -> list[BatchRecord]:
        self.reader.assign([TopicPartition(self.batches_topic, partition, start)])
        out: list[BatchRecord] = []
        deadline = time.monotonic() + READ_SECONDS
        try:
            while time.monotonic() < deadline:
                message = self.reader.poll(1.0)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return out
                    raise KafkaException(error)
                if message.key() != self.record_key(partition):
                    continue  # another group's (see the module doc)
                record = msgspec.json.decode(message.value() or b"", type=BatchRecord)
                if record.partition == partition:
                    out.append(record)
            raise TimeoutError(f"{self.batches_topic}-{partition}: no end in {READ_SECONDS}s")
        finally:
            self.reader.unassign()

    # --- scoring.runner.Sink ------------------------------------------------------------

    async def publish(self, batches: Sequence[Outputs]) -> Collection[int]:
        loop = asyncio.get_running_loop()
        fenced = await asyncio.gather(
            *(loop.run_in_executor(self.executor, self._transact, batch) for batch in batches)
        )
        return {batch.partition for batch, lost in zip(batches, fenced, strict=True) if lost}

    def _transact(self, batch: Outputs) -> bool:
        """Publish one partition's batch in a transaction; True if it was fenced."""
        producer = self.producers.get(batch.partition)
        if producer is None:
            return True  # released: no longer ours to publish
        messages = output_messages(batch, self.prefix)
        record = msgspec.json.encode(batch.record)
        delay = 0.1
        while True:
            try:
                self._attempt(producer, messages, batch.partition, record)
                metrics.TRANSACTIONS.labels("committed").inc()
                return False
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() in FENCED or error.fatal():
                    metrics.TRANSACTIONS.labels("fenced").inc()
                    log.warning(
                        "partition %d: transaction fenced (%s): another worker owns it",
                        batch.partition,
                        error,
                    )
                    if self.producers.get(batch.partition) is producer:
                        self.producers.pop(batch.partition)
                    return True
                if not error.txn_requires_abort():
                    raise
                metrics.TRANSACTIONS.labels("aborted").inc()
                metrics.RETRIES.labels("kafka").inc()
                log.warning(
                    "partition %d: transaction aborted (%s); sending the batch again in %.1fs",
                    batch.partition,
                    error,
                    delay,
                )
                producer.abort_transaction(INIT_SECONDS)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _attempt(
        self, producer: Producer, messages: Sequence[Message], partition: int, record: bytes
    ) -> None:
        producer.begin_transaction()
        for topic, key, value in messages:
            _produce(producer, topic, key, value)
        _produce(producer, self.batches_topic, self.record_key(partition), record, partition)
        while True:
            try:
                producer.commit_transaction(COMMIT_WAIT_SECONDS)
                return
            except KafkaException as exc:
                if not exc.args[0].retriable():
                    raise
                log.warning("outputs not yet acknowledged by Kafka; still waiting")

    def close(self) -> None:
        for partition in list(self.producers):
            self.release(partition)
        self.executor.shutdown(wait=True)
        self.reader.close()


def _produce(
    producer: Producer, topic: str, key: bytes | None, value: bytes | None, partition: int = -1
) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, partition=partition)
            return
        except BufferError:
            producer.poll(0.5)  # the queue is full: let librdkafka send some
