"""Stream app benchmark: the real worker process on the real Kafka broker and Redis.

    python -m bench.stream [--events 1000000] [--steady-from 200000]
                           [--out bench/results.json] [--profile] [--levers]
    python -m bench.stream --memory-only [--events 5000000] [--out bench/memory.json]
    BENCH_ARGS="--events 300000 --profile" make bench

One run measures, on the same machine and in the same minutes (the machine is shared
and noisy, so the ratios and the CPU per event matter more than the absolute rates).
The headline is the steady state: every throughput figure is over the same span of
the same backlog, events 200,000 (`--steady-from`) to the end (1,000,000 by default).

* one worker process (`python -m stream_app worker`) over a backlog of simulated
  events produced before it starts, from its `churn_events_total` counters sampled
  over time: its rate over the steady span, its CPU, Redis's CPU and the rows it
  scored and the changes it published per event meanwhile, its rate over each tenth
  of the backlog and its RSS; the rate over events 30k-120k (`early_window`, the
  figure the bench used to lead with) is kept as a secondary figure. The churn-risk
  events it published are read back and digested (`outputs`), so two runs on the
  same backlog and model can be compared id for id;
* a bare Faust agent that only counts (`take_events`), with the worker's Faust
  settings, over the same span;
* two worker processes in one consumer group, over the same span;
* a naive per-event path in-process (per event: GET the state, apply, score one row,
  SET the state, produce and flush the change if there is one);
* end-to-end latency at 2,000 and 1,000 events/s offered, with the worker's default
  CHURN_MAX_IDLE_MS, from "probe" events whose every arrival flips their customer's
  risk, so each one yields a `churn-risk` event; and at 2,000 events/s on the
  confluent engine.

`--profile` samples an extra worker with py-spy (installed in the venv) over events
200k-400k of the backlog (the steady state) and breaks its time down by component;
`--levers` re-measures the bare agent and the worker with Faust and worker
configuration levers; `--memory-only` (`make bench-memory`) runs only the one worker
over the backlog and writes its RSS per tenth to bench/memory.json. Every topic,
consumer group and Redis key the run creates carries a unique `bench-<hex>` prefix
and is deleted at the end. `python -m bench.stream _bare-agent` is the bare agent
(run as a child).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import re
import shlex
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
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import faust
import lightgbm as lgb
import msgspec
import numpy as np
import redis
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from faust.sensors import Monitor
from faust.streams import Stream
from faust.types import EventT, StreamT
from faust.web import Request, Response, View

from bench.common import (
    ROOT,
    TRAINING_CUSTOMERS,
    environment,
    in_log_order,
    loadavg,
    redis_counters,
    redis_work,
    train_model,
    write_results,
)
from feature_store.definitions import FEATURE_NAMES, feature_matrix
from feature_store.keys import Keys
from feature_store.online import (
    DUPLICATE,
    CustomerState,
    InputError,
    apply_event,
    base_columns,
    decode_state,
    encode_state,
)
from feature_store.redis_store import RedisStateStore
from feature_store.store import MemoryStore
from schemas import (
    INPUT_EVENTS,
    ChurnRiskChanged,
    Customer,
    Order,
    OrderItem,
    Trigger,
    topics,
)
from scoring.artifact import (
    current_version,
    load_model,
    point_current,
    version_directory,
    write_artifact,
)
from scoring.families import MODEL_FILES, LightGBMModel
from scoring.model import Calibration
from scoring.pipeline import Scorer, reasons, utc
from scoring.risk import RANK, RiskPolicy, is_news, transition_id
from scoring.runner import BatchRunner, Collector
from simulator import kafka_sink
from simulator.history import Event, generate_history
from stream_app import kafka_security
from stream_app.kafka_admin import ensure_topics
from stream_app.partitioning import partition_of
from stream_app.publisher import Publisher
from stream_app.settings import OPTIONS, Settings
from stream_app.worker import faust_app, install_uvloop

DEFAULT_OUT = ROOT / "bench" / "results.json"
DEFAULT_MEMORY_OUT = ROOT / "bench" / "memory.json"

DEFAULT_EVENTS = 1_000_000  # every run drains them all: the steady span ends there
# The headline's span: events DEFAULT_STEADY_FROM .. the end of the backlog, in every
# run. Before it, the shop is young (few customers, few inactivity rescores per event)
# and the worker is faster than it will be for the rest of the backlog.
DEFAULT_STEADY_FROM = 200_000
# The early window, a secondary figure: events warmup .. warmup + window.
DEFAULT_WARMUP = 30_000
DEFAULT_WINDOW = 90_000
PROFILE_EVENTS = 200_000  # --profile: events steady_from .. steady_from + this
MEMORY_SPAN_FROM = 0.2  # --memory-only: RSS growth and rate from 20% of the backlog
# --levers: the worker over events 10k..40k; the (faster, noisier) bare agent over 10k..130k;
# each variant LEVER_ROUNDS times, round-robin, so drift and noise hit them all alike.
WORKER_LEVER_WINDOW = (10_000, 40_000)
BARE_LEVER_WINDOW = (10_000, 130_000)
LEVER_ROUNDS = 2
SAMPLE_SECONDS = 0.25
STALL_SECONDS = 60.0  # a count that has not moved this long: the process stalled
EVENTS_PER_CUSTOMER = 12  # the simulator's average is ~13: a little spare, then cut
NAIVE_EVENTS = 10_000
LATENCY_RATES = (2_000, 1_000)  # events/s offered
LATENCY_SECONDS = 60.0
LATENCY_WARMUP_SECONDS = 3.0  # probes sent before this are left out of the percentiles
LATENCY_DRAIN_SECONDS = 180.0  # longest wait for the last probes after the offer ends
PROBES_PER_SECOND = 20
PROBE_CUSTOMERS = 20  # each flips about once a second; 20 keys cover every partition
DEFAULT_MAX_IDLE_MS = int(OPTIONS["max_idle_ms"].default)
TOP_REASONS = 3
OUTPUTS_READ_SECONDS = 300.0  # longest read of a churn-risk topic back (outputs digest)

# Over the steady span of the one-worker run unless the comment says otherwise.
TARGETS = {
    "ratio_vs_bare": (">=", 0.6),  # against the bare agent over the same span
    "worker_cpu_us_per_event": ("<=", 90.0),
    "redis_us_per_event": ("<=", 10.0),  # Redis server CPU (INFO cpu)
    "ratio": (">=", 8.0),  # against the naive per-event path
    "scaling_2w": (">=", 1.9),  # two workers over the same span
    "sustained_eps_confluent": (">=", 15_000.0),  # the confluent engine's one worker
    "confluent_ratio": (">=", 1.8),  # against the Faust engine's, same run
    "scaling_2w_confluent": (">=", 1.9),
    "p99_ms_confluent": ("<=", 50.0),  # at 2,000 events/s offered, default CHURN_MAX_IDLE_MS
    "p99_ms_1000": ("<=", 50.0),  # at 1,000 events/s offered, default CHURN_MAX_IDLE_MS
    "p99_ms": ("<=", 100.0),  # at 2,000 events/s offered, default CHURN_MAX_IDLE_MS
    "rss_growth": ("<=", 0.10),  # RSS at the span's start to the end of the backlog
    "tenth_spread": ("<=", 0.15),  # over the whole backlog, from the first event
}

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
EVENTS_LINE = re.compile(rb"^churn_events_total\{[^}]*\} ([0-9.e+]+)$", re.M)
OUTCOME_LABEL = re.compile(r'outcome="(\w+)"')
GENERATION_LINE = re.compile(r"generation id (\d+) app consumers id")
CONFLUENT_READY = "consuming with confluent-kafka"


@dataclass(frozen=True)
class Window:
    """The events [first, last) of a backlog over which a rate is measured."""

    first: int
    last: int


@dataclass(frozen=True)
class Spans:
    """The events a run measures over: the steady span (the headline) and the early
    window (a secondary figure)."""

    steady: Window
    early: Window

    @property
    def profile(self) -> Window:
        """Where --profile samples the extra worker: the start of the steady state."""
        return Window(self.steady.first, min(self.steady.last, self.steady.first + PROFILE_EVENTS))


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


def wait_settled(children: Sequence[Child], timeout: float = 90.0) -> None:
    """Until every process's last partition assignment is of the same group generation
    (aiokafka logs it; for the confluent engine, which does not: until /ready's owned
    partitions split the inputs' between them), for 3 s in a row. (The
    churn_owned_partitions gauge cannot tell: a worker does not lower it when a
    rebalance takes partitions away.)"""
    deadline = time.monotonic() + timeout
    steady_since = None
    confluent = any(CONFLUENT_READY in child.log() for child in children)
    while time.monotonic() < deadline:
        if confluent:
            last = {owned_split(children)}
        else:
            last = {(GENERATION_LINE.findall(child.log()) or [None])[-1] for child in children}
        if None not in last and len(last) == 1:
            steady_since = steady_since or time.monotonic()
            if time.monotonic() - steady_since >= 3.0:
                return
        else:
            steady_since = None
        time.sleep(0.25)
    raise RuntimeError(f"the group never settled:\n{children[0].tail()}")


def owned_split(children: Sequence[Child]) -> str | None:
    """The partitions the processes own, per /ready, when each owns some and none is
    owned twice (None: not yet)."""
    owned: list[int] = []
    for child in children:
        try:
            url = f"http://127.0.0.1:{child.port}/ready"
            with urllib.request.urlopen(url, timeout=5) as answer:
                body = answer.read()
        except urllib.error.HTTPError as refused:  # 503: not ready (yet) in some check
            body = refused.read()
        except (urllib.error.URLError, OSError):
            return None
        mine = json.loads(body).get("kafka", {}).get("partitions", [])
        if not mine:  # a process the group has not given partitions yet
            return None
        owned += mine
    return str(sorted(owned)) if len(owned) == len(set(owned)) else None


def bare_events(child: Child) -> int | None:
    body = child.get("/count")
    return None if body is None else int(json.loads(body)["events"])


def metric_totals(children: Sequence[Child]) -> defaultdict[str, float] | None:
    """The children's Prometheus samples summed: by full name (labels included), by
    metric name (over its labels) and, for churn_events_total, by outcome; None when
    a scrape failed."""
    totals: defaultdict[str, float] = defaultdict(float)
    for child in children:
        body = child.get("/metrics")
        if body is None:
            return None
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                if name.startswith("churn_batch_duration_seconds_bucket{"):
                    totals[name] += float(value)
                if name.startswith("churn_events_total{"):  # summed over topics
                    outcome = OUTCOME_LABEL.search(name)
                    totals[f"events:{outcome and outcome.group(1)}"] += float(value)
                totals[name.partition("{")[0]] += float(value)
    return totals


# What MachineCpu reads from the workers at a span's edges, so the rows scored and the
# changes published per event are counted over the span alone.
SPAN_COUNTERS = ("churn_events_total", "churn_predictions_total", "churn_risk_changes_total")


def worker_counters(children: Sequence[Child]) -> dict[str, float] | None:
    totals = metric_totals(children)
    return None if totals is None else {name: totals[name] for name in SPAN_COUNTERS}


def work_stats(children: Sequence[Child]) -> dict[str, Any]:
    """What the workers did per batch and per event over the whole run, from their
    Prometheus counters."""
    totals = metric_totals(children) or defaultdict(float)
    takes = totals["churn_batch_size_count"] or math.nan
    steps = totals["churn_batch_duration_seconds_count"] or math.nan
    events = totals["churn_events_total"] or math.nan
    return {
        # A take: the messages Faust handed over at once (noack_take); a step: one
        # runner step that processed something (read, score, publish, commit).
        "takes": int(totals["churn_batch_size_count"]),
        "mean_take_size": round(totals["churn_batch_size_sum"] / takes, 1),
        "steps": int(totals["churn_batch_duration_seconds_count"]),
        "events_per_step": round(events / steps, 1),
        "mean_step_ms": round(1000 * totals["churn_batch_duration_seconds_sum"] / steps, 2),
        # Rows scored (events + inactivity rescores) and risk changes published per event.
        "scored_per_event": round(totals["churn_predictions_total"] / events, 3),
        "changes_per_event": round(totals["churn_risk_changes_total"] / events, 3),
        # Steps that took longer than 25, 50, 100 and 250 ms (the histogram's buckets).
        "steps_over_ms": {
            ms: int(steps - totals[f'churn_batch_duration_seconds_bucket{{le="{ms / 1000}"}}'])
            for ms in (25, 50, 100, 250)
        }
        if steps == steps
        else {},
        "redelivered": int(totals["events:redelivered"]),
        "dead_letters": int(totals["events:dead_letter"]),
        "retries": int(totals["churn_infrastructure_retries_total"]),
        "fenced": int(totals["churn_fenced_batches_total"]),
        "diverged": int(totals["churn_store_divergences_total"]),
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
    """Sample the children's summed event counts, RSS and CPU until `target` events;
    raises Stalled when the count has not moved for STALL_SECONDS."""
    stall_samples = round(STALL_SECONDS / SAMPLE_SECONDS)
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
        if len(samples) > stall_samples and 0 < samples[-1 - stall_samples].events == sample.events:
            raise Stalled(samples)
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {sample.events:,} of {target:,} events after {timeout:.0f}s:\n"
                + children[0].tail()
            )
        time.sleep(SAMPLE_SECONDS)


class Stalled(Exception):
    """The processes stopped counting before the target, alive but idle."""

    def __init__(self, samples: list[Sample]) -> None:
        super().__init__(f"no progress for {STALL_SECONDS:.0f}s at {samples[-1].events:,} events")
        self.samples = samples


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
        "cpu_us_per_event": round(1e6 * cpu / events, 1),
    }


def progress_rates(samples: Sequence[Sample], parts: int = 10) -> list[int | None]:
    """The rate over each tenth of the run's events: shows warm-up, drift and noise.

    Time runs from the first sample that counted any event (with the events it had
    counted), not from the processes' start: start-up is not in the first tenth. None
    for a tenth mostly done by then (as when a backlog was produced while the
    processes were already consuming)."""
    step = max(1, samples[-1].events // parts)
    first = next(s for s in samples if s.events > 0)
    rates: list[int | None] = []
    for start in range(0, samples[-1].events - step + 1, step):
        end = start + step
        if end - first.events < step / 2:  # too little of the tenth left to measure
            rates.append(None)
            continue
        begin, events = (first.t, end - first.events) if first.events > start else (None, step)
        seconds = value_at(samples, end) - (value_at(samples, start) if begin is None else begin)
        rates.append(round(events / seconds) if seconds > 0 else None)
    return rates


def spread(rates: Sequence[int | None]) -> float | None:
    """The largest relative deviation of a rate from the rates' mean."""
    known = [r for r in rates if r is not None]
    if not known:
        return None
    mean = sum(known) / len(known)
    return round(max(abs(r / mean - 1) for r in known), 3)


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


