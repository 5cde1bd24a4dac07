"""Create the product's topics when missing (inputs, outputs, dead letters)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ClusterMetadata,
    ConfigResource,
    NewTopic,
    TopicMetadata,
)

from schemas import topics
from stream_app.kafka_security import KafkaConfig

# Profiles are upserts: compaction keeps the latest per customer forever.
TOPIC_CONFIGS = topics.TOPIC_CONFIGS
ALL_TOPICS = (
    *topics.INPUT_TOPICS,
    topics.CHURN_RISK,
    topics.CHURN_RISK_HIGH,
    topics.DEAD_LETTER,
    topics.DRIFT_ALERTS,
    topics.BATCHES,
)


class TopicLayoutError(Exception):
    """The input topics cannot be processed together; the message says why."""


class KafkaAuthenticationError(Exception):
    """The brokers refused the client's credentials or its TLS handshake."""


# librdkafka reports these through error_cb only; the request itself just times out.
REFUSED = (KafkaError._AUTHENTICATION, KafkaError._SSL)


def connect_admin(config: dict[str, object], timeout: float) -> tuple[AdminClient, ClusterMetadata]:
    """An admin client and the cluster's metadata. Credentials or a certificate the
    brokers refuse raise KafkaAuthenticationError at once rather than after `timeout`;
    an unreachable cluster raises KafkaException after it."""
    refused: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        if error.code() in REFUSED:
            refused.append(error)

    with_errors: KafkaConfig = {**config, "error_cb": on_error}
    admin = AdminClient(with_errors)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return admin, admin.list_topics(timeout=min(1.0, timeout))
        except KafkaException:
            admin.poll(0)  # serves error_cb
            if refused:
                raise KafkaAuthenticationError(refused[0].str()) from None
            if time.monotonic() >= deadline:
                raise


def ensure_topics(
    config: KafkaConfig, partitions: int, prefix: str = "", timeout: float = 30.0
) -> int:
    """Create any of the product's topics that do not exist yet; returns the number of
    partitions of the input topics, which must all have the same: partition p of each
    holds the same customers, processed together (`scoring.merge`).

    `config` is the confluent-kafka client configuration
    (`stream_app.kafka_security.confluent_config`)."""
    admin, metadata = connect_admin(config, timeout)
    existing = metadata.topics
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
        unseen = _unseen(existing, prefix)
        if not unseen:
            break
        if time.monotonic() > deadline:
            raise TopicLayoutError(f"topics {unseen} are not visible after {timeout}s")
        time.sleep(0.2)
    check_timestamps(admin, prefix, timeout)
    return _input_partitions(existing, prefix)


def input_partitions(config: KafkaConfig, prefix: str = "", timeout: float = 30.0) -> int:
    """The number of partitions of the input topics, which must exist (and agree)."""
    admin, metadata = connect_admin(config, timeout)
    missing = _unseen(metadata.topics, prefix)
    if missing:
        raise TopicLayoutError(
            f"the input topics {missing} do not exist: no worker has run with "
            f"CHURN_TOPIC_PREFIX={prefix!r} on this cluster"
        )
    check_timestamps(admin, prefix, timeout)
    return _input_partitions(metadata.topics, prefix)


def check_timestamps(admin: AdminClient, prefix: str, timeout: float) -> None:
    """The input topics must stamp messages with the broker's clock (LogAppendTime):
    a message's timestamp bounds how far ahead its event time may be
    (`scoring.decoding.Limits`), and with CreateTime any producer sets it at will (a
    topic the broker auto-created has CreateTime)."""
    names = [topics.qualified(name, prefix) for name in topics.INPUT_TOPICS]
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    wrong = []
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        entry = future.result().get("message.timestamp.type")
        if entry is None or entry.value != "LogAppendTime":
            wrong.append(f"{resource.name} ({None if entry is None else entry.value})")
    if wrong:
        raise TopicLayoutError(
            f"the input topics must use the broker's clock, message.timestamp.type="
            f"LogAppendTime; these do not: {', '.join(wrong)}. Set it: kafka-configs.sh "
            "--bootstrap-server ... --alter --entity-type topics --entity-name TOPIC "
            "--add-config message.timestamp.type=LogAppendTime"
        )


def _unseen(existing: Mapping[str, TopicMetadata], prefix: str) -> list[str]:
    """The input topics the metadata does not show with their partitions."""
    names = [topics.qualified(name, prefix) for name in topics.INPUT_TOPICS]
    return [name for name in names if not getattr(existing.get(name), "partitions", None)]


def _input_partitions(existing: Mapping[str, TopicMetadata], prefix: str) -> int:
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
