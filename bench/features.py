"""Feature store benchmark: Redis memory per customer and the store's update throughput.

    python -m bench.features [--customers 100000] [--out bench/features.json]

* memory: a simulated history goes through the real batch runner (`BatchRunner` with
  `RedisStateStore`, a model trained by `python -m training`, outputs counted and
  dropped), 500 messages per step as the worker takes them. Then `MEMORY USAGE
  <key> SAMPLES 0` of every customer's state (one MessagePack string,
  `{ns:pN}:c:<id>`), of each partition's inactivity schedule (sorted set) and meta
  hash; per customer: its string plus its share of the partition's keys.
* throughput: a slice of the same history's events applied to the states they meet
  at that point of the history (written to fresh namespaces first), three ways,
  interleaved and repeated: the runner's store calls per batch of 500 (a fenced
  `begin` per partition pipelined with the read of the batch's states, and a fenced
  `commit` per partition), the same store calls for every single event, and a naive
  path (GET, apply, SET per event). All three apply the events in Python
  (`feature_store.online.apply_event`); nothing is scored, so this is the store's
  share of the worker's cost.

Every key it writes is in namespaces `bench-<random>...`, deleted at the end (other
users share this Redis: it never flushes anything). REDIS_URL selects the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import redis

from bench.common import (
    STORE_COMMANDS,
    environment,
    in_log_order,
    redis_counters,
    redis_work,
    timed,
    train_model,
    write_results,
)
from feature_store.keys import Keys
from feature_store.online import (
    DUPLICATE,
    CustomerState,
    apply_event,
    decode_state,
    encode_state,
    event_time,
    ids_of,
    tiles_of,
)
from feature_store.redis_store import RedisStateStore
from feature_store.store import Begin, Commit
from schemas import ChurnRiskChanged, DeadLetter, topics
from scoring.artifact import load_model
from scoring.inactivity import first_due, next_due
from scoring.merge import InputMessage
from scoring.outcome import PartitionOutcome
from scoring.pipeline import Scorer
from scoring.runner import BatchRunner, Collector
from scoring.timetable import Timetable
from simulator.history import Event, generate_history
from simulator.kafka_sink import DEFAULT_PARTITIONS
from stream_app.partitioning import partition_of

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "features.json"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

TARGET_MEAN_BYTES = 2048  # product target: mean Redis memory per customer
STEP_MESSAGES = 500  # messages handed to the runner per step, as the worker's batch_size
THROUGHPUT_BATCH = 500  # events per batch in the batched throughput runs
PIPELINE_CHUNK = 1000  # commands per pipeline for the per-key scans
PATHS = ("batched", "batched_with_rescores", "store_per_event", "naive")
NAIVE_COMMANDS = (*STORE_COMMANDS, "get", "set")  # the naive path's GET and SET too

STATE_PARTS = tuple(CustomerState.__struct_fields__)


# --- Building the state with the real runner ------------------------------------------------


class CountingSink(Collector):
    """The runner's sink: counts the outputs and drops them."""

    def __init__(self) -> None:
        self.changes = 0
        self.dead_letters = 0

    def collect(
        self, changes: Sequence[ChurnRiskChanged], dead_letters: Sequence[DeadLetter]
    ) -> None:
        self.changes += len(changes)
        self.dead_letters += len(dead_letters)


def build_state(
    store: RedisStateStore, model_dir: Path, messages: Sequence[InputMessage], partitions: int
) -> dict[str, Any]:
    """Run the batch runner over `messages`, STEP_MESSAGES at a time, into `store`."""
    model = load_model(model_dir)
    sink = CountingSink()
    runner = BatchRunner(store, Scorer(lambda: model), sink, topics.INPUT_TOPICS)
    for partition in range(partitions):
        runner.assign(partition)
    total = Counter((m.topic, m.partition) for m in messages)
    added: Counter[tuple[str, int]] = Counter()
    counts: Counter[str] = Counter()
    steps = 0

    def behind(topic: str, partition: int) -> bool:
        return added[topic, partition] < total[topic, partition]

    def count(outcomes: list[PartitionOutcome]) -> None:
        for outcome in outcomes:
            for (_, name), n in outcome.counts.items():  # summed over topics
                counts[name] += n

    async def run() -> None:
        nonlocal steps
        for start in range(0, len(messages), STEP_MESSAGES):
            chunk = messages[start : start + STEP_MESSAGES]
            added.update((m.topic, m.partition) for m in chunk)
            runner.add(chunk)
            count((await runner.step(behind)).outcomes)
            steps += 1
        while runner.buffered():
            count((await runner.step(behind)).outcomes)
            steps += 1

    before = redis_counters(store.client)
    began = time.perf_counter()
    asyncio.run(run())
    seconds = time.perf_counter() - began
    return {
        "messages": len(messages),
        "steps": steps,
        "seconds": round(seconds, 1),
        "eps": round(len(messages) / seconds),
        "outcomes": dict(counts),
        "changes_published": sink.changes,
        "dead_letters": sink.dead_letters,
        "model": model.version,
        "redis": redis_work(before, redis_counters(store.client), len(messages)),
    }


