"""Drift monitor benchmark: what the monitor costs per event, the same run with it and
without it.

    python -m bench.drift [--customers 40000] [--days 60] [--rounds 2] [--out bench/drift.json]

(`make bench` runs it after `bench.stream`.) One worker process (`python -m stream_app
worker`) drains the same backlog of a simulated shop, on the real broker and Redis,
with CHURN_DRIFT_MONITOR=off and =on in turn, `--rounds` times each, every run in a
fresh consumer group and Redis namespace: events per second and per CPU second of
the worker over a window after the profiles the shop starts with, and Redis's CPU per
event meanwhile (the monitor adds its counters to each commit script). The model is
trained the product's way (`python -m training`), so it carries the drift reference.

In process, the parts of the monitor on their own: `DriftTally` per batch of scores
(its cost is per slice a batch touches, plus per score) and a judge call per slice
on Redis (a timer's work, not an event's).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis

from bench.common import ROOT, environment, train_model, write_results
from bench.stream import Run, Window, brief, measure_workers
from feature_store.definitions import FEATURE_NAMES
from feature_store.online import event_time
from feature_store.redis_store import RedisStateStore
from feature_store.store import Commit
from schemas import Order
from schemas.topics import CUSTOMERS
from scoring.artifact import load_model
from scoring.drift import DriftConfig, DriftMonitor, DriftTally, Reference
from scoring.outcome import PartitionOutcome, Scores
from simulator import kafka_sink
from simulator.history import generate_history
from stream_app.redis_drift import RedisDriftStore
from stream_app.settings import Settings

DEFAULT_OUT = ROOT / "bench" / "drift.json"
HOUR = 3600
# The simulated backlog has about 60 input events an hour of event time, so a batch
# of 500 spans hours: each commit carries many hourly slices' tallies. A shop at the
# live edge, or any with more than ~1,500 events an hour, puts a batch in one slice:
# daily slices on this backlog measure that case.
MODES = {
    "off": {"CHURN_DRIFT_MONITOR": "off"},
    "on": {"CHURN_DRIFT_MONITOR": "on"},
    "on_day_slices": {
        "CHURN_DRIFT_MONITOR": "on",
        "CHURN_DRIFT_SLICE_SECONDS": "86400",
        "CHURN_DRIFT_WINDOW_SLICES": "1",
    },
}


def run_bench(run: Run, customers: int, days: int, rounds: int) -> dict[str, Any]:
    with run.phase("train model"):
        models = train_model(run.tmp)
    model = load_model(models)
    assert model.drift is not None, "the trained model has no drift reference"
    with run.phase("generate history") as record:
        history = generate_history(customers, seed=5, days=days)
        events = list(history.events_in_time_order())
        record["events"] = len(events)
    backlog = run.prefix("backlog")
    with run.phase("produce backlog"):
        kafka_sink.produce(
            events,
            run.bootstrap,
            partitions=run.settings.partitions,
            topic_prefix=backlog,
            client_config=run.kafka_config,
        )
    # After the profiles of the customers registered before the shop opened, which
    # come first and are scored not at all.
    window = Window(round(0.8 * customers), len(events) - 2_000)
    scored = [event_time(t, e) for t, e in events[window.first : window.last] if t != CUSTOMERS]
    hours = (max(scored) - min(scored)) / HOUR
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for round_ in range(rounds):
        for mode, env in MODES.items():
            with run.phase(f"worker, drift monitor {mode}, round {round_ + 1}") as record:
                result = measure_workers(
                    run, f"{mode}{round_}", backlog, models, 1, window, window.last, extra_env=env
                )
                runs[mode].append(result)
                record["result"] = brief(result["window"])
    with run.phase("in process"):
        parts = in_process(run, model.drift, model.version)
    return {
        "environment": environment(redis.Redis.from_url(run.redis_url)),
        "backlog": {
            "customers": customers,
            "days": days,
            "events": len(events),
            "window": [window.first, window.last],
            "input_events_per_event_hour": round(len(scored) / hours, 1),
        },
        "worker": {mode: [summarise(r) for r in results] for mode, results in runs.items()},
        "cost": cost(runs),
        "in_process": parts,
        "phases": run.phases,
    }


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    window = result["window"]
    redis_work = result.get("redis_during_window") or {}
    return {
        "eps": window["eps"],
        "events_per_cpu_second": window["events_per_cpu_second"],
        "worker_cpu_us_per_event": round(1e6 / window["events_per_cpu_second"], 1),
        "redis_cpu_us_per_event": redis_work.get("info_cpu_usec_per_event"),
        "redis_evalsha_us_per_event": redis_work.get("commands", {})
        .get("evalsha", {})
        .get("usec", 0)
        / max(redis_work.get("events", 1), 1),
    }


def cost(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The monitor's cost per event: the medians of the runs with it, less without."""

    def median(mode: str, key: str) -> float:
        values = [summarise(r)[key] for r in runs[mode]]
        return round(float(statistics.median(v for v in values if v is not None)), 1)

    off = {key: median("off", key) for key in ("worker_cpu_us_per_event", "redis_cpu_us_per_event")}
    out: dict[str, Any] = {"off": off}
    for mode in MODES:
        if mode == "off":
            continue
        on = {key: median(mode, key) for key in off}
        out[mode] = {
            **on,
            "worker_added_us": round(
                on["worker_cpu_us_per_event"] - off["worker_cpu_us_per_event"], 1
            ),
            "redis_added_us": round(
                on["redis_cpu_us_per_event"] - off["redis_cpu_us_per_event"], 1
            ),
            "cpu_ratio_on_over_off": round(sum(on.values()) / sum(off.values()), 3),
            "eps_ratio_on_over_off": round(median(mode, "eps") / median("off", "eps"), 3),
        }
    return out


