"""The worker's parts that are the same on every engine: the core wired to its adapters
(the Redis store, the served model, the publishers, the batch runner), the periodic
jobs and the web endpoints. An engine (`stream_app.worker` on Faust,
`stream_app.confluent_worker` on confluent-kafka) adds a source, a processor, timers
and a web server around them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import redis
from aiohttp.web import RouteDef

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
from scoring.runner import BatchRunner
from stream_app import kafka_security, metrics, web
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

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    # Redis refusing writes: a script is refused at its first write, so nothing is
    # half-written, and the step waits until Redis takes writes again.
    RedisFull,
    RedisReadOnly,
    asyncio.TimeoutError,
)
# How often the consumer lag is asked of the brokers, and the event-time lag refreshed:
# on a timer, not after batches, so both keep moving while the consumer is stuck.
LAG_REFRESH_SECONDS = 5.0

Job = tuple[float, Callable[[], Awaitable[None]]]  # every so many seconds, this


@dataclass
class Wiring:
    runner: BatchRunner
    observer: MetricsObserver
    reader: LogReader  # the log, read by offset: claims and recoveries
    jobs: list[Job]
    # Messages held back for a caught-up topic-partition are released once the idle
    # time has passed, even if nothing else arrives: the processor's release, this often.
    release_interval: float
    routes: Callable[[web.Engine], list[RouteDef]]
    closing: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in self.closing:
            close()


async def step_or_stop(step: Awaitable[object]) -> None:
    """Run a step of the processor (a fetched batch delivered, or what waited
    released); on an unexpected error, stop the process without acknowledging the
    batch (Kafka redelivers), whatever the engine. (Faust would only log a crashed
    agent and keep a worker that does nothing.)"""
    try:
        await step
    except asyncio.CancelledError:
        raise  # stopping: what was not committed stays unacknowledged
    except Exception:
        log.exception("unexpected error; stopping without acknowledging the batch")
        logging.shutdown()
        os._exit(70)


def wire(
    settings: Settings,
    model: Model,
    redis_client: redis.Redis | redis.RedisCluster,
    partitions: int,
    actions: dict[str, tuple[str, ...]] | None,
    transient: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
) -> Wiring:
    """Every engine-neutral part of the worker (`transient`: the errors a step retries;
    the Faust engine adds aiokafka's)."""
    prefix = settings.topic_prefix
    kafka_config = kafka_security.confluent_config(settings)
    store = RedisStateStore(redis_client, settings.redis_namespace)
    served = ServedModel(settings.models_dir, model)
    reader = LogReader(kafka_config, settings.app_id, prefix)
    publisher = Publisher({**kafka_config, "client.id": settings.app_id}, prefix)
    transactions = (
        TransactionalPublisher(
            {**kafka_config, "client.id": settings.app_id}, settings.app_id, prefix
        )
        if settings.processing_guarantee == "exactly_once"
        else None
    )
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
    runner = _runner(settings, store, scorer, served, publisher, transactions, reader, transient)
    observer = MetricsObserver(partitions)
    metrics.initialise(SUBJECTS)
    metrics.MODEL.info({"version": model.version})
    say_drift(settings, model)
    jobs = _jobs(
        settings, kafka_config, runner, store, served, observer, publisher, redis_client, transient
    )
    return Wiring(
        runner,
        observer,
        reader,
        jobs,
        max(settings.max_idle_ms / 1000, 0.05),
        functools.partial(
            web.routes,
            settings,
            store,
            served,
            scorer.policy,
            partitions,
            kafka_config=kafka_config,
        ),
        [publisher.close, *([transactions.close] if transactions else []), reader.close],
    )


def _runner(
    settings: Settings,
    store: RedisStateStore,
    scorer: Scorer,
    served: ServedModel,
    publisher: Publisher,
    transactions: TransactionalPublisher | None,
    reader: LogReader,
    transient: tuple[type[BaseException], ...],
) -> BatchRunner:
    drift = settings.drift()

    def drift_reference(version: str) -> Reference | None:
        current = served()
        return current.drift if current.version == version else None

    return BatchRunner(
        store,
        scorer,
        transactions or publisher,
        topics.SOURCE_TOPICS,
        idle=settings.max_idle_ms / 1000,
        transient=transient,
        reread=reader.reread,
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
        announced=(topics.TICKS,),
    )


def _jobs(
    settings: Settings,
    kafka_config: kafka_security.KafkaConfig,
    runner: BatchRunner,
    store: RedisStateStore,
    served: ServedModel,
    observer: MetricsObserver,
    publisher: Publisher,
    redis_client: redis.Redis | redis.RedisCluster,
    transient: tuple[type[BaseException], ...],
) -> list[Job]:
    """The periodic jobs (`stream_app.jobs`), each with its interval."""
    partitions = observer.partitions
    # A consumer of its own for the lag: a lag query never waits behind a long reread.
    lag_reader = LogReader(kafka_config, settings.app_id, settings.topic_prefix)
    jobs: list[Job] = [
        (LAG_REFRESH_SECONDS, LagMonitor(lag_reader, runner, observer, LAG_REFRESH_SECONDS).tick)
    ]
    if settings.tick_seconds:
        ticker = Ticker(runner, store, lag_reader, publisher, partitions, settings.tick_gap_seconds)
        jobs.append((settings.tick_seconds, ticker.tick))
    performance = PerformanceMonitor(store, partitions)
    jobs.append((settings.performance_refresh_seconds, performance.tick))
    reloader = ModelReloader(served, functools.partial(say_drift, settings))
    jobs.append((settings.model_poll_seconds, reloader.tick))
    if settings.drift_monitor:
        drift = settings.drift()
        monitor = DriftMonitor(
            drift, range(partitions), RedisDriftStore(redis_client, settings.redis_namespace)
        )
        judge = DriftJudge(monitor, drift, served, publisher, runner, transient)
        jobs.append((settings.drift_interval_seconds, judge.tick))
    return jobs


@functools.lru_cache(maxsize=1 << 16)
def key_partition(partitions: int, key: str) -> int:
    """The partition of a key (murmur2 is pure Python, 1.6 us, and a customer's
    messages come again and again)."""
    return partition_of(key.encode(), partitions)


def say_drift(settings: Settings, model: Model) -> None:
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