# --- Memory ---------------------------------------------------------------------------------


def pipelined(client: redis.Redis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """One reply per command, PIPELINE_CHUNK commands per round trip."""
    replies: list[Any] = []
    for start in range(0, len(commands), PIPELINE_CHUNK):
        pipe = client.pipeline(transaction=False)
        for command in commands[start : start + PIPELINE_CHUNK]:
            pipe.execute_command(*command)
        replies.extend(pipe.execute())
    return replies


def state_parts(state: CustomerState) -> dict[str, int]:
    """Bytes of each part of a state's MessagePack encoding (the array header aside)."""
    encode = msgspec.msgpack.encode
    return {part: len(encode(getattr(state, part))) for part in STATE_PARTS}


def stats(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": round(float(array.mean()), 1),
        "p50": float(np.percentile(array, 50)),
        "p99": float(np.percentile(array, 99)),
        "max": float(array.max()),
    }


def measure_memory(
    client: redis.Redis, keys: Keys, customer_ids: Sequence[str], partitions: int
) -> dict[str, Any]:
    """Memory per customer of a loaded namespace, from Redis's own MEMORY USAGE."""
    names = [keys.customer(partition_of(c, partitions), c) for c in customer_ids]
    usage = pipelined(client, [("MEMORY", "USAGE", name, "SAMPLES", "0") for name in names])
    blobs = pipelined(client, [("GET", name) for name in names])
    encodings = Counter(
        e.decode() if isinstance(e, bytes) else str(e)
        for e in pipelined(client, [("OBJECT", "ENCODING", name) for name in names])
        if e is not None
    )
    present = [(u, b) for u, b in zip(usage, blobs, strict=True) if u is not None and b]
    sizes = np.array([u for u, _ in present], dtype=np.float64)
    blob_sizes = np.array([len(b) for _, b in present], dtype=np.float64)

    shared: dict[str, dict[str, float]] = {}
    for kind, key_of, length in (
        ("idle", keys.idle, "ZCARD"),
        ("meta", keys.meta, "HLEN"),
    ):
        usages = pipelined(
            client, [("MEMORY", "USAGE", key_of(p), "SAMPLES", "0") for p in range(partitions)]
        )
        entries = pipelined(client, [(length, key_of(p)) for p in range(partitions)])
        shared[kind] = {
            "bytes": float(sum(u or 0 for u in usages)),
            "entries": float(sum(entries)),
        }
    shared_per_customer = sum(s["bytes"] for s in shared.values()) / max(1, len(sizes))
    per_customer = sizes + shared_per_customer

    states = [decode_state(b) for _, b in present]
    parts = [state_parts(s) for s in states]
    return {
        "customers": len(sizes),
        "customers_without_key": len(names) - len(present),
        "redis_bytes_per_customer": stats(per_customer),
        "target_mean_bytes": TARGET_MEAN_BYTES,
        "meets_target": bool(per_customer.mean() <= TARGET_MEAN_BYTES),
        "state_key_bytes": stats(sizes),
        "state_blob_bytes": stats(blob_sizes),
        # MEMORY USAGE of a string over its value: the key's name, the object header,
        # the dict entry and the allocator's size-class rounding.
        "overhead_bytes_mean": round(float((sizes - blob_sizes).mean()), 1),
        "string_encodings": dict(encodings),
        "schedule": {
            **shared["idle"],
            "bytes_per_customer": round(shared["idle"]["bytes"] / max(1, len(sizes)), 1),
            "bytes_per_entry": round(
                shared["idle"]["bytes"] / max(1.0, shared["idle"]["entries"]), 1
            ),
        },
        "meta": shared["meta"],
        "shared_bytes_per_customer": round(shared_per_customer, 1),
        "blob_bytes_by_part_mean": {
            part: round(statistics.fmean(p[part] for p in parts), 1) for part in STATE_PARTS
        },
        "tiles_per_customer": stats([len(tiles_of(s)[0]) for s in states]),
        "ids_per_customer": stats([len(ids_of(s)) for s in states]),
        "key_example": names[0],
    }


# --- Throughput -----------------------------------------------------------------------------


@dataclass
class Slice:
    """Events to time, with the states their customers had before them."""

    events: list[tuple[str, Any]]
    partitions: dict[str, int]  # customer -> partition
    states: dict[str, bytes]  # customer -> encoded state before the slice
    first_offset: int


def history_slice(
    events: Sequence[tuple[str, Event]], start: int, n: int, partitions: int
) -> Slice:
    """events[start:start + n] and the state each of their customers had before
    `start` (from apply_event, as the runner leaves it apart from the risk fields)."""
    timed_events = list(events[start : start + n])
    customers = {e.customer_id for _, e in timed_events}
    states: dict[str, CustomerState] = {}
    for topic, event in events[:start]:
        if event.customer_id in customers:
            state = states.setdefault(event.customer_id, CustomerState(event.customer_id))
            apply_event(state, topic, event)
    return Slice(
        timed_events,
        {c: partition_of(c, partitions) for c in customers},
        {c: encode_state(s) for c, s in states.items()},
        start,
    )


def prepare(client: redis.Redis, keys: Keys, data: Slice) -> None:
    """Write the slice's starting states and their inactivity schedule (each customer's
    first rescore after the slice's first event, as the runner would have left it)."""
    topic, event = data.events[0]
    start = event_time(topic, event)
    commands: list[tuple[Any, ...]] = []
    for customer, blob in data.states.items():
        partition = data.partitions[customer]
        commands.append(("SET", keys.customer(partition, customer), blob))
        seen = decode_state(blob).seen
        due = None if seen is None else rescore_after(seen, first_due(seen), start)
        if due is not None:
            commands.append(("ZADD", keys.idle(partition), repr(due), customer))
    pipelined(client, commands)


def rescore_after(seen: float, due: float | None, instant: float) -> float | None:
    """The first of a customer's rescores from `due` on that is not before `instant`."""
    while due is not None and due < instant:
        due = next_due(seen, due)
    return due


def run_batched(
    store: RedisStateStore, data: Slice, batch: int, partitions: int, rescores: bool
) -> None:
    """The runner's store calls per `batch` events: begin (fenced, reading the states
    of the customers involved and, with `rescores`, of those due for an inactivity
    rescore, from the schedule the claim gave), commit; events applied in Python,
    nothing scored, no state kept between batches."""
    claims = {p: store.claim(p) for p in range(partitions)}
    schedules = {p: Timetable(claim.schedule) for p, claim in claims.items()}
    offsets: dict[int, dict[str, int]] = {p: {} for p in range(partitions)}
    stream_time: dict[int, float] = {}
    for start in range(0, len(data.events), batch):
        chunk = data.events[start : start + batch]
        by_partition: dict[int, list[tuple[int, str, Any]]] = {}
        for i, (topic, event) in enumerate(chunk, start=data.first_offset + start):
            by_partition.setdefault(data.partitions[event.customer_id], []).append(
                (i, topic, event)
            )
        begins, dues = [], {}
        for partition, items in by_partition.items():
            times = [event_time(topic, event) for _, topic, event in items]
            stream_time[partition] = max(stream_time.get(partition, times[0]), *times)
            due = schedules[partition].take_before(stream_time[partition]) if rescores else []
            dues[partition] = due
            customers = {e.customer_id for _, _, e in items} | {c for _, c in due}
            done = {topic: offset for offset, topic, _ in items}
            previous = {t: offsets[partition].get(t, -1) for t in done}
            begins.append(
                Begin(partition, claims[partition].epoch, previous, done, sorted(customers))
            )
        begun = store.begin(begins)
        commits = [
            _commit(
                claims[b.partition].epoch,
                b,
                by_partition[b.partition],
                dues[b.partition],
                begun[b.partition][1],
                stream_time[b.partition],
            )
            for b in begins
        ]
        verdicts = {p: verdict for p, (verdict, _) in begun.items()}
        verdicts.update((p, verdict) for p, (verdict, _) in store.commit(commits).items())
        if set(verdicts.values()) != {"committed"}:
            raise RuntimeError(f"the store refused a batch: {verdicts}")
        for commit in commits:
            offsets[commit.partition].update(commit.offsets)
            for customer, next_due_at in commit.schedule.items():
                schedules[commit.partition].set(customer, next_due_at)


def _commit(
    epoch: int,
    begin: Begin,
    items: list[tuple[int, str, Any]],
    due: list[tuple[float, str]],
    read: dict[str, bytes],
    stream_time: float,
) -> Commit:
    """A partition's batch applied to the states `begin` read."""
    states = {c: decode_state(blob) for c, blob in read.items()}
    touched: dict[str, CustomerState] = {}
    schedule: dict[str, float | None] = {}
    for when, customer in due:  # rescored in the runner; here only rescheduled
        state = states.get(customer)
        following = None if state is None or state.seen is None else next_due(state.seen, when)
        schedule[customer] = following
    for _, topic, event in items:
        customer = event.customer_id
        state = touched.get(customer) or states.get(customer) or CustomerState(customer)
        touched[customer] = state
        seen = state.seen
        if apply_event(state, topic, event) != DUPLICATE and state.seen != seen:
            schedule[customer] = first_due(state.seen)  # type: ignore[arg-type]
    encoded = {c: encode_state(state) for c, state in touched.items()}
    return Commit(
        begin.partition, epoch, begin.previous, begin.through, stream_time, encoded, schedule
    )


def run_naive(client: redis.Redis, keys: Keys, data: Slice) -> None:
    """A straightforward store: per event, GET the state, apply, SET it back."""
    for topic, event in data.events:
        customer = event.customer_id
        key = keys.customer(data.partitions[customer], customer)
        blob = client.get(key)
        state = CustomerState(customer) if blob is None else decode_state(blob)
        apply_event(state, topic, event)
        client.set(key, encode_state(state))


def timed_path(
    client: redis.Redis, namespace: str, path: str, data: Slice, partitions: int
) -> dict[str, Any]:
    """One path over the slice in a fresh namespace (then dropped): its rate and
    Redis's work per event."""
    store = RedisStateStore(client, namespace)
    prepare(client, store.keys, data)
    before = redis_counters(client)
    start = time.perf_counter()
    if path == "naive":
        run_naive(client, store.keys, data)
    else:
        batch = 1 if path == "store_per_event" else THROUGHPUT_BATCH
        run_batched(store, data, batch, partitions, rescores=path == "batched_with_rescores")
    seconds = time.perf_counter() - start
    work = redis_work(before, redis_counters(client), len(data.events), NAIVE_COMMANDS)
    store.delete_namespace()
    return {"eps": len(data.events) / seconds, "redis": work}


def measure_throughput(
    client: redis.Redis,
    prefix: str,
    data: Slice,
    warmup: Slice,
    repeats: int,
    partitions: int,
    per_event_limit: int,
) -> dict[str, Any]:
    """The three paths' rates, interleaved so that drift (other load on the machine,
    Redis memory growth) hits them alike. The per-event store path runs on the first
    `per_event_limit` events only (it is slow)."""
    short = Slice(data.events[:per_event_limit], data.partitions, data.states, data.first_offset)
    for path in PATHS:  # warm up connections, script cache, allocator
        timed_path(client, f"{prefix}-warmup", path, warmup, partitions)
    runs: dict[str, list[dict[str, Any]]] = {path: [] for path in PATHS}
    for run in range(repeats):
        for path in PATHS:
            used = short if path == "store_per_event" else data
            runs[path].append(timed_path(client, f"{prefix}-{path}{run}", path, used, partitions))
    eps = {path: statistics.median(r["eps"] for r in runs[path]) for path in PATHS}
    return {
        "update_batched_eps": round(eps["batched"]),
        "update_naive_eps": round(eps["naive"]),
        "update_ratio": round(eps["batched"] / eps["naive"], 2),
        "update_batched_with_rescores_eps": round(eps["batched_with_rescores"]),
        "update_store_per_event_eps": round(eps["store_per_event"]),
        "events": len(data.events),
        "store_per_event_events": len(short.events),
        "customers": len(data.partitions),
        "customers_with_state": len(data.states),
        "batch_size": THROUGHPUT_BATCH,
        "repeats": repeats,
        "slice_start": data.first_offset,
        "runs_eps": {path: [round(r["eps"]) for r in runs[path]] for path in PATHS},
        # Redis's command time (INFO commandstats) per event, and the server's CPU (INFO
        # cpu) per event, of each path's median run.
        "redis_usec_per_event": {
            path: {
                "commandstats": statistics.median(
                    r["redis"]["commandstats_usec_per_event"] for r in runs[path]
                ),
                "info_cpu": statistics.median(
                    r["redis"]["info_cpu_usec_per_event"] for r in runs[path]
                ),
            }
            for path in PATHS
        },
        "redis_commands_last_run": {path: runs[path][-1]["redis"]["commands"] for path in PATHS},
    }


# --- The run --------------------------------------------------------------------------------


def run(
    client: redis.Redis,
    customers: int,
    seed: int = 3,
    throughput_events: int = 50_000,
    repeats: int = 3,
    per_event_limit: int = 10_000,
    model_dir: Path | None = None,
) -> dict[str, Any]:
    """The whole benchmark; every key it writes is deleted before it returns."""
    began = time.perf_counter()
    phases: dict[str, float] = {}
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    partitions = DEFAULT_PARTITIONS
    store = RedisStateStore(client, prefix)
    try:
        with tempfile.TemporaryDirectory(prefix="features-bench-") as tmp:
            if model_dir is None:
                with timed(phases, "train_model"):
                    model_dir = train_model(Path(tmp))
            with timed(phases, "generate_history"):
                history = generate_history(customers, seed=seed)
                events = list(history.events_in_time_order())
                messages = in_log_order(events, partitions)
            with timed(phases, "build_state"):
                build = build_state(store, model_dir, messages, partitions)
        with timed(phases, "memory_scan"):
            memory = measure_memory(
                client, store.keys, [c.customer_id for c in history.customers], partitions
            )
        store.delete_namespace()

        # A slice from the middle of the history, on the states it meets there.
        n = min(throughput_events, len(events) // 2)
        first = len(events) // 2
        warm = max(1, min(2_000, n // 10))
        with timed(phases, "throughput"):
            data = history_slice(events, first, n, partitions)
            warmup = history_slice(events, first - warm, warm, partitions)
            throughput = measure_throughput(
                client, f"{prefix}-tput", data, warmup, repeats, partitions, per_event_limit
            )
    finally:
        for namespace in _namespaces(client, prefix):
            RedisStateStore(client, namespace).delete_namespace()
    phases["total"] = time.perf_counter() - began

    per_customer = memory["redis_bytes_per_customer"]
    headline = {
        "redis_bytes_per_customer_mean": per_customer["mean"],
        "redis_bytes_per_customer_p99": per_customer["p99"],
        "redis_bytes_per_customer_max": per_customer["max"],
        "meets_memory_target": memory["meets_target"],
        **{k: throughput[k] for k in ("update_batched_eps", "update_naive_eps", "update_ratio")},
    }
    return {
        **headline,
        "customers": memory["customers"],
        "memory": memory,
        "throughput": throughput,
        "build": {
            **build,
            "orders": len(history.orders),
            "tickets": len(history.tickets),
            "profiles": len(history.customers),
            "step_messages": STEP_MESSAGES,
        },
        "method": METHOD,
        "config": {
            "customers": customers,
            "seed": seed,
            "partitions": partitions,
            "throughput_events": throughput_events,
            "per_event_limit": per_event_limit,
        },
        "environment": environment(client),
        "runtime_seconds": {name: round(seconds, 1) for name, seconds in phases.items()},
    }


METHOD = {
    "memory": "The history runs through BatchRunner + RedisStateStore + Scorer (a model "
    "trained by `python -m training`; outputs counted, not published), STEP_MESSAGES per "
    "step. Per customer: MEMORY USAGE <{ns:pN}:c:id> SAMPLES 0, plus the partition's "
    "inactivity sorted set and meta hash (MEMORY USAGE SAMPLES 0) divided by the customers. "
    "The target is on the mean.",
    "throughput": "A slice of the history's events (from its middle) on the states their "
    "customers had before it (apply_event over the earlier events, written to a fresh "
    "namespace with their inactivity schedule, untimed). Every path applies the events in "
    "Python (apply_event) and scores nothing. batched: per batch of 500 events, "
    "RedisStateStore.begin (a fenced partition.lua per partition, pipelined with an MGET "
    "of the batch's customers) and commit (a fenced partition.lua per partition: states, "
    "schedule and offsets): the runner's store traffic for the updates when it keeps no "
    "state between batches. batched_with_rescores: the same, and begin also reads the "
    "customers due for an inactivity rescore (from the schedule the claim read), "
    "rescheduled as the runner would (not scored): the runner's whole store traffic. "
    "store_per_event: batched's calls for every event. naive: per event GET, apply_event, "
    "SET (no schedule, offsets or fencing: it does less). update_ratio = batched / naive "
    "(the same updates). Paths interleaved, median of the repeats.",
    "redis_usec": "commandstats: INFO commandstats usec summed over the commands the path "
    "issues (MGET, ZRANGE, EVALSHA, HINCRBY, HGETALL, MULTI, EXEC, GET, SET; the "
    "commands a script runs are inside EVALSHA's time), per event. info_cpu: the server's "
    "used_cpu_user + used_cpu_sys, per event (includes networking; any other client's "
    "work in the same seconds counts too).",
}


def _namespaces(client: redis.Redis, prefix: str) -> set[str]:
    """The namespaces under `prefix` that hold keys (`{<namespace>:pN}...`)."""
    found = set()
    for key in client.scan_iter(match=f"{{{prefix}*", count=1000):
        text = key.decode() if isinstance(key, bytes) else key
        found.add(text[1:].partition(":p")[0])
    return found


def summary(result: dict[str, Any]) -> str:
    m, t, b = result["memory"], result["throughput"], result["build"]
    per = m["redis_bytes_per_customer"]
    verdict = "meets" if m["meets_target"] else "ABOVE"
    usec = t["redis_usec_per_event"]
    lines = [
        f"feature store bench: {m['customers']:,} customers, {b['messages']:,} events, "
        f"{result['runtime_seconds']['total']:.0f} s",
        f"  memory/customer   mean {per['mean']:.0f} B ({verdict} target "
        f"{m['target_mean_bytes']} B), p50 {per['p50']:.0f}, p99 {per['p99']:.0f}, "
        f"max {per['max']:.0f} B",
        f"  of which          state string {m['state_key_bytes']['mean']:.0f} B (MessagePack "
        f"{m['state_blob_bytes']['mean']:.0f} B), schedule + meta "
        f"{m['shared_bytes_per_customer']:.0f} B",
        "  MessagePack parts "
        + ", ".join(f"{k} {v:.0f}" for k, v in m["blob_bytes_by_part_mean"].items()),
        f"  updates/s         batched({t['batch_size']}) {t['update_batched_eps']:,}, naive "
        f"{t['update_naive_eps']:,}, ratio {t['update_ratio']}x; with rescores "
        f"{t['update_batched_with_rescores_eps']:,}; store per event "
        f"{t['update_store_per_event_eps']:,} (median of {t['repeats']})",
        "  Redis usec/event  "
        + ", ".join(
            f"{path} {u['commandstats']} (cpu {u['info_cpu']})" for path, u in usec.items()
        ),
        f"  runner build      {b['eps']:,} events/s in-process (scoring included), "
        f"{b['changes_published']:,} changes",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--throughput-events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, help="a trained model (default: train one)")
    args = parser.parse_args(argv)

    client = redis.Redis.from_url(os.environ.get("REDIS_URL", DEFAULT_REDIS_URL))
    result = run(
        client,
        args.customers,
        args.seed,
        args.throughput_events,
        args.repeats,
        model_dir=args.models_dir,
    )
    write_results(args.out, result, summary(result))


if __name__ == "__main__":
    main()
