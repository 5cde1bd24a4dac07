"""The worker's metrics of what the processor and the runner did (Prometheus)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection, Mapping

from scoring.runner import BatchRunner, StepReport
from stream_app import metrics
from stream_app.redis_client import RedisFull, RedisReadOnly


class MetricsObserver:
    """A `scoring.processor.Observer` that keeps the worker's Prometheus metrics."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.churn_rate = metrics.WeightedMean(metrics.CHURN_RATE_WEIGHT)

    def took(self, messages: int, redelivered: Mapping[str, int]) -> None:
        metrics.BATCH_SIZE.observe(messages)
        for topic, count in redelivered.items():
            metrics.EVENTS.labels(topic, metrics.REDELIVERED).inc(count)

    def stepped(self, report: StepReport, seconds: float, runner: BatchRunner) -> None:
        metrics.HELD_BACK.set(runner.buffered())
        metrics.STOPPED_PARTITIONS.set(len(runner.stopped))
        if report.outcomes:
            metrics.BATCH_SECONDS.observe(seconds)
        self._outcomes(report)
        self.stream_time(runner)

    def owned(self, partitions: Collection[int]) -> None:
        metrics.OWNED_PARTITIONS.set(len(partitions))

    def reread(self, topic: str, partition: int, start: int, end: int) -> None:
        metrics.REREADS.inc()

    def stream_time(self, runner: BatchRunner) -> None:
        """Stream time and event-time lag of the partitions this worker owns, and
        none of the others (a partition given up is its new owner's to report)."""
        now = time.time()
        times = runner.stream_times()
        for partition in range(self.partitions):
            label, stream_time = str(partition), times.get(partition)
            if stream_time is None:
                metrics.STREAM_TIME.remove(label)
                metrics.EVENT_TIME_LAG.remove(label)
            else:
                metrics.STREAM_TIME.labels(label).set(stream_time)
                metrics.EVENT_TIME_LAG.labels(label).set(now - stream_time)

    def _outcomes(self, report: StepReport) -> None:
        metrics.FENCED.inc(len(report.fenced))
        metrics.DIVERGED.inc(len(report.diverged))
        for latency in report.latencies:
            metrics.END_TO_END_SECONDS.observe(latency)
        scored, probability_sum = 0, 0.0
        for outcome in report.outcomes:
            for (topic, name), count in outcome.counts.items():
                metrics.EVENTS.labels(topic, name).inc(count)
            for reason, count in outcome.refusals.items():
                metrics.DEAD_LETTERS.labels(reason).inc(count)
            metrics.FORGOTTEN.inc(outcome.forgotten)
            if outcome.scores is not None:
                for risk, count in Counter(outcome.scores.risks).items():
                    metrics.PREDICTIONS.labels(risk).inc(count)
                scored += len(outcome.scores.risks)
                probability_sum += float(outcome.scores.probabilities.sum())
            changes = Counter((c.previous_risk or "NONE", c.risk) for c in outcome.changes)
            for (previous, risk), count in changes.items():
                metrics.RISK_CHANGES.labels(previous, risk).inc(count)
        rate = self.churn_rate.add(scored, probability_sum)
        if rate is not None:
            metrics.PREDICTED_CHURN_RATE.set(rate)


def count_retry(port: str, error: BaseException) -> None:
    """A runner's step retried after a transient error: its store is Redis, its sink
    Kafka. A Redis that refuses writes (full, read-only) is counted by reason too."""
    system = "redis" if port == "store" else "kafka"
    metrics.ERRORS.labels(system).inc()
    metrics.RETRIES.labels(system).inc()
    if isinstance(error, RedisFull):
        metrics.STORE_REFUSALS.labels("full").inc()
    elif isinstance(error, RedisReadOnly):
        metrics.STORE_REFUSALS.labels("read_only").inc()
