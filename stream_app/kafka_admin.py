"""Create the product's topics when missing (inputs, outputs, dead letters)."""

from __future__ import annotations

import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from schemas import topics

# Profiles are upserts: compaction keeps the latest per customer forever.
TOPIC_CONFIGS = topics.TOPIC_CONFIGS
ALL_TOPICS = (
    *topics.INPUT_TOPICS,
    topics.CHURN_RISK,
    topics.CHURN_RISK_HIGH,
    topics.DEAD_LETTER,
)


class TopicLayoutError(Exception):
    """The input topics cannot be processed together; the message says why."""


def ensure_topics(
    bootstrap_servers: str, partitions: int, prefix: str = "", timeout: float = 30.0
) -> int:
    """Create any of the product's topics that do not exist yet; returns the number of
    partitions of the input topics, which must all have the same: partition p of each
    holds the same customers, processed together (`scoring.merge`)."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    existing = admin.list_topics(timeout=timeout).topics
    missing = [
        NewTopic(topics.qualified(name, prefix), partitions, 1, config=TOPIC_CONFIGS.get(name, {}))
        for name in ALL_TOPICS
        if topics.qualified(name, prefix) not in existing
    ]
    if missing:
        for future in admin.create_topics(missing, operation_timeout=timeout).values():
            try:
                future.result()
            except KafkaException as err:
                if "TOPIC_ALREADY_EXISTS" not in str(err):
                    raise
    # A topic just created can take a moment to show in the metadata.
    deadline = time.monotonic() + timeout
    while True:
        existing = admin.list_topics(timeout=timeout).topics
        unseen = [
            name
            for name in topics.INPUT_TOPICS
            if not getattr(existing.get(topics.qualified(name, prefix)), "partitions", None)
        ]
        if not unseen:
            break
        if time.monotonic() > deadline:
            raise TopicLayoutError(f"topics {unseen} are not visible after {timeout}s")
        time.sleep(0.2)
    counts = {
        name: len(existing[topics.qualified(name, prefix)].partitions)
        for name in topics.INPUT_TOPICS
    }
    if len(set(counts.values())) != 1:
        raise TopicLayoutError(
            f"the input topics must have the same number of partitions, found {counts}: "
            "add partitions to the smaller ones (kafka-topics --alter --partitions N)"
        )
    return next(iter(counts.values()))
