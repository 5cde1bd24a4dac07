"""Feature store benchmark: Redis memory per customer and update throughput.

Replays a simulated history through `RedisFeatureStore.apply`, as the worker does,
into key namespaces of its own (`bench-<random>...`, all deleted at the end: other
users share this Redis, so it never flushes anything), then measures

* memory: `MEMORY USAGE <key> SAMPLES 0` of every customer's hash, the hash encodings
  and a breakdown of each hash's fields by kind (tiles, source ids, offsets, ...);
* throughput: a slice of the same updates applied to fresh customers, batched (one
  round trip per batch) and one round trip per update, interleaved and repeated.

    python -m feature_store.bench [--customers 100000] [--out bench/features.json]

Writes JSON and prints a short summary. REDIS_URL selects the server.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis
from redis.client import Pipeline

from feature_store.online import (
    RISK_FIELD,
    RISK_SEQ_FIELD,
    SEEN_FIELD,
    SOURCE_ID_PREFIX,
    TILE_SEPARATOR,
    Position,
    Update,
    update_for,
)
from feature_store.redis_store import OUTCOMES, RedisFeatureStore
from simulator.history import History, generate_history
from simulator.kafka_sink import DEFAULT_PARTITIONS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "features.json"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

TARGET_MEAN_BYTES = 2048  # product target: mean Redis memory per customer
LOAD_BATCH = 1000  # updates per apply() while loading the whole history
THROUGHPUT_BATCH = 500  # updates per apply() in the batched throughput runs
WARMUP_UPDATES = 2000
PIPELINE_CHUNK = 1000  # commands per pipeline for the per-key scans

FIELD_KINDS = ("tile", "source_id", "offset", "total", "time", "profile", "risk")


# --- Input: the history as the worker would receive it ------------------------------


def positioned_updates(history: History, partitions: int = DEFAULT_PARTITIONS) -> list[Update]:
    """Every event of `history` in time order, as the update the worker would apply.

    Each customer sits on one partition per topic (topics are co-partitioned by
    customer id) with increasing offsets per partition, so the offset fields per
    customer and their magnitudes are as in production. The partition function is
    not Kafka's murmur2: only the partition count matters here.
    """
    next_offset: Counter[tuple[str, int]] = Counter()
    updates = []
    for topic, event in history.events_in_time_order():
        partition = zlib.crc32(event.customer_id.encode()) % partitions
        offset = next_offset[topic, partition]
        next_offset[topic, partition] += 1
        updates.append(update_for(topic, event, Position(topic, partition, offset)))
    return updates


# --- Redis helpers --------------------------------------------------------------------


def drop_namespace(client: redis.Redis, pattern: str) -> int:
    """Delete every key matching `pattern` (SCAN + UNLINK, never FLUSH*)."""
    deleted = 0
    keys = list(client.scan_iter(match=pattern, count=1000))
    for start in range(0, len(keys), PIPELINE_CHUNK):
        deleted += client.unlink(*keys[start : start + PIPELINE_CHUNK])
    return deleted


def pipelined(
    client: redis.Redis, keys: Sequence[str], command: Callable[[Pipeline, str], object]
) -> list[Any]:
    """One reply per key of `command(pipe, key)`, PIPELINE_CHUNK keys per round trip."""
    replies: list[Any] = []
    for start in range(0, len(keys), PIPELINE_CHUNK):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + PIPELINE_CHUNK]:
            command(pipe, key)
        replies.extend(pipe.execute())
    return replies


def apply_all(store: RedisFeatureStore, updates: Sequence[Update], batch: int) -> Counter[str]:
    """Apply `updates` in order, `batch` per round trip; counts of outcomes."""
    outcomes: Counter[str] = Counter()
    for start in range(0, len(updates), batch):
        outcomes.update(store.apply(updates[start : start + batch]).counts)
    return outcomes


# --- Memory ---------------------------------------------------------------------------


def field_kind(name: str) -> str:
    """Which part of the state (see `feature_store.online`) a hash field belongs to."""
    if name.startswith(SOURCE_ID_PREFIX):
        return "source_id"
    if name.startswith("off:"):
        return "offset"
    if name.startswith(("max:", "min:")) or name == SEEN_FIELD:
        return "time"
    if name.startswith("p:"):
        return "profile"
    if name in (RISK_FIELD, RISK_SEQ_FIELD):
        return "risk"
    if TILE_SEPARATOR in name:
        return "tile"
    return "total"


_LISTPACK_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,18})")


def listpack_entry_bytes(text: str) -> int:
    """Bytes one field name or value takes in a Redis 7 listpack: encoding + data +
    back-length. Decimal integers are stored as integers (1-9 bytes), others as text."""
    size = 0
    if _LISTPACK_INT.fullmatch(text) and text != "-0" and -(2**63) <= int(text) < 2**63:
        value = int(text)
        for bytes_, low, high in ((1, 0, 127), (2, -4096, 4095), (3, -(2**15), 2**15 - 1)):
            if low <= value <= high:
                size = bytes_
                break
        else:
            size = 4 if -(2**23) <= value < 2**23 else 5 if -(2**31) <= value < 2**31 else 9
    else:
        length = len(text.encode())
        size = length + (1 if length < 64 else 2 if length < 4096 else 5)
    return size + (1 if size <= 127 else 2 if size < 16383 else 3)


def field_breakdown(hashes: Sequence[dict[str, str]]) -> dict[str, Any]:
    """Per customer: how many fields of each kind, and the listpack bytes they take."""
    n = len(hashes)
    fields: Counter[str] = Counter()
    lp_bytes: Counter[str] = Counter()
    for fields_of_customer in hashes:
        for name, value in fields_of_customer.items():
            kind = field_kind(name)
            fields[kind] += 1
            lp_bytes[kind] += listpack_entry_bytes(name) + listpack_entry_bytes(value)
    total_bytes = sum(lp_bytes.values())
    return {
        kind: {
            "fields_mean": round(fields[kind] / n, 2),
            "listpack_bytes_mean": round(lp_bytes[kind] / n, 1),
            "share_of_listpack_entries": round(lp_bytes[kind] / total_bytes, 3),
        }
        for kind in FIELD_KINDS
    }


def measure_memory(
    client: redis.Redis, store: RedisFeatureStore, customer_ids: Sequence[str]
) -> dict[str, Any]:
    """Memory per customer hash, encodings and field breakdown of a loaded namespace."""
    keys = [store.key(customer_id) for customer_id in customer_ids]
    usage = pipelined(client, keys, lambda pipe, key: pipe.memory_usage(key, samples=0))
    missing = sum(1 for u in usage if u is None)
    sizes = np.array([u for u in usage if u is not None], dtype=np.float64)
    encodings = Counter(
        _text(e) for e in pipelined(client, keys, lambda pipe, key: pipe.object("encoding", key))
    )
    hashes = [
        {_text(k): _text(v) for k, v in reply.items()}
        for reply in pipelined(client, keys, lambda pipe, key: pipe.hgetall(key))
        if reply
    ]
    field_counts = np.array([len(h) for h in hashes], dtype=np.float64)
    # A listpack is 6 header bytes + its entries + 1 end byte; MEMORY USAGE adds the
    # allocator's size-class rounding, the key's name, its object and its dict entry.
    listpack_mean = 7 + statistics.fmean(
        sum(listpack_entry_bytes(k) + listpack_entry_bytes(v) for k, v in h.items()) for h in hashes
    )
    config = client.config_get("hash-max-listpack-*")
    return {
        "customers": len(sizes),
        "customers_without_key": missing,
        "redis_bytes_per_customer_mean": round(float(sizes.mean()), 1),
        "redis_bytes_per_customer_p50": float(np.percentile(sizes, 50)),
        "redis_bytes_per_customer_p99": float(np.percentile(sizes, 99)),
        "redis_bytes_per_customer_max": float(sizes.max()),
        "target_mean_bytes": TARGET_MEAN_BYTES,
        "meets_target": bool(sizes.mean() <= TARGET_MEAN_BYTES),
        "hash_max_listpack_entries": int(config["hash-max-listpack-entries"]),
        "hash_max_listpack_value": int(config["hash-max-listpack-value"]),
        "encodings": dict(encodings),
        "listpack_share": round(encodings["listpack"] / max(1, sum(encodings.values())), 4),
        "encoding_keys_checked": sum(encodings.values()),
        "fields_per_customer_mean": round(float(field_counts.mean()), 2),
        "fields_per_customer_p99": float(np.percentile(field_counts, 99)),
        "fields_per_customer_max": float(field_counts.max()),
        "listpack_bytes_estimate_mean": round(listpack_mean, 1),
        "overhead_bytes_mean": round(float(sizes.mean()) - listpack_mean, 1),
        "key_example": keys[0],
        "by_field_kind": field_breakdown(hashes),
    }


# --- Throughput -----------------------------------------------------------------------


def script_time(client: redis.Redis) -> tuple[int, int]:
    """(calls, microseconds) of EVALSHA so far, server-wide: the server's share of an
    update's cost. Other clients' scripts count too, so it is an estimate."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def usec_per_call(before: tuple[int, int], after: tuple[int, int]) -> float:
    calls = after[0] - before[0]
    return round((after[1] - before[1]) / calls, 1) if calls else float("nan")


