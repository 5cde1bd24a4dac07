"""Stream app benchmark: the real worker process on the real Kafka broker and Redis.

    python -m stream_app.bench [--events 150000] [--out bench/results.json]
                               [--profile] [--levers]

One run measures, on the same machine and in the same minutes (the machine is shared
and noisy, so the ratios and the events per CPU second matter more than the absolute
rates):

* throughput of one worker process (`python -m stream_app worker`) over a backlog of
  simulated events produced before it starts, from its `churn_events_total`
  counters sampled over time: the rate over a window of events after a warm-up;
* the same for a bare Faust agent that only counts, with the worker's Faust settings;
* the same for two worker processes in one consumer group;
* a naive per-event path in-process (one Redis round trip and one one-row model
  call per event, no Kafka at all);
* end-to-end latency at a fixed offered load, and at half the measured throughput,
  from "probe" events whose every arrival flips their customer's risk, so each one
  yields a `churn-risk` event;
* the worker's RSS after the warm-up and after all the events.

`--profile` samples an extra worker with py-spy while it drains the backlog and
breaks its time down by component; `--levers` re-measures the bare agent and the
worker with Faust and worker configuration levers. Every topic, consumer group and
Redis key the run creates carries a unique `bench-<hex>` prefix and is deleted at
the end. `python -m stream_app.bench _bare-agent` is the bare agent (run as a child).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import faust
import lightgbm as lgb
import msgspec
import numpy as np
import redis
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from faust.sensors import Monitor
from faust.streams import Stream
from faust.types import StreamT
from faust.web import Request, Response, View

from feature_store.bench import write_results
from feature_store.definitions import FEATURE_NAMES, feature_matrix
from feature_store.online import Position, Update, base_columns, update_for
from feature_store.redis_store import RedisFeatureStore
from schemas import INPUT_EVENTS, Customer, Order, OrderItem, topics
from scoring.artifact import Calibration, load_model, write_artifact
from scoring.risk import RiskPolicy
from simulator import kafka_sink
from simulator.history import Event, generate_history
from stream_app.settings import Settings
from stream_app.worker import faust_app, install_uvloop

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results.json"

DEFAULT_EVENTS = 150_000  # the one worker drains them all: the RSS end point
DEFAULT_WARMUP = 30_000  # in no steady-state rate; the RSS baseline is taken here
DEFAULT_WINDOW = 90_000  # steady state: events warmup .. warmup + window, in every run
# --levers: the worker over events 10k..40k; the (faster, noisier) bare agent over 10k..130k;
# each variant LEVER_ROUNDS times, round-robin, so drift and noise hit them all alike.
WORKER_LEVER_WINDOW = (10_000, 40_000)
BARE_LEVER_WINDOW = (10_000, 130_000)
LEVER_ROUNDS = 2
SAMPLE_SECONDS = 0.25
EVENTS_PER_CUSTOMER = 12  # the simulator's average is ~13: a little spare, then cut
TRAINING_CUSTOMERS = 4_000
NAIVE_EVENTS = 10_000
OFFERED_EPS = 2_000
LATENCY_SECONDS = 30.0
LATENCY_WARMUP_SECONDS = 3.0  # probes sent before this are left out of the percentiles
LATENCY_DRAIN_SECONDS = 180.0  # longest wait for the last probes after the offer ends
PROBES_PER_SECOND = 20
PROBE_CUSTOMERS = 20  # each flips about once a second; 20 keys cover every partition

TARGETS = {
    "throughput_eps": (">=", 6000.0),
    "ratio_vs_bare": (">=", 0.75),
    "ratio": (">=", 6.0),
    "scaling_2w": (">=", 1.5),
    "p99_ms": ("<=", 50.0),
    "rss_growth": ("<", 0.10),
}

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
EVENTS_LINE = re.compile(rb'^churn_events_total\{outcome="\w+"\} ([0-9.e+]+)$', re.M)


@dataclass(frozen=True)
class Window:
    """The events [first, last) of a backlog over which a rate is measured."""

    first: int
    last: int


# --- Child processes --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    """A worker or bare agent run as a child process, with its own web port and log."""

    def __init__(self, name: str, module_args: Sequence[str], env: dict[str, str], logs: Path):
        self.name = name
        self.port = free_port()
        self.log_path = logs / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *module_args],
                cwd=ROOT,
                env={**os.environ, **env, "CHURN_WEB_PORT": str(self.port)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.tail()}"
                )
            if "Worker ready" in self.log():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.tail()}")

    def get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return cast(bytes, r.read())
        except (urllib.error.URLError, OSError):
            return None

    def rss_mb(self) -> float:
        """Resident memory of the process (VmRSS), in MiB."""
        with suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return math.nan

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (all its threads)."""
        with suppress(OSError):
            # The fields after the command name; utime and stime are fields 14 and 15.
            fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        return math.nan

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_bytes().decode(errors="replace")

    def tail(self) -> str:
        return self.log()[-3000:]


def worker_events(child: Child) -> int | None:
    """Input messages the worker has finished (every outcome, dead letters included)."""
    body = child.get("/metrics")
    if body is None:
        return None
    return int(sum(float(v) for v in EVENTS_LINE.findall(body)))


def bare_events(child: Child) -> int | None:
    body = child.get("/count")
    return None if body is None else int(json.loads(body)["events"])


def work_stats(children: Sequence[Child]) -> dict[str, Any]:
    """What the workers did per batch and per event, from their Prometheus counters."""
    totals: defaultdict[str, float] = defaultdict(float)
    for child in children:
        for line in (child.get("/metrics") or b"").decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                totals[name.partition("{")[0]] += float(value)
    batches = totals["churn_batch_seconds_count"] or math.nan
    events = totals["churn_batch_size_sum"] or math.nan
    return {
        "batches": int(totals["churn_batch_seconds_count"]),
        "mean_batch_size": round(events / batches, 1),
        "mean_batch_ms": round(1000 * totals["churn_batch_seconds_sum"] / batches, 2),
        # Rows scored (events + inactivity rescores) and risk changes published per event.
        "scored_per_event": round(totals["churn_customers_scored_total"] / events, 3),
        "changes_per_event": round(totals["churn_risk_changes_total"] / events, 3),
    }


# --- Sampling and steady-state rates ------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the processes were started
    events: int
    rss_mb: list[float]
    cpu_s: float  # CPU seconds the processes have used, summed


