"""The Faust adapter: feeds Kafka's messages to the batch runner and acknowledges them
once the runner has committed them.

Faust's `take_events` acknowledges a batch in a `finally`, even when the body raised
or the worker is being stopped (faust #606), so the agent takes with `noack_take`
and acknowledges each message itself, only once the state store holds what it
produced. Faust's committed offsets therefore never pass the store's recorded ones:
a message not yet committed (held back by the merge, or in a batch that failed) is
read again after a restart and skipped if it was done. Should the store have lost
writes, the input behind them is read again from the log (`stream_app.log_reader`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import tempfile
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import faust
import redis
import uvloop
from aiokafka.errors import KafkaError
from faust.streams import Stream
from faust.types import TP, EventT, StreamT

from feature_store.redis_store import RedisStateStore
from schemas import topics
from scoring.artifact import ServedModel
from scoring.daily import daily_tally
from scoring.decoding import InputDecoder
from scoring.drift import (
    STATISTICS,
    SUBJECTS,
    AlertBook,
    DriftMonitor,
    DriftTally,
    Judgement,
    Reference,
)
from scoring.merge import InputMessage
from scoring.model import Model
from scoring.performance import TALLY, figures, performance_tally
from scoring.pipeline import Scorer
from scoring.runner import BatchRunner, StepReport
from stream_app import kafka_security, metrics, web
from stream_app.log_reader import LogReader
from stream_app.partitioning import partition_of
from stream_app.publisher import Publisher
from stream_app.redis_drift import RedisDriftStore
from stream_app.settings import Settings

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    KafkaError,
    asyncio.TimeoutError,
)
# How often the consumer lag is asked of the brokers, and the event-time lag refreshed:
# on a timer, not after batches, so both keep moving while the agent is stuck.
LAG_REFRESH_SECONDS = 5.0
# How often the realised performance is read from the store: it moves as cohorts mature.
PERFORMANCE_REFRESH_SECONDS = 60.0


def install_uvloop() -> None:
    """Run on uvloop: Faust's per-message asyncio machinery costs about 30% less
    (measured on the bare agent, bench/PROFILE.md). Call before the app starts."""
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def faust_app(settings: Settings, **extra: Any) -> faust.App:
    """The worker's Faust app and settings, before any agent (the benchmark's bare
    agent runs on exactly these)."""
    return faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        # aiokafka's consumer and producer; None is PLAINTEXT.
        broker_credentials=kafka_security.faust_credentials(settings),
        store="memory://",
        # Faust keeps little on disk with a memory store; keep it out of the checkout.
        datadir=Path(tempfile.gettempdir()) / f"faust-{settings.app_id}",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Held-back messages stay unacknowledged on purpose; a rebalance or a stop
        # must not wait for them.
        stream_wait_empty=False,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
        # Faust binds 0.0.0.0 unless told; listen where configured (loopback by default).
        web_bind=settings.web_bind,
        web_host=settings.web_bind,
        web_port=settings.web_port,
        web_in_thread=False,
        # Faust's own pages (/router, /table, stats, /graph) are not ours to expose.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        **extra,
    )


def build_app(
    settings: Settings,
    model: Model,
    redis_client: redis.Redis | redis.RedisCluster,
    partitions: int,
    actions: dict[str, tuple[str, ...]] | None = None,
) -> faust.App:
    """The Faust app with its agent and web views, wired to the batch runner."""
    app = faust_app(settings)
    prefix = settings.topic_prefix
    kafka_config = kafka_security.confluent_config(settings)
    store = RedisStateStore(redis_client, settings.redis_namespace)
    served = ServedModel(settings.models_dir, model)

    # murmur2 is pure Python (1.6 us); a customer's messages come again and again.
    @functools.lru_cache(maxsize=1 << 16)
    def key_partition(key: str) -> int:
        return partition_of(key.encode(), partitions)

    def drift_reference(version: str) -> Reference | None:
        current = served()
        return current.drift if current.version == version else None

    reader = LogReader(kafka_config, settings.app_id, prefix)
    # A consumer of its own: a lag query never waits behind a long reread.
    lag_reader = LogReader(kafka_config, settings.app_id, prefix)
    publisher = Publisher({**kafka_config, "client.id": settings.app_id}, prefix)
    drift = settings.drift()
    scorer = Scorer(
        served,
        margin=settings.hysteresis,
        actions=actions,
        decoder=InputDecoder(settings.limits(), key_partition),
        sample_rate=settings.performance_sample,
    )
    runner = BatchRunner(
        store,
        scorer,
        publisher,
        topics.INPUT_TOPICS,
        idle=settings.max_idle_ms / 1000,
        transient=TRANSIENT_ERRORS,
        reread=reader.reread,
        tallies=[
            daily_tally,
            performance_tally,
            *([DriftTally(drift_reference, drift)] if settings.drift_monitor else []),
        ],
        on_retry=_count_retry,
    )
    monitor = DriftMonitor(
        drift, range(partitions), RedisDriftStore(redis_client, settings.redis_namespace)
    )
    metrics.initialise(SUBJECTS)
    metrics.MODEL.info({"version": model.version})
    _say_drift(settings, model)
    churn_rate = metrics.WeightedMean(metrics.CHURN_RATE_WEIGHT)
    input_names = {topics.qualified(name, prefix): name for name in topics.INPUT_TOPICS}
    inputs = app.topic(*input_names)
    # Faust events delivered but not yet acknowledged, per topic-partition, in order,
    # and the highest offset Faust has delivered.
    pending: dict[TP, deque[EventT]] = {}
    delivered: dict[TP, int] = {}
    lock = asyncio.Lock()  # one step at a time: the agent's, or the idle timer's

    def behind(topic: str, partition: int) -> bool:
        """That topic-partition has messages unread: in Kafka, or in Faust's buffers.
        Unknown counts as behind: holding back only delays, releasing too early
        could change the order."""
        task = runner.tasks.get(partition)
        tp = TP(topics.qualified(topic, prefix), partition)
        if task is None or tp not in app.consumer.assignment():
            return True
        highwater = app.consumer.highwater(tp)
        if highwater is None:
            return True
        read = max(task.merger.last_offset.get(topic, -1), task.offsets.get(topic, -1))
        return read + 1 < highwater

    async def acknowledge(report: StepReport | None) -> None:
        """Ack every pending event whose partition has committed past it; drop the
        events of partitions this worker no longer owns, unacknowledged."""
        for tp, events in pending.items():
            task = runner.tasks.get(tp.partition)
            if task is None:
                events.clear()
                continue
            committed = task.offsets.get(input_names[tp.topic], -1)
            while events and events[0].message.offset <= committed:
                events.popleft().ack()
        if report is not None:
            _observe(report, churn_rate)
            _observe_stream_time(runner, partitions)

    async def step() -> None:
        started = time.perf_counter()
        report = await runner.step(behind)
        await acknowledge(report)
        metrics.HELD_BACK.set(runner.buffered())
        if report.outcomes:
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    async def score_customers(stream: StreamT) -> AsyncIterator[None]:
        wait = settings.batch_wait_ms / 1000
        async for events in cast(Stream, stream).noack_take(settings.batch_size, within=wait):
            try:
                async with lock:
                    await take_in(cast(Sequence[EventT], events))
                    await step()
            except asyncio.CancelledError:
                raise  # stopping: what was not committed stays unacknowledged
            except Exception:
                # Unknown state: stop without acknowledging, Kafka redelivers. (Faust
                # would only log a crashed agent and keep a worker that does nothing.)
                log.exception("unexpected error; stopping without acknowledging the batch")
                logging.shutdown()
                os._exit(70)
            yield None

    async def take_in(events: Sequence[EventT]) -> None:
        """Buffer a batch Faust delivered, claiming a partition first seen in it."""
        messages = []
        for event in events:
            message = event.message
            pending.setdefault(message.tp, deque()).append(event)
            delivered[message.tp] = max(delivered.get(message.tp, -1), message.offset)
            messages.append(_input_message(message, input_names))
            partition = message.partition
            if (
                partition not in runner.tasks
                and partition not in runner.fenced
                and message.tp in app.consumer.assignment()
            ):
                await claim(partition)  # before the rebalance signal got to it
        metrics.BATCH_SIZE.observe(len(messages))
        for topic, count in runner.add(messages).items():
            metrics.EVENTS.labels(topic, metrics.REDELIVERED).inc(count)

    agent = app.agent(inputs, name="score-customers", concurrency=1)(score_customers)

    @app.timer(interval=max(settings.max_idle_ms / 1000, 0.05))
    async def release_held_back() -> None:
        """Messages held back for a caught-up topic-partition are released once the
        idle time has passed, even if nothing else arrives."""
        if runner.buffered() and not lock.locked():
            async with lock:
                await step()

    every_input = [(topic, p) for topic in topics.INPUT_TOPICS for p in range(partitions)]

    @app.timer(interval=LAG_REFRESH_SECONDS)
    async def refresh_lag() -> None:
        """The group's lag on every input partition, from the brokers: Faust's consumer
        stops fetching (and its highwaters stop moving) when the agent is stuck."""
        _observe_stream_time(runner, partitions)
        try:
            lag = await asyncio.to_thread(lag_reader.lag, every_input, LAG_REFRESH_SECONDS)
        except Exception as err:  # unknown, not stale: no lag until the brokers answer
            log.warning("consumer lag unknown: %s", err)
            metrics.ERRORS.labels("kafka").inc()
            metrics.CONSUMER_LAG.clear()
            return
        for (topic, partition), messages in lag.items():
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(messages)

    @app.timer(interval=PERFORMANCE_REFRESH_SECONDS)
    async def refresh_performance() -> None:
        """Realised performance of every partition, from the store's tallies."""
        try:
            tally = await asyncio.to_thread(store.tallies, range(partitions), TALLY)
        except redis.RedisError as err:  # an exception leaving a timer stops the worker
            log.warning("realised performance not refreshed: %s", err)
            metrics.ERRORS.labels("redis").inc()
            return
        metrics.show_performance(figures(tally))

    async def claim(partition: int) -> None:
        """Take a partition over; resume it from the offsets its state records,
        reading again from the log what lies between them and what the group
        committed or this consumer was already given."""
        claim = await runner.take(partition)
        loop = asyncio.get_running_loop()
        committed = await loop.run_in_executor(
            None, reader.committed, [(t, partition) for t in topics.INPUT_TOPICS]
        )
        for topic in topics.INPUT_TOPICS:
            start = claim.offsets.get(topic, -1) + 1
            # Delivered counts too: a partition fenced and claimed again without a
            # rebalance is not delivered again by Faust, which has moved past it.
            tp = TP(topics.qualified(topic, prefix), partition)
            end = max(committed.get((topic, partition), 0) - 1, delivered.get(tp, -1))
            if end >= start:
                log.warning(
                    "%s-%d: reading offsets %d..%d again (the state holds up to %d)",
                    topic,
                    partition,
                    start,
                    end,
                    start - 1,
                )
                metrics.REREADS.inc()
                runner.add(
                    await loop.run_in_executor(None, reader.read, topic, partition, start, end)
                )
        log.info("claimed partition %d (epoch %d)", partition, claim.epoch)
        metrics.OWNED_PARTITIONS.set(len(runner.tasks))

    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned: set[TP] = args[0]
        owned = {tp.partition for tp in assigned if tp.topic in input_names}
        # Under the agent's lock: a claim waits on the store off the event loop, and
        # the agent must not claim the same partition (nor buffer its messages into a
        # task about to be replaced) meanwhile.
        async with lock:
            for partition in set(runner.tasks) - owned:
                runner.revoke(partition)
            for partition in sorted(owned - set(runner.tasks)):
                await claim(partition)

    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[TP] = args[0]
        for partition in {tp.partition for tp in revoked if tp.topic in input_names}:
            runner.revoke(partition)
        for tp in revoked:
            pending.pop(tp, None)
        metrics.OWNED_PARTITIONS.set(len(runner.tasks))

    app.on_partitions_assigned.connect(on_assigned)
    app.on_partitions_revoked.connect(on_revoked)

    @app.timer(interval=settings.model_poll_seconds)
    async def reload_model() -> None:
        # Off the event loop: verifying a new version (a child process, then LightGBM's
        # parse) takes a while. An exception leaving a Faust timer stops the worker, so
        # none does: a failure here is one more refused version, the old model serves on.
        try:
            change = await asyncio.to_thread(served.refresh)
        except Exception as err:
            failure = f"reload failed with {type(err).__name__}: {err}"
            change = "refused", f"kept model {served().version}; {failure}"
        if change is None:
            return
        outcome, message = change
        metrics.MODEL_RELOADS.labels(outcome).inc()
        if outcome == "loaded":
            metrics.MODEL.info({"version": served().version})
            log.info(message)
            _say_drift(settings, served())
        else:
            log.error(message)

    @app.timer(interval=settings.drift_interval_seconds)
    async def judge_drift() -> None:
        """The drift monitor: every worker shows the group's alerts; the owner of
        partition 0 judges the slices the group's watermark has passed (should two
        believe they own it during a rebalance, the store's compare-and-set lets one
        judgement through, and both published the same alert ids)."""
        model = served()
        if not settings.drift_monitor or model.drift is None:
            return
        try:
            book = await asyncio.to_thread(monitor.store.book)
            _show_alerts(book)
            while 0 in runner.tasks:
                judgement = await asyncio.to_thread(monitor.judge, model.drift, model.version, book)
                if judgement is None:
                    break
                if judgement.alerts:
                    await publisher.publish_alerts(judgement.alerts)
                if not await asyncio.to_thread(monitor.commit, judgement):
                    break  # another worker judged these slices first
                book = judgement.book  # what the store now holds
                _observe_drift(judgement)
                if judgement.slices < drift.max_slices:
                    break
        except TRANSIENT_ERRORS as err:
            log.warning(
                "drift monitor: %r; judging again in %.1fs", err, settings.drift_interval_seconds
            )
        except Exception:
            # Never stop scoring for the monitor: the next tick judges the same slices.
            log.exception("drift monitor: unexpected error; judging again at the next tick")

    web.install(app, settings, store, served, scorer.policy, partitions, agent, kafka_config)
    return app


