"""The worker on the Faust engine (the default, `CHURN_ENGINE=faust`).

The Faust engine (`stream_app.faust_source`) feeds the input topics to the stream
processor (`scoring.processor`), which runs the batch runner (`scoring.runner`) over
the Redis state store, publishes each batch in a Kafka transaction
(`stream_app.transactions`) and acknowledges to Faust what the store has committed.
Faust timers run the periodic jobs (`stream_app.jobs`); the web endpoints are
`stream_app.web`'s, served by Faust's own aiohttp server. All of that but the source,
the timers and the server is the same on the other engine (`stream_app.wiring`).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Any

import aiohttp.web
import faust
import faust.web.drivers.aiohttp
import redis
import uvloop
from aiokafka.errors import KafkaError
from faust.types import TP, AgentT

from schemas import topics
from scoring.model import Model
from scoring.processor import StreamProcessor
from stream_app import kafka_security
from stream_app.faust_source import FaustSource
from stream_app.settings import Settings
from stream_app.wiring import TRANSIENT_ERRORS as ENGINE_NEUTRAL_ERRORS
from stream_app.wiring import wire

log = logging.getLogger(__name__)

# aiokafka's errors too: Faust's consumer and producer raise them.
TRANSIENT_ERRORS = (*ENGINE_NEUTRAL_ERRORS, KafkaError)


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
    """The Faust app with its agent, timers and web endpoints, around the worker's
    engine-neutral parts (`stream_app.wiring`)."""
    app = faust_app(settings)
    wiring = wire(settings, model, redis_client, partitions, actions, TRANSIENT_ERRORS)
    source = FaustSource(app, settings.topic_prefix, wiring.reader)
    processor = StreamProcessor(wiring.runner, source, wiring.observer)
    agent = source.attach(processor, settings.batch_size, settings.batch_wait_ms / 1000)
    for interval, tick in [(wiring.release_interval, processor.release), *wiring.jobs]:
        app.timer(interval=interval)(tick)
    mount(app, wiring.routes(FaustEngine(app, agent, settings.topic_prefix)))
    return app


class FaustEngine:
    """What /ready asks of the engine (`stream_app.web.Engine`), from Faust: the input
    partitions the group assigned, and whether the scoring agent runs."""

    def __init__(self, app: faust.App, agent: AgentT, prefix: str) -> None:
        self._agent = agent
        self._inputs = {topics.qualified(name, prefix) for name in topics.INPUT_TOPICS}
        self._owned: set[int] | None = None  # the latest assignment
        app.on_partitions_assigned.connect(self._on_assigned)

    async def _on_assigned(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned: set[TP] = args[0]
        self._owned = {tp.partition for tp in assigned if tp.topic in self._inputs}

    def owned_partitions(self) -> set[int] | None:
        return self._owned

    def consuming(self) -> tuple[bool, str]:
        # Faust's supervisor replaces a crashed actor; alive is any actor still running.
        tasks = [a.actor_task for a in getattr(self._agent, "_actors", ()) if a.actor_task]
        if not tasks:
            return False, "the scoring agent has not started"
        if any(not task.done() for task in tasks):
            return True, "running"
        return False, "the scoring agent stopped"


def mount(app: faust.App, routes: list[aiohttp.web.RouteDef]) -> None:
    """Serve `routes` on Faust's web server: its aiohttp driver's application, before
    the app starts (aiohttp freezes the router when the server starts)."""
    driver = app.web
    assert isinstance(driver, faust.web.drivers.aiohttp.Web), f"not aiohttp: {driver!r}"
    driver.web_app.router.add_routes(routes)
