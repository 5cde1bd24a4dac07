"""The core's cost per event, without Kafka: the batch runner in this process over the
simulated backlog, its state in Redis, its outputs dropped.

    python -m bench.core [--events 1000000] [--from 200000] [--out bench/core.json]
                         [--rescore-after 90]

The messages are the backlog as Kafka holds it (`bench.common.in_log_order`), fed to
the runner `CHURN_BATCH_SIZE` at a time as the worker takes them; the model is trained the
product's way (`bench.common.train_model`), the drift monitor and the daily and
performance tallies and the campaign's holdout (CHURN_HOLDOUT_SHARE) are on, as in the
worker. It measures what the worker adds to
Faust's own cost (decode, merge, state, features, scoring, tallies, the store's
calls) over the events `--from` to the end: this process's CPU (its threads too),
Redis's CPU (INFO cpu), and rows scored and changes per event. `make bench` measures
the same in the real worker, with Faust and Kafka; this is the quick, quiet look at
one change (run it on two commits in one sitting to compare them).

`--rescore-after DAYS...` is a what-if, not the product: the inactivity ladder cut to
those rungs (`scoring.inactivity.RESCORE_AFTER_DAYS`), to measure what the ladder's
rescores cost against a run with the product's ladder.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from bench.common import ROOT, environment, in_log_order, redis_counters, train_model, write_results
from bench.stream import simulated_events
from feature_store.redis_store import RedisStateStore
from schemas import ChurnRiskChanged, DeadLetter, topics
from scoring import inactivity
from scoring.artifact import ServedModel, load_model
from scoring.campaign import campaign_tally
from scoring.daily import daily_tally
from scoring.decoding import InputDecoder
from scoring.drift import DriftConfig, DriftTally, Reference
from scoring.merge import InputMessage
from scoring.performance import performance_tally
from scoring.pipeline import Scorer
from scoring.runner import BatchRunner, Collector, StepReport, run_backlog
from stream_app.settings import Settings

DEFAULT_OUT = ROOT / "bench" / "core.json"


class Dropped(Collector):
    """A sink that counts what it would publish."""

    def __init__(self) -> None:
        self.changes = 0

    def collect(
        self, changes: Sequence[ChurnRiskChanged], dead_letters: Sequence[DeadLetter]
    ) -> None:
        self.changes += len(changes)


def runner_for(models: Path, client: redis.Redis, namespace: str) -> BatchRunner:
    served = ServedModel(models, load_model(models))

    def reference(version: str) -> Reference | None:
        return served().drift if served().version == version else None

    settings = Settings.from_env()
    return BatchRunner(
        RedisStateStore(client, namespace),
        Scorer(
            served,
            sample_rate=settings.performance_sample,
            decoder=InputDecoder(),
            holdout=settings.holdout(),
        ),
        Dropped(),
        topics.INPUT_TOPICS,
        tallies=[
            daily_tally,
            performance_tally,
            campaign_tally,
            DriftTally(reference, DriftConfig()),
        ],
    )


def measure(
    runner: BatchRunner, client: redis.Redis, messages: list[InputMessage], first: int
) -> dict[str, Any]:
    """Run the backlog; the costs over messages `first` to the end."""
    counted = {"events": 0, "rows": 0, "changes": 0}
    marks: dict[str, Any] = {}

    def after(report: StepReport) -> None:
        for outcome in report.outcomes:
            counted["events"] += sum(outcome.counts.values())
            counted["rows"] += outcome.scored
            counted["changes"] += len(outcome.changes)
        if not marks and counted["events"] >= first:
            marks.update(counted, cpu=time.process_time(), wall=time.perf_counter())
            marks["redis"] = redis_counters(client)

    for partition in range(4):
        runner.assign(partition)
    gc.collect()
    gc.freeze()  # as the worker does after start-up
    asyncio.run(run_backlog(runner, messages, Settings.from_env().batch_size, after))
    events = counted["events"] - marks["events"]
    cpu = time.process_time() - marks["cpu"]
    redis_after = redis_counters(client)
    return {
        "events": [marks["events"], counted["events"]],
        "eps": round(events / (time.perf_counter() - marks["wall"])),
        "cpu_us_per_event": round(cpu / events * 1e6, 1),
        "redis_us_per_event": round(
            (redis_after["cpu_s"] - marks["redis"]["cpu_s"]) / events * 1e6, 1
        ),
        "redis_forks": redis_after["forks"] - marks["redis"]["forks"],  # AOF rewrites: noise
        "rows_per_event": round((counted["rows"] - marks["rows"]) / events, 3),
        "changes_per_event": round((counted["changes"] - marks["changes"]) / events, 3),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--from", dest="first", type=int, default=200_000)
    parser.add_argument("--models", type=Path, help="a models directory (else one is trained)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--rescore-after",
        type=int,
        nargs="+",
        metavar="DAYS",
        help="what-if: rescore silent customers only after these days (default: the ladder)",
    )
    args = parser.parse_args(argv)
    if args.rescore_after:
        inactivity.RESCORE_AFTER_DAYS = tuple(sorted(args.rescore_after))
    settings = Settings.from_env()
    client = redis.Redis.from_url(settings.redis_url)
    models = args.models or train_model(Path(f"/tmp/bench-core-{uuid.uuid4().hex[:8]}"))
    messages = in_log_order(simulated_events(args.events), settings.partitions)
    namespace = f"bench-core-{uuid.uuid4().hex[:8]}"
    try:
        result = measure(runner_for(models, client, namespace), client, messages, args.first)
    finally:
        RedisStateStore(client, namespace).delete_namespace()
    result["rescore_after_days"] = list(inactivity.RESCORE_AFTER_DAYS)
    result["environment"] = environment(client)
    summary = (
        f"core, events {result['events'][0]:,}..{result['events'][1]:,}: "
        f"{result['eps']:,} events/s, {result['cpu_us_per_event']} us CPU and "
        f"{result['redis_us_per_event']} us Redis per event, {result['rows_per_event']} rows "
        f"and {result['changes_per_event']} changes per event "
        f"(rescores after {result['rescore_after_days']} days of silence)"
    )
    write_results(args.out, result, summary)


if __name__ == "__main__":
    main()