def timed_apply(
    client: redis.Redis, namespace: str, updates: Sequence[Update], batch: int
) -> tuple[float, float]:
    """Applies `updates` to a fresh namespace, then drops it: (updates per second,
    Redis script microseconds per update)."""
    store = RedisFeatureStore(client, namespace)
    before = script_time(client)
    start = time.perf_counter()
    apply_all(store, updates, batch)
    elapsed = time.perf_counter() - start
    server = usec_per_call(before, script_time(client))
    drop_namespace(client, f"{namespace}:*")
    return len(updates) / elapsed, server


def measure_throughput(
    client: redis.Redis,
    prefix: str,
    updates: Sequence[Update],
    warmup: Sequence[Update],
    repeats: int,
) -> dict[str, Any]:
    """Batched vs one-round-trip-per-update apply rates, interleaved so that drift
    (other load on the machine, Redis memory growth) hits both alike."""
    for batch in (THROUGHPUT_BATCH, 1):  # warm up connections, script cache, allocator
        timed_apply(client, f"{prefix}-warmup", warmup, batch)
    batched: list[tuple[float, float]] = []
    single: list[tuple[float, float]] = []
    for run in range(repeats):
        batched.append(timed_apply(client, f"{prefix}-batched{run}", updates, THROUGHPUT_BATCH))
        single.append(timed_apply(client, f"{prefix}-single{run}", updates, 1))
    batched_eps = statistics.median(eps for eps, _ in batched)
    single_eps = statistics.median(eps for eps, _ in single)
    return {
        "update_batched_eps": round(batched_eps),
        "update_single_eps": round(single_eps),
        "update_ratio": round(batched_eps / single_eps, 2),
        "updates": len(updates),
        "customers": len({u.customer_id for u in updates}),
        "batch_size": THROUGHPUT_BATCH,
        "warmup_updates": len(warmup),
        "repeats": repeats,
        "batched_runs_eps": [round(eps) for eps, _ in batched],
        "single_runs_eps": [round(eps) for eps, _ in single],
        "batched_runs_script_usec_per_update": [usec for _, usec in batched],
        "single_runs_script_usec_per_update": [usec for _, usec in single],
    }


