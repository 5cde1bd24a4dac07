"""The worker on the confluent-kafka engine (`CHURN_ENGINE=confluent`): the same core,
jobs and web endpoints as on Faust, driven by a plain asyncio loop.

One thread consumes (librdkafka's `consume`, which also runs the rebalance callbacks);
the event loop runs the processor, the jobs on their timers and the web server (the
same aiohttp handlers Faust mounts, `stream_app.web`). Faust is never imported: the
engine exists to shed its per-message cost.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import redis
import uvloop

from scoring.model import Model
from scoring.processor import StreamProcessor
from stream_app import kafka_security, web
from stream_app.confluent_source import ConfluentSource
from stream_app.settings import Settings
from stream_app.wiring import Wiring, step_or_stop, wire

log = logging.getLogger(__name__)


class ConsumerStatus:
    """What /ready reports of this engine's consumer."""

    def __init__(self, source: ConfluentSource, consuming: asyncio.Task[None]) -> None:
        self.source, self.task = source, consuming

    def owned_partitions(self) -> set[int] | None:
        return self.source.assignment

    def consuming(self) -> tuple[bool, str]:
        if self.task.done():
            return False, "the consuming loop stopped"
        return True, "running"


async def run(settings: Settings, wiring: Wiring, source: ConfluentSource) -> None:
    """Consume until SIGTERM or SIGINT; then leave the group, committing what the
    store committed."""
    loop = asyncio.get_running_loop()
    processor = StreamProcessor(wiring.runner, source, wiring.observer)
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    # One thread for the consumer: librdkafka calls the rebalance callbacks on it.
    consumer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="churn-consumer")
    joined = follow_the_group(source, processor, loop)
    consuming = asyncio.create_task(consume(settings, processor, source, consumer_thread))
    jobs = [
        asyncio.create_task(every(interval, tick))
        for interval, tick in [(wiring.release_interval, processor.release), *wiring.jobs]
    ]
    server = await web.serve(
        wiring.routes(ConsumerStatus(source, consuming)), settings.web_bind, settings.web_port
    )
    stop = asyncio.create_task(stopping.wait())
    await asyncio.wait(
        [asyncio.create_task(joined.wait()), consuming, stop], return_when=asyncio.FIRST_COMPLETED
    )
    if joined.is_set():
        # The line Faust's worker logs when it is up, which tooling waits for: here once
        # the group has assigned this worker its partitions (maybe none), claimed.
        log.info(
            "Worker ready: consuming with confluent-kafka; web on %s:%d",
            settings.web_bind,
            settings.web_port,
        )
    await asyncio.wait([consuming, stop], return_when=asyncio.FIRST_COMPLETED)
    consuming.cancel()
    for job in [*jobs, stop]:
        job.cancel()
    await asyncio.gather(consuming, *jobs, return_exceptions=True)
    # Off the loop: closing runs the revoke callback, which needs the loop to answer.
    await loop.run_in_executor(consumer_thread, source.close)
    await server.cleanup()
    wiring.close()


def follow_the_group(
    source: ConfluentSource, processor: StreamProcessor, loop: asyncio.AbstractEventLoop
) -> asyncio.Event:
    """Join the group, each rebalance handed to the processor on the event loop (the
    consuming thread waits for it); the event is set once a first assignment is claimed."""
    joined = asyncio.Event()

    async def assign(partitions: set[int]) -> None:
        await processor.assigned(partitions)
        joined.set()

    async def revoke(partitions: set[int]) -> None:
        processor.revoked(partitions)

    source.subscribe(
        lambda partitions: asyncio.run_coroutine_threadsafe(assign(partitions), loop).result(),
        lambda partitions: asyncio.run_coroutine_threadsafe(revoke(partitions), loop).result(),
    )
    return joined


async def consume(
    settings: Settings,
    processor: StreamProcessor,
    source: ConfluentSource,
    thread: ThreadPoolExecutor,
) -> None:
    loop = asyncio.get_running_loop()
    most, within = settings.batch_size, settings.batch_wait_ms / 1000
    while True:
        messages = await loop.run_in_executor(thread, source.fetch, most, within)
        # With nothing fetched, what waited for the idle time goes now rather than at
        # the release timer's next tick.
        await step_or_stop(processor.deliver(messages) if messages else processor.release())


async def every(interval: float, tick: Callable[[], Awaitable[None]]) -> None:
    """`tick()` every `interval` seconds, as Faust's timers: a failing tick is logged
    and the next one comes on time."""
    while True:
        await asyncio.sleep(interval)
        try:
            await tick()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("timer %s failed", getattr(tick, "__qualname__", tick))


def start(
    settings: Settings,
    model: Model,
    redis_client: redis.Redis | redis.RedisCluster,
    partitions: int,
    actions: dict[str, tuple[str, ...]] | None,
) -> None:
    """Run the worker on this engine until it is stopped."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )
    wiring = wire(settings, model, redis_client, partitions, actions)
    config = kafka_security.confluent_config(settings)
    source = ConfluentSource(
        config,
        settings.app_id,
        settings.topic_prefix,
        wiring.reader,
        settings.session_timeout_seconds,
    )
    uvloop.run(run(settings, wiring, source))
