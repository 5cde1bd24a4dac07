"""Publishes a batch's outputs and returns once Kafka has every one of them.

Through Faust, each `Topic.send` costs about 100 us of Python (Faust's FutureMessage
and sensors, aiokafka's accumulator and futures), and aiokafka's sender shipped one
request per message or two, each waiting for acks=all (bench/PROFILE.md: 24% of the
worker's time). librdkafka takes a message in a couple of microseconds and batches
the sending in its own threads; the event loop only waits for the delivery reports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from confluent_kafka import KafkaError, Message, Producer

FLUSH_TIMEOUT_SECONDS = 30.0


class PublishError(Exception):
    """Some messages are not known to be in Kafka: publish the batch again."""


class Publisher:
    def __init__(self, bootstrap_servers: str, client_id: str) -> None:
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "client.id": client_id,
                "acks": "all",
                "enable.idempotence": True,  # librdkafka's retries add no duplicates
                "linger.ms": 2,
                "compression.type": "lz4",
                # Java's and aiokafka's partitioner: a customer's outputs stay on one
                # partition, whichever client wrote them.
                "partitioner": "murmur2_random",
            }
        )

    async def publish(self, messages: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        """Send (topic, key, value) messages; return when all are acknowledged."""
        if not messages:
            return
        failures: list[KafkaError] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failures.append(error)

        for topic, key, value in messages:
            self.producer.produce(topic, value=value, key=key, on_delivery=delivered)
        # flush() blocks in C without the GIL: the event loop keeps fetching meanwhile.
        loop = asyncio.get_running_loop()
        unsent = await loop.run_in_executor(None, self.producer.flush, FLUSH_TIMEOUT_SECONDS)
        if failures:
            if any(error.fatal() for error in failures):
                raise RuntimeError(f"the producer failed for good: {failures[0]}")
            raise PublishError(f"{len(failures)} of {len(messages)} not delivered: {failures[0]}")
        if unsent:
            raise PublishError(f"{unsent} messages unacknowledged after {FLUSH_TIMEOUT_SECONDS}s")
