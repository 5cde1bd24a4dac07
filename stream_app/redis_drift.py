"""The drift monitor's store in Redis (or Redis Cluster): `scoring.drift.DriftStore`.

The tallies are the partitions' own (`{ns:pN}:tally:drift:<version>:<slice>`, written
with each commit); the watermark is read off the partitions' meta hashes (`st`); the
alert book is one hash with a hash tag of its own, `{ns:drift}:alerts`, changed only
by `drift.lua`, a compare-and-set on its `cursor`. Every call is a pipeline of
single-key commands or one single-key script: valid on a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from typing import cast

import redis

from feature_store.keys import Keys
from feature_store.redis_store import read_tallies
from feature_store.store import Amounts
from scoring.drift import AlertBook, AlertState

DRIFT_SCRIPT = files("stream_app").joinpath("drift.lua").read_text()
ALERT_FIELD = "a:"


class RedisDriftStore:
    def __init__(self, client: redis.Redis | redis.RedisCluster, namespace: str = "churn") -> None:
        self.client = client
        self.keys = Keys(namespace)
        # One call at a time, never pipelined: redis-py's Script runs it by EVALSHA and
        # loads it again should the server have lost it (a restart), on a cluster too.
        self._compare_and_set = cast(redis.Redis, client).register_script(DRIFT_SCRIPT)

    def watermark(self, partitions: Collection[int]) -> float | None:
        pipe = self.client.pipeline(transaction=False)
        for partition in partitions:
            pipe.hget(self.keys.meta(partition), "st")
        times = [float(t) for t in pipe.execute() if t is not None]
        return min(times) if times else None

    def slices(self, partitions: Collection[int], names: Sequence[str]) -> list[list[Amounts]]:
        return read_tallies(self.client, self.keys, partitions, names)

    def drop(self, partitions: Collection[int], names: Sequence[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            for partition in partitions:
                pipe.delete(self.keys.tally(partition, name))
                pipe.delete(self.keys.hash_tally(partition, name))
        pipe.execute()

    def book(self) -> AlertBook:
        return _book(self.client.hgetall(self.keys.drift_alerts()))

    def advance(self, expected: int | None, book: AlertBook) -> bool:
        fields: list[str] = ["cursor", "" if book.cursor is None else str(book.cursor)]
        for subject, state in book.alerts.items():
            fields += [ALERT_FIELD + subject, json.dumps(state.to_json())]
        args = ["" if expected is None else str(expected), *fields]
        return bool(self._compare_and_set(keys=[self.keys.drift_alerts()], args=args))


def _book(fields: dict[bytes, bytes]) -> AlertBook:
    text = {k.decode(): v.decode() for k, v in fields.items()}
    cursor = text.get("cursor")
    alerts = {
        name[len(ALERT_FIELD) :]: AlertState.from_json(json.loads(value))
        for name, value in text.items()
        if name.startswith(ALERT_FIELD)
    }
    return AlertBook(int(cursor) if cursor else None, alerts)


@dataclass(frozen=True)
class DriftStatus:
    """The drift monitor's alerts, as the whole consumer group last judged them."""

    judged_through: datetime | None  # the end of the last slice judged
    alerts: dict[str, AlertState]  # feature (or score, risk_mix) -> its alert

    def raised(self) -> list[str]:
        return sorted(name for name, state in self.alerts.items() if state.raised)

    def states(self) -> dict[str, str]:
        """Each feature's alert in a word: raised, or ok (never raised, or cleared)."""
        return {name: "raised" if state.raised else "ok" for name, state in self.alerts.items()}


def drift_status(client: redis.Redis | redis.RedisCluster, namespace: str = "churn") -> DriftStatus:
    """The current drift alert state per feature, from Redis (for reports and operators:
    one read, no script)."""
    book = _book(client.hgetall(Keys(namespace).drift_alerts()))
    through = None if book.cursor is None else datetime.fromtimestamp(book.cursor, tz=UTC)
    return DriftStatus(through, book.alerts)
