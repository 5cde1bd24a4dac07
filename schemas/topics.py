"""Topic names: part of the contract, defined once."""

ORDERS = "orders"
SUPPORT_TICKETS = "support-tickets"
CUSTOMERS = "customers"
CHURN_RISK = "churn-risk"
# Transitions into HIGH only, so marketing automation need not read every change.
CHURN_RISK_HIGH = "churn-risk-high"
# Each customer's latest change (compacted; a tombstone once their state is deleted):
# a new subscriber reads it from the start and has everyone's current risk.
CHURN_RISK_CURRENT = "churn-risk-current"
DEAD_LETTER = "churn-dead-letter"
# The drift monitor's alerts, raised and cleared, keyed by feature.
DRIFT_ALERTS = "churn-drift-alerts"
# Internal: each committed batch's record, written in the batch's transaction.
BATCHES = "churn-batches"

# The inputs, in the order events of equal event time are applied: a profile change
# before an order or ticket of the same instant (`scoring.merge`).
INPUT_TOPICS = (CUSTOMERS, ORDERS, SUPPORT_TICKETS)

# Internal: time passing on quiet input partitions (`schemas.Tick`), co-partitioned
# with the inputs and read with them.
TICKS = "churn-ticks"

# What the task of partition p reads: its inputs, and its ticks after an input event
# of the same instant.
SOURCE_TOPICS = (*INPUT_TOPICS, TICKS)

# Hours of batch records the batch log keeps whole (`BatchRecord`).
BATCH_LOG_HOURS = 1

# Inputs carry the broker's clock (LogAppendTime): a message's timestamp bounds how far
# ahead its event time may be (`scoring.decoding.Limits`), and a producer cannot set it.
_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}
# Settings of topics created by the worker or the simulator.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    CUSTOMERS: {**_APPEND_TIME, "cleanup.policy": "compact"},
    ORDERS: _APPEND_TIME,
    SUPPORT_TICKETS: _APPEND_TIME,
    TICKS: _APPEND_TIME,
    CHURN_RISK_CURRENT: {"cleanup.policy": "compact"},
    # A few alerts a day at most: keep a year of them, for looking back.
    DRIFT_ALERTS: {"retention.ms": str(365 * 24 * 3600 * 1000)},
    # Compaction keeps each partition's last batch for good, and every batch for an
    # hour at least: how far back a store that lost writes can be brought forward.
    BATCHES: {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": str(BATCH_LOG_HOURS * 3600 * 1000),
        "segment.ms": str(BATCH_LOG_HOURS * 3600 * 1000),
    },
}


def qualified(name: str, prefix: str = "") -> str:
    """A topic's name on the cluster: a deployment (or a test) may prefix all of them."""
    return prefix + name
