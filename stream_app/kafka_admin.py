"""Create the product's topics when missing (inputs, outputs, dead letters)."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from schemas import topics

# Profiles are upserts: compaction keeps the latest per customer forever.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {topics.CUSTOMERS: {"cleanup.policy": "compact"}}
ALL_TOPICS = (
    *topics.INPUT_TOPICS,
    topics.CHURN_RISK,
    topics.CHURN_RISK_HIGH,
    topics.DEAD_LETTER,
)


def ensure_topics(
    bootstrap_servers: str, partitions: int, prefix: str = "", timeout: float = 30.0
) -> None:
    """Create any of the product's topics that do not exist yet."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [
        NewTopic(topics.qualified(name, prefix), partitions, 1, config=TOPIC_CONFIGS.get(name, {}))
        for name in ALL_TOPICS
        if topics.qualified(name, prefix) not in existing
    ]
    if not missing:
        return
    for future in admin.create_topics(missing, operation_timeout=timeout).values():
        try:
            future.result()
        except KafkaException as err:
            if "TOPIC_ALREADY_EXISTS" not in str(err):
                raise
