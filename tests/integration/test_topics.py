"""The topics checked at start, on the real broker (`stream_app.kafka_admin`): inputs
the producer stamps (CreateTime) are refused with the command that fixes them; new
topics get the replication asked for, a factor the cluster cannot hold is refused
with the setting to change, and topics below 3/2 are warned about."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from schemas import topics
from stream_app.kafka_admin import Replication, TopicLayoutError, ensure_topics
from stream_app.kafka_security import KafkaConfig

pytestmark = pytest.mark.integration


def test_inputs_stamped_by_their_producer_are_refused_with_the_fix(
    kafka_bootstrap: str, namespace: str
) -> None:
    prefix = f"{namespace}."
    config: KafkaConfig = {"bootstrap.servers": kafka_bootstrap}
    admin = AdminClient(config)
    created = admin.create_topics(
        [
            NewTopic(prefix + topics.ORDERS, 2, 1, config={"message.timestamp.type": "CreateTime"}),
        ]
    )
    for future in created.values():
        future.result()
    with pytest.raises(TopicLayoutError) as refused:
        ensure_topics(config, 2, prefix, timeout=15)
    message = str(refused.value)
    assert f"{prefix}{topics.ORDERS} (CreateTime)" in message
    assert "--add-config message.timestamp.type=LogAppendTime" in message
    assert f"{prefix}{topics.CUSTOMERS}" not in message  # created right by ensure_topics


def test_new_topics_take_the_replication_asked_and_below_3_2_are_warned(
    kafka_bootstrap: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    config: KafkaConfig = {"bootstrap.servers": kafka_bootstrap}
    with pytest.raises(TopicLayoutError, match="lower CHURN_REPLICATION_FACTOR"):
        ensure_topics(config, 2, f"{namespace}.a.", 15, Replication(factor=3))

    prefix = f"{namespace}.b."
    with caplog.at_level(logging.WARNING, logger="stream_app.kafka_admin"):
        assert ensure_topics(config, 2, prefix, 15, Replication(factor=1, min_insync=1)) == 2
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert f"{prefix}{topics.CHURN_RISK} (1/1)" in warned
    assert "CHURN_REPLICATION_FACTOR" in warned
    resource = ConfigResource(ConfigResource.Type.TOPIC, prefix + topics.BATCHES)
    admin = AdminClient(config)  # kept: its futures die with it
    described = admin.describe_configs([resource])[resource].result()
    assert described["min.insync.replicas"].value == "1"
    assert described["cleanup.policy"].value == "compact"