def sample_until(
    children: Sequence[Child],
    count: Callable[[Child], int | None],
    target: int,
    started: float,
    timeout: float,
    on_sample: Callable[[Sample], None] | None = None,
) -> list[Sample]:
    """Sample the children's summed event counts, RSS and CPU until `target` events."""
    samples: list[Sample] = []
    last = [0] * len(children)
    deadline = time.monotonic() + timeout
    while True:
        for i, child in enumerate(children):
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} died:\n{child.tail()}")
            value = count(child)
            if value is not None:  # a missed scrape keeps the last value
                last[i] = value
        sample = Sample(
            time.monotonic() - started,
            sum(last),
            [c.rss_mb() for c in children],
            sum(c.cpu_seconds() for c in children),
        )
        samples.append(sample)
        if on_sample is not None:
            on_sample(sample)
        if sample.events >= target:
            return samples
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {sample.events:,} of {target:,} events after {timeout:.0f}s:\n"
                + children[0].tail()
            )
        time.sleep(SAMPLE_SECONDS)


def value_at(samples: Sequence[Sample], events: int, name: str = "t") -> float:
    """Sample field `name` (time or CPU) when the count reached `events`, interpolated
    between the two samples around that moment."""
    previous = samples[0]
    for sample in samples:
        if sample.events >= events:
            before, after = getattr(previous, name), getattr(sample, name)
            if sample.events == previous.events:
                return float(after)
            share = (events - previous.events) / (sample.events - previous.events)
            return float(before + max(0.0, share) * (after - before))
        previous = sample
    raise ValueError(f"the count never reached {events}")


def rate(samples: Sequence[Sample], window: Window) -> dict[str, Any]:
    """Events per second while the count crossed `window`, and the processes' CPU use
    meanwhile: events per CPU second is much less sensitive than events per second to
    other load on a shared machine."""
    events = window.last - window.first
    seconds = value_at(samples, window.last) - value_at(samples, window.first)
    cpu = value_at(samples, window.last, "cpu_s") - value_at(samples, window.first, "cpu_s")
    return {
        "events": [window.first, window.last],
        "seconds": round(seconds, 2),
        "eps": round(events / seconds),
        "cpu_cores": round(cpu / seconds, 2),
        "events_per_cpu_second": round(events / cpu),
    }


def progress_rates(samples: Sequence[Sample], parts: int = 10) -> list[int | None]:
    """The rate over each tenth of the run: shows warm-up, drift and noise (None for a
    tenth already done by the first sample, as when a second process started late)."""
    step = max(1, samples[-1].events // parts)
    rates: list[int | None] = []
    for start in range(0, samples[-1].events - step + 1, step):
        seconds = value_at(samples, start + step) - value_at(samples, start)
        rates.append(round(step / seconds) if seconds > 0 else None)
    return rates


def process_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by every process on the machine: (name, seconds) by pid."""
    usage = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            name = text[text.index("(") + 1 : text.rindex(")")]
            fields = text.rpartition(")")[2].split()
            usage[int(stat.parent.name)] = (name, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return usage


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy (not idle or waiting on I/O) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLOCK_TICKS


class MachineCpu:
    """Who used the machine's CPUs while a run's count crossed its window: on a shared
    machine, the rate of a process depends on what else runs."""

    def __init__(self, window: Window, labels: dict[int, str]) -> None:
        self.window = window
        self.labels = {os.getpid(): "this benchmark", **labels}
        self.start: tuple[float, float, dict[int, tuple[str, float]]] | None = None
        self.end: tuple[float, float, dict[int, tuple[str, float]]] | None = None

    def update(self, sample: Sample) -> None:
        if self.start is None and sample.events >= self.window.first:
            self.start = (time.monotonic(), machine_busy_seconds(), process_cpu())
        elif self.end is None and sample.events >= self.window.last:
            self.end = (time.monotonic(), machine_busy_seconds(), process_cpu())

    def summary(self) -> dict[str, Any]:
        if self.start is None or self.end is None:
            return {}
        seconds = self.end[0] - self.start[0]
        by_name: defaultdict[str, float] = defaultdict(float)
        for pid, (name, used) in self.end[2].items():
            label = self.labels.get(pid, name)
            by_name[label] += used - self.start[2].get(pid, (name, 0.0))[1]
        top = sorted(by_name.items(), key=lambda item: -item[1])[:6]
        return {
            "busy_cores": round((self.end[1] - self.start[1]) / seconds, 2),
            "top_processes_cores": {name: round(used / seconds, 2) for name, used in top},
        }


class CommittedLag:
    """Messages of the input topics not yet committed by a consumer group."""

    def __init__(self, bootstrap: str, group: str, topic_names: Sequence[str]) -> None:
        # Only OffsetFetch and ListOffsets: this consumer never joins the group.
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        meta = self.consumer.list_topics(timeout=10)
        self.partitions = [
            TopicPartition(name, p) for name in topic_names for p in meta.topics[name].partitions
        ]

    def behind(self) -> int:
        behind = 0
        for tp in self.consumer.committed(self.partitions, timeout=10):
            _, high = self.consumer.get_watermark_offsets(tp, timeout=10)
            behind += high - max(tp.offset, 0)
        return behind

    def close(self) -> None:
        self.consumer.close()


# --- The run's resources ----------------------------------------------------------------------


@dataclass
class Run:
    """Names, files and services of one benchmark run; `cleanup` removes all of them."""

    bootstrap: str
    redis_url: str
    settings: Settings
    tmp: Path
    run_id: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        path = self.tmp / "logs"
        path.mkdir(exist_ok=True)
        return path

    def prefix(self, name: str) -> str:
        return f"{self.run_id}-{name}."

    def env(self, tag: str, prefix: str, models: Path, **extra: str) -> dict[str, str]:
        """A child's environment: its own consumer group and Redis namespace."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "REDIS_URL": self.redis_url,
            "CHURN_APP_ID": f"{self.run_id}-{tag}",
            "CHURN_TOPIC_PREFIX": prefix,
            "CHURN_REDIS_NAMESPACE": f"{self.run_id}-{tag}",
            "CHURN_MODELS_DIR": str(models),
            "CHURN_LOG_LEVEL": "info",  # "Worker ready" is logged at info
            **extra,
        }

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[str, Any]]:
        """Times a phase and records the load average around it."""
        record: dict[str, Any] = {"load_before": _loadavg()}
        start = time.perf_counter()
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", end=" ", flush=True)
        try:
            yield record
        finally:
            record["seconds"] = round(time.perf_counter() - start, 1)
            record["load_after"] = _loadavg()
            self.phases[name] = record
            print(f"{record['seconds']} s {record.get('result', '')}", flush=True)

    def cleanup(self) -> None:
        """Delete the run's topics, consumer groups, Redis keys and Faust data dirs."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        with suppress(Exception):
            names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(self.run_id)]
            if names:
                for future in admin.delete_topics(names, operation_timeout=30).values():
                    with suppress(Exception):
                        future.result()
        with suppress(Exception):
            listed = admin.list_consumer_groups(request_timeout=10).result()
            groups = [g.group_id for g in listed.valid if g.group_id.startswith(self.run_id)]
            if groups:
                for future in admin.delete_consumer_groups(groups, request_timeout=10).values():
                    with suppress(Exception):
                        future.result()
        client = redis.Redis.from_url(self.redis_url)
        keys = list(client.scan_iter(match=f"{self.run_id}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start : start + 1000])  # never FLUSH*: Redis is shared
        for path in Path(tempfile.gettempdir()).glob(f"faust-{self.run_id}*"):
            shutil.rmtree(path, ignore_errors=True)


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- Inputs: events and models ------------------------------------------------------------


def simulated_events(n: int, seed: int = 5) -> list[tuple[str, Event]]:
    """The first `n` events, in time order, of a simulated shop big enough to have them."""
    history = generate_history(max(100, n // EVENTS_PER_CUSTOMER), seed=seed)
    events = list(history.events_in_time_order())
    if len(events) < n:
        raise RuntimeError(f"the simulator made {len(events)} events, fewer than {n}")
    return events[:n]


def train_model(run: Run) -> Path:
    """A LightGBM artifact trained the product's way on a small simulated shop."""
    models = run.tmp / "models"
    db = run.tmp / "shop.db"
    for args in (
        ["simulator", "sqlite", "--customers", str(TRAINING_CUSTOMERS), "--out", str(db)],
        ["training", "--db", str(db), "--out", str(models)],
    ):
        subprocess.run(
            [sys.executable, "-m", *args], cwd=ROOT, check=True, capture_output=True, text=True
        )
    return models