def _input_message(message: Any, input_names: dict[str, str]) -> InputMessage:
    return InputMessage(
        topic=input_names[message.topic],  # the core speaks logical topic names
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        timestamp=message.timestamp if message.timestamp and message.timestamp > 0 else None,
    )


def _observe(report: StepReport, churn_rate: metrics.WeightedMean) -> None:
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
        if outcome.scores is not None:
            for risk, count in Counter(outcome.scores.risks).items():
                metrics.PREDICTIONS.labels(risk).inc(count)
            scored += len(outcome.scores.risks)
            probability_sum += float(outcome.scores.probabilities.sum())
        changes = Counter((c.previous_risk or "NONE", c.risk) for c in outcome.changes)
        for (previous, risk), count in changes.items():
            metrics.RISK_CHANGES.labels(previous, risk).inc(count)
    rate = churn_rate.add(scored, probability_sum)
    if rate is not None:
        metrics.PREDICTED_CHURN_RATE.set(rate)


def _say_drift(settings: Settings, model: Model) -> None:
    if not settings.drift_monitor:
        log.info("drift monitor off (CHURN_DRIFT_MONITOR=off)")
    elif model.drift is None:
        log.warning(
            "drift monitor off for model %s: its artifact has no drift reference "
            "(metadata.json reference.serving, written by training since the monitor "
            "exists); retrain to turn it on",
            model.version,
        )
    else:
        log.info(
            "drift monitor on for model %s: %d reference scores", model.version, model.drift.rows
        )


