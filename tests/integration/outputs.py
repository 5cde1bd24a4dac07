"""What the fault tests check, read as users read it: the changes on `churn-risk`
against a replay of the same input, and the features in the store against the
offline computation."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from feature_store.definitions import FEATURE_NAMES, FeatureParams, feature_matrix
from feature_store.offline import History, features_as_of
from feature_store.online import base_columns
from feature_store.redis_store import RedisStateStore
from schemas import topics
from scoring import worklist
from scoring.artifact import load_model
from scoring.risk import transition_id
from simulator.jsonl_sink import write_jsonl
from stream_app.partitioning import partition_of
from stream_app.replay import replay
from tests.support import consume, encode, produce

PARTITIONS = 4


def replayed_changes(
    events: Sequence[tuple[str, Any]], models: Path, tmp: Path, lines: Sequence[dict] = ()
) -> list[dict]:
    """The changes `python -m stream_app replay` publishes for `events` and the replay
    `lines` after them (in-process)."""
    events_file = tmp / "history.jsonl"
    write_jsonl(events, events_file)
    with events_file.open("a") as more:
        more.writelines(json.dumps(line) + "\n" for line in lines)
    out = io.BytesIO()
    replay(events_file, load_model(models), out, PARTITIONS, 500, 0.05)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def stream_in_background(
    bootstrap: str, prefix: str, events: Sequence[tuple[str, Any]], rate: float
) -> tuple[threading.Thread, threading.Event]:
    """Produce `events` at about `rate` per second from a thread; the event is set
    once all are acknowledged by Kafka."""
    done = threading.Event()
    messages = [(prefix + topic, event.customer_id, encode(event)) for topic, event in events]

    def stream() -> None:
        started = time.monotonic()
        for i in range(0, len(messages), 250):
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
            produce(bootstrap, messages[i : i + 250], **{"message.timeout.ms": 180_000})
        done.set()

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    return thread, done


def consume_all_changes(
    bootstrap: str, prefix: str, quiet: float = 15, store: RedisStateStore | None = None
) -> list[dict]:
    """Every change on `churn-risk`, once nothing new has come for `quiet` seconds and,
    given the worker's `store`, once it has committed every input message (a worker
    computing again batches committed in Kafka publishes nothing for a while)."""
    seen: list[dict] = []
    quiet_since = time.monotonic()
    deadline = time.monotonic() + 300
    behind = ["(not looked at)"]
    while time.monotonic() < deadline:
        batch = consume(bootstrap, [prefix + topics.CHURN_RISK], lambda m: False, timeout=5)
        if len(batch) > len(seen):
            seen = [json.loads(m.value()) for m in batch]
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > quiet:
            behind = [] if store is None else not_yet_stored(bootstrap, prefix, store)
            if not behind:
                return seen
    raise AssertionError(
        f"the worker kept publishing (or committing) for 5 minutes; {len(seen)} changes "
        f"read, the store behind the inputs at: {', '.join(behind) or 'nothing'}"
    )


def not_yet_stored(bootstrap: str, prefix: str, store: RedisStateStore) -> list[str]:
    """Each input topic-partition whose messages the store has not all committed, with
    the store's offset and the log's last."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    behind = []
    try:
        for partition in range(PARTITIONS):
            offsets = store.offsets(partition)
            for topic in topics.SOURCE_TOPICS:
                tp = TopicPartition(prefix + topic, partition)
                low, high = probe.get_watermark_offsets(tp, timeout=10, cached=False)
                if high > low and offsets.get(topic, -1) < high - 1:
                    behind.append(f"{topic}-{partition} {offsets.get(topic, -1)}/{high - 1}")
        return behind
    finally:
        probe.close()


def comparable(change: dict) -> str:
    """A change's content: all but `scored_at`, the wall clock of scoring."""
    return json.dumps({k: v for k, v in change.items() if k != "scored_at"}, sort_keys=True)


def assert_exactly_once(
    live: Sequence[dict], expected: Sequence[dict], store: RedisStateStore
) -> dict[str, int]:
    """`live` as a read_committed reader of `churn-risk` received it: no message twice;
    each customer's changes are their 1st..n-th, in that order, none missing, n as
    their state in the store records it; they are the replay's, content for content.
    Returns counts for the closing note."""
    contents: dict[str, str] = {}
    ids_of: dict[str, list[str]] = {}
    for change in live:
        content = comparable(change)
        assert change["event_id"] not in contents, f"{change['event_id']} was received twice" + (
            "" if contents[change["event_id"]] == content else ", with two contents"
        )
        contents[change["event_id"]] = content
        ids_of.setdefault(change["customer_id"], []).append(change["event_id"])
    customers = sorted({c["customer_id"] for c in expected} | ids_of.keys())
    for customer in customers:
        state = store.read(partition_of(customer, PARTITIONS), [customer]).get(customer)
        assert state is not None, f"{customer} has changes but no state in the store"
        sequence = [transition_id(customer, n, state.origin) for n in range(1, state.risk_seq + 1)]
        gaps = set(sequence) - set(ids_of.get(customer, []))
        assert not gaps, f"{customer}: {len(gaps)} of changes 1..{state.risk_seq} missing"
        assert ids_of.get(customer, []) == sequence, f"{customer}: changes out of order or beyond"
    wanted = {c["event_id"]: comparable(c) for c in expected}
    missing = sorted(wanted.keys() - contents.keys())
    extra = sorted(contents.keys() - wanted.keys())
    differ = sorted(i for i in wanted.keys() & contents.keys() if wanted[i] != contents[i])
    assert not missing, f"{len(missing)} of the replay's changes missing, e.g. {missing[:3]}"
    assert not extra and not differ, (
        f"{len(extra)} ids the replay does not have, {len(differ)} with other contents; "
        f"e.g. live {contents[(extra or differ)[0]]}, replay {wanted.get((extra or differ)[0])}"
    )
    return {"changes": len(contents), "customers": len(ids_of)}