def train_profile_model(models_dir: Path) -> Path:
    """A real LightGBM model that learned one rule: an unverified email means churn.

    A profile upsert flips `email_verified` at once, with no event time: no window,
    no inactivity rescore and no partition watermark moves, so each probe's risk
    change is caused by the probe itself (see `probe_event`)."""
    column = FEATURE_NAMES.index("email_verified")
    rng = np.random.default_rng(7)
    features = rng.normal(size=(4000, len(FEATURE_NAMES)))
    features[:, column] = rng.integers(0, 2, size=4000)
    labels = 1 - features[:, column]
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 7},
        lgb.Dataset(features, labels),
        num_boost_round=30,
    )
    identity = Calibration(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    metadata = {
        "calibration": identity.to_json(),
        "thresholds": {"medium": 0.4, "high": 0.7},
        "feature_params": {"engagement_scale": 25.0},
    }
    write_artifact(models_dir, "email-verified-v1", booster, metadata)
    return models_dir


# --- (a), (f): one worker; (d): two workers; (b): the bare agent ----------------------------


def measure_workers(
    run: Run,
    tag: str,
    prefix: str,
    models: Path,
    count: int,
    window: Window,
    stop_at: int,
    module_args: Sequence[str] = ("-m", "stream_app", "worker"),
    events_of: Callable[[Child], int | None] = worker_events,
    extra_env: dict[str, str] | None = None,
    track_commits: bool = False,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Start `count` processes in one consumer group on pre-produced topics and sample
    their progress until `stop_at` events; the rate over `window` is the result."""
    env = run.env(tag, prefix, models, **(extra_env or {}))
    started = time.monotonic()
    children = [Child(f"{tag}-{i}", module_args, env, run.logs) for i in range(count)]
    lag = None
    spy = None
    try:
        for child in children:
            child.wait_ready()
        ready = time.monotonic() - started
        if track_commits:
            inputs = [topics.qualified(name, prefix) for name in topics.INPUT_TOPICS]
            lag = CommittedLag(run.bootstrap, env["CHURN_APP_ID"], inputs)
        if profile is not None:
            spy = ProfileRecorder(children[0].pid, profile, window)
        caught_up: list[float] = []
        last_lag_check = 0.0
        machine = MachineCpu(window, {child.pid: child.name for child in children})

        def on_sample(sample: Sample) -> None:
            nonlocal last_lag_check
            machine.update(sample)
            if spy is not None:
                spy.update(sample.events)
            if lag is not None and not caught_up and sample.t - last_lag_check >= 1.0:
                last_lag_check = sample.t
                if lag.behind() == 0:
                    caught_up.append(sample.t)

        timeout = 120 + stop_at / 200  # generous: even 200 events/s finishes
        samples = sample_until(children, events_of, stop_at, started, timeout, on_sample)
        stats = work_stats(children) if events_of is worker_events else {}
        # Faust commits every broker_commit_interval (2.8 s): wait for the last commit.
        while lag is not None and not caught_up:
            if time.monotonic() - started > timeout:
                raise RuntimeError("offsets never committed up to the end of the topics")
            if lag.behind() == 0:
                caught_up.append(time.monotonic() - started)
            else:
                time.sleep(0.5)
    finally:
        if spy is not None:
            spy.stop()
        if lag is not None:
            lag.close()
        for child in children:
            child.stop()

    first_event = next(s.t for s in samples if s.events > 0)
    result: dict[str, Any] = {
        "processes": count,
        "events": samples[-1].events,
        "ready_after_s": round(ready, 1),
        "first_event_after_s": round(first_event, 1),
        "window": rate(samples, window),
        "machine_during_window": machine.summary(),
        "rates_per_tenth": progress_rates(samples),
        "extra_env": extra_env or {},
        **stats,
    }
    if stop_at > window.last:
        result["sustained"] = rate(samples, Window(window.first, stop_at))
    if caught_up:
        # From the first finished batch to the last committed offset: startup excluded,
        # the first batches' warm-up and the commit interval's slack included.
        drain = caught_up[0] - first_event
        result["drain"] = {"seconds": round(drain, 1), "eps": round(stop_at / drain)}
    if count == 1:
        result["rss_mb"] = rss_curve(samples, window.first)
    if spy is not None:
        result["profile"] = spy.summary()
    return result


def rss_curve(samples: Sequence[Sample], warmup: int) -> dict[str, Any]:
    """The one process's RSS after the warm-up, at each tenth of the run and at the end."""
    after_warmup = next(s for s in samples if s.events >= warmup)
    step = max(1, samples[-1].events // 10)
    return {
        "after_warmup": round(after_warmup.rss_mb[0], 1),
        "after_warmup_events": after_warmup.events,
        "end": round(samples[-1].rss_mb[0], 1),
        "end_events": samples[-1].events,
        "peak": round(max(s.rss_mb[0] for s in samples), 1),
        "per_tenth": [
            round(next(s.rss_mb[0] for s in samples if s.events >= k), 1)
            for k in range(step, samples[-1].events + 1, step)
        ],
    }


# --- (c): the naive per-event path -----------------------------------------------------------


def naive_throughput(
    run: Run, models: Path, events: Sequence[tuple[str, Event]], first: int
) -> dict[str, Any]:
    """One Redis round trip and one one-row model call per event, in this process.

    No Kafka at all, which flatters the naive path. It takes the events the worker
    meets at the start of its window (see `as_consumed`), after giving the store the
    events before them in batches, so that the state has the same size."""
    model = load_model(models)
    policy = RiskPolicy(model.thresholds)
    client = redis.Redis.from_url(run.redis_url, socket_timeout=10, decode_responses=True)
    store = RedisFeatureStore(client, f"{run.run_id}-naive")
    decoders = {name: msgspec.json.Decoder(kind) for name, kind in INPUT_EVENTS.items()}
    before, timed = as_consumed(events, first, NAIVE_EVENTS)
    updates = positioned([*before, *timed])
    for start in range(0, len(before), 1000):
        store.apply(updates[start : start + 1000])

    raw = [(topic, msgspec.json.encode(event)) for topic, event in timed]
    positions = [u.position for u in updates[len(before) :]]
    risk: dict[str, str] = {}
    scored = 0
    began = time.perf_counter()
    for (topic, value), position in zip(raw, positions, strict=True):
        update = update_for(topic, decoders[topic].decode(value), position)
        state = store.apply([update]).states[0]
        if state.seen is None:
            continue  # a bare profile has nothing to score, as in the worker
        features = feature_matrix(base_columns([state], [state.seen]), model.feature_params)
        probability = float(model.predict(features)[0])
        risk[state.customer_id] = policy.category(probability, risk.get(state.customer_id))
        scored += 1
    seconds = time.perf_counter() - began
    return {
        "events": len(raw),
        "preloaded": len(before),
        "scored": scored,
        "seconds": round(seconds, 2),
        "eps": round(len(raw) / seconds),
    }


def as_consumed(
    events: Sequence[tuple[str, Event]], first: int, count: int
) -> tuple[list[tuple[str, Event]], list[tuple[str, Event]]]:
    """The events a backlog consumer has read before its `first` event, and the next
    `count`, each in time order. It reads the topics side by side, so by then it has
    read about `first` x (the topic's share of the backlog) of each topic; in plain
    time order a big history starts with nothing but profiles."""
    by_topic: dict[str, list[int]] = defaultdict(list)
    for i, (topic, _) in enumerate(events):
        by_topic[topic].append(i)
    before: list[int] = []
    inside: list[int] = []
    for indices in by_topic.values():
        share = len(indices) / len(events)
        start, end = round(first * share), round((first + count) * share)
        before += indices[:start]
        inside += indices[start:end]
    return [events[i] for i in sorted(before)], [events[i] for i in sorted(inside)]


def positioned(events: Sequence[tuple[str, Event]], partitions: int = 4) -> list[Update]:
    """The events as the worker's updates, with made-up but plausible Kafka positions."""
    next_offset: Counter[tuple[str, int]] = Counter()
    updates = []
    for topic, event in events:
        partition = zlib.crc32(event.customer_id.encode()) % partitions
        position = Position(topic, partition, next_offset[topic, partition])
        next_offset[topic, partition] += 1
        updates.append(update_for(topic, event, position))
    return updates


# --- (e): end-to-end latency at a fixed offered load -------------------------------------------


def probe_event(run: Run, customer: int, step: int, at: datetime) -> tuple[str, Event]:
    """The `step`-th event of probe customer `customer`, served by the profile model.

    Step 0 is a profile (verified email) and step 1 an order at `at`: the customer's
    first score is LOW, which is not news. From step 2 on, each step is a profile
    upsert that toggles the email's verification, which flips the risk between LOW
    and HIGH, so each yields one `churn-risk` event triggered by that very message
    (unless it overtakes the order from the other topic: see `measure_latency`)."""
    customer_id = f"{run.run_id}-probe-{customer:02d}"
    if step == 1:
        order_id = f"{run.run_id}-p{customer:02d}"
        item = OrderItem("books", 1, 20.0)
        return topics.ORDERS, Order(
            order_id, customer_id, at, 20.0, "paypal", "delivered", items=[item]
        )
    registered = at - timedelta(days=400)
    return topics.CUSTOMERS, Customer(customer_id, registered, email_verified=step % 2 == 0)


def measure_latency(
    run: Run,
    tag: str,
    models: Path,
    background: Sequence[tuple[str, Event]],
    offered_eps: int,
    wait_ms: int,
) -> dict[str, Any]:
    """Offer `offered_eps` events/s for LATENCY_SECONDS to a running worker; probes
    give the time from the producer's send to a consumer receiving the output."""
    prefix = run.prefix(tag)
    env = run.env(tag, prefix, models, CHURN_BATCH_WAIT_MS=str(wait_ms))
    worker = Child(tag, ("-m", "stream_app", "worker"), env, run.logs)
    sent: dict[tuple[int, int], float] = {}  # (partition, offset) of a probe -> send time
    received: dict[tuple[int, int], float] = {}
    assigned = threading.Event()
    done = threading.Event()

    def read_outputs() -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": run.bootstrap,
                "group.id": f"{run.run_id}-{tag}-reader",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe(
            [topics.qualified(topics.CHURN_RISK, prefix)],
            on_assign=lambda _c, _p: assigned.set(),
        )
        try:
            while not done.is_set():
                message = consumer.poll(0.05)
                if message is None or message.error():
                    continue
                now = time.monotonic()
                trigger = json.loads(cast(bytes, message.value()))["trigger"]
                if trigger.get("topic") == topics.CUSTOMERS:
                    received.setdefault((trigger["partition"], trigger["offset"]), now)
        finally:
            consumer.close()

    def on_delivery(sent_at: float) -> Callable[[KafkaError | None, Message], None]:
        def record(err: KafkaError | None, message: Message) -> None:
            if err is None:
                sent[(cast(int, message.partition()), cast(int, message.offset()))] = sent_at

        return record

    reader = threading.Thread(target=read_outputs, daemon=True)
    try:
        worker.wait_ready()  # it has created the topics by then
        reader.start()
        if not assigned.wait(60):
            raise RuntimeError("the churn-risk reader got no partitions")
        producer = Producer(
            {
                **kafka_sink.PRODUCER_CONFIG,
                "bootstrap.servers": run.bootstrap,
                "delivery.report.only.error": False,  # the probes' offsets come from reports
            }
        )
        encode = msgspec.json.Encoder().encode
        total = int(offered_eps * LATENCY_SECONDS)
        probe_every = max(1, round(offered_eps / PROBES_PER_SECOND))
        steps = [0] * PROBE_CUSTOMERS
        # Probe orders at the background's event time, so the partitions' event-time
        # watermarks (and with them the inactivity rescores) move as they would anyway.
        first_order_at = next(e.order_ts for t, e in background if isinstance(e, Order))
        started = time.monotonic()
        for i in range(total):
            if i % 20 == 0:  # pace about 100 times a second at 2,000 events/s
                # poll() returns early when it serves a delivery report: loop until due.
                while (delay := started + i / offered_eps - time.monotonic()) > 0:
                    producer.poll(delay)
            callback = None
            if i % probe_every == 0:
                customer = (i // probe_every) % PROBE_CUSTOMERS
                topic, event = probe_event(run, customer, steps[customer], first_order_at)
                now = time.monotonic()
                # Kafka orders nothing across topics: count a profile only once its
                # customer's order (step 1) is two probes behind it.
                if steps[customer] >= 3 and now - started >= LATENCY_WARMUP_SECONDS:
                    callback = on_delivery(now)
                steps[customer] += 1
            else:
                topic, event = background[i % len(background)]
            producer.produce(
                prefix + topic,
                key=event.customer_id.encode(),
                value=encode(event),
                on_delivery=callback,
            )
        offered_seconds = time.monotonic() - started
        processed = worker_events(worker) or 0
        producer.flush(30)
        # Wait for the last probes, but not long once the worker has taken everything.
        deadline = time.monotonic() + LATENCY_DRAIN_SECONDS
        while not sent.keys() <= received.keys() and time.monotonic() < deadline:
            if (worker_events(worker) or 0) >= total:
                deadline = min(deadline, time.monotonic() + 5)
            time.sleep(0.2)
        stats = work_stats([worker])
    finally:
        done.set()
        worker.stop()
        if reader.is_alive():
            reader.join(10)

    if not sent:
        raise RuntimeError("no probe was delivered")
    answered = [received[k] - t for k, t in sent.items() if k in received]
    # A probe not answered in time counts as infinitely late, so it cannot flatter p99.
    latencies = np.array(answered + [math.inf] * (len(sent) - len(answered))) * 1000

    def percentile(q: float) -> float | None:
        value = float(np.percentile(latencies, q, method="higher"))
        return round(value, 1) if math.isfinite(value) else None

    return {
        "offered_eps": offered_eps,
        "achieved_offered_eps": round(total / offered_seconds),
        "seconds": round(offered_seconds, 1),
        # Events the worker had finished when the offer ended: below the offer, it
        # could not keep up and the latency is mostly queueing.
        "processed_eps_during_offer": round(processed / offered_seconds),
        "batch_wait_ms": wait_ms,
        "probes": len(sent),
        "probes_answered": len(answered),
        "p50_ms": percentile(50),
        "p95_ms": percentile(95),
        "p99_ms": percentile(99),
        "max_ms": percentile(100),
        **stats,
    }


# --- Profiling with py-spy ------------------------------------------------------------------


class ProfileRecorder:
    """py-spy attached to a worker while its count crosses `window`."""

    def __init__(self, pid: int, out: Path, window: Window) -> None:
        self.pid = pid
        self.out = out
        self.window = window
        self.process: subprocess.Popen[bytes] | None = None
        self.events = [0, 0]

    def update(self, events: int) -> None:
        if self.process is None and events >= self.window.first:
            spy = Path(sys.executable).with_name("py-spy")
            # --idle keeps the samples of a waiting thread (on a Redis reply, in the
            # event loop's select): the breakdown is of wall time, which bounds the rate.
            command = [str(spy), "record", "--pid", str(self.pid), "--rate", "100", "--idle"]
            self.process = subprocess.Popen(
                [*command, "--threads", "--format", "raw", "--output", str(self.out)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.events[0] = events
        if self.process is not None and self.process.poll() is None:
            self.events[1] = events
            if events >= self.window.last:
                self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            self.process.wait(60)

    def summary(self) -> dict[str, Any]:
        # Keep the raw stacks (flamegraph.pl input) beyond the run's temporary directory.
        kept = Path(tempfile.gettempdir()) / f"{self.out.parent.name}-py-spy.txt"
        shutil.copyfile(self.out, kept)
        return {"events": self.events, "raw": str(kept), **summarize_profile(self.out.read_text())}


# Where a sample's time goes: the first rule with a marker in the sample's stack. Our
# code comes first, so time spent waiting inside RedisFeatureStore.apply is "redis".
PROFILE_RULES: list[tuple[str, tuple[str, ...]]] = [
    ("ours: redis apply (pipeline, Lua round trip, parse)", ("apply (feature_store/redis_s",)),
    ("ours: redis inactivity index (due, read)", ("due (feature_store/", "read (feature_store/")),
    (
        "ours: redis commit + published offsets",
        ("commit (feature_store/", "published_through (feature_store/"),
    ),
    ("ours: model predict", ("predict (scoring/artifact.py",)),
    ("ours: model TreeSHAP contributions", ("contributions (scoring/artifact.py",)),
    ("ours: base_columns + feature_matrix", ("base_columns (", "feature_matrix (")),
    ("ours: decode + update_for", ("_decode (scoring/pipeline.py", "update_for (")),
    ("ours: policy + change events", ("_score (scoring/pipeline.py",)),
    ("ours: pipeline other", ("(scoring/pipeline.py",)),
    (
        "ours: publish (encode, produce, await acks)",
        ("publish (stream_app/worker.py", "(stream_app/publisher.py"),
    ),
    ("ours: metrics", ("_observe (stream_app/worker.py", "_observe_lag (")),
    ("ours: worker other", ("(stream_app/worker.py",)),
    ("idle: event loop select", ("select (selectors.py",)),
    ("aiokafka: producer sender, connections", ("aiokafka/",)),
    ("faust: sensors (Monitor)", ("faust/sensors/",)),
    ("faust: send path (topics, producer)", ("faust/topics.py", "faust/transport/producer.py")),
    ("faust: acks, offsets, commits", ("faust/transport/consumer.py",)),
    (
        "faust: delivery (conductor, stream, take_events)",
        ("faust/transport/conductor.py", "faust/streams.py", "faust/channels.py", "faust/agents/"),
    ),
    ("faust: other", ("faust/",)),
    ("web: /metrics scrapes (aiohttp)", ("aiohttp/",)),
    ("asyncio + mode machinery", ("mode/", "asyncio/")),
]


# uvloop's loop is native code: py-spy shows its waiting (and its own socket I/O) as
# samples whose innermost Python frame is the worker's entry point.
UVLOOP_LEAF = "Worker.execute_from_commandline (mode/worker.py"
UVLOOP_NATIVE = "idle: uvloop native loop (waiting, socket I/O)"


def summarize_profile(raw: str) -> dict[str, Any]:
    """Shares of the event loop thread's wall time by component, and top functions,
    from py-spy's raw (collapsed stacks, one thread per first frame) output."""
    threads: dict[str, list[tuple[list[str], int]]] = defaultdict(list)
    for line in raw.splitlines():
        stack, _, hits = line.rpartition(" ")
        if stack:
            frames = stack.split(";")
            threads[frames[0]].append((frames[1:], int(hits)))
    main = next((name for name in threads if "MainThread" in name), None)
    if main is None:
        main = max(threads, key=lambda name: sum(n for _, n in threads[name]))
    shares: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, number in threads[main]:
        stack = ";".join(frames)
        kind = (
            UVLOOP_NATIVE
            if frames[-1].startswith(UVLOOP_LEAF)
            else next(
                (name for name, marks in PROFILE_RULES if any(m in stack for m in marks)),
                "other",
            )
        )
        shares[kind] += number
        self_time[_short(frames[-1])] += number
        for name in {_short(f) for f in frames}:
            inclusive[name] += number
    total = sum(shares.values())
    ours = sum(n for name, n in shares.items() if name.startswith("ours"))
    idle = sum(n for name, n in shares.items() if name.startswith("idle"))
    other_threads = {
        name.split(": ")[-1]: {
            "samples": sum(n for _, n in stacks),
            "busy_share": round(
                sum(n for f, n in stacks if "select (selectors.py" not in ";".join(f))
                / max(1, sum(n for _, n in stacks)),
                3,
            ),
        }
        for name, stacks in threads.items()
        if name != main
    }
    return {
        "samples": total,
        "ours_share": round(ours / total, 3),
        "framework_share": round((total - ours - idle) / total, 3),
        "idle_share": round(idle / total, 3),
        "by_component": {name: round(n / total, 3) for name, n in shares.most_common()},
        "top_self": [[name, round(n / total, 3)] for name, n in self_time.most_common(10)],
        "top_inclusive_ours": [
            [name, round(n / total, 3)]
            for name, n in inclusive.most_common()
            if name.split("(")[-1].startswith(("stream_app/", "scoring/", "feature_store/"))
            and "__main__" not in name
        ][:12],
        "other_threads": other_threads,
    }


def _short(frame: str) -> str:
    """'func (path/to/file.py:12)' -> 'func (to/file.py)'."""
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    function, path = match.groups()
    return f"{function} ({'/'.join(Path(path).parts[-2:])})"


# --- The bare agent ------------------------------------------------------------------------


class NullMonitor(Monitor):
    """Faust's Monitor with its per-message and per-event bookkeeping switched off."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_tp_commit(self, tp_offsets: Any) -> None:
        pass


def bare_agent_main(argv: Sequence[str]) -> None:
    """A Faust agent that only counts, with the worker's app settings (see build_app)."""
    parser = argparse.ArgumentParser(prog="python -m stream_app.bench _bare-agent")
    parser.add_argument("--asyncio-loop", action="store_true", help="stock asyncio, no uvloop")
    parser.add_argument("--no-monitor", action="store_true", help="no Monitor bookkeeping")
    args = parser.parse_args(argv)
    if not args.asyncio_loop:
        install_uvloop()  # as the worker does
    settings = Settings.from_env()
    extra: dict[str, Any] = {"Monitor": NullMonitor} if args.no_monitor else {}
    # The worker's own Faust app; Faust's environment variables
    # (STREAM_BUFFER_MAXSIZE, ...) apply to both alike.
    app = faust_app(settings, **extra)
    counted = 0
    inputs = app.topic(*(topics.qualified(n, settings.topic_prefix) for n in topics.INPUT_TOPICS))

    async def count_events(stream: StreamT) -> AsyncIterator[None]:
        nonlocal counted
        wait = settings.batch_wait_ms / 1000
        async for events in cast(Stream, stream).take_events(settings.batch_size, within=wait):
            counted += len(events)
            yield None

    app.agent(inputs, name="count-events", concurrency=1)(count_events)

    class Count(View):
        async def get(self, request: Request) -> Response:
            loop = type(asyncio.get_running_loop())
            return self.json({"events": counted, "loop": f"{loop.__module__}.{loop.__name__}"})

    app.page("/count")(Count)
    faust.Worker(app, loglevel=settings.log_level).execute_from_commandline()


# --- Levers ----------------------------------------------------------------------------------

BARE_LEVERS: list[tuple[str, list[str], dict[str, str]]] = [
    ("baseline", [], {}),
    ("stock asyncio loop (no uvloop)", ["--asyncio-loop"], {}),
    ("no Monitor", ["--no-monitor"], {}),
    ("STREAM_BUFFER_MAXSIZE=32768", [], {"STREAM_BUFFER_MAXSIZE": "32768"}),
    ("BROKER_MAX_POLL_RECORDS=500", [], {"BROKER_MAX_POLL_RECORDS": "500"}),
    ("STREAM_WAIT_EMPTY=false", [], {"STREAM_WAIT_EMPTY": "false"}),
    ("CHURN_BATCH_SIZE=2000", [], {"CHURN_BATCH_SIZE": "2000"}),
    ("no Monitor + buffer 32768", ["--no-monitor"], {"STREAM_BUFFER_MAXSIZE": "32768"}),
]
# Only levers the worker already reads from its environment (Faust reads its own
# settings' variables, such as PRODUCER_LINGER, in every app it builds).
WORKER_LEVERS: list[tuple[str, dict[str, str]]] = [
    ("baseline", {}),
    ("PRODUCER_LINGER=0.005", {"PRODUCER_LINGER": "0.005"}),
    ("STREAM_BUFFER_MAXSIZE=32768", {"STREAM_BUFFER_MAXSIZE": "32768"}),
    ("CHURN_BATCH_SIZE=2000", {"CHURN_BATCH_SIZE": "2000"}),
    ("CHURN_BATCH_SIZE=100", {"CHURN_BATCH_SIZE": "100"}),
    (
        "CHURN_BATCH_SIZE=2000 + PRODUCER_LINGER=0.005",
        {"CHURN_BATCH_SIZE": "2000", "PRODUCER_LINGER": "0.005"},
    ),
]


def measure_levers(run: Run, prefix: str, models: Path, n: int) -> dict[str, Any]:
    """Every lever (and some together), one fresh process per variant and round."""
    bare_window = Window(BARE_LEVER_WINDOW[0], min(n, BARE_LEVER_WINDOW[1]))
    worker_window = Window(*WORKER_LEVER_WINDOW)
    bare: dict[str, list[dict[str, Any]]] = defaultdict(list)
    worker: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for round_ in range(LEVER_ROUNDS):
        for i, (name, flags, env) in enumerate(BARE_LEVERS):
            result = measure_workers(
                run,
                f"lever{round_}-bare{i}",
                prefix,
                Path("unused"),
                1,
                bare_window,
                bare_window.last,
                module_args=("-m", "stream_app.bench", "_bare-agent", *flags),
                events_of=bare_events,
                extra_env=env,
            )
            bare[name].append(result["window"])
            print(f"  bare {name}: {brief(result['window'])}", flush=True)
        for i, (name, env) in enumerate(WORKER_LEVERS):
            result = measure_workers(
                run,
                f"lever{round_}-w{i}",
                prefix,
                models,
                1,
                worker_window,
                worker_window.last,
                extra_env=env,
            )
            worker[name].append({**result["window"], "mean_batch_size": result["mean_batch_size"]})
            print(f"  worker {name}: {brief(result['window'])}", flush=True)
    return {
        "bare_agent_window": [bare_window.first, bare_window.last],
        "worker_window": [worker_window.first, worker_window.last],
        "rounds": LEVER_ROUNDS,
        "bare_agent_eps": {name: [r["eps"] for r in runs] for name, runs in bare.items()},
        "worker_eps": {name: [r["eps"] for r in runs] for name, runs in worker.items()},
        "bare_agent": bare,
        "worker": worker,
    }


# --- The run -------------------------------------------------------------------------------


def run_bench(
    run: Run, n: int, warmup: int, window_size: int, profile: bool, levers: bool
) -> dict[str, Any]:
    window = Window(warmup, warmup + window_size)
    if n < window.last:
        raise SystemExit(f"--events must be at least warmup + window = {window.last:,}")
    env_before = environment(run)
    with run.phase("train models"):
        models = train_model(run)
        profile_models = train_profile_model(run.tmp / "profile-models")
    with run.phase("generate history") as record:
        events = simulated_events(n)
        record["events"] = len(events)
    backlog = run.prefix("backlog")
    with run.phase("produce backlog") as record:
        start = time.perf_counter()
        kafka_sink.produce(
            events, run.bootstrap, partitions=run.settings.partitions, topic_prefix=backlog
        )
        record["eps"] = round(n / (time.perf_counter() - start))
    runs: dict[str, Any] = {}
    with run.phase("one worker") as record:
        runs["one_worker"] = measure_workers(
            run, "w1", backlog, models, 1, window, n, track_commits=True
        )
        record["result"] = brief(runs["one_worker"]["window"])
    with run.phase("bare Faust agent") as record:
        bare_agent = ("-m", "stream_app.bench", "_bare-agent")
        runs["bare_agent"] = measure_workers(
            run,
            "bare",
            backlog,
            Path("unused"),
            1,
            window,
            window.last,
            module_args=bare_agent,
            events_of=bare_events,
        )
        record["result"] = brief(runs["bare_agent"]["window"])
    with run.phase("two workers") as record:
        runs["two_workers"] = measure_workers(run, "w2", backlog, models, 2, window, window.last)
        record["result"] = brief(runs["two_workers"]["window"])
    with run.phase("naive per-event path") as record:
        runs["naive"] = naive_throughput(run, models, events, window.first)
        record["result"] = brief(runs["naive"])
    # The mix a backlog consumer meets (see `as_consumed`), not a stretch of time order.
    background = as_consumed(events, window.first, int(OFFERED_EPS * LATENCY_SECONDS))[1]
    wait_ms = run.settings.batch_wait_ms
    with run.phase("latency") as record:
        runs["latency"] = measure_latency(
            run, "lat", profile_models, background, OFFERED_EPS, wait_ms
        )
        record["result"] = brief(runs["latency"])
    # Half of what one worker sustained: a load it can carry, so the latency is the
    # pipeline's own rather than a queue's.
    half = max(50, int(runs["one_worker"]["window"]["eps"] / 2 // 50 * 50))
    with run.phase("latency at half capacity") as record:
        runs["latency_half_capacity"] = measure_latency(
            run, "lathalf", profile_models, background, half, wait_ms
        )
        record["result"] = brief(runs["latency_half_capacity"])
    if profile:
        with run.phase("profile one worker (py-spy)"):
            runs["profile"] = measure_workers(
                run, "prof", backlog, models, 1, window, window.last, profile=run.tmp / "spy.txt"
            )["profile"]
    if levers:
        with run.phase("levers"):
            runs["levers"] = measure_levers(run, backlog, models, n)
            runs["levers"]["latency_wait_10ms"] = measure_latency(
                run, "lat10", profile_models, background, half, 10
            )
    return assemble(run, runs, env_before, n, window)


def brief(result: dict[str, Any]) -> str:
    """One line of a phase's result for the progress output."""
    if "p99_ms" in result:
        return f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms"
    cpu = result.get("events_per_cpu_second")
    return f"{result['eps']:,} events/s" + (f", {cpu:,} per CPU second" if cpu else "")


def assemble(
    run: Run, runs: dict[str, Any], env_before: dict[str, Any], n: int, window: Window
) -> dict[str, Any]:
    """The headline numbers, their targets, and everything behind them."""
    one, bare, two = runs["one_worker"], runs["bare_agent"], runs["two_workers"]
    latency, naive, rss = runs["latency"], runs["naive"], runs["one_worker"]["rss_mb"]
    throughput = one["window"]["eps"]
    headline = {
        "throughput_eps": throughput,
        "faust_bare_eps": bare["window"]["eps"],
        "ratio_vs_bare": round(throughput / bare["window"]["eps"], 3),
        "naive_throughput_eps": naive["eps"],
        "ratio": round(throughput / naive["eps"], 2),
        "throughput_2w_eps": two["window"]["eps"],
        "scaling_2w": round(two["window"]["eps"] / throughput, 2),
        "p50_ms": latency["p50_ms"],
        "p95_ms": latency["p95_ms"],
        "p99_ms": latency["p99_ms"],
        "offered_eps": latency["offered_eps"],
        "rss_mb_start": rss["after_warmup"],
        "rss_mb_end": rss["end"],
        "rss_growth": round(rss["end"] / rss["after_warmup"] - 1, 3),
        "rss_events": [rss["after_warmup_events"], rss["end_events"]],
        # Less sensitive to the machine's other load than the rates above.
        "events_per_cpu_second": {
            "one_worker": one["window"]["events_per_cpu_second"],
            "bare_agent": bare["window"]["events_per_cpu_second"],
            "two_workers": two["window"]["events_per_cpu_second"],
        },
    }
    env_after = environment(run)
    return {
        **headline,
        "targets": {name: verdict(headline[name], *target) for name, target in TARGETS.items()},
        "runs": runs,
        "method": METHOD,
        "settings": {
            "events": n,
            "window": [window.first, window.last],
            "batch_size": run.settings.batch_size,
            "batch_wait_ms": run.settings.batch_wait_ms,
            "partitions": run.settings.partitions,
            "sample_seconds": SAMPLE_SECONDS,
            "naive_events": NAIVE_EVENTS,
            "latency_seconds": LATENCY_SECONDS,
            "probes_per_second": PROBES_PER_SECOND,
            "probe_customers": PROBE_CUSTOMERS,
            "throughput_model": "trained by `python -m training` on a "
            f"{TRAINING_CUSTOMERS:,}-customer simulated shop",
            "latency_model": "email_verified rule (train_profile_model)",
        },
        "environment": {**env_before, "load_after": env_after["load"]},
        "durations_seconds": {name: p["seconds"] for name, p in run.phases.items()},
        "phases": run.phases,
    }


def verdict(value: float | None, op: str, bound: float) -> dict[str, Any]:
    if value is None:  # a latency percentile that never came: the target is missed
        passed = False
    elif op == ">=":
        passed = value >= bound
    elif op == "<=":
        passed = value <= bound
    else:
        passed = value < bound
    return {"target": f"{op} {bound:g}", "value": value, "pass": passed}


METHOD = {
    "throughput": "Events are produced to fresh topics before the processes start. The "
    "processes' churn_events_total counters (every outcome, dead letters included; counted "
    "once a batch's outputs are durable in Kafka) are sampled every 0.25 s together with "
    "their CPU time (/proc/<pid>/stat). A rate is the events of settings.window over the "
    "time the summed count took to cross it (interpolated between samples): startup, the "
    "first batches and the profile-heavy start of the history are left out, and every run "
    "is measured over the same events. one_worker.sustained runs to the end of the backlog; "
    "one_worker.drain is from the first finished batch until the group's committed offsets "
    "(Consumer.committed vs the high watermarks) reach the end of the topics.",
    "faust_bare": "The same topics, a new consumer group: a bare Faust agent (this module's "
    "_bare-agent) with build_app's faust.App arguments and take_events(batch_size, "
    "batch_wait) that only counts, served on /count and sampled the same way.",
    "naive": "In the benchmark process, without Kafka: the events before the window go to a "
    "fresh Redis namespace in batches, then for each of the next naive_events events (JSON "
    "bytes): msgspec decode, update_for, RedisFeatureStore.apply([update]) (one round trip), "
    "feature_matrix of one row, Model.predict (Booster.predict of one row + calibration), "
    "RiskPolicy.category. No inactivity rescores, reasons or publishing: it does less than "
    "the worker, so the ratio understates what batching buys.",
    "two_workers": "Two worker processes in one consumer group (4 partitions per topic) on "
    "the same backlog, counts summed, same window.",
    "latency": "A fresh worker serving a one-rule model (an unverified email means HIGH) is "
    "offered offered_eps events/s for latency_seconds: simulated events plus probes_per_second "
    "probe events. After its first profile and order, each probe is a profile upsert that "
    "toggles email_verified, so it flips its customer's risk and yields one churn-risk event "
    "whose trigger names its partition and offset (taken from the delivery report). Latency = "
    "the time a consumer in the benchmark receives that event - the time just before "
    "Producer.produce of the probe (one clock): producer linger (5 ms), the batch wait, "
    "queueing, processing, publishing with acks=all and the reader's fetch are inside. Probes "
    "of the first 3 s are left out; one never answered counts as infinitely late. "
    "latency_half_capacity offers half the one worker's measured rate.",
    "rss": "VmRSS of the one worker from /proc/<pid>/status when its count first reached the "
    "window's start, and after the last event of the backlog.",
}


def environment(run: Run) -> dict[str, Any]:
    server = redis.Redis.from_url(run.redis_url).info("server")
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        # Others edit the tree while benchmarks run: record what was measured.
        "git_modified_files": (
            _git("status", "--porcelain", "--untracked-files=no") or ""
        ).splitlines(),
        "cpu_count": os.cpu_count(),
        "load": _loadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "kafka_version": _kafka_version(),
        "redis_version": server["redis_version"],
        "packages": {
            name: _version(name)
            for name in ("faust-streaming", "aiokafka", "confluent-kafka", "redis", "lightgbm")
        },
    }


def _kafka_version() -> str | None:
    """The version scripts/services.sh runs (a broker does not report its own)."""
    pom = (ROOT / "scripts" / "kafka" / "pom.xml").read_text()
    match = re.search(r"<kafka.version>(.*?)</kafka.version>", pom)
    return match.group(1) if match else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def summary(result: dict[str, Any]) -> str:
    runs, cpu = result["runs"], result["events_per_cpu_second"]
    one = runs["one_worker"]
    lines = [
        f"stream app bench: {result['settings']['events']:,} events, window "
        f"{result['settings']['window']}, {result['environment']['cpu_count']} CPUs, load "
        f"{result['environment']['load']} -> {result['environment']['load_after']}",
        f"  one worker    {result['throughput_eps']:>6,} events/s ({one['window']['cpu_cores']}"
        f" cores, {cpu['one_worker']:,}/CPU s); sustained {one['sustained']['eps']:,}, "
        f"drain {one.get('drain', {}).get('eps')}",
        f"  bare Faust    {result['faust_bare_eps']:>6,} events/s ({cpu['bare_agent']:,}/CPU s)",
        f"  naive         {result['naive_throughput_eps']:>6,} events/s",
        f"  two workers   {result['throughput_2w_eps']:>6,} events/s "
        f"({cpu['two_workers']:,}/CPU s)",
        f"  per event     {one['scored_per_event']} rows scored, {one['changes_per_event']} "
        "risk changes published",
    ]
    for name in ("latency", "latency_half_capacity"):
        lat = runs[name]
        lines.append(
            f"  latency @{lat['offered_eps']:,}/s (worker did {lat['processed_eps_during_offer']:,}"
            f"/s): p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms, p99 {lat['p99_ms']} ms, "
            f"{lat['probes_answered']}/{lat['probes']} probes"
        )
    lines.append(
        f"  RSS           {result['rss_mb_start']} -> {result['rss_mb_end']} MiB "
        f"(events {result['rss_events'][0]:,} -> {result['rss_events'][1]:,})"
    )
    for name, target in result["targets"].items():
        verdict_text = "PASS" if target["pass"] else "FAIL"
        lines.append(f"  {verdict_text}  {name} = {target['value']} (target {target['target']})")
    if "profile" in runs:
        lines.append("  profile, share of the event loop thread's wall time:")
        for name, share in runs["profile"]["by_component"].items():
            lines.append(f"    {share:6.1%}  {name}")
    if "levers" in runs:
        for kind in ("bare_agent_eps", "worker_eps"):
            for name, values in runs["levers"][kind].items():
                lines.append(f"  lever, {kind[:-4]}: {name}: {values}")
        lines.append(f"  latency, wait 10 ms: {brief(runs['levers']['latency_wait_10ms'])}")
    lines.append("  took " + ", ".join(f"{k} {v}s" for k, v in result["durations_seconds"].items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_bare-agent"]:
        bare_agent_main(argv[1:])
        return
    parser = argparse.ArgumentParser(
        prog="python -m stream_app.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="backlog size")
    parser.add_argument(
        "--warmup", type=int, default=DEFAULT_WARMUP, help="events before the window"
    )
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="events in the window")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--profile", action="store_true", help="py-spy an extra worker")
    parser.add_argument("--levers", action="store_true", help="try configuration levers")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="stream-bench-") as tmp:
        run = Run(settings.kafka_bootstrap_servers, settings.redis_url, settings, Path(tmp))
        print(f"run {run.run_id}", flush=True)
        try:
            result = run_bench(
                run, args.events, args.warmup, args.window, args.profile, args.levers
            )
        except BaseException:
            kept = Path(tempfile.gettempdir()) / f"{run.run_id}-logs"
            shutil.copytree(run.logs, kept, dirs_exist_ok=True)
            print(f"failed; worker logs copied to {kept}", file=sys.stderr)
            raise
        finally:
            run.cleanup()
    write_results(args.out, result, summary(result))


if __name__ == "__main__":
    main()
