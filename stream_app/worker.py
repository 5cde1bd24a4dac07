"""The worker: the core wired to its adapters, on a Faust app.

The Faust engine (`stream_app.faust_source`) feeds the input topics to the stream
processor (`scoring.processor`), which runs the batch runner (`scoring.runner`) over
the Redis state store, publishes each batch in a Kafka transaction
(`stream_app.transactions`) and acknowledges to Faust what the store has committed.
Faust timers run the periodic jobs (`stream_app.jobs`); the web views are
`stream_app.web`'s.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
from pathlib import Path
from typing import Any

import faust
import redis
import uvloop
from aiokafka.errors import KafkaError

from feature_store.redis_store import RedisStateStore
from schemas import topics
from scoring.artifact import ServedModel
from scoring.campaign import campaign_tally
from scoring.daily import daily_tally
from scoring.decoding import InputDecoder
from scoring.drift import SUBJECTS, DriftMonitor, DriftTally, Reference
from scoring.model import Model
from scoring.performance import performance_tally
from scoring.pipeline import Scorer
from scoring.processor import StreamProcessor
from scoring.runner import BatchRunner
from stream_app import kafka_security, metrics, web
from stream_app.faust_source import FaustSource
from stream_app.jobs import DriftJudge, LagMonitor, ModelReloader, PerformanceMonitor, Ticker
from stream_app.log_reader import LogReader
from stream_app.observer import MetricsObserver, count_retry
from stream_app.partitioning import partition_of
from stream_app.publisher import Publisher
from stream_app.redis_client import RedisFull, RedisReadOnly
from stream_app.redis_drift import RedisDriftStore
from stream_app.settings import Settings
from stream_app.transactions import TransactionalPublisher

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    # Redis refusing writes: a script is refused at its first write, so nothing is
    # half-written, and the step waits until Redis takes writes again.
    RedisFull,
    RedisReadOnly,
    KafkaError,
    asyncio.TimeoutError,
)
# How often the consumer lag is asked of the brokers, and the event-time lag refreshed:
# on a timer, not after batches, so both keep moving while the agent is stuck.
LAG_REFRESH_SECONDS = 5.0


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
    """The Faust app with its agent, timers and web views, wired to the processor."""
    app = faust_app(settings)
    prefix = settings.topic_prefix
    kafka_config = kafka_security.confluent_config(settings)
    store = RedisStateStore(redis_client, settings.redis_namespace)
    served = ServedModel(settings.models_dir, model)
    source = FaustSource(app, prefix, LogReader(kafka_config, settings.app_id, prefix))
    publisher = Publisher({**kafka_config, "client.id": settings.app_id}, prefix)
    transactions = (
        TransactionalPublisher(
            {**kafka_config, "client.id": settings.app_id}, settings.app_id, prefix
        )
        if settings.processing_guarantee == "exactly_once"
        else None
    )
    drift = settings.drift()
    scorer = Scorer(
        served,
        margin=settings.hysteresis,
        actions=actions,
        decoder=InputDecoder(settings.limits(), functools.partial(key_partition, partitions)),
        sample_rate=settings.performance_sample,
        retention_days=settings.retention_days,
        targeting=settings.targeting(),
        holdout=settings.holdout(),
    )

    def drift_reference(version: str) -> Reference | None:
        current = served()
        return current.drift if current.version == version else None

    runner = BatchRunner(
        store,
        scorer,
        transactions or publisher,
        topics.SOURCE_TOPICS,
        idle=settings.max_idle_ms / 1000,
        transient=TRANSIENT_ERRORS,
        reread=source.read,
        tallies=[
            daily_tally,
            performance_tally,
            campaign_tally,
            *([DriftTally(drift_reference, drift)] if settings.drift_monitor else []),
        ],
        on_retry=count_retry,
        on_recovered=lambda partition: metrics.RECOVERED_BATCHES.inc(),
        step_limit=settings.batch_size,
        batch_log=transactions,
        versions=served.version,
        list_size=settings.worklist_size,
    )
    observer = MetricsObserver(partitions)
    processor = StreamProcessor(runner, source, observer)
    agent = source.attach(processor, settings.batch_size, settings.batch_wait_ms / 1000)
    metrics.initialise(SUBJECTS)
    metrics.MODEL.info({"version": model.version})
    _say_drift(settings, model)

    # Messages held back for a caught-up topic-partition are released once the idle
    # time has passed, even if nothing else arrives.
    app.timer(interval=max(settings.max_idle_ms / 1000, 0.05))(processor.release)
    # A consumer of its own for the lag: a lag query never waits behind a long reread.
    lag_reader = LogReader(kafka_config, settings.app_id, prefix)
    lag = LagMonitor(lag_reader, runner, observer, LAG_REFRESH_SECONDS)
    app.timer(interval=LAG_REFRESH_SECONDS)(lag.tick)
    if settings.tick_seconds:
        ticker = Ticker(runner, store, lag_reader, publisher, partitions, settings.tick_gap_seconds)
        app.timer(interval=settings.tick_seconds)(ticker.tick)
    performance = PerformanceMonitor(store, partitions)
    app.timer(interval=settings.performance_refresh_seconds)(performance.tick)
    reloader = ModelReloader(served, functools.partial(_say_drift, settings))
    app.timer(interval=settings.model_poll_seconds)(reloader.tick)
    if settings.drift_monitor:
        monitor = DriftMonitor(
            drift, range(partitions), RedisDriftStore(redis_client, settings.redis_namespace)
        )
        judge = DriftJudge(monitor, drift, served, publisher, runner, TRANSIENT_ERRORS)
        app.timer(interval=settings.drift_interval_seconds)(judge.tick)
    web.install(app, settings, store, served, scorer.policy, partitions, agent, kafka_config)
    return app


@functools.lru_cache(maxsize=1 << 16)
def key_partition(partitions: int, key: str) -> int:
    """The partition of a key (murmur2 is pure Python, 1.6 us, and a customer's
    messages come again and again)."""
    return partition_of(key.encode(), partitions)


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
