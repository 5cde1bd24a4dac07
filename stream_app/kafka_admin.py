"""Create the product's topics when missing (inputs, outputs, dead letters)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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

log = logging.getLogger(__name__)

# Profiles are upserts: compaction keeps the latest per customer forever.
TOPIC_CONFIGS = topics.TOPIC_CONFIGS
ALL_TOPICS = (
    *topics.INPUT_TOPICS,
    topics.CHURN_RISK,
    topics.CHURN_RISK_HIGH,
    topics.CHURN_RISK_CURRENT,
    topics.DEAD_LETTER,
    topics.DRIFT_ALERTS,
    topics.BATCHES,
    topics.TICKS,
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


@dataclass(frozen=True)
class Replication:
    """How the topics the worker creates are replicated; None: the broker's default
    (`default.replication.factor`, `min.insync.replicas`)."""

    factor: int | None = None
    min_insync: int | None = None


# Below these a broker lost can lose acknowledged messages, or stop the writes.
SAFE_FACTOR, SAFE_MIN_INSYNC = 3, 2


def ensure_topics(
    config: KafkaConfig,
    partitions: int,
    prefix: str = "",
    timeout: float = 30.0,
    replication: Replication = Replication(),
) -> int:
    """Create any of the product's topics that do not exist yet; returns the number of
    partitions of the input topics, which must all have the same: partition p of each
    holds the same customers, processed together (`scoring.merge`).

    `config` is the confluent-kafka client configuration
    (`stream_app.kafka_security.confluent_config`)."""
    admin, metadata = connect_admin(config, timeout)
    existing = metadata.topics
    if not _unseen(existing, prefix, topics.INPUT_TOPICS):
        # Partition p of every topic read together holds the same customers: a topic
        # added later (the ticks) takes the inputs' count, not the setting's.
        partitions = _input_partitions(existing, prefix, topics.INPUT_TOPICS)
    missing = [
        _new_topic(name, prefix, partitions, replication)
        for name in ALL_TOPICS
        if topics.qualified(name, prefix) not in existing
    ]
    if missing:
        for future in admin.create_topics(missing, operation_timeout=timeout).values():
            try:
                future.result()
            except KafkaException as err:
                if "TOPIC_ALREADY_EXISTS" in str(err):
                    continue
                if "REPLICATION_FACTOR" in str(err):
                    raise TopicLayoutError(
                        f"cannot create the topics with replication factor "
                        f"{replication.factor} on {len(metadata.brokers)} broker(s) ({err}): "
                        "lower CHURN_REPLICATION_FACTOR, or leave it unset for the broker's"
                    ) from None
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
    warn_replication(admin, prefix, timeout)
    return _input_partitions(existing, prefix)


def _new_topic(name: str, prefix: str, partitions: int, replication: Replication) -> NewTopic:
    settings = dict(TOPIC_CONFIGS.get(name, {}))
    if replication.min_insync is not None:
        settings["min.insync.replicas"] = str(replication.min_insync)
    factor = -1 if replication.factor is None else replication.factor  # -1: the broker's
    return NewTopic(topics.qualified(name, prefix), partitions, factor, config=settings)


def warn_replication(admin: AdminClient, prefix: str, timeout: float) -> list[str]:
    """Log (and return) the product's topics replicated less than production wants:
    a replication factor below 3, or min.insync.replicas below 2."""
    names = [topics.qualified(name, prefix) for name in ALL_TOPICS]
    metadata = admin.list_topics(timeout=timeout).topics
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names if n in metadata]
    weak = []
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        entry = future.result().get("min.insync.replicas")
        min_insync = int(entry.value) if entry is not None else 1
        factor = min(len(p.replicas) for p in metadata[resource.name].partitions.values())
        if factor < SAFE_FACTOR or min_insync < SAFE_MIN_INSYNC:
            weak.append(f"{resource.name} ({factor}/{min_insync})")
    if weak:
        log.warning(
            "topics replicated below %d/%d (replication factor/min.insync.replicas), where "
            "a broker lost loses acknowledged messages; fine for a demo, not for "
            "production: %s. Set CHURN_REPLICATION_FACTOR and CHURN_MIN_INSYNC_REPLICAS "
            "(new topics), or kafka-reassign-partitions and kafka-configs (existing ones)",
            SAFE_FACTOR,
            SAFE_MIN_INSYNC,
            ", ".join(weak),
        )
    return weak


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
    warn_replication(admin, prefix, timeout)
    return _input_partitions(metadata.topics, prefix)


def check_timestamps(admin: AdminClient, prefix: str, timeout: float) -> None:
    """The input topics must stamp messages with the broker's clock (LogAppendTime):
    a message's timestamp bounds how far ahead its event time may be
    (`scoring.decoding.Limits`), and with CreateTime any producer sets it at will (a
    topic the broker auto-created has CreateTime)."""
    names = [topics.qualified(name, prefix) for name in topics.SOURCE_TOPICS]
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


def _unseen(
    existing: Mapping[str, TopicMetadata], prefix: str, names: Sequence[str] = topics.SOURCE_TOPICS
) -> list[str]:
    """The topics (by default those read together) the metadata does not show with
    their partitions."""
    names = [topics.qualified(name, prefix) for name in names]
    return [name for name in names if not getattr(existing.get(name), "partitions", None)]


def _input_partitions(
    existing: Mapping[str, TopicMetadata], prefix: str, names: Sequence[str] = topics.SOURCE_TOPICS
) -> int:
    counts = {name: len(existing[topics.qualified(name, prefix)].partitions) for name in names}
    if len(set(counts.values())) != 1:
        raise TopicLayoutError(
            f"the input topics must have the same number of partitions, found {counts}: "
            "add partitions to the smaller ones (kafka-topics --alter --partitions N)"
        )
    return next(iter(counts.values()))
