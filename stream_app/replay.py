"""`python -m stream_app replay FILE`: the batch runner over a historical event file.

No Kafka and no Redis: the lines of a JSON-lines file (`{"topic", "key", "value"}`,
as written by `python -m simulator jsonl`) stand in for messages. Each goes to the
partition Kafka's default partitioner would choose for its key, at the next offset
of that partition, so the runner sees what a live worker reads; the state lives in
memory (`feature_store.store.MemoryStore`). The same runner, merge and scorer as the live
worker: the same changes with the same ids. With `--drift-alerts FILE`, the drift
monitor runs too (CHURN_DRIFT_* settings), judging after every batch as the live
group does, and its alerts go to FILE.
"""

from __future__ import annotations

import asyncio
import gzip
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, cast

import msgspec

from feature_store.store import MemoryStore
from schemas import ChurnRiskChanged, DeadLetter, topics
from scoring.campaign import campaign_tally
from scoring.decoding import InputDecoder, Limits
from scoring.drift import DriftConfig, DriftMonitor, DriftTally, Judgement, MemoryDriftStore
from scoring.merge import InputMessage
from scoring.model import Model
from scoring.pipeline import Scorer
from scoring.risk import Holdout, ValueTargeting
from scoring.runner import BatchRunner, Collector, StepReport, TallySource, run_backlog
from stream_app.partitioning import partition_of

DEFAULT_HOLDOUT = Holdout()  # as the settings' defaults: the live worker's outputs


class _Line(msgspec.Struct):
    topic: str
    key: str | None
    value: msgspec.Raw  # null: a tombstone
    timestamp: float | None = None  # the broker's (epoch s); None: the wall clock bounds times
    partition: int | None = None  # a keyless message's (a tick's); else the key's


def messages(path: Path, partitions: int) -> Iterator[InputMessage]:
    """The file's lines as the messages Kafka would deliver."""
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
            if record.partition is not None:
                partition = record.partition
            else:
                partition = partition_of(key, partitions) if key else 0
            offset = offsets.get((record.topic, partition), 0)
            offsets[(record.topic, partition)] = offset + 1
            raw = bytes(record.value)
            value = None if raw == b"null" else raw
            yield InputMessage(record.topic, partition, offset, key, value, record.timestamp)


class FileSink(Collector):
    """Writes each change as a JSON line; dead letters go to stderr."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.messages = 0
        self.changes = 0
        self.dead_letters = 0

    def collect(
        self, changes: Sequence[ChurnRiskChanged], dead_letters: Sequence[DeadLetter]
    ) -> None:
        for change in changes:
            self.out.write(msgspec.json.encode(change) + b"\n")
        for letter in dead_letters:
            print(f"dead letter: {letter.topic}@{letter.offset}: {letter.reason}", file=sys.stderr)
        self.changes += len(changes)
        self.dead_letters += len(dead_letters)


def replay(
    path: Path,
    model: Model,
    out: IO[bytes],
    partitions: int,
    batch_size: int,
    margin: float,
    actions: dict[str, tuple[str, ...]] | None = None,
    limits: Limits | None = None,
    drift: DriftConfig | None = None,
    alerts: IO[bytes] | None = None,
    retention_days: int = 0,
    targeting: ValueTargeting | None = None,
    holdout: Holdout | None = DEFAULT_HOLDOUT,
) -> dict[str, int]:
    """Run the batch runner over `path`, writing each risk change to `out`; with
    `drift` (and a model with a drift reference), the drift monitor too, writing its
    alerts to `alerts`."""
    sink = FileSink(out)
    judged = replay_stream(
        messages(path, partitions),
        model,
        sink,
        partitions,
        batch_size,
        margin,
        actions,
        limits,
        drift,
        retention_days,
        targeting,
        holdout,
    )
    raised = [alert for judgement in judged for alert in judgement.alerts]
    if alerts is not None:
        alerts.writelines(msgspec.json.encode(alert) + b"\n" for alert in raised)
    return {
        "messages": sink.messages,
        "changes": sink.changes,
        "dead_letters": sink.dead_letters,
        "drift_alerts": len(raised),
    }


def replay_stream(
    stream: Iterable[InputMessage],
    model: Model,
    sink: FileSink,
    partitions: int,
    batch_size: int,
    margin: float,
    actions: dict[str, tuple[str, ...]] | None = None,
    limits: Limits | None = None,
    drift: DriftConfig | None = None,
    retention_days: int = 0,
    targeting: ValueTargeting | None = None,
    holdout: Holdout | None = DEFAULT_HOLDOUT,
    store: MemoryStore | None = None,
) -> list[Judgement]:
    """The runner over `stream` on the in-memory `store` (a new one by default), as the
    live worker runs it, the HIGH campaign's tally too: and, given `drift`, its drift
    monitor, judging after every batch. Returns what it judged."""
    store = MemoryStore() if store is None else store
    tallies: list[TallySource] = [campaign_tally]
    judged: list[Judgement] = []
    judge: Callable[[StepReport], None] | None = None
    if drift is not None and model.drift is not None:
        reference = model.drift
        tallies.append(DriftTally(lambda version: reference, drift))
        monitor = DriftMonitor(drift, range(partitions), MemoryDriftStore(store))

        def judge(report: StepReport) -> None:
            while (judgement := monitor.judge(reference, model.version)) is not None:
                monitor.commit(judgement)
                judged.append(judgement)

    runner = BatchRunner(
        store,
        Scorer(
            lambda: model,
            margin=margin,
            actions=actions,
            decoder=InputDecoder(limits),
            retention_days=retention_days,
            targeting=targeting,
            holdout=holdout,
        ),
        sink,
        topics.SOURCE_TOPICS,
        tallies=tallies,
    )
    for partition in range(partitions):
        runner.assign(partition)
    sink.messages = asyncio.run(run_backlog(runner, stream, batch_size, judge))
    return judged


def _open(path: Path) -> IO[bytes]:
    return cast(IO[bytes], gzip.open(path, "rb")) if path.suffix == ".gz" else path.open("rb")
