"""Which partition a customer's events and state belong to: Kafka's default
partitioner (murmur2 of the key, as the Java client, aiokafka and our producers
configured with `murmur2_random` choose)."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

_PARTITIONER = DefaultPartitioner()


def partition_of(customer_id: str | bytes, partitions: int) -> int:
    key = customer_id.encode() if isinstance(customer_id, str) else customer_id
    every = list(range(partitions))
    return int(_PARTITIONER(key, every, every))
