"""Who may do what on the cluster: the Kafka ACLs of the product's principals.

Three principals, each granted only what it needs, so that whoever may produce the
inputs cannot forge `churn-risk`, and a reader can write nothing:

- the worker reads the inputs and its ticks; writes the outputs, the batch log and the
  ticks, in transactions of its own transactional ids, in its own consumer group; it
  creates the product's topics (and Faust's, prefixed with the app id) and reads their
  configurations at start;
- the simulator (any producer of inputs) writes the input topics, creating them;
- a reader (a downstream service) reads the output topics, in any group;
- the shop sink (`stream_app/shop_sink.py`) reads the input topics (its group only
  for the client's sake: it commits nothing).

`python -m stream_app acls --worker User:W --simulator User:S --reader User:R
[--sink User:K]` grants
them on the cluster the settings point at (compose's `kafka-acls` service does);
`tests/integration/test_kafka_acls.py` holds each principal to its own on a real
broker with an authorizer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from schemas import topics
from stream_app import shop_sink

OUTPUTS = (
    topics.CHURN_RISK,
    topics.CHURN_RISK_HIGH,
    topics.CHURN_RISK_CURRENT,
    topics.DEAD_LETTER,
    topics.DRIFT_ALERTS,
)
CLUSTER = "kafka-cluster"
Op = AclOperation


@dataclass(frozen=True)
class Grant:
    """One permission: `operations` on a resource, by name or by name prefix."""

    kind: ResourceType
    name: str
    operations: tuple[AclOperation, ...]
    prefixed: bool = False


def _topic(name: str, operations: tuple[AclOperation, ...], prefix: str) -> Grant:
    return Grant(ResourceType.TOPIC, topics.qualified(name, prefix), operations)


def worker_grants(prefix: str, app_id: str) -> Iterator[Grant]:
    for name in topics.SOURCE_TOPICS:
        yield _topic(name, (Op.READ, Op.DESCRIBE), prefix)
    for name in (*OUTPUTS, topics.BATCHES, topics.TICKS):
        yield _topic(name, (Op.WRITE, Op.DESCRIBE), prefix)
    yield _topic(topics.BATCHES, (Op.READ,), prefix)  # recovery reads it back
    for name in (*topics.SOURCE_TOPICS, *OUTPUTS, topics.BATCHES):
        yield _topic(name, (Op.CREATE, Op.DESCRIBE_CONFIGS), prefix)
    # Faust's own topics (its partition assignor's leader topic).
    yield Grant(ResourceType.TOPIC, f"{app_id}-", (Op.ALL,), prefixed=True)
    yield Grant(ResourceType.GROUP, app_id, (Op.READ, Op.DESCRIBE))
    yield Grant(ResourceType.TRANSACTIONAL_ID, f"{app_id}.", (Op.WRITE, Op.DESCRIBE), True)
    yield Grant(ResourceType.BROKER, CLUSTER, (Op.IDEMPOTENT_WRITE, Op.DESCRIBE))


def simulator_grants(prefix: str) -> Iterator[Grant]:
    for name in topics.INPUT_TOPICS:
        yield _topic(name, (Op.WRITE, Op.DESCRIBE, Op.CREATE, Op.DESCRIBE_CONFIGS), prefix)
    yield Grant(ResourceType.BROKER, CLUSTER, (Op.IDEMPOTENT_WRITE,))


def reader_grants(prefix: str) -> Iterator[Grant]:
    for name in OUTPUTS:
        yield _topic(name, (Op.READ, Op.DESCRIBE), prefix)
    yield Grant(ResourceType.GROUP, "*", (Op.READ, Op.DESCRIBE))  # any group of its own


def sink_grants(prefix: str) -> Iterator[Grant]:
    for name in topics.INPUT_TOPICS:
        yield _topic(name, (Op.READ, Op.DESCRIBE), prefix)
    yield Grant(ResourceType.GROUP, shop_sink.GROUP, (Op.READ, Op.DESCRIBE))


def bindings(principal: str, grants: Iterator[Grant]) -> list[AclBinding]:
    """The ACL bindings that allow `principal` (e.g. `User:churn-worker`) the grants,
    from any host."""
    return [
        AclBinding(
            grant.kind,
            grant.name,
            ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL,
            principal,
            "*",
            operation,
            AclPermissionType.ALLOW,
        )
        for grant in grants
        for operation in grant.operations
    ]


def grant(
    admin: AdminClient,
    prefix: str,
    app_id: str,
    worker: str,
    simulator: str,
    reader: str,
    sink: str | None = None,
    timeout: float = 30.0,
) -> int:
    """Create every principal's ACLs (those that exist already are left as they are);
    returns how many bindings were asked for."""
    wanted = list(
        dict.fromkeys(  # once each: a topic read and written is described once
            [
                *bindings(worker, worker_grants(prefix, app_id)),
                *bindings(simulator, simulator_grants(prefix)),
                *bindings(reader, reader_grants(prefix)),
                *(bindings(sink, sink_grants(prefix)) if sink else []),
            ]
        )
    )
    for future in admin.create_acls(wanted, request_timeout=timeout).values():
        future.result()
    return len(wanted)