def assert_features_exact(store: RedisStateStore, events: Sequence[tuple[str, Any]]) -> None:
    """Every customer's features in the store equal the offline computation."""
    customers = {e.customer_id for t, e in events if t != topics.CUSTOMERS}
    states = [
        state
        for c in sorted(customers)
        for state in store.read(partition_of(c, PARTITIONS), [c]).values()
    ]
    assert {s.customer_id for s in states} == customers
    as_of = [s.seen for s in states if s.seen is not None]
    online = feature_matrix(base_columns(states, as_of), FeatureParams())
    offline = features_as_of(
        History.from_events(events), pd.Series(as_of, index=[s.customer_id for s in states])
    ).to_numpy()
    for j, name in enumerate(FEATURE_NAMES):
        np.testing.assert_allclose(
            online[:, j], offline[:, j], rtol=1e-9, atol=0, equal_nan=True, err_msg=name
        )


def everything_on(bootstrap: str, topic: str) -> list[Any]:
    """Every message a read_committed reader finds on `topic` now: read from the start
    to the end of each partition (transaction markers take offsets too)."""
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"probe-{time.monotonic_ns()}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    messages: list[Any] = []
    ended: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while len(ended) < PARTITIONS:
            assert time.monotonic() < deadline, f"{topic}: no end after 60 s"
            message = reader.poll(1.0)
            if message is None:
                continue
            error = message.error()
            if error is None:
                messages.append(message)
            elif error.code() == KafkaError._PARTITION_EOF:
                ended.add(message.partition())
    finally:
        reader.close()
    return messages


def assert_current_risk(
    bootstrap: str, prefix: str, store: RedisStateStore, customers: Sequence[str]
) -> int:
    """A subscriber that starts now and reads `churn-risk-current` from the start has
    every customer's current category, as the store holds it: the latest change of
    each (a tombstone: state deleted; absent: never flagged, so LOW or no state).
    Returns the number of customers the topic holds."""
    latest: dict[str, str] = {}
    for message in everything_on(bootstrap, prefix + topics.CHURN_RISK_CURRENT):
        customer = message.key().decode()
        if message.value() is None:
            latest.pop(customer, None)
        else:
            latest[customer] = json.loads(message.value())["risk"]
    by_partition: dict[int, list[str]] = {}
    for customer in customers:
        by_partition.setdefault(partition_of(customer, PARTITIONS), []).append(customer)
    differ = []
    for partition, ids in by_partition.items():
        states = store.read(partition, ids)
        for customer in ids:
            state = states.get(customer)
            held = None if state is None else state.risk
            told = latest.get(customer)
            if told != held and not (told is None and held == "LOW"):
                differ.append((customer, told, held))
    assert not differ, f"{len(differ)} customers' current risk differs, e.g. {differ[:3]}"
    return len(latest)


def assert_worklist(live: Sequence[dict], store: RedisStateStore) -> int:
    """The store's work-list is the HIGH and MEDIUM slice of each customer's latest
    change on `churn-risk` (bounded per partition), and each listed customer's path is
    their changes since they were listed, each once. Returns the number listed."""
    latest: dict[str, dict] = {}
    since_listed: dict[str, list[dict]] = {}
    for change in live:
        customer = change["customer_id"]
        latest[customer] = change
        listed = change["risk"] in worklist.LISTED
        since_listed[customer] = [*since_listed.get(customer, []), change] if listed else []
    expected: dict[int, list[tuple[float, str]]] = {}
    for customer, change in latest.items():
        partition = partition_of(customer, PARTITIONS)
        if change["risk"] in worklist.LISTED and store.read(partition, [customer]):
            place = worklist.score(change["risk"], change["probability"])
            expected.setdefault(partition, []).append((place, customer))
    count = 0
    for partition in range(PARTITIONS):
        kept = sorted(expected.get(partition, []), reverse=True)[: worklist.DEFAULT_SIZE]
        found = store.listed([partition], 0.0, 5.0, worklist.DEFAULT_SIZE + 1)
        assert [(place, c) for _, c, place, _, _ in found] == kept, f"partition {partition}"
        for _, customer, _, entry, path in found:
            item, change = worklist.decode(entry), latest[customer]
            assert (item.risk, item.probability) == (change["risk"], change["probability"])
            assert item.since == datetime.fromisoformat(change["event_time"]).timestamp()
            steps = [(s.risk, s.probability) for s in worklist.decode_path(path)]
            told = [(c["risk"], c["probability"]) for c in since_listed[customer]]
            assert steps == told[-worklist.PATH_LENGTH :], customer
        count += len(found)
    return count
