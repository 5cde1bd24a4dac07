"""The worker's periodic jobs, each a class with one job: the consumer lag, the
realised performance, the model's hot reload and the drift monitor. The worker runs
each `tick` on a timer (Faust's, or the confluent engine's `every`); an exception
leaving a Faust timer stops the worker, so none lets one out."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping

import redis

from feature_store.redis_store import RedisStateStore
from schemas import topics
from scoring import ticks
from scoring.artifact import ServedModel
from scoring.campaign import TALLY as CAMPAIGN
from scoring.campaign import uplifts
from scoring.drift import STATISTICS, AlertBook, DriftConfig, DriftMonitor, Judgement
from scoring.model import Model
from scoring.performance import TALLY, figures
from scoring.runner import BatchRunner
from stream_app import metrics
from stream_app.log_reader import LogReader
from stream_app.observer import MetricsObserver
from stream_app.publisher import Publisher

log = logging.getLogger(__name__)

WATERMARKS_TIMEOUT_SECONDS = 5.0


class LagMonitor:
    """The group's lag on every input partition, from the brokers (Faust's consumer
    stops fetching, and its highwaters stop moving, when the agent is stuck), and the
    event-time lag of the partitions this worker owns."""

    def __init__(
        self, reader: LogReader, runner: BatchRunner, observer: MetricsObserver, timeout: float
    ) -> None:
        self.reader = reader  # a consumer of its own: never waits behind a long reread
        self.runner = runner
        self.observer = observer
        self.timeout = timeout
        self.inputs = [(t, p) for t in topics.SOURCE_TOPICS for p in range(observer.partitions)]

    async def tick(self) -> None:
        self.observer.stream_time(self.runner)
        try:
            lag = await asyncio.to_thread(self.reader.lag, self.inputs, self.timeout)
        except Exception as err:  # unknown, not stale: no lag until the brokers answer
            log.warning("consumer lag unknown: %s", err)
            metrics.ERRORS.labels("kafka").inc()
            metrics.CONSUMER_LAG.clear()
            return
        for (topic, partition), messages in lag.items():
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(messages)


class PerformanceMonitor:
    """Realised performance and the HIGH campaign's uplift over every partition, from
    the store's tallies (they move as cohorts mature)."""

    def __init__(self, store: RedisStateStore, partitions: int) -> None:
        self.store = store
        self.partitions = range(partitions)

    async def tick(self) -> None:
        try:
            tally = await asyncio.to_thread(self.store.tallies, self.partitions, TALLY)
            campaign = await asyncio.to_thread(self.store.tallies, self.partitions, CAMPAIGN)
        except redis.RedisError as err:
            log.warning("realised performance not refreshed: %s", err)
            metrics.ERRORS.labels("redis").inc()
            return
        metrics.show_performance(figures(tally))
        metrics.show_uplift(uplifts(campaign))


class ModelReloader:
    """Follows CURRENT: a new version is verified off the event loop (a child process,
    then the family's parse) and served once it passes; a failure is one more refused
    version, and the old model serves on."""

    def __init__(self, served: ServedModel, on_loaded: Callable[[Model], None]) -> None:
        self.served = served
        self.on_loaded = on_loaded

    async def tick(self) -> None:
        try:
            change = await asyncio.to_thread(self.served.refresh)
        except Exception as err:
            failure = f"reload failed with {type(err).__name__}: {err}"
            change = "refused", f"kept model {self.served().version}; {failure}"
        if change is None:
            return
        outcome, message = change
        metrics.MODEL_RELOADS.labels(outcome).inc()
        if outcome == "loaded":
            metrics.MODEL.info({"version": self.served().version})
            log.info(message)
            self.on_loaded(self.served())
        else:
            log.error(message)


