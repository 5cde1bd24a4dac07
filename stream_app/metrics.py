"""Prometheus metrics of the worker (served at /metrics on the worker's web port).

Conventions: counters end in `_total`, durations are in seconds (`_seconds`), and
every label takes a bounded set of values (topics, partitions, outcomes, categories,
features): nothing per customer or per message. `initialise` creates every series
whose labels are known in advance at 0, so a rate or an `increase` sees the first
event too, and an alert on it can fire. docs/operating.md ("Metrics") lists them all.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram, Info

from schemas import topics
from scoring.campaign import Uplift
from scoring.decoding import REFUSALS
from scoring.drift import CLEARED, RAISED
from scoring.performance import Figures
from scoring.pipeline import OUTCOMES
from scoring.risk import RANK

REDELIVERED = "redelivered"
SYSTEMS = ("redis", "kafka")
# Weight of one score in the predicted churn rate: it is the mean probability of about
# the last 1/CHURN_RATE_WEIGHT scores (an exponentially weighted mean, half-life ~693).
CHURN_RATE_WEIGHT = 1e-3

EVENTS = Counter(
    "churn_events_total",
    "Input messages by topic and outcome: applied, duplicate (same order/ticket id), "
    "late (older than the largest window: lifetime totals only), erased (a tombstone on "
    "customers), dead_letter, redelivered (already committed: skipped)",
    ["topic", "outcome"],
)
DEAD_LETTERS = Counter(
    "churn_dead_letters_total",
    "Input messages dead-lettered, by the category of their reason (scoring.decoding.REFUSALS)",
    ["reason"],
)
PREDICTIONS = Counter(
    "churn_predictions_total",
    "Customers scored, by the risk category of the score",
    ["risk_category"],
)
# The guide's names, for scores asked of the web API rather than made by the stream.
ENDPOINTS = ("predict", "score", "lookup")
ML_PREDICTIONS = Counter(
    "ml_predictions_total",
    "Scores on demand by endpoint (predict: POST /predict; score: the what-if POST "
    "/customers/{id}/score; lookup: GET /customers/{id}) and risk category",
    ["endpoint", "risk_category"],
)
ML_PREDICTION_LATENCY = Histogram(
    "ml_prediction_latency_seconds",
    "Time to compute a score on demand (features and model, off the event loop), by endpoint",
    ["endpoint"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RISK_CHANGES = Counter(
    "churn_risk_changes_total",
    "Published risk changes, by previous (NONE: a first category) and new risk",
    ["previous", "risk"],
)
PREDICTED_CHURN_RATE = Gauge(
    "churn_predicted_churn_rate",
    "Mean predicted churn probability of the latest scores (exponentially weighted, "
    "about the last 1000 scores of this worker)",
)
BATCH_SECONDS = Histogram(
    "churn_batch_duration_seconds",
    "Time to process one batch: read, score, publish, commit",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_SIZE = Histogram(
    "churn_batch_size", "Messages per batch", buckets=(1, 10, 50, 100, 250, 500, 1000, 2000)
)
END_TO_END_SECONDS = Histogram(
    "churn_end_to_end_latency_seconds",
    "From an input message's append to its topic (broker time) to its batch's outputs "
    "being durable in Kafka",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CONSUMER_LAG = Gauge(
    "churn_consumer_lag",
    "Messages of the input topic-partition past the consumer group's committed offset "
    "(asked of the brokers on a timer; every worker reports every partition)",
    ["topic", "partition"],
)
STREAM_TIME = Gauge(
    "churn_stream_time_seconds",
    "Latest event time processed per partition this worker owns (epoch seconds)",
    ["partition"],
)
EVENT_TIME_LAG = Gauge(
    "churn_event_time_lag_seconds",
    "Wall clock minus the stream time of each partition this worker owns",
    ["partition"],
)
ERRORS = Counter(
    "churn_infrastructure_errors_total",
    "Errors from Redis or Kafka: failed batch steps and claims, undelivered outputs, "
    "failed lag queries",
    ["system"],
)
RETRIES = Counter(
    "churn_infrastructure_retries_total",
    "Batch steps and output deliveries retried after a Redis or Kafka error",
    ["system"],
)
FORGOTTEN = Counter(
    "churn_customers_forgotten_total",
    "Customers whose state was deleted after CHURN_RETENTION_DAYS of silence",
)
TICKS = Counter(
    "churn_ticks_total",
    "Ticks written into quiet input partitions, moving their stream time on to the "
    "group's (scoring.ticks)",
)
TRANSACTIONS = Counter(
    "churn_transactions_total",
    "Kafka transactions of batches (one per partition per batch): committed, aborted "
    "(and sent again) or fenced (another worker owns the partition now)",
    ["outcome"],
)
STORE_REFUSALS = Counter(
    "churn_store_write_refusals_total",
    "Batch steps Redis refused to write, retried until it takes writes again: full "
    "(maxmemory reached) or read_only (a replica; a failover under way)",
    ["reason"],
)
STORE_REFUSAL_REASONS = ("full", "read_only")
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
RECOVERED_BATCHES = Counter(
    "churn_recovered_batches_total",
    "Batches committed in Kafka but not in the store, computed again from the batch log "
    "at a claim (not published again)",
)
STOPPED_PARTITIONS = Gauge(
    "churn_partitions_stopped",
    "Partitions this worker owns and has stopped (a refused claim; the log says why)",
)
MODEL = Info("churn_model", "The model being served")
MODEL_RELOADS = Counter(
    "churn_model_reloads_total", "New model versions loaded or refused", ["outcome"]
)
# Set by the drift monitor; `feature` is a model feature, `order_total`, `score` or `risk_mix`.
DRIFT_STATISTIC = Gauge(
    "churn_drift_statistic",
    "Drift of a feature's sliding window from the training reference, by statistic "
    "(psi, mean_shift, ks)",
    ["feature", "statistic"],
)
DRIFT_ALERT = Gauge(
    "churn_drift_alert", "1 while a drift alert is raised for the feature, else 0", ["feature"]
)
DRIFT_ALERTS = Counter(
    "churn_drift_alerts_total", "Drift alerts raised and cleared", ["feature", "state"]
)
# Realised performance of the latest weekly cohorts (scoring.performance), read from the
# store on a timer; every worker reports every partition's. `figure` is one of FIGURES.
PERFORMANCE_COHORTS = 12
FIGURES = ("auc", "high_precision", "high_recall", "calibration_error", "samples", "churned")
UPLIFT = Gauge(
    "churn_campaign_uplift",
    "The HIGH campaign against its holdout, per weekly cohort of changes into HIGH (the "
    f'latest {PERFORMANCE_COHORTS}, and cohort="all") once their horizon has passed: uplift '
    "(held-out churn rate - treated), uplift_low and uplift_high (its 95% interval), "
    "churn_prevented (1 - treated rate / held-out rate), treated, treated_churn_rate, "
    "held_out, held_out_churn_rate",
    ["cohort", "figure"],
)
REALISED = Gauge(
    "churn_realised_performance",
    "Realised performance of the sampled scores whose horizon has passed, per weekly "
    f"cohort (the Monday it starts on; the latest {PERFORMANCE_COHORTS}) and model version: "
    "auc, high_precision, high_recall, calibration_error (expected, 10 bins), samples, "
    "churned. A cohort's figures move until its week and horizon have passed",
    ["cohort", "model_version", "figure"],
)


def initialise(features: Iterable[str]) -> None:
    """Create at 0 the series whose label values are known before anything happens
    (the churn rate is NaN, unknown, until the first score)."""
    PREDICTED_CHURN_RATE.set(math.nan)
    for topic in topics.INPUT_TOPICS:
        for outcome in (*OUTCOMES, REDELIVERED):
            EVENTS.labels(topic, outcome)
    for reason in REFUSALS:
        DEAD_LETTERS.labels(reason)
    for risk in RANK:
        PREDICTIONS.labels(risk)
        for endpoint in ENDPOINTS:
            ML_PREDICTIONS.labels(endpoint, risk)
    for endpoint in ENDPOINTS:
        ML_PREDICTION_LATENCY.labels(endpoint)
    for system in SYSTEMS:
        ERRORS.labels(system)
        RETRIES.labels(system)
    for reason in STORE_REFUSAL_REASONS:
        STORE_REFUSALS.labels(reason)
    for outcome in ("loaded", "refused"):
        MODEL_RELOADS.labels(outcome)
    for outcome in ("committed", "aborted", "fenced"):
        TRANSACTIONS.labels(outcome)
    for feature in features:
        DRIFT_ALERT.labels(feature)
        for state in (RAISED, CLEARED):
            DRIFT_ALERTS.labels(feature, state)


def show_performance(figures: Sequence[Figures]) -> None:
    """Set the realised performance gauges to the latest cohorts' `figures` (a figure
    not known yet, such as AUC with one outcome only, has no series)."""
    cohorts = sorted({f.cohort for f in figures})[-PERFORMANCE_COHORTS:]
    REALISED.clear()
    for f in figures:
        if f.cohort not in cohorts:
            continue
        for name in FIGURES:
            value = getattr(f, name)
            if value is not None:
                REALISED.labels(f.cohort, f.model_version, name).set(value)


def show_uplift(found: Sequence[Uplift]) -> None:
    """Set the campaign gauges to the latest cohorts' uplift and to all cohorts' (a
    figure not known yet has no series)."""
    UPLIFT.clear()
    for u in found[-(PERFORMANCE_COHORTS + 1) :]:  # the latest cohorts, then ALL
        for name, value in (
            ("uplift", u.uplift),
            ("uplift_low", u.low),
            ("uplift_high", u.high),
            ("churn_prevented", u.relative),
            ("treated", u.treated.customers),
            ("treated_churn_rate", u.treated.rate),
            ("held_out", u.held_out.customers),
            ("held_out_churn_rate", u.held_out.rate),
        ):
            if value is not None:
                UPLIFT.labels(u.cohort, name).set(value)


@dataclass
class WeightedMean:
    """An exponentially weighted mean: each value weighs `weight` against all before
    it. Values come in batches, a batch counting as `count` values at its mean; the
    first batch sets the mean."""

    weight: float
    value: float | None = None

    def add(self, count: int, total: float) -> float | None:
        if count:
            kept = 0.0 if self.value is None else (1 - self.weight) ** count
            self.value = kept * (self.value or 0.0) + (1 - kept) * total / count
        return self.value
