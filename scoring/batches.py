"""The batch log: what each committed batch was, and how a store behind it catches up.

Kafka is where a batch commits for the readers of `churn-risk`: its outputs and its
record (`schemas.BatchRecord`: the cut, the claim's epoch, the model and risk policy
that scored it) go out in one transaction per input partition, and only then is the
state committed to the store. A store is therefore never ahead of the log, and may be
behind it: by the one batch a crash caught between the two commits, or by every batch
whose writes the store lost (an AOF cut short, a replica promoted). The batches it is
behind are computed again exactly as they were cut and scored, and not published
again (`scoring.runner.BatchRunner.take`).

Nothing here imports Kafka: `BatchLog` is the port an adapter implements
(`stream_app.transactions`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Protocol

from schemas import BatchRecord
from scoring.model import Thresholds
from scoring.risk import Holdout, RiskPolicy, ValueTargeting


class BatchLog(Protocol):
    async def claim(self, partition: int, offsets: Mapping[str, int]) -> list[BatchRecord]:
        """Fence every earlier writer of the partition's batches (a transaction of
        theirs still open is aborted, none of theirs commits after this), then return
        the committed records of the batches that run past `offsets` (the store's),
        oldest first."""
        ...

    def release(self, partition: int) -> None:
        """The partition is no longer this worker's."""
        ...


class PartitionStopped(Exception):
    """A partition cannot be processed until an operator acts; the message says how.
    The worker goes on with its other partitions."""


class BatchLogGap(PartitionStopped):
    """The store is further behind than the batch log keeps."""


def policy_fingerprint(
    margin: float,
    actions: Mapping[str, Sequence[str]],
    targeting: Mapping[str, float] | None = None,
    holdout: Mapping[str, float | str] | None = None,
) -> str:
    """A short digest of the risk policy beyond the model's thresholds (which the
    model version pins): the hysteresis margin, the recommended actions, the value
    targeting and the holdout (each absent from the digest when off, as before it
    existed)."""
    policy: dict[str, object] = {
        "margin": margin,
        "actions": {k: list(v) for k, v in sorted(actions.items())},
    }
    if targeting is not None:
        policy["targeting"] = dict(targeting)
    if holdout is not None:
        policy["holdout"] = dict(holdout)
    canonical = json.dumps(policy, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def batch_record(
    partition: int,
    epoch: int,
    after: Mapping[str, int],
    through: Mapping[str, int],
    model_version: str,
    policy: RiskPolicy,
) -> BatchRecord:
    targeting = None if policy.targeting is None else asdict(policy.targeting)
    holdout = None if policy.holdout is None else asdict(policy.holdout)
    return BatchRecord(
        partition=partition,
        epoch=epoch,
        after=dict(after),
        through=dict(through),
        model_version=model_version,
        margin=policy.margin,
        actions={level: list(names) for level, names in policy.actions.items()},
        policy_fingerprint=policy_fingerprint(policy.margin, policy.actions, targeting, holdout),
        targeting=targeting,
        holdout=holdout,
    )


def recorded_policy(record: BatchRecord, thresholds: Thresholds) -> RiskPolicy:
    """The risk policy a record's batch was scored with (its model's `thresholds`)."""
    actions = {level: tuple(names) for level, names in record.actions.items()}
    targeting = None if record.targeting is None else ValueTargeting(**record.targeting)
    holdout = None
    if record.holdout is not None:
        holdout = Holdout(float(record.holdout["share"]), str(record.holdout["salt"]))
    return RiskPolicy(thresholds, record.margin, actions, targeting, holdout)


def beyond(offsets: Mapping[str, int], reference: Mapping[str, int]) -> bool:
    """`offsets` are past `reference` on some topic (a topic absent is at -1)."""
    return any(offset > reference.get(topic, -1) for topic, offset in offsets.items())


def same(offsets: Mapping[str, int], reference: Mapping[str, int]) -> bool:
    return not beyond(offsets, reference) and not beyond(reference, offsets)


def to_recover(
    partition: int, records: Sequence[BatchRecord], offsets: Mapping[str, int]
) -> list[BatchRecord]:
    """Of a partition's committed records (oldest first), those of the batches that run
    past the store's `offsets`; they must follow on from the store and from each
    other, else the store lost more than the log keeps (BatchLogGap)."""
    pending = [r for r in records if beyond(r.through, offsets)]
    expected: Mapping[str, int] = offsets
    for record in pending:
        if not same(record.after, expected):
            raise BatchLogGap(
                f"partition {partition}: the state store holds offsets {dict(offsets)}, "
                f"but the batch log's batches run on from {record.after}: the store "
                "lost more than the batch log keeps (every batch of the last "
                "BATCH_LOG_HOURS, schemas/topics.py). The partition is left alone "
                "(docs/operating.md, 'When a claim is refused')"
            )
        expected = record.through
    return pending


def check_within(
    partition: int, offsets: Mapping[str, int], bounds: Mapping[str, tuple[int, int]]
) -> None:
    """The store's last processed offsets must lie within each input log: not past its
    end (the topic was recreated or truncated: new messages would pass for
    redeliveries), and with nothing unprocessed before its start (deleted by
    retention before the worker read them). Raises PartitionStopped otherwise."""
    for topic, (start, end) in bounds.items():
        done = offsets.get(topic, -1)
        if done + 1 > end:
            problem = (
                f"the state store has processed {topic}-{partition} through offset {done}, "
                f"but its log ends at {end - 1}: the topic was recreated or truncated"
            )
        elif 0 <= done < start - 1:  # never processed (-1): from the log's start
            problem = (
                f"{topic}-{partition}'s log starts at offset {start}, but the state store "
                f"has processed it only through {done}: offsets {done + 1}..{start - 1} "
                "were deleted before they were processed"
            )
        else:
            continue
        raise PartitionStopped(
            f"partition {partition}: {problem}. The partition is left alone. To go on "
            "from the log as it is, stop the workers and set the recorded offset "
            "(docs/operating.md, 'When a claim is refused')"
        )