class Ticker:
    """Moves time on the quiet partitions this worker owns: a tick into each
    (`scoring.ticks`), so their customers' inactivity rescores and the group's drift
    watermark follow the rest of the group."""

    def __init__(
        self,
        runner: BatchRunner,
        store: RedisStateStore,
        reader: LogReader,
        publisher: Publisher,
        partitions: int,
        gap: float,
    ) -> None:
        self.runner = runner
        self.store = store
        self.reader = reader  # the lag monitor's: watermarks only, never a long read
        self.publisher = publisher
        self.partitions = range(partitions)
        self.gap = gap
        self.before: dict[int, float | None] = {}  # owned stream times, last round

    async def tick(self) -> None:
        owned = self.runner.stream_times()
        try:
            group = await asyncio.to_thread(self.store.stream_times, self.partitions)
            caught_up = await asyncio.to_thread(self._caught_up, owned)
            due = ticks.due(owned, self.before, caught_up, group, self.gap)
            self.before = owned
            if due:
                await self._send(due)
                log.info("ticked quiet partitions %s to the group's stream time", sorted(due))
                metrics.TICKS.inc(len(due))
        except Exception as err:  # the next round looks again
            log.warning("ticks not written: %r", err)
            metrics.ERRORS.labels("kafka").inc()

    async def _send(self, due: Mapping[int, float]) -> None:
        """Write the ticks, each announced to its partition's merge first: an event
        arriving meanwhile waits for the tick, and is merged with it by time, as a
        replay of the log will."""
        for partition in due:
            self.runner.expect(topics.TICKS, partition, math.inf)
        written: dict[int, int] = {}
        try:
            written = await self.publisher.send_ticks(due)
        finally:
            for partition in due:
                self.runner.expect(topics.TICKS, partition, written.get(partition, -1))

    def _caught_up(self, owned: Mapping[int, float | None]) -> list[int]:
        """The owned partitions whose every topic-partition is processed to its end."""
        wanted = [(t, p) for p in owned for t in topics.SOURCE_TOPICS]
        ends = self.reader.bounds(wanted, WATERMARKS_TIMEOUT_SECONDS)
        runner = self.runner
        return [
            p
            for p in owned
            if all(runner.committed(t, p) + 1 >= ends[t, p][1] for t in topics.SOURCE_TOPICS)
        ]


class DriftJudge:
    """The drift monitor: every worker shows the group's alerts; the owner of
    partition 0 judges the slices the group's watermark has passed (should two believe
    they own it during a rebalance, the store's compare-and-set lets one judgement
    through, and both published the same alert ids)."""

    def __init__(
        self,
        monitor: DriftMonitor,
        config: DriftConfig,
        served: ServedModel,
        publisher: Publisher,
        runner: BatchRunner,
        transient: tuple[type[BaseException], ...],
    ) -> None:
        self.monitor = monitor
        self.config = config
        self.served = served
        self.publisher = publisher
        self.runner = runner
        self.transient = transient

    async def tick(self) -> None:
        model = self.served()
        if model.drift is None:
            return
        try:
            await self._judge(model)
        except self.transient as err:
            log.warning("drift monitor: %r; judging again at the next tick", err)
        except Exception:
            # Never stop scoring for the monitor: the next tick judges the same slices.
            log.exception("drift monitor: unexpected error; judging again at the next tick")

    async def _judge(self, model: Model) -> None:
        assert model.drift is not None
        book = await asyncio.to_thread(self.monitor.store.book)
        show_alerts(book)
        while self.runner.owns(0):
            judgement = await asyncio.to_thread(
                self.monitor.judge, model.drift, model.version, book
            )
            if judgement is None:
                break
            if judgement.alerts:
                await self.publisher.publish_alerts(judgement.alerts)
            if not await asyncio.to_thread(self.monitor.commit, judgement):
                break  # another worker judged these slices first
            book = judgement.book  # what the store now holds
            observe(judgement)
            if judgement.slices < self.config.max_slices:
                break


def show_alerts(book: AlertBook) -> None:
    for feature, state in book.alerts.items():
        metrics.DRIFT_ALERT.labels(feature).set(1 if state.raised else 0)


def observe(judgement: Judgement) -> None:
    for feature, stats in judgement.latest.items():
        for statistic in STATISTICS:
            value = getattr(stats, statistic)
            if value is not None and value == value:  # not None, not NaN
                metrics.DRIFT_STATISTIC.labels(feature, statistic).set(value)
    for alert in judgement.alerts:
        metrics.DRIFT_ALERTS.labels(alert.feature, alert.state).inc()
    show_alerts(judgement.book)
