"""`python -m stream_app replay FILE`: the scoring core over a historical event file.

No Kafka: the lines of a JSON-lines file (`{"topic", "key", "value"}`, as written by
`python -m simulator jsonl`) stand in for messages. Each goes to the partition Kafka's
default partitioner would choose for its key, at the next offset of that partition,
so the core sees what a live worker would see and publishes the same changes with
the same ids. Features are kept in a fresh Redis namespace, removed at the end.
"""

from __future__ import annotations

import gzip
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

import msgspec
import redis
from aiokafka.partitioner import DefaultPartitioner

from feature_store.redis_store import RedisFeatureStore
from scoring.artifact import Model
from scoring.pipeline import InputMessage, Scorer


class _Line(msgspec.Struct):
    topic: str
    key: str | None
    value: msgspec.Raw


def messages(path: Path, partitions: int) -> Iterator[InputMessage]:
    """The file's lines as the messages Kafka would deliver."""
    choose = DefaultPartitioner()
    all_partitions = list(range(partitions))
    offsets: dict[tuple[str, int], int] = {}
    decoder = msgspec.json.Decoder(_Line)
    with _open(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = decoder.decode(line)
            except msgspec.DecodeError as err:
                raise SystemExit(f"{path}:{number}: not a replay line ({err})") from err
            key = None if record.key is None else record.key.encode()
            partition = choose(key, all_partitions, all_partitions) if key else 0
            offset = offsets.get((record.topic, partition), 0)
            offsets[(record.topic, partition)] = offset + 1
            yield InputMessage(record.topic, partition, offset, key, bytes(record.value))


def replay(
    path: Path,
    client: redis.Redis,
    model: Model,
    out: IO[bytes],
    partitions: int,
    batch_size: int,
    margin: float,
    actions: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, int]:
    """Run the core over `path`, writing each risk change to `out` as a JSON line."""
    store = RedisFeatureStore(client, namespace=f"replay-{uuid.uuid4().hex[:8]}")
    scorer = Scorer(store, lambda: model, margin=margin, actions=actions)
    counts = {"messages": 0, "changes": 0, "dead_letters": 0}
    batch: list[InputMessage] = []
    try:
        for message in messages(path, partitions):
            batch.append(message)
            if len(batch) >= batch_size:
                _process(scorer, batch, out, counts)
                batch = []
        _process(scorer, batch, out, counts)
    finally:
        keys = list(client.scan_iter(match=f"{store.namespace}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    return counts


def _process(
    scorer: Scorer, batch: list[InputMessage], out: IO[bytes], counts: dict[str, int]
) -> None:
    if not batch:
        return
    outcome = scorer.process(batch)
    for change in outcome.changes:
        out.write(msgspec.json.encode(change) + b"\n")
    for letter in outcome.dead_letters:
        print(f"dead letter: {letter.topic}@{letter.offset}: {letter.reason}", file=sys.stderr)
    scorer.commit(outcome)
    counts["messages"] += len(batch)
    counts["changes"] += len(outcome.changes)
    counts["dead_letters"] += len(outcome.dead_letters)


def _open(path: Path) -> IO[bytes]:
    return cast(IO[bytes], gzip.open(path, "rb")) if path.suffix == ".gz" else path.open("rb")
