"""The Faust adapter: feeds Kafka batches to the scoring core and publishes results.

Per batch, in this order: process (Redis updates, scoring), publish the changes and
dead letters and wait until Kafka has them, record the published categories, and
only then let Faust acknowledge the input offsets. Faust's `take_events` acks the
batch even when the body raises (faust #606), so the body never raises: Redis and
Kafka errors are retried, anything else stops the process before the ack.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import faust
import msgspec
import redis
import uvloop
from aiokafka.errors import KafkaError
from faust.streams import Stream
from faust.types import TP, EventT, StreamT
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from feature_store.definitions import EVENT_TIME_FIELD, FEATURE_NAMES, feature_matrix
from feature_store.online import base_columns
from feature_store.redis_store import RedisFeatureStore
from schemas import topics
from scoring.artifact import Model, ServedModel
from scoring.pipeline import BatchOutcome, InputMessage, Scorer
from stream_app import metrics
from stream_app.publisher import Publisher, PublishError
from stream_app.settings import Settings

log = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"
TRANSIENT_ERRORS = (
    redis.ConnectionError,
    redis.TimeoutError,
    KafkaError,
    PublishError,
    BufferError,  # the producer's queue is full: retry once it has drained
    asyncio.TimeoutError,
)


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
        store="memory://",
        # Faust keeps little on disk with a memory store; keep it out of the checkout.
        datadir=Path(tempfile.gettempdir()) / f"faust-{settings.app_id}",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_host="127.0.0.1",
        web_port=settings.web_port,
        web_in_thread=False,
        **extra,
    )


def build_app(
    settings: Settings,
    model: Model,
    redis_client: redis.Redis,
    actions: dict[str, tuple[str, ...]] | None = None,
) -> faust.App:
    """The Faust app with its agent and web views, wired to the scoring core."""
    app = faust_app(settings)
    prefix = settings.topic_prefix
    store = RedisFeatureStore(redis_client, settings.redis_namespace)
    served = ServedModel(settings.models_dir, model)
    scorer = Scorer(store, served, margin=settings.hysteresis, actions=actions)
    metrics.MODEL.info({"version": model.version})

    inputs = app.topic(*(topics.qualified(name, prefix) for name in topics.INPUT_TOPICS))
    churn_risk = topics.qualified(topics.CHURN_RISK, prefix)
    churn_risk_high = topics.qualified(topics.CHURN_RISK_HIGH, prefix)
    dead_letter = topics.qualified(topics.DEAD_LETTER, prefix)
    publisher = Publisher(settings.kafka_bootstrap_servers, client_id=settings.app_id)

    async def publish(outcome: BatchOutcome) -> None:
        """Durable in Kafka before the categories are recorded and the input acked."""
        messages: list[tuple[str, bytes | None, bytes]] = []
        for change in outcome.changes:
            key, value = change.customer_id.encode(), msgspec.json.encode(change)
            messages.append((churn_risk, key, value))
            if change.risk == "HIGH":
                messages.append((churn_risk_high, key, value))
        for letter in outcome.dead_letters:
            raw_key = None if letter.key is None else letter.key.encode()
            messages.append((dead_letter, raw_key, msgspec.json.encode(letter)))
        await publisher.publish(messages)

    # Per input topic-partition with event times: the next offset to process.
    next_offsets: dict[TP, int] = {}
    event_time_topics = {topics.qualified(name, prefix) for name in EVENT_TIME_FIELD}

    def forget_positions(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[TP] = args[0]  # another worker may have moved them on
        for tp in revoked:
            next_offsets.pop(tp, None)

    app.on_partitions_revoked.connect(forget_positions)

    def lagging_partitions(events: Sequence[EventT]) -> set[tuple[str, int]]:
        """The event-time topic-partitions with messages still unread after `events`:
        they hold their partition's watermark back (see `scoring.pipeline.Watermarks`)."""
        for event in events:
            next_offsets[event.message.tp] = event.message.offset + 1
        # For a partition with nothing processed since it was assigned: where the
        # group resumes it (Faust's record of the committed offsets it sought to on
        # assignment; it has no public accessor). None for a new group.
        committed = getattr(app.consumer, "_committed_offset", {})
        lagging = set()
        for tp in app.consumer.assignment():
            if tp.topic not in event_time_topics:
                continue
            highwater = app.consumer.highwater(tp)
            next_offset = next_offsets.get(tp, committed.get(tp))
            # Unknown counts as behind: holding a watermark back only delays rescores,
            # while moving it too early publishes false changes.
            if highwater is None or (highwater > 0 and (next_offset or 0) < highwater):
                lagging.add((tp.topic.removeprefix(prefix), tp.partition))
        return lagging

    async def handle(events: Sequence[EventT]) -> None:
        messages = [_input_message(event, prefix) for event in events]
        lagging = lagging_partitions(events)
        delay = 0.1
        while True:
            try:
                started = time.perf_counter()
                outcome = scorer.process(messages, lagging)
                await publish(outcome)
                scorer.commit(outcome)
                _observe(outcome, messages, time.perf_counter() - started)
                _observe_lag(app, events)
                return
            except TRANSIENT_ERRORS as err:
                metrics.RETRIES.inc()
                log.warning("batch failed (%r); retrying in %.1fs", err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                # An ack now would lose the batch: stop hard, Kafka redelivers it.
                log.exception("unexpected error; stopping without acknowledging the batch")
                logging.shutdown()
                os._exit(70)

    async def score_customers(stream: StreamT) -> AsyncIterator[None]:
        wait = settings.batch_wait_ms / 1000
        async for events in cast(Stream, stream).take_events(settings.batch_size, within=wait):
            await handle(events)
            yield None

    app.agent(inputs, name="score-customers", concurrency=1)(score_customers)

    async def reload_model() -> None:
        change = served.refresh()
        if change is None:
            return
        outcome, message = change
        metrics.MODEL_RELOADS.labels(outcome).inc()
        if outcome == "loaded":
            metrics.MODEL.info({"version": served().version})
            log.info(message)
        else:
            log.error(message)

    app.timer(interval=settings.model_poll_seconds)(reload_model)

    class Health(View):
        async def get(self, request: Request) -> Response:
            redis_client.ping()
            return self.json({"status": "ok", "model_version": served().version})

    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # aiohttp rejects a charset inside content_type; Prometheus needs none.
            return self.bytes(generate_latest(), content_type=PROMETHEUS_CONTENT_TYPE)

    class Customer(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            state = store.read([customer_id]).get(customer_id)
            if state is None or state.seen is None:
                return self.json({"error": f"unknown customer {customer_id}"}, status=404)
            current = served()
            features = feature_matrix(base_columns([state], [state.seen]), current.feature_params)
            return self.json(
                {
                    "customer_id": customer_id,
                    "as_of": state.seen,
                    "features": _json_floats(dict(zip(FEATURE_NAMES, features[0], strict=True))),
                    "probability": float(current.predict(features)[0]),
                    "risk": state.risk,
                    "model_version": current.version,
                }
            )

    app.page("/health")(Health)
    app.page("/metrics")(Metrics)
    app.page("/customers/{customer_id}")(Customer)
    return app


def _input_message(event: EventT, prefix: str) -> InputMessage:
    message = event.message
    return InputMessage(
        topic=message.topic.removeprefix(prefix),  # the core speaks logical topic names
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value or b"",  # a tombstone is dead-lettered as malformed
    )


def _observe(outcome: BatchOutcome, messages: Sequence[InputMessage], seconds: float) -> None:
    metrics.BATCH_SECONDS.observe(seconds)
    metrics.BATCH_SIZE.observe(len(messages))
    metrics.SCORED.inc(outcome.scored)
    metrics.EVENTS.labels("dead_letter").inc(len(outcome.dead_letters))
    metrics.EVENTS.labels("redelivered").inc(outcome.already_published)
    if outcome.applied is not None:
        for name, count in outcome.applied.counts.items():
            metrics.EVENTS.labels(name).inc(count)
        seen = [s.seen for s in outcome.applied.states if s.seen is not None]
        if seen:
            metrics.EVENT_TIME_WATERMARK.set(max(seen))
    for change in outcome.changes:
        metrics.RISK_CHANGES.labels(change.previous_risk or "NONE", change.risk).inc()


def _observe_lag(app: faust.App, events: Sequence[EventT]) -> None:
    last: dict[Any, int] = {}
    for event in events:
        last[event.message.tp] = event.message.offset
    for tp, offset in last.items():
        highwater = app.consumer.highwater(tp)
        if highwater is not None:
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(highwater - offset - 1)


def _json_floats(values: dict[str, Any]) -> dict[str, float | None]:
    return {k: None if v != v else float(v) for k, v in values.items()}  # NaN -> null