def _show_alerts(book: AlertBook) -> None:
    for feature, state in book.alerts.items():
        metrics.DRIFT_ALERT.labels(feature).set(1 if state.raised else 0)


def _observe_drift(judgement: Judgement) -> None:
    for feature, stats in judgement.latest.items():
        for statistic in STATISTICS:
            value = getattr(stats, statistic)
            if value is not None and value == value:  # not None, not NaN
                metrics.DRIFT_STATISTIC.labels(feature, statistic).set(value)
    for alert in judgement.alerts:
        metrics.DRIFT_ALERTS.labels(alert.feature, alert.state).inc()
    _show_alerts(judgement.book)


def _count_retry(port: str) -> None:
    """A runner's step retried after a transient error: its store is Redis, its sink
    Kafka."""
    system = "redis" if port == "store" else "kafka"
    metrics.ERRORS.labels(system).inc()
    metrics.RETRIES.labels(system).inc()


def _observe_stream_time(runner: BatchRunner, partitions: int) -> None:
    """Stream time and event-time lag of the partitions this worker owns, and none of
    the others (a partition given up is its new owner's to report)."""
    now = time.time()
    for partition in range(partitions):
        task = runner.tasks.get(partition)
        label = str(partition)
        if task is None or task.stream_time is None:
            metrics.STREAM_TIME.remove(label)
            metrics.EVENT_TIME_LAG.remove(label)
        else:
            metrics.STREAM_TIME.labels(label).set(task.stream_time)
            metrics.EVENT_TIME_LAG.labels(label).set(now - task.stream_time)