@dataclass(frozen=True)
class Mark:
    """What MachineCpu reads when a run's count first reaches a span's edge."""

    events: int  # the count of the sample that reached it
    t: float  # time.monotonic()
    busy_s: float  # machine_busy_seconds()
    processes: dict[int, tuple[str, float]]  # process_cpu()
    redis: dict[str, Any] | None  # redis_counters()
    counters: dict[str, float] | None  # the workers' SPAN_COUNTERS


class MachineCpu:
    """Who used the machine's CPUs while a run's count crossed each of its spans (on a
    shared machine, the rate of a process depends on what else runs), what Redis did
    meanwhile, from its own counters, and what the workers counted, from theirs."""

    def __init__(
        self,
        spans: Sequence[Window],
        labels: dict[int, str],
        redis_client: redis.Redis | None = None,
        counters: Callable[[], dict[str, float] | None] | None = None,
    ) -> None:
        self.points = sorted({edge for span in spans for edge in (span.first, span.last)})
        self.labels = {os.getpid(): "this benchmark", **labels}
        self.redis = redis_client
        self.counters = counters
        self.marks: dict[int, Mark] = {}  # by the span edge (an event count)

    def update(self, sample: Sample) -> None:
        due = [p for p in self.points if p not in self.marks and sample.events >= p]
        if due:
            mark = Mark(
                sample.events,
                time.monotonic(),
                machine_busy_seconds(),
                process_cpu(),
                None if self.redis is None else redis_counters(self.redis),
                None if self.counters is None else self.counters(),
            )
            for point in due:
                self.marks[point] = mark

    def _edges(self, span: Window) -> tuple[Mark, Mark] | None:
        start, end = self.marks.get(span.first), self.marks.get(span.last)
        return None if start is None or end is None or end.t <= start.t else (start, end)

    def summary(self, span: Window) -> dict[str, Any]:
        edges = self._edges(span)
        if edges is None:
            return {}
        start, end = edges
        seconds = end.t - start.t
        by_name: defaultdict[str, float] = defaultdict(float)
        for pid, (name, used) in end.processes.items():
            label = self.labels.get(pid, name)
            by_name[label] += used - start.processes.get(pid, (name, 0.0))[1]
        top = sorted(by_name.items(), key=lambda item: -item[1])[:6]
        return {
            "busy_cores": round((end.busy_s - start.busy_s) / seconds, 2),
            "top_processes_cores": {name: round(used / seconds, 2) for name, used in top},
        }

    def redis_work(self, span: Window) -> dict[str, Any] | None:
        """Redis's command time and CPU per event between the span's two marks."""
        edges = self._edges(span)
        if edges is None:
            return None
        start, end = edges
        if start.redis is None or end.redis is None:
            return None
        return redis_work(start.redis, end.redis, end.events - start.events)

    def per_event(self, span: Window) -> dict[str, Any]:
        """Rows scored and risk changes published per event between the span's marks,
        from the workers' counters (events counted by the same scrapes)."""
        edges = self._edges(span)
        if edges is None or edges[0].counters is None or edges[1].counters is None:
            return {}
        before, after = edges[0].counters, edges[1].counters
        delta = {name: after[name] - before[name] for name in SPAN_COUNTERS}
        events = delta["churn_events_total"]
        if events <= 0:
            return {}
        return {
            "counted_events": [int(before["churn_events_total"]), int(after["churn_events_total"])],
            "rows_per_event": round(delta["churn_predictions_total"] / events, 3),
            "changes_per_event": round(delta["churn_risk_changes_total"] / events, 3),
        }


class CommittedLag:
    """Messages of the input topics not yet committed by a consumer group."""

    def __init__(
        self, kafka_config: dict[str, object], group: str, topic_names: Sequence[str]
    ) -> None:
        # Only OffsetFetch and ListOffsets: this consumer never joins the group.
        self.consumer = Consumer({**kafka_config, "group.id": group})
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