def orders(n: int) -> list[object | None]:
    """The events that triggered n scores: every other one an order."""
    at = datetime.fromtimestamp(1_767_225_600, tz=UTC)
    return [
        Order(f"o{i}", "c", at, 10.0 + i % 90, "card", "delivered") if i % 2 else None
        for i in range(n)
    ]


def in_process(run: Run, reference: Reference, version: str) -> dict[str, Any]:
    """DriftTally per batch of 500 scores spread over 1, 8 or 32 slices; a judge call
    per slice on Redis (4 partitions, the default window)."""
    rng = np.random.default_rng(3)
    config = DriftConfig()
    tally = DriftTally(lambda v: reference, config)
    per_score = {}
    for slices in (1, 8, 32):
        features = rng.lognormal(1.0, 1.0, size=(500, len(FEATURE_NAMES)))
        as_of = list(1_767_225_600.0 + rng.integers(0, slices, 500) * HOUR)
        scores = Scores(
            version, features, rng.random(500), ["LOW"] * 500, as_of, ["event"] * 500, orders(500)
        )
        outcome = PartitionOutcome(0, scores=scores)
        started, calls = time.perf_counter(), 200
        for _ in range(calls):
            tally(outcome, [], 0.0)
        per_score[f"{slices}_slices_per_batch"] = round(
            1e6 * (time.perf_counter() - started) / calls / 500, 2
        )
    client = redis.Redis.from_url(run.redis_url)
    namespace = run.namespace("judge")
    store = RedisStateStore(client, namespace)
    partitions = range(4)
    epochs = {p: store.claim(p).epoch for p in partitions}
    start = 1_767_225_600
    judged = 200
    for p in partitions:
        for hour in range(config.window_slices + judged):
            features = rng.lognormal(1.0, 1.0, size=(50, len(FEATURE_NAMES)))
            as_of = [float(start + hour * HOUR + 1)] * 50
            scores = Scores(
                version, features, rng.random(50), ["LOW"] * 50, as_of, ["event"] * 50, orders(50)
            )
            tallies = tally(PartitionOutcome(p, scores=scores), [], 0.0)
            previous = {"orders": hour - 1}
            done = store.commit(
                [
                    Commit(
                        p,
                        epochs[p],
                        previous,
                        {"orders": hour},
                        start + (hour + 1) * HOUR,
                        tallies=tallies,
                    )
                ]
            )
            assert done[p][0] == "committed"
    since = DriftConfig(since=float(start))
    monitor = DriftMonitor(since, partitions, RedisDriftStore(client, namespace))
    started = time.perf_counter()
    judgement = monitor.judge(reference, version)
    assert judgement is not None and monitor.commit(judgement)
    seconds = time.perf_counter() - started
    return {
        "tally_us_per_score": per_score,
        "judge_ms_per_slice": round(1000 * seconds / judgement.slices, 3),
        "judge_slices": judgement.slices,
    }


def summary(result: dict[str, Any]) -> str:
    c, backlog = result["cost"], result["backlog"]
    lines = [
        "drift monitor, one worker, the same backlog with it off and on "
        f"({backlog['events']:,} events, {backlog['input_events_per_event_hour']} input "
        "events per hour of event time):",
        f"  off: worker {c['off']['worker_cpu_us_per_event']} us CPU per event, "
        f"Redis {c['off']['redis_cpu_us_per_event']} us",
    ]
    for mode in MODES:
        if mode != "off":
            m = c[mode]
            lines.append(
                f"  {mode}: worker +{m['worker_added_us']} us, Redis +{m['redis_added_us']} us "
                f"per event; CPU ratio on/off {m['cpu_ratio_on_over_off']}, "
                f"events/s ratio {m['eps_ratio_on_over_off']}"
            )
    parts = result["in_process"]
    lines.append(
        f"  in process: tally {parts['tally_us_per_score']} us per score, "
        f"judge {parts['judge_ms_per_slice']} ms per slice"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.drift", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--customers", type=int, default=40_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        run = Run(settings.kafka_bootstrap_servers, settings.redis_url, settings, Path(tmp))
        print(f"run {run.run_id}", flush=True)
        try:
            result = run_bench(run, args.customers, args.days, args.rounds)
        finally:
            run.cleanup()
    write_results(args.out, result, summary(result))


if __name__ == "__main__":
    main(sys.argv[1:])
