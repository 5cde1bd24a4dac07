"""Which partition a customer's events and state belong to: Kafka's default
partitioner (murmur2 of the key, as the Java client, aiokafka and our producers
configured with `murmur2_random` choose)."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_of(customer_id: str | bytes, partitions: int) -> int:
    key = customer_id.encode() if isinstance(customer_id, str) else customer_id
    # DefaultPartitioner's arithmetic, without the partition lists it builds per call.
    return (murmur2(key) & 0x7FFFFFFF) % partitions