def listening_pid(port: int) -> int | None:
    """The process listening on a local TCP port (from /proc: no tools needed)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with suppress(OSError):
            for fd in fd_dir.iterdir():
                with suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(fd_dir.parent.name)
    return None


class ServiceWatch:
    """Notes when the Kafka broker or the Redis server the run uses is stopped (SIGSTOP,
    as the fault tests do to the shared broker): a phase that overlaps one measured a
    stall, not the code."""

    def __init__(self, addresses: dict[str, str], interval: float = 0.5) -> None:
        self.pids = {}
        for name, address in addresses.items():
            pid = listening_pid(int(address.rpartition(":")[2].split("/")[0]))
            if pid is not None:
                self.pids[name] = pid
        self.interval = interval
        self.stopped: list[tuple[float, str]] = []  # (monotonic time, service)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.done.wait(self.interval):
            now = time.monotonic()
            for name, pid in self.pids.items():
                with suppress(OSError, IndexError):
                    text = Path(f"/proc/{pid}/stat").read_text()
                    if text.rpartition(")")[2].split()[0] == "T":
                        self.stopped.append((now, name))

    def stopped_seconds(self, start: float, end: float) -> dict[str, float]:
        seen: Counter[str] = Counter(n for t, n in self.stopped if start <= t <= end)
        return {name: count * self.interval for name, count in seen.items()}

    def close(self) -> None:
        self.done.set()


# --- The run's resources ----------------------------------------------------------------------


@dataclass
class Run:
    """Names, files and services of one benchmark run; `cleanup` removes all of them."""

    bootstrap: str
    redis_url: str = field(repr=False)  # may hold a password
    settings: Settings
    tmp: Path
    run_id: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    namespaces: set[str] = field(default_factory=set)  # Redis namespaces written to
    watch: ServiceWatch = field(init=False)

    def __post_init__(self) -> None:
        self.watch = ServiceWatch({"kafka": self.bootstrap.split(",")[0], "redis": self.redis_url})

    @property
    def kafka_config(self) -> kafka_security.KafkaConfig:
        """The clients' configuration: these brokers, the settings' security."""
        return {
            **kafka_security.confluent_config(self.settings),
            "bootstrap.servers": self.bootstrap,
        }

    def namespace(self, tag: str) -> str:
        name = f"{self.run_id}-{tag}"
        self.namespaces.add(name)
        return name

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
            "CHURN_REDIS_NAMESPACE": self.namespace(tag),
            "CHURN_MODELS_DIR": str(models),
            "CHURN_LOG_LEVEL": "info",  # "Worker ready" is logged at info
            **extra,
        }

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[str, Any]]:
        """Times a phase and records the load average around it."""
        record: dict[str, Any] = {"load_before": loadavg()}
        start = time.perf_counter()
        began = time.monotonic()
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", end=" ", flush=True)
        try:
            yield record
        finally:
            record["seconds"] = round(time.perf_counter() - start, 1)
            record["load_after"] = loadavg()
            stopped = self.watch.stopped_seconds(began, time.monotonic())
            if stopped:
                record["services_stopped_seconds"] = stopped
            self.phases[name] = record
            warning = f" (WARNING: stopped meanwhile: {stopped})" if stopped else ""
            print(f"{record['seconds']} s {record.get('result', '')}{warning}", flush=True)

    def cleanup(self) -> None:
        """Delete the run's topics, consumer groups, Redis keys and Faust data dirs."""
        admin = AdminClient(self.kafka_config)
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
        for namespace in sorted(self.namespaces):  # never FLUSH*: Redis is shared
            with suppress(Exception):
                RedisStateStore(client, namespace).delete_namespace()
        for path in Path(tempfile.gettempdir()).glob(f"faust-{self.run_id}*"):
            shutil.rmtree(path, ignore_errors=True)
        self.watch.close()


# --- Inputs: events and models ------------------------------------------------------------


