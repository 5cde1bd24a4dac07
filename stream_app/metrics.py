"""Prometheus metrics of the worker (served at /metrics on the worker's web port)."""

from prometheus_client import Counter, Gauge, Histogram, Info

EVENTS = Counter(
    "churn_events_total",
    "Input messages by outcome: applied, duplicate (same order/ticket id), late (older "
    "than the largest window: lifetime totals only), erased (a tombstone on customers), "
    "dead_letter, redelivered (already committed: skipped)",
    ["outcome"],
)
RISK_CHANGES = Counter("churn_risk_changes_total", "Published risk changes", ["previous", "risk"])
SCORED = Counter("churn_customers_scored_total", "Customers rescored")
BATCH_SECONDS = Histogram(
    "churn_batch_seconds",
    "Time to process one batch: read, score, publish, commit",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_SIZE = Histogram(
    "churn_batch_size", "Messages per batch", buckets=(1, 10, 50, 100, 250, 500, 1000, 2000)
)
CONSUMER_LAG = Gauge(
    "churn_consumer_lag",
    "Messages not yet committed, to the partition's end",
    ["topic", "partition"],
)
STREAM_TIME = Gauge(
    "churn_stream_time_seconds",
    "Latest event time processed per partition (epoch seconds)",
    ["partition"],
)
RETRIES = Counter(
    "churn_infrastructure_retries_total", "Steps retried after a Redis or Kafka error"
)
FENCED = Counter(
    "churn_fenced_batches_total", "Batches dropped: another worker had claimed the partition"
)
DIVERGED = Counter(
    "churn_store_divergences_total",
    "Times the state store had lost writes and a partition was read again",
)
REREADS = Counter("churn_rereads_total", "Topic-partitions read again from the log at a claim")
HELD_BACK = Gauge(
    "churn_held_back_messages",
    "Messages received but waiting for the event-time merge (scoring.merge)",
)
OWNED_PARTITIONS = Gauge("churn_owned_partitions", "Partitions this worker owns")
MODEL = Info("churn_model", "The model being served")
MODEL_RELOADS = Counter(
    "churn_model_reloads_total", "New model versions loaded or refused", ["outcome"]
)
