"""What both benchmarks share: the results writer, the environment record, a model
trained the product's way, the simulated input as Kafka would hold it, and Redis's
own accounting of the work it did (`INFO commandstats`, `INFO cpu`)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec
import redis

from scoring.merge import InputMessage
from simulator.history import Event
from stream_app.partitioning import partition_of

ROOT = Path(__file__).resolve().parents[1]
TRAINING_CUSTOMERS = 4_000

# The commands the worker's store issues (`feature_store.redis_store`): EVALSHA of
# partition.lua to begin and commit, MGET with the begin, HINCRBY + HGETALL + ZRANGE
# to claim. Commands a script runs inside EVALSHA are counted
# by Redis under their own names too (HGET, SET, ZADD, ...), and their time is
# already inside EVALSHA's: they are left out of the sum.
STORE_COMMANDS = ("mget", "zrange", "evalsha", "hincrby", "hgetall", "multi", "exec")


def write_results(out: Path, result: dict[str, Any], summary_text: str) -> None:
    """Write a benchmark's JSON (a crash never leaves half a file) and its summary."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".tmp")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(out)
    print(summary_text)
    print(f"  written to {out}")


@contextmanager
def timed(phases: dict[str, float], name: str) -> Iterator[None]:
    """Records the wall time of the `with` body as `phases[name]`."""
    start = time.perf_counter()
    yield
    phases[name] = time.perf_counter() - start


def git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def package_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(client: redis.Redis) -> dict[str, Any]:
    """Where and on what a run measured (others edit the tree while benchmarks run)."""
    server = client.info("server")
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_modified_files": (
            git("status", "--porcelain", "--untracked-files=no") or ""
        ).splitlines(),
        "cpu_count": os.cpu_count(),
        "load": loadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis_version": server["redis_version"],
        "redis_allocator": client.info("memory").get("mem_allocator"),
        "packages": {
            name: package_version(name)
            for name in (
                "faust-streaming",
                "aiokafka",
                "confluent-kafka",
                "redis",
                "hiredis",
                "msgspec",
                "lightgbm",
            )
        },
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def train_model(directory: Path) -> Path:
    """A LightGBM artifact trained by `python -m training` on a small simulated shop."""
    models = directory / "models"
    db = directory / "shop.db"
    for args in (
        ["simulator", "sqlite", "--customers", str(TRAINING_CUSTOMERS), "--out", str(db)],
        ["training", "--db", str(db), "--out", str(models)],
    ):
        subprocess.run(
            [sys.executable, "-m", *args], cwd=ROOT, check=True, capture_output=True, text=True
        )
    return models


def in_log_order(events: Iterable[tuple[str, Event]], partitions: int) -> list[InputMessage]:
    """The messages of `events` in the order they are produced, with the partitions
    (Kafka's default partitioner on the customer id) and offsets Kafka gives them."""
    offsets: dict[tuple[str, int], int] = {}
    encode = msgspec.json.Encoder().encode
    out = []
    for topic, event in events:
        key = event.customer_id.encode()
        partition = partition_of(key, partitions)
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        out.append(InputMessage(topic, partition, offset, key, encode(event)))
    return out


# --- Redis's own accounting ----------------------------------------------------------------


def redis_counters(client: redis.Redis | redis.RedisCluster) -> dict[str, Any]:
    """Redis's CPU seconds so far, its forks (an AOF rewrite or a snapshot: seconds of a
    core and of disk, which slow whatever runs beside them) and, per command, (calls,
    microseconds)."""
    cpu = client.info("cpu")
    stats = client.info("commandstats")
    return {
        "cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        "forks": int(client.info("stats").get("total_forks", 0)),
        "commands": {
            name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for name, v in stats.items()
        },
    }


def redis_work(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    events: int,
    commands: Sequence[str] = STORE_COMMANDS,
) -> dict[str, Any]:
    """Redis's work between two `redis_counters`, per event: the command time of
    `commands` (INFO commandstats) and the whole server's CPU (INFO cpu, which also
    counts networking, protocol parsing and any other client's work)."""
    per_command = {}
    usec_total = 0
    for name in commands:
        calls0, usec0 = before["commands"].get(name, (0, 0))
        calls1, usec1 = after["commands"].get(name, (0, 0))
        calls, usec = calls1 - calls0, usec1 - usec0
        if calls:
            per_command[name] = {
                "calls": calls,
                "usec": usec,
                "usec_per_call": round(usec / calls, 2),
                "calls_per_event": round(calls / events, 4),
            }
            usec_total += usec
    cpu = after["cpu_s"] - before["cpu_s"]
    return {
        "events": events,
        "forks": after["forks"] - before["forks"],
        "commandstats_usec_per_event": round(usec_total / events, 2),
        "info_cpu_usec_per_event": round(1e6 * cpu / events, 2),
        "commands": per_command,
    }