def simulated_events(n: int, seed: int = 5) -> list[tuple[str, Event]]:
    """The first `n` events, in time order, of a simulated shop big enough to have them."""
    history = generate_history(max(100, n // EVENTS_PER_CUSTOMER), seed=seed)
    events = list(history.events_in_time_order())
    if len(events) < n:
        raise RuntimeError(f"the simulator made {len(events)} events, fewer than {n}")
    return events[:n]


def train_profile_model(models_dir: Path) -> Path:
    """A real LightGBM model that learned one rule: an unverified email means churn.

    A profile upsert flips `email_verified` at once: no window moves, and the probes'
    event time is at the start of the background's, so no partition's stream time
    moves either; each probe's risk change is caused by the probe itself (see
    `probe_event`)."""
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
    write_artifact(models_dir, "email-verified-v1", LightGBMModel(booster), metadata)
    point_current(models_dir, "email-verified-v1")
    return models_dir


# --- (a), (f): one worker; (d): two workers; (b): the bare agent ----------------------------


class GroupWatch:
    """What is recorded beside the counts while a group of processes runs: the machine's,
    Redis's and the workers' counters when the count crosses a span's edges
    (MachineCpu), py-spy over the profile window, and when the group has committed
    every input offset."""

    def __init__(
        self,
        run: Run,
        env: dict[str, str],
        children: Sequence[Child],
        spans: Sequence[Window],
        workers: bool,
        track_commits: bool,
        profile: tuple[Path, Window] | None,
    ) -> None:
        self.lag: CommittedLag | None = None
        self.spy: ProfileRecorder | None = None
        if track_commits:
            prefix = env["CHURN_TOPIC_PREFIX"]
            inputs = [topics.qualified(name, prefix) for name in topics.INPUT_TOPICS]
            self.lag = CommittedLag(run.kafka_config, env["CHURN_APP_ID"], inputs)
        if profile is not None:
            self.spy = ProfileRecorder(children[0].pid, *profile)
        self.machine = MachineCpu(
            spans,
            {child.pid: child.name for child in children},
            redis.Redis.from_url(run.redis_url) if workers else None,
            (lambda: worker_counters(children)) if workers else None,
        )
        self.caught_up: list[float] = []  # when the group had committed everything
        self.last_lag_check = 0.0

    def on_sample(self, sample: Sample) -> None:
        self.machine.update(sample)
        if self.spy is not None:
            self.spy.update(sample.events)
        if self.lag is not None and not self.caught_up and sample.t - self.last_lag_check >= 1:
            self.last_lag_check = sample.t
            if self.lag.behind() == 0:
                self.caught_up.append(sample.t)

    def committed_everything(self) -> bool | None:
        return None if self.lag is None else self.lag.behind() == 0

    def wait_committed(self, started: float, timeout: float) -> None:
        """Faust commits every broker_commit_interval (2.8 s): wait for the last commit."""
        while self.lag is not None and not self.caught_up:
            if time.monotonic() - started > timeout:
                raise RuntimeError("offsets never committed up to the end of the topics")
            if self.lag.behind() == 0:
                self.caught_up.append(time.monotonic() - started)
            else:
                time.sleep(0.5)

    def close(self) -> None:
        if self.spy is not None:
            self.spy.stop()
        if self.lag is not None:
            self.lag.close()


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
    once_settled: Callable[[], None] | None = None,
    steady: Window | None = None,
) -> dict[str, Any]:
    """Start `count` processes in one consumer group on pre-produced topics and sample
    their progress until `stop_at` events; the rate over `window` is the result, and
    with `steady` also the rate and the work per event over that span (`span_result`).
    `profile`: py-spy's output file, sampled over `window`. `once_settled`: called
    when every process owns partitions and the group has stopped rebalancing (to
    produce the backlog then, rather than before they start)."""
    env = run.env(tag, prefix, models, **(extra_env or {}))
    workers = events_of is worker_events
    started = time.monotonic()
    children = [Child(f"{tag}-{i}", module_args, env, run.logs) for i in range(count)]
    watch = None
    try:
        for child in children:
            child.wait_ready()
        ready = time.monotonic() - started
        if once_settled is not None:
            wait_settled(children)
            once_settled()
        spans = [window] if steady is None else [window, steady]
        spy = None if profile is None else (profile, window)
        watch = GroupWatch(run, env, children, spans, workers, track_commits, spy)
        timeout = 120 + stop_at / 200  # generous: even 200 events/s finishes
        # A stalled run keeps what it measured if it crossed the window (and the start
        # of the steady span), and says what happened.
        needed = window.last if steady is None else max(window.last, steady.first + 1)
        samples, stalled = sample_group(children, events_of, stop_at, started, watch, needed)
        stats = work_stats(children) if workers else {}
        if stalled is None:
            watch.wait_committed(started, timeout)
    finally:
        if watch is not None:
            watch.close()
        for child in children:
            child.stop()
    result = group_result(samples, watch, window, steady, ready, stalled)
    return {**result, "processes": count, "extra_env": extra_env or {}, **stats}


def sample_group(
    children: Sequence[Child],
    events_of: Callable[[Child], int | None],
    stop_at: int,
    started: float,
    watch: GroupWatch,
    needed: int,
) -> tuple[list[Sample], dict[str, Any] | None]:
    """The samples until `stop_at` events, and if the count stalled before, where (an
    error if before `needed`)."""
    timeout = 120 + stop_at / 200
    try:
        return sample_until(children, events_of, stop_at, started, timeout, watch.on_sample), None
    except Stalled as err:
        samples = err.samples
        if samples[-1].events < needed:
            raise RuntimeError(f"{err}:\n{children[0].tail()}") from err
        print(f"STALLED at {samples[-1].events:,} of {stop_at:,} events", end=" ", flush=True)
        return samples, {
            "at_events": samples[-1].events,
            "expected": stop_at,
            "group_committed_everything": watch.committed_everything(),
        }


def group_result(
    samples: Sequence[Sample],
    watch: GroupWatch,
    window: Window,
    steady: Window | None,
    ready: float,
    stalled: dict[str, Any] | None,
) -> dict[str, Any]:
    """A group's figures from its samples and what `watch` recorded meanwhile."""
    first_event = next(s.t for s in samples if s.events > 0)
    end = samples[-1].events
    result: dict[str, Any] = {
        "events": end,
        "ready_after_s": round(ready, 1),
        "first_event_after_s": round(first_event, 1),
        # None when the count was already past its start at the first sample.
        "window": rate(samples, window) if samples[0].events <= window.first else None,
        "machine_during_window": watch.machine.summary(window),
        "redis_during_window": watch.machine.redis_work(window),
        "rates_per_tenth": progress_rates(samples),
    }
    if steady is not None:
        result["steady"] = span_result(samples, steady, watch.machine)
    if watch.caught_up:
        # From the first finished batch to the last committed offset: startup excluded,
        # the first batches' warm-up and the commit interval's slack included.
        drain = watch.caught_up[0] - first_event
        result["drain"] = {"seconds": round(drain, 1), "eps": round(end / drain)}
    if stalled is not None:
        result["stalled"] = stalled
    if len(samples[0].rss_mb) == 1:
        result["rss_mb"] = rss_curve(samples, (steady or window).first)
    if watch.spy is not None:
        result["profile"] = watch.spy.summary()
    return result


def span_result(samples: Sequence[Sample], span: Window, machine: MachineCpu) -> dict[str, Any]:
    """The rate over `span` (up to where the count stalled, if it did) and the work per
    event meanwhile: the processes' CPU (from the samples, interpolated at the span's
    edges), Redis's and the workers' counters (from MachineCpu's marks)."""
    measured = Window(span.first, min(span.last, samples[-1].events))
    return {
        **rate(samples, measured),
        "machine": machine.summary(span),
        "redis": machine.redis_work(span),
        **machine.per_event(span),
    }


def rss_curve(samples: Sequence[Sample], start: int) -> dict[str, Any]:
    """The one process's RSS when the count reached `start`, at each tenth of the run
    and at the end, and its peak over the whole run."""
    at_start = next(s for s in samples if s.events >= start)
    step = max(1, samples[-1].events // 10)
    return {
        "start": round(at_start.rss_mb[0], 1),
        "start_events": at_start.events,
        "end": round(samples[-1].rss_mb[0], 1),
        "end_events": samples[-1].events,
        "peak": round(max(s.rss_mb[0] for s in samples), 1),
        "per_tenth": [
            round(next(s.rss_mb[0] for s in samples if s.events >= k), 1)
            for k in range(step, samples[-1].events + 1, step)
        ],
    }


# --- What the one worker published, and the model it served ---------------------------------


def outputs_digest(run: Run, prefix: str) -> dict[str, Any]:
    """Every message of a run's churn-risk topic, from the beginning to the high
    watermarks: how many, how many distinct event ids, and the sha256 of the lines
    `json.dumps([event_id, value])` (keys sorted, no spaces), sorted, each followed by a
    newline, where value is the message's JSON without `scored_at` and `model_version`.
    Two runs on the same backlog and model have the same digest if they published the
    same changes (duplicates included), whatever the order and timing. Runs that
    published to one topic agree id for id and byte for byte when `distinct_lines`
    equals `distinct_ids`."""
    topic = topics.qualified(topics.CHURN_RISK, prefix)
    lines = read_topic(run, topic)
    digest = hashlib.sha256()
    for line in sorted(lines):
        digest.update(line.encode() + b"\n")
    ids = {json.loads(line)[0] for line in lines}
    return {
        "topic": topic,
        "count": len(lines),
        "distinct_ids": len(ids),
        "distinct_lines": len(set(lines)),
        "sha256": digest.hexdigest(),
    }


def read_topic(run: Run, topic: str) -> list[str]:
    """The churn-risk messages of `topic` as digest lines (see `outputs_digest`)."""
    consumer = Consumer(
        {
            **run.kafka_config,
            "group.id": f"{run.run_id}-outputs-reader",  # never joined nor committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    lines: list[str] = []
    try:
        pending: dict[int, int] = {}  # partition -> its high watermark
        for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            if high > low:
                pending[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        deadline = time.monotonic() + OUTPUTS_READ_SECONDS
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{topic}: partitions {sorted(pending)} not read to the end")
            for message in consumer.consume(1000, timeout=1.0):
                error = message.error()
                partition = cast(int, message.partition())
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"reading {topic}: {error}")
                if error is None and message.value() is not None:
                    value = json.loads(cast(bytes, message.value()))
                    value.pop("scored_at", None)
                    value.pop("model_version", None)
                    line = [value["event_id"], value]
                    lines.append(json.dumps(line, sort_keys=True, separators=(",", ":")))
                if (
                    error is not None
                    or cast(int, message.offset()) >= pending.get(partition, 0) - 1
                ):
                    pending.pop(partition, None)
    finally:
        consumer.close()
    return lines


def model_digest(models: Path) -> dict[str, Any]:
    """The served (CURRENT) model's version, family and the sha256 of its model file."""
    model = load_model(models)
    path = version_directory(models, current_version(models)) / MODEL_FILES[model.family]
    return {
        "version": model.version,
        "family": model.family,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


# --- (c): the naive per-event path -----------------------------------------------------------


def naive_throughput(
    run: Run, models: Path, events: Sequence[tuple[str, Event]], first: int
) -> dict[str, Any]:
    """What a straightforward implementation does per event, in this process: decode,
    GET the customer's state, apply, score one row, SET the state, and for a risk
    change its reasons (TreeSHAP of one row), then produce it and flush.

    It takes the events the worker meets at the start of its window (see
    `as_consumed`), on the states the events before them leave (computed by the
    batch runner in memory, written to Redis untimed), so the state has the same size
    and the same risks. No inactivity rescores, no offsets, no fencing: it does less
    than the worker."""
    model = load_model(models)
    policy = RiskPolicy(model.thresholds)
    client = redis.Redis.from_url(run.redis_url, socket_timeout=10)
    keys = Keys(run.namespace("naive"))
    partitions = run.settings.partitions
    before, timed_events = as_consumed(events, first, NAIVE_EVENTS)
    preload(client, keys, model, before, partitions)

    prefix = run.prefix("naive")
    ensure_topics(run.kafka_config, partitions, prefix)
    publisher = Publisher(run.kafka_config, prefix)
    producer = publisher.producer
    decoders = {name: msgspec.json.Decoder(kind) for name, kind in INPUT_EVENTS.items()}
    encode = msgspec.json.Encoder().encode
    raw = [
        (topic, partition_of(event.customer_id, partitions), encode(event))
        for topic, event in timed_events
    ]
    scored = changes = 0
    began = time.perf_counter()
    for offset, (topic, partition, value) in enumerate(raw):
        event: Any = decoders[topic].decode(value)
        key = keys.customer(partition, event.customer_id)
        blob = client.get(key)
        state = CustomerState(event.customer_id) if blob is None else decode_state(blob)
        try:
            outcome = apply_event(state, topic, event)
        except InputError:
            continue
        if outcome != DUPLICATE and state.seen is not None:
            as_of = state.seen if state.scored_to is None else max(state.seen, state.scored_to)
            state.scored_to = as_of
            features = feature_matrix(base_columns([state], [as_of]), model.feature_params)
            probability = float(model.predict(features)[0])
            scored += 1
            previous = state.risk
            risk = policy.category(probability, previous)
            if is_news(previous, risk):
                state.risk_seq += 1
                change = ChurnRiskChanged(
                    event_id=transition_id(state.customer_id, state.risk_seq),
                    customer_id=state.customer_id,
                    previous_risk=previous,  # type: ignore[arg-type]
                    risk=risk,  # type: ignore[arg-type]
                    probability=probability,
                    model_version=model.version,
                    reasons=reasons(
                        features[0],
                        model.contributions(features)[0],
                        previous is None or RANK[risk] > RANK[previous],
                    ),
                    recommended_actions=list(policy.actions[risk]),
                    trigger=Trigger("event", topic, partition, offset),
                    event_time=utc(as_of),
                    scored_at=datetime.now(UTC),
                )
                key, value = event.customer_id.encode(), msgspec.json.encode(change)
                outputs = [topics.CHURN_RISK, topics.CHURN_RISK_CURRENT]
                outputs += [topics.CHURN_RISK_HIGH] if risk == "HIGH" else []
                for out_topic in outputs:
                    producer.produce(topics.qualified(out_topic, prefix), value=value, key=key)
                producer.flush(30)
                changes += 1
            state.risk = risk
        client.set(key, encode_state(state))
    seconds = time.perf_counter() - began
    return {
        "events": len(raw),
        "preloaded": len(before),
        "scored": scored,
        "changes_published": changes,
        "seconds": round(seconds, 2),
        "eps": round(len(raw) / seconds),
    }


def preload(
    client: redis.Redis,
    keys: Keys,
    model: Any,
    events: Sequence[tuple[str, Event]],
    partitions: int,
) -> None:
    """The states `events` leave, by the batch runner on an in-memory store, in Redis."""

    class Discard(Collector):
        def collect(self, changes: Sequence[Any], dead_letters: Sequence[Any]) -> None:
            pass

    store = MemoryStore()
    runner = BatchRunner(store, Scorer(lambda: model), Discard(), topics.INPUT_TOPICS)
    for partition in range(partitions):
        runner.assign(partition)
    runner.add(in_log_order(events, partitions))
    asyncio.run(runner.step(lambda topic, partition: False))
    pipe = client.pipeline(transaction=False)
    for partition, kept in store.partitions.items():
        for customer, blob in kept.states.items():
            pipe.set(keys.customer(partition, customer), blob)
    pipe.execute()


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


# --- (e): end-to-end latency at a fixed offered load -------------------------------------------


def probe_event(run: Run, customer: int, step: int, at: datetime) -> tuple[str, Event]:
    """The `step`-th event of probe customer `customer`, served by the profile model.

    Step 0 is a profile (verified email) and step 1 an order at `at`: the customer's
    first score is LOW, which is not news. From step 2 on, each step is a profile
    upsert that toggles the email's verification, which flips the risk between LOW
    and HIGH, so each yields one `churn-risk` event triggered by that very message.
    All of a probe customer's events are at the start of the background's event
    time, so they move no partition's stream time; only probes whose order is two
    probes behind them are counted (see `measure_latency`)."""
    customer_id = f"{run.run_id}-probe-{customer:02d}"
    if step == 1:
        order_id = f"{run.run_id}-p{customer:02d}"
        item = OrderItem("books", 1, 20.0)
        return topics.ORDERS, Order(
            order_id, customer_id, at, 20.0, "paypal", "delivered", items=[item]
        )
    registered = at - timedelta(days=400)
    # Its event time: just after the order. Without `updated_at` it would be the
    # registration date, before every background event: the merge would then apply
    # it before the customer's order whenever the order is held back behind earlier
    # background events, and the probe would find nothing to score.
    return topics.CUSTOMERS, Customer(
        customer_id,
        registered,
        email_verified=step % 2 == 0,
        updated_at=at + timedelta(seconds=1),
    )


def measure_latency(
    run: Run,
    tag: str,
    models: Path,
    background: Sequence[tuple[str, Event]],
    offered_eps: int,
    wait_ms: int,
    max_idle_ms: int,
    engine: str = "faust",
) -> dict[str, Any]:
    """Offer `offered_eps` events/s for LATENCY_SECONDS to a running worker; probes
    give the time from the producer's send to a consumer receiving the output."""
    prefix = run.prefix(tag)
    env = run.env(
        tag,
        prefix,
        models,
        CHURN_BATCH_WAIT_MS=str(wait_ms),
        CHURN_MAX_IDLE_MS=str(max_idle_ms),
        CHURN_ENGINE=engine,
    )
    worker = Child(tag, ("-m", "stream_app", "worker"), env, run.logs)
    sent: dict[tuple[int, int], float] = {}  # (partition, offset) of a probe -> send time
    received: dict[tuple[int, int], float] = {}
    scored: dict[tuple[int, int], float] = {}  # when the worker scored it (monotonic)
    wall_offset = time.time() - time.monotonic()
    assigned = threading.Event()
    done = threading.Event()

    def read_outputs() -> None:
        consumer = Consumer(
            {
                **run.kafka_config,
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
                value = json.loads(cast(bytes, message.value()))
                trigger = value["trigger"]
                if trigger.get("topic") == topics.CUSTOMERS:
                    key = (trigger["partition"], trigger["offset"])
                    received.setdefault(key, now)
                    # The worker's wall clock when it scored the probe, on this clock.
                    scored_at = datetime.fromisoformat(value["scored_at"]).timestamp()
                    scored.setdefault(key, scored_at - wall_offset)
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
                **run.kafka_config,
                "delivery.report.only.error": False,  # the probes' offsets come from reports
            }
        )
        encode = msgspec.json.Encoder().encode
        total = int(offered_eps * LATENCY_SECONDS)
        probe_every = max(1, round(offered_eps / PROBES_PER_SECOND))
        steps = [0] * PROBE_CUSTOMERS
        # Probe orders at the background's event time, so the partitions' stream time
        # (and with it the inactivity rescores) moves as it would anyway.
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
        "max_idle_ms": max_idle_ms,
        "probes": len(sent),
        "probes_answered": len(answered),
        # Of the answered probes, the median ms from the send until the worker scored
        # them (fetch, batch wait, hold-back, queueing, load), and from then until the
        # reader had the output (the rest of the step: publish, acks, commit; fetch).
        "to_scored_p50_ms": _median_ms([scored[k] - t for k, t in sent.items() if k in scored]),
        "after_scored_p50_ms": _median_ms([received[k] - scored[k] for k in scored]),
        # The slowest probes: [seconds into the offer it was sent, latency ms, ms of it
        # until the worker scored it].
        "slowest": sorted(
            (
                [
                    round(t - started, 2),
                    round(1000 * (received[k] - t), 1),
                    round(1000 * (scored[k] - t), 1) if k in scored else None,
                ]
                for k, t in sent.items()
                if k in received
            ),
            key=lambda item: -cast(float, item[1]),
        )[:10],
        # Probes never answered: (partition, offset, seconds into the offer it was sent).
        "unanswered": [
            [partition, offset, round(t - started, 2)]
            for (partition, offset), t in sorted(sent.items(), key=lambda item: item[1])
            if (partition, offset) not in received
        ][:50],
        "p50_ms": percentile(50),
        "p95_ms": percentile(95),
        "p99_ms": percentile(99),
        "max_ms": percentile(100),
        **stats,
    }


def _median_ms(seconds: Sequence[float]) -> float | None:
    return round(1000 * float(np.median(seconds)), 1) if seconds else None


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


# Where a sample's time goes. First the frames are searched for one of our functions
# (FUNCTION_RULES), innermost first: a sample in hiredis or msgspec under
# RedisStateStore.load counts as the store's load, one in lightgbm under
# Model.predict as predict. Failing that, innermost first again, for a file
# (FILE_RULES): a sample in Faust's stream code counts as Faust's, even when our
# agent's loop is further up the stack; then for asyncio and mode (LAST_RULES).
FUNCTION_RULES: list[tuple[str, tuple[str, ...]]] = [
    # The store's calls run in a thread (`BatchRunner._retry`): on the event loop's
    # thread they show as waiting, on the thread's as these.
    ("ours: store begin (fenced script, states read)", ("begin (feature_store/redis_store",)),
    ("ours: store commit (fenced script)", ("commit (feature_store/redis_store",)),
    ("ours: store claim", ("claim (feature_store/redis_store",)),
    ("ours: states decoded (decode_state)", ("decode_state (feature_store/online.py",)),
    ("ours: states encoded (encode_state)", ("encode_state (feature_store/online.py",)),
    ("ours: model predict", ("predict (scoring/model.py",)),
    ("ours: model TreeSHAP contributions", ("contributions (scoring/model.py",)),
    (
        "ours: base rows (BaseRows)",
        ("add_many (feature_store/online.py", "columns (feature_store/online.py"),
    ),
    ("ours: feature_matrix", ("feature_matrix (feature_store/definitions.py",)),
    ("ours: apply_event", ("apply_event (feature_store/online.py",)),
    ("ours: decode input", ("_decode (scoring/decoding.py",)),
    ("ours: inactivity timers", ("fire_timers (scoring/pipeline.py",)),
    ("ours: policy + change events", ("_walk (scoring/pipeline.py",)),
    ("ours: publish (encode, produce, await acks)", ("publish (stream_app/publisher.py",)),
    ("ours: acknowledge (Faust's ack per event)", ("acknowledge (stream_app/faust_source.py",)),
    (
        "ours: merge (buffer, release, behind)",
        (
            "add (scoring/runner.py",
            "release (scoring/merge.py",
            "unread (stream_app/faust_source.py",
        ),
    ),
    ("ours: tallies (drift, daily, performance)", ("_tallies (scoring/runner.py",)),
    ("ours: metrics", ("(stream_app/observer.py",)),
]
FILE_RULES: list[tuple[str, tuple[str, ...]]] = [
    ("ours: scorer other", ("(scoring/pipeline.py",)),
    ("ours: merge (buffer, release, behind)", ("(scoring/merge.py",)),
    ("ours: runner other", ("(scoring/runner.py",)),
    (
        "ours: worker other",
        (
            "(scoring/processor.py",
            "(stream_app/faust_source.py",
            "(stream_app/worker.py",
            "(stream_app/jobs.py",
        ),
    ),
    ("idle: event loop select", ("select (selectors.py",)),
    ("aiokafka: producer sender, connections", ("(aiokafka/",)),
    ("faust: sensors (Monitor)", ("(faust/sensors/",)),
    ("faust: send path (topics, producer)", ("(faust/topics.py", "(faust/transport/producer.py")),
    ("faust: acks, offsets, commits", ("(faust/transport/consumer.py",)),
    (
        "faust: delivery (conductor, stream, take)",
        (
            "(faust/transport/conductor.py",
            "(faust/streams.py",
            "(faust/channels.py",
            "(faust/agents/",
        ),
    ),
    ("faust: other", ("(faust/",)),
    ("web: /metrics scrapes (aiohttp)", ("(aiohttp/",)),
]
# Last: asyncio and mode run under everything, so they count only where neither our
# code nor Faust's is on the stack.
LAST_RULES: list[tuple[str, tuple[str, ...]]] = [
    ("asyncio + mode machinery", ("(mode/", "(asyncio/")),
]


def classify(frames: Sequence[str]) -> str:
    """The component of a sample, its frames outermost first (see FUNCTION_RULES)."""
    if frames and frames[-1].startswith(UVLOOP_LEAF):
        return UVLOOP_NATIVE
    # "RedisStateStore.load (feature_store/redis_store.py:80)" -> "load (feature_store/..."
    short = []
    for frame in reversed(frames):
        function, _, where = frame.partition(" (")
        short.append(f"{function.rsplit('.', 1)[-1]} ({where}")
    for frame in short:
        for name, marks in FUNCTION_RULES:
            if frame.startswith(marks):
                return name
    for rules in (FILE_RULES, LAST_RULES):
        for frame in short:
            for name, marks in rules:
                if any(mark in frame for mark in marks):
                    return name
    return "other"


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
        shares[classify(frames)] += number
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
    """A Faust agent that only counts, with the worker's app settings (`faust_app`)."""
    parser = argparse.ArgumentParser(prog="python -m bench.stream _bare-agent")
    parser.add_argument("--asyncio-loop", action="store_true", help="stock asyncio, no uvloop")
    parser.add_argument("--no-monitor", action="store_true", help="no Monitor bookkeeping")
    parser.add_argument(
        "--noack", action="store_true", help="noack_take and ack each event, as the worker"
    )
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
        if args.noack:
            taken = cast(Stream, stream).noack_take(settings.batch_size, within=wait)
            async for events in taken:
                for event in cast(Sequence[EventT], events):
                    event.ack()
                counted += len(events)
                yield None
        else:
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
    ("noack_take + ack per event (as the worker)", ["--noack"], {}),
]
# Only levers the worker already reads from its environment (Faust reads its own
# settings' variables, such as PRODUCER_LINGER, in every app it builds).
WORKER_LEVERS: list[tuple[str, dict[str, str]]] = [
    ("baseline", {}),
    ("PRODUCER_LINGER=0.005", {"PRODUCER_LINGER": "0.005"}),
    ("STREAM_BUFFER_MAXSIZE=32768", {"STREAM_BUFFER_MAXSIZE": "32768"}),
    ("CHURN_BATCH_SIZE=2000", {"CHURN_BATCH_SIZE": "2000"}),
    ("CHURN_BATCH_SIZE=100", {"CHURN_BATCH_SIZE": "100"}),
    ("CHURN_MAX_IDLE_MS=0", {"CHURN_MAX_IDLE_MS": "0"}),
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
                module_args=("-m", "bench.stream", "_bare-agent", *flags),
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
            worker[name].append({**result["window"], "events_per_step": result["events_per_step"]})
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


def run_bench(run: Run, n: int, spans: Spans, profile: bool, levers: bool) -> dict[str, Any]:
    check_spans(n, spans)
    env_before = run_environment(run)
    with run.phase("train models"):
        models = train_model(run.tmp)
        profile_models = train_profile_model(run.tmp / "profile-models")
    events, backlog = produce_backlog(run, n)
    runs: dict[str, Any] = {}
    with run.phase("one worker") as record:
        runs["one_worker"] = measure_workers(
            run, "w1", backlog, models, 1, spans.early, n, track_commits=True, steady=spans.steady
        )
        record["result"] = brief(runs["one_worker"]["steady"])
    # The same worker again, one setting changed: what exactly-once costs (no
    # transactions), and the confluent engine (Faust's per-message cost gone).
    for name, phase, tag, extra_env in (
        (
            "at_least_once",
            "no transactions",
            "w1-alo",
            {"CHURN_PROCESSING_GUARANTEE": "at_least_once"},
        ),
        ("confluent", "confluent engine", "w1-confluent", {"CHURN_ENGINE": "confluent"}),
    ):
        with run.phase(f"one worker, {phase}") as record:
            runs[name] = measure_workers(
                run,
                tag,
                backlog,
                models,
                1,
                spans.early,
                n,
                steady=spans.steady,
                extra_env=extra_env,
            )
            record["result"] = brief(runs[name]["steady"])
    with run.phase("outputs digest") as record:
        # Now: later phases (--profile, --levers) run workers on the same topics.
        outputs = outputs_digest(run, backlog)
        record["result"] = (
            f"{outputs['count']:,} churn-risk events, {outputs['distinct_ids']:,} ids, "
            f"{outputs['distinct_lines']:,} distinct"
        )
    with run.phase("bare agent") as record:
        runs["bare_agent"] = measure_workers(
            run,
            "bare",
            backlog,
            Path("unused"),
            1,
            spans.early,
            n,
            module_args=("-m", "bench.stream", "_bare-agent"),
            events_of=bare_events,
            steady=spans.steady,
        )
        record["result"] = brief(runs["bare_agent"]["steady"])
    runs["two_workers"] = two_workers(run, models, events, spans)
    runs["two_workers_confluent"] = two_workers(run, models, events, spans, "confluent")
    with run.phase("naive per-event path") as record:
        runs["naive"] = naive_throughput(run, models, events, spans.early.first)
        record["result"] = brief(runs["naive"])
    runs["latency"] = latencies(run, profile_models, events, spans.early.first)
    # Issue 22's latency target is at the higher rate only.
    runs["latency_confluent"] = latencies(
        run, profile_models, events, spans.early.first, "confluent", LATENCY_RATES[:1]
    )
    if profile:
        runs.update(profile_worker(run, backlog, models, spans.profile))
    if levers:
        with run.phase("levers"):
            runs["levers"] = measure_levers(run, backlog, models, n)
    extra = {"outputs": outputs, "model": model_digest(models)}
    return assemble(run, runs, env_before, n, spans, extra)


def check_spans(n: int, spans: Spans) -> None:
    if n < spans.early.last:
        raise SystemExit(f"--events must be at least warmup + window = {spans.early.last:,}")
    if not 0 < spans.steady.first < n:
        raise SystemExit(f"--steady-from must be between 0 and --events ({n:,})")


def produce_backlog(run: Run, n: int) -> tuple[list[tuple[str, Event]], str]:
    """The simulated events, produced to fresh topics; and those topics' prefix."""
    with run.phase("generate history") as record:
        events = simulated_events(n)
        record["events"] = len(events)
    backlog = run.prefix("backlog")
    with run.phase("produce backlog") as record:
        start = time.perf_counter()
        kafka_sink.produce(
            events,
            run.bootstrap,
            partitions=run.settings.partitions,
            topic_prefix=backlog,
            client_config=run.kafka_config,
        )
        record["eps"] = round(n / (time.perf_counter() - start))
    return events, backlog


def two_workers(
    run: Run,
    models: Path,
    events: Sequence[tuple[str, Event]],
    spans: Spans,
    engine: str = "faust",
) -> dict[str, Any]:
    """Two worker processes over all the events, produced once their group has settled:
    a group that starts together rebalances once, when the second process joins, and a
    rebalance with messages in flight once crashed a worker (bench/PROFILE.md); this
    way the steady span measures two owners, not a hand-over."""
    backlog2 = run.prefix(f"backlog2-{engine}")

    def produce_backlog2() -> None:
        kafka_sink.produce(
            events,
            run.bootstrap,
            partitions=run.settings.partitions,
            topic_prefix=backlog2,
            client_config=run.kafka_config,
        )

    with run.phase(f"two workers, {engine}") as record:
        result = measure_workers(
            run,
            f"w2-{engine}",
            backlog2,
            models,
            2,
            spans.early,
            len(events),
            once_settled=produce_backlog2,
            steady=spans.steady,
            extra_env={"CHURN_ENGINE": engine},
        )
        record["result"] = brief(result["steady"])
    return result


def latencies(
    run: Run,
    models: Path,
    events: Sequence[tuple[str, Event]],
    first: int,
    engine: str = "faust",
    rates: Sequence[int] = LATENCY_RATES,
) -> dict[str, Any]:
    """Latency at each of `rates`, with the worker's default CHURN_MAX_IDLE_MS."""
    # The mix a backlog consumer meets (see `as_consumed`), not a stretch of time order.
    offered = max(rates)
    background = as_consumed(events, first, int(offered * LATENCY_SECONDS))[1]
    results = {}
    for offered_eps in rates:
        name = latency_key(offered_eps, DEFAULT_MAX_IDLE_MS)
        with run.phase(f"latency at {offered_eps:,}/s, {engine} engine") as record:
            results[name] = measure_latency(
                run,
                f"lat{offered_eps}-{engine}",
                models,
                background,
                offered_eps,
                run.settings.batch_wait_ms,
                DEFAULT_MAX_IDLE_MS,
                engine,
            )
            record["result"] = brief(results[name])
    return results


def profile_worker(run: Run, backlog: str, models: Path, window: Window) -> dict[str, Any]:
    """py-spy on an extra worker over `window` of the backlog: {"profile": ...}."""
    if not Path(sys.executable).with_name("py-spy").exists():
        print("no py-spy in the venv (.venv/bin/uv pip install py-spy): no profile", flush=True)
        return {}
    with run.phase(f"profile one worker (py-spy), events {window.first:,}-{window.last:,}"):
        spy = run.tmp / "spy.txt"
        result = measure_workers(run, "prof", backlog, models, 1, window, window.last, profile=spy)
    return {"profile": result["profile"]}


def brief(result: dict[str, Any]) -> str:
    """One line of a phase's result for the progress output."""
    if "p99_ms" in result:
        return f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms"
    cpu = result.get("events_per_cpu_second")
    return f"{result['eps']:,} events/s" + (f", {cpu:,} per CPU second" if cpu else "")


def latency_key(offered_eps: int, idle_ms: int) -> str:
    return f"{offered_eps}_eps_idle_{idle_ms}_ms"


def confluent_headline(runs: dict[str, Any], faust_eps: float) -> dict[str, Any]:
    """The confluent engine's figures beside Faust's (the one worker's `faust_eps`)."""
    one, two = runs["confluent"]["steady"], runs["two_workers_confluent"]["steady"]
    fast = runs["latency_confluent"][latency_key(LATENCY_RATES[0], DEFAULT_MAX_IDLE_MS)]
    return {
        "sustained_eps_confluent": one["eps"],
        "confluent_ratio": round(one["eps"] / faust_eps, 2),
        "worker_cpu_us_per_event_confluent": one["cpu_us_per_event"],
        "redis_us_per_event_confluent": (one.get("redis") or {}).get("info_cpu_usec_per_event"),
        "sustained_eps_confluent_2w": two["eps"],
        "scaling_2w_confluent": round(two["eps"] / one["eps"], 2),
        "p99_ms_confluent": fast["p99_ms"],
        "p50_ms_confluent": fast["p50_ms"],
    }


def headline(runs: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, in the order results.json leads with them (see METHOD):
    over the steady span of the one-worker run unless the name says otherwise."""
    one, bare, two = (runs[name]["steady"] for name in ("one_worker", "bare_agent", "two_workers"))
    eps, redis_work = one["eps"], one.get("redis") or {}
    fast, slow = (runs["latency"][latency_key(r, DEFAULT_MAX_IDLE_MS)] for r in LATENCY_RATES)
    rss, early = runs["one_worker"]["rss_mb"], runs["one_worker"]["window"]
    tenths = runs["one_worker"]["rates_per_tenth"]
    return {
        "sustained_eps": eps,
        "worker_cpu_us_per_event": one["cpu_us_per_event"],
        "redis_us_per_event": redis_work.get("info_cpu_usec_per_event"),
        "redis_commandstats_us_per_event": redis_work.get("commandstats_usec_per_event"),
        "rows_per_event": one.get("rows_per_event"),
        "changes_per_event": one.get("changes_per_event"),
        "faust_bare_eps": bare["eps"],
        "ratio_vs_bare": round(eps / bare["eps"], 3),
        "naive_throughput_eps": runs["naive"]["eps"],
        "ratio": round(eps / runs["naive"]["eps"], 2),
        "sustained_eps_at_least_once": runs["at_least_once"]["steady"]["eps"],
        "exactly_once_ratio": round(eps / runs["at_least_once"]["steady"]["eps"], 3),
        "worker_cpu_us_per_event_at_least_once": runs["at_least_once"]["steady"][
            "cpu_us_per_event"
        ],
        "sustained_eps_2w": two["eps"],
        "scaling_2w": round(two["eps"] / eps, 2),
        **confluent_headline(runs, eps),
        "p99_ms": fast["p99_ms"],
        "p99_ms_1000": slow["p99_ms"],
        "p50_ms": fast["p50_ms"],
        "p50_ms_1000": slow["p50_ms"],
        "rss_growth": round(rss["end"] / rss["start"] - 1, 3),
        "rss_mb_start": rss["start"],
        "rss_mb_end": rss["end"],
        "rss_mb_peak": rss["peak"],
        "tenth_rates": tenths,
        "tenth_spread": spread(tenths),
        "early_window": {
            "events": early["events"],
            "eps": early["eps"],
            "worker_cpu_us_per_event": early["cpu_us_per_event"],
        },
        "steady_span": one["events"],
        "rss_events": [rss["start_events"], rss["end_events"]],
        "offered_eps": list(LATENCY_RATES),
        "max_idle_ms": DEFAULT_MAX_IDLE_MS,
        # Set when the one worker stopped making progress before the end of the backlog.
        "one_worker_stalled": runs["one_worker"].get("stalled"),
        "events_per_cpu_second": {
            name: runs[name]["steady"]["events_per_cpu_second"]
            for name in ("one_worker", "bare_agent", "two_workers", "confluent")
        },
    }


def assemble(
    run: Run,
    runs: dict[str, Any],
    env_before: dict[str, Any],
    n: int,
    spans: Spans,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The headline numbers, their targets, and everything behind them."""
    top = headline(runs)
    env_after = run_environment(run)
    return {
        **top,
        "targets": {name: verdict(top[name], *target) for name, target in TARGETS.items()},
        **extra,
        "runs": runs,
        "method": METHOD,
        "settings": {
            "events": n,
            "steady_span": [spans.steady.first, spans.steady.last],
            "early_window": [spans.early.first, spans.early.last],
            "profile_window": [spans.profile.first, spans.profile.last],
            "batch_size": run.settings.batch_size,
            "batch_wait_ms": run.settings.batch_wait_ms,
            "max_idle_ms_default": DEFAULT_MAX_IDLE_MS,
            "partitions": run.settings.partitions,
            "sample_seconds": SAMPLE_SECONDS,
            "naive_events": NAIVE_EVENTS,
            "latency_rates": list(LATENCY_RATES),
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
    "steady_span": "Every throughput figure of the headline is over the same events of the "
    "same backlog: settings.steady_span, from event 200,000 (--steady-from) to the end of "
    "the backlog. Before it the simulated shop is young (few customers, few inactivity "
    "rescores per event) and the worker is faster than it will be for the rest of the "
    "backlog; after it, nothing is left out.",
    "throughput": "Events are produced to fresh topics before the processes start. The "
    "processes' churn_events_total counters (every outcome, dead letters included; counted "
    "once a batch is committed, after its outputs are durable in Kafka) are sampled every "
    "0.25 s together with their CPU time (/proc/<pid>/stat, user + system, all threads). "
    "A rate is the events of a span over the time the summed count took to cross it "
    "(interpolated between samples). sustained_eps: the one worker over the steady span "
    "(runs.one_worker.steady); early_window: over events 30,000-120,000 "
    "(runs.one_worker.window), the figure this bench used to lead with, a secondary one. "
    "one_worker.drain is from the first finished batch until the group's committed offsets "
    "(Consumer.committed vs the high watermarks) reach the end of the topics. A count that "
    "does not move for 60 s ends the phase: one_worker.stalled then records where, and "
    "whether the group had nevertheless committed every offset (messages lost); the "
    "steady span then ends there.",
    "worker_cpu_us_per_event": "The one worker process's CPU time (user + system, all "
    "threads) while its count crossed the steady span, interpolated at the span's edges, "
    "over the span's events, in microseconds.",
    "redis": "INFO cpu and INFO commandstats read when the one worker's count first reached "
    "the steady span's start and its end (and the early window's). redis_us_per_event is "
    "the server's used_cpu_user + used_cpu_sys over the events between the two reads "
    "(networking included); redis_commandstats_us_per_event sums the usec of the commands "
    "the worker's store issues (MGET, ZRANGEBYSCORE, EVALSHA, HINCRBY, HGETALL; what "
    "partition.lua runs is inside EVALSHA's time). The Redis server is shared: other "
    "clients' work in those seconds counts too. forks: INFO stats' total_forks between "
    "the two reads, Redis rewriting its AOF (or saving) meanwhile: a core and the disk "
    "for seconds, which slows the run beside it.",
    "rows_per_event": "The worker's churn_predictions_total (rows scored: events and "
    "inactivity rescores, summed over risk categories) and churn_risk_changes_total "
    "(changes published) scraped from /metrics at the same two moments, over the "
    "churn_events_total counted by the same scrapes: rows_per_event and changes_per_event "
    "over the steady span. runs.one_worker.scored_per_event is over the whole run.",
    "faust_bare": "The same topics, a new consumer group: a bare Faust agent (this module's "
    "_bare-agent) on stream_app.worker.faust_app (the worker's faust.App arguments) and "
    "uvloop, that only counts, taking with take_events(batch_size, batch_wait) (Faust "
    "acknowledges each batch). It drains the whole backlog; faust_bare_eps is its rate over "
    "the steady span, ratio_vs_bare = sustained_eps / faust_bare_eps.",
    "naive": "In the benchmark process: the events before event 30,000 (the early window's "
    "start, as a backlog consumer has read them, see as_consumed) go through the batch "
    "runner on an in-memory store and the states they leave are written to a fresh Redis "
    "namespace (untimed); then for each of the next naive_events events (JSON bytes): "
    "msgspec decode, GET of the state, apply_event, feature_matrix of one row, "
    "Model.predict of one row, RiskPolicy.category, and for a change worth publishing its "
    "reasons (TreeSHAP of the row), Producer.produce of its messages (Publisher's config: "
    "acks=all, idempotent) and flush(); SET of the state. No inactivity rescores, offsets "
    "or fencing: it does less than the worker. ratio = sustained_eps / naive_throughput_eps.",
    "two_workers": "Two worker processes in one consumer group (4 partitions per topic) on "
    "a backlog of all the events, produced to fresh topics once the group has settled, "
    "counts summed: sustained_eps_2w over the steady span; scaling_2w = sustained_eps_2w / "
    "sustained_eps.",
    "confluent": "The one worker and the two workers again with CHURN_ENGINE=confluent (a "
    "plain confluent-kafka consumer instead of Faust; the same core, outputs and commits): "
    "sustained_eps_confluent over the steady span, confluent_ratio = sustained_eps_confluent "
    "/ sustained_eps, scaling_2w_confluent = sustained_eps_confluent_2w / "
    "sustained_eps_confluent.",
    "latency": "A fresh worker serving a one-rule model (an unverified email means HIGH) is "
    "offered offered_eps events/s for latency_seconds (60 s): simulated events plus "
    "probes_per_second probe events, with CHURN_MAX_IDLE_MS at its default. After "
    "its first profile and order, each probe is a profile upsert that toggles "
    "email_verified, so it flips its customer's risk and yields one churn-risk event whose "
    "trigger names its partition and offset (taken from the delivery report). Latency = "
    "the time a consumer in the benchmark receives that event - the time just before "
    "Producer.produce of the probe (one clock): producer linger (5 ms), the batch wait, the "
    "merge's hold-back for caught-up topic-partitions (up to CHURN_MAX_IDLE_MS), queueing, "
    "processing, publishing with acks=all, the commit and the reader's fetch are inside. "
    "Probes of the first 3 s are left out; one never answered counts as infinitely late. "
    "p99_ms and p50_ms at 2,000 events/s, p99_ms_1000 and p50_ms_1000 at 1,000; "
    "p99_ms_confluent and p50_ms_confluent at 2,000 with CHURN_ENGINE=confluent.",
    "rss": "VmRSS of the one worker from /proc/<pid>/status, sampled with the counts: "
    "rss_mb_start when its count first reached the steady span's start, rss_mb_end after "
    "the last event of the backlog, rss_growth = end / start - 1, rss_mb_peak the largest "
    "sample over the whole run (start-up included).",
    "tenth_rates": "The one worker's rate over each tenth of the backlog's events, timed "
    "from the first sample that counted an event (with the events it had counted), so "
    "start-up is not in the first tenth. tenth_spread = the largest |rate / mean of the "
    "rates - 1|: warm-up, drift (the shop grows, and with it the rescores) and noise.",
    "outputs": "After the three one-worker runs (Faust with and without transactions, the "
    "confluent engine), which publish to one churn-risk topic, every message of it is read "
    "back from the beginning to the high watermarks: count, distinct_ids (event ids), "
    "distinct_lines, and sha256 over the lines json.dumps([event_id, value], "
    "sort_keys=True, separators=(',', ':')), sorted, each followed by a newline, value "
    "being the message without scored_at and model_version. count = 3 x distinct_ids = "
    "3 x distinct_lines: the three runs published the same changes, id for id and byte "
    "for byte. Two benchmarks on the same backlog (the simulator is seeded) and the same "
    "model (model.sha256, of the served model file) compare by sha256.",
    "interference": "A thread notes every 0.5 s whether the Kafka broker or the Redis server "
    "the run uses (the processes listening on their ports) is stopped (state T, as a fault "
    "test's SIGSTOP leaves it); a phase that overlapped one records "
    "services_stopped_seconds, and its numbers measure the stall.",
    "profile": "--profile: py-spy (--idle, 100 Hz) on an extra worker over "
    "settings.profile_window (the start of the steady span, 200,000 events), its event loop "
    "thread's wall time broken down by component (runs.profile).",
}


def run_environment(run: Run) -> dict[str, Any]:
    return {
        **environment(redis.Redis.from_url(run.redis_url)),
        "kafka_version": _kafka_version(),
    }


def _kafka_version() -> str | None:
    """The version scripts/services.sh runs (a broker does not report its own)."""
    pom = (ROOT / "scripts" / "kafka" / "pom.xml").read_text()
    match = re.search(r"<kafka.version>(.*?)</kafka.version>", pom)
    return match.group(1) if match else None


def summary(result: dict[str, Any]) -> str:
    settings, env = result["settings"], result["environment"]
    first, last = settings["steady_span"]
    lines = [
        f"stream app bench: {settings['events']:,} events, steady span = events {first:,}"
        f"-{last:,}, {env['cpu_count']} CPUs, load {env['load']} -> {env['load_after']}",
        *throughput_lines(result),
        *latency_lines(result),
        *closing_lines(result),
    ]
    return "\n".join(lines)


def throughput_lines(result: dict[str, Any]) -> list[str]:
    runs, cpu = result["runs"], result["events_per_cpu_second"]
    one, early = runs["one_worker"], result["early_window"]
    return [
        f"  one worker    {result['sustained_eps']:>6,} events/s sustained over the steady span "
        f"({one['steady']['cpu_cores']} cores, {cpu['one_worker']:,}/CPU s)",
        f"    per event   {result['worker_cpu_us_per_event']} us of worker CPU, "
        f"{result['redis_us_per_event']} us of Redis CPU "
        f"({result['redis_commandstats_us_per_event']} us of its commands), "
        f"{result['rows_per_event']} rows scored, {result['changes_per_event']} risk changes "
        "published",
        f"    no txns     {result['sustained_eps_at_least_once']:,} events/s, "
        f"{result['worker_cpu_us_per_event_at_least_once']} us of worker CPU per event "
        f"(CHURN_PROCESSING_GUARANTEE=at_least_once; exactly-once runs at "
        f"{result['exactly_once_ratio']} of it)",
        f"    tenths      {result['tenth_rates']} events/s from the first event "
        f"(spread {result['tenth_spread']})",
        f"    early       {early['eps']:,} events/s over events {early['events'][0]:,}-"
        f"{early['events'][1]:,}, {early['worker_cpu_us_per_event']} us of worker CPU per "
        "event (secondary figure)",
        f"    whole run   {one['events_per_step']} events per step, {one['mean_step_ms']} ms "
        f"per step, {one['scored_per_event']} rows scored per event; drain "
        f"{one.get('drain', {}).get('eps')} events/s",
        f"  bare Faust    {result['faust_bare_eps']:>6,} events/s over the steady span "
        f"({cpu['bare_agent']:,}/CPU s)",
        f"  naive         {result['naive_throughput_eps']:>6,} events/s in process "
        f"({settings_naive(result)})",
        f"  two workers   {result['sustained_eps_2w']:>6,} events/s over the steady span "
        f"({cpu['two_workers']:,}/CPU s)",
        f"  confluent     {result['sustained_eps_confluent']:>6,} events/s over the steady span, "
        f"{result['confluent_ratio']}x Faust's; {result['worker_cpu_us_per_event_confluent']} us "
        f"of worker CPU and {result['redis_us_per_event_confluent']} us of Redis CPU per event",
        f"    two         {result['sustained_eps_confluent_2w']:>6,} events/s "
        f"({result['scaling_2w_confluent']}x one)",
    ]


def settings_naive(result: dict[str, Any]) -> str:
    first = result["settings"]["early_window"][0]
    return f"{result['settings']['naive_events']:,} events from event {first:,}"


def latency_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    runs = result["runs"]
    measured = [("faust", lat) for lat in runs["latency"].values()]
    measured += [("confluent", lat) for lat in runs.get("latency_confluent", {}).values()]
    for engine, lat in measured:
        lines.append(
            f"  latency @{lat['offered_eps']:,}/s {engine}, idle {lat['max_idle_ms']} ms "
            "(worker did "
            f"{lat['processed_eps_during_offer']:,}/s over {lat['seconds']} s): p50 "
            f"{lat['p50_ms']} ms, p95 {lat['p95_ms']} ms, p99 {lat['p99_ms']} ms, "
            f"{lat['probes_answered']}/{lat['probes']} probes"
        )
    return lines


def closing_lines(result: dict[str, Any]) -> list[str]:
    runs, outputs, model = result["runs"], result["outputs"], result["model"]
    lines = [
        f"  RSS           {result['rss_mb_start']} MiB at event {result['rss_events'][0]:,} -> "
        f"{result['rss_mb_end']} MiB at {result['rss_events'][1]:,} "
        f"(growth {result['rss_growth']}), peak {result['rss_mb_peak']} MiB",
        f"  outputs       {outputs['count']:,} churn-risk events, {outputs['distinct_ids']:,} "
        f"distinct ids, sha256 {outputs['sha256'][:16]}...; model {model['version']} "
        f"{model['file']} sha256 {model['sha256'][:16]}...",
    ]
    for name, target in result["targets"].items():
        verdict_text = "PASS" if target["pass"] else "FAIL"
        lines.append(f"  {verdict_text}  {name} = {target['value']} (target {target['target']})")
    if "profile" in runs:
        window = result["settings"]["profile_window"]
        lines.append(
            f"  profile, events {window[0]:,}-{window[1]:,}, share of the event loop thread's "
            "wall time:"
        )
        for name, share in runs["profile"]["by_component"].items():
            lines.append(f"    {share:6.1%}  {name}")
    if "levers" in runs:
        for kind in ("bare_agent_eps", "worker_eps"):
            for name, values in runs["levers"][kind].items():
                lines.append(f"  lever, {kind[:-4]}: {name}: {values}")
    return lines + warning_lines(result)


def warning_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    stalled = result.get("one_worker_stalled")
    if stalled:
        lines.append(
            f"  WARNING  the one worker stalled at {stalled['at_events']:,} of "
            f"{stalled['expected']:,} events (group committed everything: "
            f"{stalled['group_committed_everything']})"
        )
    for name, phase in result["phases"].items():
        if "services_stopped_seconds" in phase:
            lines.append(
                f"  WARNING  {name}: stopped meanwhile {phase['services_stopped_seconds']}"
            )
    lines.append("  took " + ", ".join(f"{k} {v}s" for k, v in result["durations_seconds"].items()))
    return lines


# --- --memory-only: the one worker's RSS over a long backlog --------------------------------


def run_memory(run: Run, n: int) -> dict[str, Any]:
    """Only the one worker, to the end of the backlog: its RSS per tenth, and its growth
    and rate from MEMORY_SPAN_FROM of the backlog to the end."""
    span = Window(round(MEMORY_SPAN_FROM * n), n)
    env_before = run_environment(run)
    with run.phase("train model"):
        models = train_model(run.tmp)
    _, backlog = produce_backlog(run, n)
    with run.phase("one worker") as record:
        one = measure_workers(run, "mem", backlog, models, 1, span, n, steady=span)
        record["result"] = brief(one["steady"])
    rss = one["rss_mb"]
    return {
        "events": n,
        "rss_mb_per_tenth": rss["per_tenth"],
        "rss_mb_peak": rss["peak"],
        "rss_growth": round(rss["end"] / rss["start"] - 1, 3),
        "rss_mb_start": rss["start"],
        "rss_mb_end": rss["end"],
        "span": [span.first, span.last],
        "rss_events": [rss["start_events"], rss["end_events"]],
        "sustained_eps": one["steady"]["eps"],
        "tenth_rates": one["rates_per_tenth"],
        "one_worker_stalled": one.get("stalled"),
        "method": "The one worker (python -m stream_app worker) over a backlog of `events` "
        "simulated events produced before it starts; VmRSS sampled every 0.25 s with its "
        "count. rss_mb_per_tenth: at the first sample past each tenth of the events; "
        "rss_growth: from the first sample past `span`'s start (20% of the backlog) to the "
        "end; rss_mb_peak over the whole run; sustained_eps over `span`.",
        "runs": {"one_worker": one},
        "model": model_digest(models),
        "environment": {**env_before, "load_after": run_environment(run)["load"]},
        "phases": run.phases,
    }


def memory_summary(result: dict[str, Any]) -> str:
    first, last = result["span"]
    return "\n".join(
        [
            f"stream app memory bench: {result['events']:,} events, one worker",
            f"  RSS per tenth {result['rss_mb_per_tenth']} MiB, peak {result['rss_mb_peak']}",
            f"  RSS           {result['rss_mb_start']} MiB at event {result['rss_events'][0]:,}"
            f" -> {result['rss_mb_end']} MiB at {result['rss_events'][1]:,} (growth "
            f"{result['rss_growth']})",
            f"  sustained     {result['sustained_eps']:,} events/s over events {first:,}-{last:,}",
            *warning_lines({**result, "durations_seconds": phase_seconds(result)}),
        ]
    )


def phase_seconds(result: dict[str, Any]) -> dict[str, float]:
    return {name: p["seconds"] for name, p in result["phases"].items()}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stream", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="backlog size")
    parser.add_argument(
        "--steady-from",
        type=int,
        default=DEFAULT_STEADY_FROM,
        help="the steady span (the headline): this event to the end of the backlog",
    )
    parser.add_argument(
        "--warmup", type=int, default=DEFAULT_WARMUP, help="the early window's first event"
    )
    parser.add_argument(
        "--window", type=int, default=DEFAULT_WINDOW, help="events in the early window"
    )
    parser.add_argument(
        "--out", type=Path, help=f"default {DEFAULT_OUT} ({DEFAULT_MEMORY_OUT} with --memory-only)"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy an extra worker")
    parser.add_argument("--levers", action="store_true", help="try configuration levers")
    parser.add_argument(
        "--memory-only", action="store_true", help="only the one worker's RSS over the backlog"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["_bare-agent"]:
        # `BENCH_ARGS="--events 150000 --profile" make bench`
        argv = shlex.split(os.environ.get("BENCH_ARGS", "")) + argv
    if argv[:1] == ["_bare-agent"]:
        bare_agent_main(argv[1:])
        return
    args = parse_args(argv)
    out = args.out or (DEFAULT_MEMORY_OUT if args.memory_only else DEFAULT_OUT)
    spans = Spans(
        steady=Window(args.steady_from, args.events),
        early=Window(args.warmup, args.warmup + args.window),
    )
    settings = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="stream-bench-") as tmp:
        run = Run(settings.kafka_bootstrap_servers, settings.redis_url, settings, Path(tmp))
        print(f"run {run.run_id}", flush=True)
        try:
            if args.memory_only:
                result = run_memory(run, args.events)
            else:
                result = run_bench(run, args.events, spans, args.profile, args.levers)
        except BaseException:
            kept = Path(tempfile.gettempdir()) / f"{run.run_id}-logs"
            shutil.copytree(run.logs, kept, dirs_exist_ok=True)
            print(f"failed; worker logs copied to {kept}", file=sys.stderr)
            raise
        finally:
            run.cleanup()
    text = memory_summary(result) if args.memory_only else summary(result)
    write_results(out, result, text)


if __name__ == "__main__":
    main()
