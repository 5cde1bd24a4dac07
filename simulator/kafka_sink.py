"""Produce a history to Kafka in event-time order, optionally paced to a target rate."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

import msgspec
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from schemas import topics
from simulator.history import Event, History

DEFAULT_PARTITIONS = 4
TOPIC_CONFIGS = topics.TOPIC_CONFIGS
PRODUCER_CONFIG: dict[str, Any] = {
    "linger.ms": 5,
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    # Hash keys like the Java client and aiokafka (Faust) do, so a customer lands on the
    # same partition number whoever produces it; librdkafka's default uses CRC32.
    "partitioner": "murmur2_random",
    # Successful deliveries need no callback; that saves a Python call per message.
    "delivery.report.only.error": True,
}
# Events per rate-limit check when unpaced, and the cap when paced.
MAX_BATCH = 1000


class DeliveryError(RuntimeError):
    """Kafka reported that one or more messages could not be delivered."""


class TokenBucket:
    """Allows `rate` events per second on average, with bursts of at most `capacity`."""

    def __init__(
        self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.capacity = max(capacity, 1.0)
        self.clock = clock
        self.tokens = self.capacity
        self.updated = clock()

    def delay(self, n: int) -> float:
        """Seconds until `n` tokens are available (0 if they are now)."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        missing = n - self.tokens
        # Tolerate float rounding: a wait of 1e-17 s would never advance a clock.
        return missing / self.rate if missing > 1e-9 else 0.0

    def take(self, n: int) -> None:
        self.tokens -= n


def ensure_topics(
    bootstrap_servers: str,
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int = 1,
    timeout: float = 15.0,
    topic_prefix: str = "",
    client_config: dict[str, Any] | None = None,
) -> list[str]:
    """Create the input topics (named `topic_prefix` + topic) that do not exist yet.

    Returns the names created. `client_config` adds to the admin client's configuration
    (security: `stream_app.kafka_security.confluent_config`).

    Warns when an existing topic has a different partition count: the worker joins the
    topics by customer_id, which needs them co-partitioned.
    """
    # log_level 4 (warning): hides an info line librdkafka logs when the client closes.
    admin = AdminClient(
        {"bootstrap.servers": bootstrap_servers, "log_level": 4, **(client_config or {})}
    )
    existing = admin.list_topics(timeout=timeout).topics
    configs = {topic_prefix + name: TOPIC_CONFIGS.get(name, {}) for name in topics.INPUT_TOPICS}
    for name in configs:
        if name in existing and len(existing[name].partitions) != partitions:
            print(
                f"warning: topic {name} has {len(existing[name].partitions)} partitions, "
                f"expected {partitions}",
                file=sys.stderr,
            )
    new = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication_factor,
            config=config,
        )
        for name, config in configs.items()
        if name not in existing
    ]
    if not new:
        return []
    created = []
    for name, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            # Someone else created it between our listing and our request: fine.
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


def produce(
    source: History | Iterable[tuple[str, Event]],
    bootstrap_servers: str,
    rate: float | None = None,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int = 1,
    create_topics: bool = True,
    topic_prefix: str = "",
    verbose: bool = False,
    progress_interval: float = 5.0,
    flush_timeout: float = 120.0,
    producer_config: dict[str, Any] | None = None,
    client_config: dict[str, Any] | None = None,
) -> int:
    """Produce every event in event-time order; return how many were produced.

    Key = customer_id, value = the event as JSON. `rate` is events per second (None: as
    fast as possible). Topic names get `topic_prefix` in front, the way the worker's
    CHURN_TOPIC_PREFIX namespaces them. Raises DeliveryError if any message is not
    delivered. `client_config` (security settings) goes to the admin client and the
    producer alike.
    """
    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0 or None")
    if create_topics:
        created = ensure_topics(
            bootstrap_servers,
            partitions,
            replication_factor,
            topic_prefix=topic_prefix,
            client_config=client_config,
        )
        if verbose and created:
            print(f"created topics: {', '.join(created)}", file=sys.stderr)

    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    config = {
        **PRODUCER_CONFIG,
        "bootstrap.servers": bootstrap_servers,
        "on_delivery": on_delivery,
        **(client_config or {}),
        **(producer_config or {}),
    }
    producer = Producer(config)
    events = source.events_in_time_order() if isinstance(source, History) else iter(source)
    # When paced, check the clock about 100 times a second; batching keeps that cheap.
    batch_size = MAX_BATCH if rate is None else max(1, min(MAX_BATCH, int(rate / 100)))
    bucket = TokenBucket(rate, capacity=batch_size) if rate is not None else None
    progress = _Progress(progress_interval) if verbose else None
    encode = msgspec.json.Encoder().encode

    count = 0
    for batch in _batches(events, batch_size):
        if bucket is not None:
            while (wait := bucket.delay(len(batch))) > 0:
                producer.poll(wait)  # serves delivery callbacks while we wait
            bucket.take(len(batch))
        for topic, event in batch:
            key = event.customer_id.encode()
            _produce_one(producer, topic_prefix + topic, key, encode(event))
        count += len(batch)
        producer.poll(0)
        _raise_if_failed(errors)
        if progress is not None:
            progress.update(count)

    remaining = producer.flush(flush_timeout)
    _raise_if_failed(errors)
    if remaining:
        raise DeliveryError(f"{remaining} messages still undelivered after {flush_timeout}s")
    if progress is not None:
        progress.done(count)
    return count


def _produce_one(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key)
            return
        except BufferError:
            # Local queue full: the broker is slower than us. Let it drain, then retry.
            producer.poll(0.05)


def _batches(events: Iterator[tuple[str, Event]], size: int) -> Iterator[list[tuple[str, Event]]]:
    while batch := list(islice(events, size)):
        yield batch


def _raise_if_failed(errors: list[KafkaError]) -> None:
    if errors:
        raise DeliveryError(f"{len(errors)} messages failed; first error: {errors[0]}")


class _Progress:
    """Prints the produce rate to stderr every `interval` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.started = self.last_time = time.monotonic()
        self.last_count = 0

    def update(self, count: int) -> None:
        now = time.monotonic()
        if now - self.last_time < self.interval:
            return
        recent = (count - self.last_count) / (now - self.last_time)
        overall = count / (now - self.started)
        print(
            f"produced {count:,} events ({recent:,.0f}/s now, {overall:,.0f}/s overall)",
            file=sys.stderr,
        )
        self.last_time, self.last_count = now, count

    def done(self, count: int) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        print(
            f"produced {count:,} events in {elapsed:.1f}s "
            f"({count / elapsed:,.0f}/s), all delivered",
            file=sys.stderr,
        )