# --- The run --------------------------------------------------------------------------


def run(
    client: redis.Redis,
    customers: int,
    seed: int = 3,
    throughput_updates: int = 50_000,
    repeats: int = 3,
) -> dict[str, Any]:
    """The whole benchmark; every key it writes is deleted before it returns."""
    began = time.perf_counter()
    phases: dict[str, float] = {}
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        with _phase(phases, "generate_history"):
            history = generate_history(customers, seed=seed)
            updates = positioned_updates(history)

        store = RedisFeatureStore(client, prefix)
        before = script_time(client)
        with _phase(phases, "load"):
            outcomes = apply_all(store, updates, LOAD_BATCH)
        load_script_usec = usec_per_call(before, script_time(client))
        load_eps = len(updates) / phases["load"]
        with _phase(phases, "memory_scan"):
            memory = measure_memory(client, store, [c.customer_id for c in history.customers])
        drop_namespace(client, f"{prefix}:*")

        # A slice from the middle of the history: orders and tickets of customers whose
        # state starts empty in each fresh namespace (the start is mostly profiles).
        n = min(throughput_updates, len(updates) // 2)
        first = len(updates) // 2
        warmup = updates[max(0, first - WARMUP_UPDATES) : first]
        with _phase(phases, "throughput"):
            throughput = measure_throughput(
                client, f"{prefix}-tput", updates[first : first + n], warmup, repeats
            )
        throughput["slice_start"] = first
    finally:
        drop_namespace(client, f"{prefix}*")
    phases["total"] = time.perf_counter() - began

    headline = {
        key: memory[key]
        for key in (
            "redis_bytes_per_customer_mean",
            "redis_bytes_per_customer_p99",
            "redis_bytes_per_customer_max",
        )
    }
    headline |= {
        k: throughput[k] for k in ("update_batched_eps", "update_single_eps", "update_ratio")
    }
    return {
        **headline,
        "customers": memory["customers"],
        "memory": memory,
        "throughput": throughput,
        "load": {
            "updates": len(updates),
            "orders": len(history.orders),
            "tickets": len(history.tickets),
            "profiles": len(history.customers),
            "batch_size": LOAD_BATCH,
            "eps": round(load_eps),
            "script_usec_per_update": load_script_usec,
            "outcomes": {outcome: outcomes[outcome] for outcome in OUTCOMES},
        },
        "config": {
            "customers": customers,
            "seed": seed,
            "partitions": DEFAULT_PARTITIONS,
            "throughput_updates": throughput_updates,
        },
        "environment": environment(client),
        "runtime_seconds": {name: round(seconds, 1) for name, seconds in phases.items()},
    }


def environment(client: redis.Redis) -> dict[str, Any]:
    server = client.info("server")
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "redis_version": server["redis_version"],
        "redis_allocator": client.info("memory").get("mem_allocator"),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


def summary(result: dict[str, Any]) -> str:
    m, t = result["memory"], result["throughput"]
    verdict = "meets" if m["meets_target"] else "ABOVE"
    lines = [
        f"feature store bench: {m['customers']:,} customers, "
        f"{result['load']['updates']:,} updates, {result['runtime_seconds']['total']:.0f} s",
        f"  memory/customer   mean {m['redis_bytes_per_customer_mean']:.0f} B "
        f"({verdict} target {m['target_mean_bytes']} B), "
        f"p99 {m['redis_bytes_per_customer_p99']:.0f} B, "
        f"max {m['redis_bytes_per_customer_max']:.0f} B",
        f"  hash fields       mean {m['fields_per_customer_mean']}, listpack "
        f"{m['listpack_share']:.1%} (entries<={m['hash_max_listpack_entries']}, "
        f"value<={m['hash_max_listpack_value']})",
        "  listpack bytes    "
        + ", ".join(
            f"{kind} {part['listpack_bytes_mean']:.0f}" for kind, part in m["by_field_kind"].items()
        )
        + f"; overhead {m['overhead_bytes_mean']:.0f}",
        f"  updates/s         batched({t['batch_size']}) {t['update_batched_eps']:,}, "
        f"single {t['update_single_eps']:,}, ratio {t['update_ratio']}x "
        f"(median of {t['repeats']}, {t['updates']:,} updates)",
        f"  Redis script      {statistics.median(t['batched_runs_script_usec_per_update'])} us "
        "per update (batched runs, median)",
        f"  load              {result['load']['eps']:,} updates/s "
        f"(batches of {result['load']['batch_size']}, "
        f"script {result['load']['script_usec_per_update']} us/update)",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--throughput-updates", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    client = redis.Redis.from_url(
        os.environ.get("REDIS_URL", DEFAULT_REDIS_URL), decode_responses=True
    )
    result = run(client, args.customers, args.seed, args.throughput_updates, args.repeats)
    write_results(args.out, result, summary(result))


def write_results(out: Path, result: dict[str, Any], summary_text: str) -> None:
    """Write a benchmark's JSON (a crash never leaves half a file) and its summary."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".tmp")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(out)
    print(summary_text)
    print(f"  written to {out}")


@contextmanager
def _phase(phases: dict[str, float], name: str) -> Iterator[None]:
    """Records the wall time of the `with` body as `phases[name]`."""
    start = time.perf_counter()
    yield
    phases[name] = time.perf_counter() - start


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


if __name__ == "__main__":
    main()
