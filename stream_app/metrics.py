"""Prometheus metrics of the worker (served at /metrics on the worker's web port)."""

from prometheus_client import Counter, Gauge, Histogram, Info

EVENTS = Counter(
    "churn_events_total",
    "Input messages by outcome: applied, redelivered (already applied), duplicate "
    "(same order/ticket id), late (older than the largest window: lifetime totals only), "
    "dead_letter",
    ["outcome"],
)
RISK_CHANGES = Counter("churn_risk_changes_total", "Published risk changes", ["previous", "risk"])
SCORED = Counter("churn_customers_scored_total", "Customers rescored")
BATCH_SECONDS = Histogram(
    "churn_batch_seconds",
    "Time to process one batch, from taking it to publishing its results",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_SIZE = Histogram(
    "churn_batch_size", "Messages per batch", buckets=(1, 10, 50, 100, 250, 500, 1000, 2000)
)
CONSUMER_LAG = Gauge(
    "churn_consumer_lag", "Messages behind the partition's end", ["topic", "partition"]
)
EVENT_TIME_WATERMARK = Gauge(
    "churn_event_time_watermark_seconds", "Latest event time processed (epoch seconds)"
)
RETRIES = Counter(
    "churn_infrastructure_retries_total", "Batches retried after a Redis or Kafka error"
)
MODEL = Info("churn_model", "The model being served")
MODEL_RELOADS = Counter(
    "churn_model_reloads_total", "New model versions loaded or refused", ["outcome"]
)
