"""The state store in Redis (or Redis Cluster): the `feature_store.store.StateStore` port.

A batch costs a pipelined read (plus one for customers only due for a rescore) and
two fenced scripts per partition, each a single-slot `partition.lua` call
(`feature_store.keys` has the layout). No script runs per event: events are applied
in Python, from the one feature definition.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from importlib.resources import files
from typing import Any, cast

import msgspec
import redis

from feature_store.keys import Keys
from feature_store.online import CustomerState, decode_state, encode_state
from feature_store.store import Begin, Claim, Commit, Loaded, Verdict, sample_customer

PARTITION_SCRIPT = files("feature_store").joinpath("partition.lua").read_text()
_MSGPACK = msgspec.msgpack.Encoder()
_FLIGHT = msgspec.msgpack.Decoder(dict[str, int])


class RedisStateStore:
    def __init__(self, client: redis.Redis | redis.RedisCluster, namespace: str = "churn") -> None:
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError(
                "RedisStateStore needs a client without decode_responses (states are bytes)"
            )
        self.client = client
        self.keys = Keys(namespace)
        # Called as EVALSHA commands, not as a registered Script: redis-py refuses to
        # pipeline registered scripts on Redis Cluster, and on one Redis it would
        # check SCRIPT EXISTS before every pipeline (a round trip per batch).
        self._sha = self._load_script()

    def _load_script(self) -> str:
        # On a cluster, redis-py loads it on every primary. The stubs lag behind.
        return str(cast(redis.Redis, self.client).script_load(PARTITION_SCRIPT))

    def _run_scripts(self, calls: list[tuple[list[str], list[Any]]]) -> list[str]:
        """Run `partition.lua` once per (keys, args), in one pipelined round trip.
        A server that lost its script cache (a restart) gets it again and the calls
        are run again: each is fenced and idempotent."""
        for _attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.execute_command("EVALSHA", self._sha, len(keys), *keys, *args)
            replies = pipe.execute(raise_on_error=False)
            if not any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
                break
            self._sha = self._load_script()
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return [r.decode() for r in replies]

    def claim(self, partition: int) -> Claim:
        meta = self.keys.meta(partition)
        # No MULTI needed: once the epoch is raised no other worker can write here, so
        # what is read after it is what the partition holds.
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(meta, "epoch", 1)
        pipe.hgetall(meta)
        epoch, fields = pipe.execute()
        text = {k.decode(): v for k, v in fields.items()}
        offsets = {k[4:]: int(v) for k, v in text.items() if k.startswith("off:")}
        stream_time = float(text["st"]) if "st" in text else None
        flight = _FLIGHT.decode(text["flight"]) if "flight" in text else None
        return Claim(partition, int(epoch), offsets, stream_time, flight)

    def load(self, wanted: Mapping[int, tuple[Collection[str], float | None]]) -> dict[int, Loaded]:
        pipe = self.client.pipeline(transaction=False)
        order = []
        for partition, (customer_ids, due_before) in wanted.items():
            ids = list(customer_ids)
            order.append((partition, ids, due_before is not None))
            if ids:
                _mget(pipe, [self.keys.customer(partition, c) for c in ids])
            if due_before is not None:
                # Exclusive: a rescore fires once stream time has passed it.
                pipe.zrangebyscore(
                    self.keys.idle(partition), "-inf", f"({due_before!r}", withscores=True
                )
                pipe.zrangebyscore(self.keys.samples(partition), "-inf", f"({due_before!r}")
        replies = iter(pipe.execute())
        loaded: dict[int, Loaded] = {}
        missing: list[tuple[int, list[str]]] = []
        for partition, ids, with_due in order:
            states = _states(ids, next(replies)) if ids else {}
            due = [(float(t), c.decode()) for c, t in next(replies)] if with_due else []
            samples = [m.decode() for m in next(replies)] if with_due else []
            loaded[partition] = (states, due, samples)
            owners = {c for _, c in due} | set(map(sample_customer, samples))
            unread = sorted(owners - set(ids))
            if unread:
                missing.append((partition, unread))
        if missing:
            pipe = self.client.pipeline(transaction=False)
            for partition, ids in missing:
                _mget(pipe, [self.keys.customer(partition, c) for c in ids])
            for (partition, ids), blobs in zip(missing, pipe.execute(), strict=True):
                loaded[partition][0].update(_states(ids, blobs))
        return loaded

    def begin(self, batches: Collection[Begin]) -> dict[int, Verdict]:
        calls = []
        for b in batches:
            header = {"previous": _text(b.previous), "offsets": {}, "schedule": []}
            args = ["begin", b.epoch, _MSGPACK.encode(header), _MSGPACK.encode(b.through)]
            calls.append(([self.keys.meta(b.partition)], args))
        verdicts = self._run_scripts(calls)
        return {b.partition: cast(Verdict, v) for b, v in zip(batches, verdicts, strict=True)}

    def commit(self, commits: Collection[Commit]) -> dict[int, Verdict]:
        calls = []
        for c in commits:
            header: dict[str, Any] = {
                "previous": _text(c.previous),
                "offsets": _text(c.offsets),
                "schedule": [
                    (customer, False if due is None else repr(due))
                    for customer, due in c.schedule.items()
                ],
            }
            if c.stream_time is not None:
                header["stream_time"] = repr(c.stream_time)
            if c.erased:
                header["erased"] = len(c.erased)
            if c.samples:
                header["samples"] = [
                    (member, False if due is None else repr(due))
                    for member, due in c.samples.items()
                ]
            if c.tallies:
                header["tallies"] = [
                    (t.ttl, [x for key, amount in t.amounts.items() for x in (key, repr(amount))])
                    for t in c.tallies.values()
                ]
            keys = [
                self.keys.meta(c.partition),
                self.keys.idle(c.partition),
                *(self.keys.customer(c.partition, s.customer_id) for s in c.states),
                *(self.keys.customer(c.partition, customer) for customer in c.erased),
                *(self.keys.tally(c.partition, name) for name in c.tallies),
                self.keys.samples(c.partition),
            ]
            args = ["commit", c.epoch, _MSGPACK.encode(header), *map(encode_state, c.states)]
            calls.append((keys, args))
        verdicts = self._run_scripts(calls)
        return {c.partition: cast(Verdict, v) for c, v in zip(commits, verdicts, strict=True)}

    def read(self, partition: int, customer_ids: Collection[str]) -> dict[str, CustomerState]:
        ids = list(customer_ids)
        if not ids:
            return {}
        return _states(ids, self.client.mget([self.keys.customer(partition, c) for c in ids]))

    def snapshot(
        self, partition: int, customer_ids: Collection[str]
    ) -> tuple[dict[str, CustomerState], float | None]:
        ids = list(customer_ids)
        pipe = self.client.pipeline(transaction=False)  # one round trip, one hash tag
        pipe.hget(self.keys.meta(partition), "st")
        if ids:
            _mget(pipe, [self.keys.customer(partition, c) for c in ids])
        replies = pipe.execute()
        states = _states(ids, replies[1]) if ids else {}
        return states, None if replies[0] is None else float(replies[0])

    def tallies(self, partitions: Collection[int], name: str) -> dict[str, float]:
        pipe = self.client.pipeline(transaction=False)
        for partition in partitions:
            pipe.hgetall(self.keys.tally(partition, name))
        total: dict[str, float] = {}
        for fields in pipe.execute():
            for key, amount in fields.items():
                k = key.decode()
                total[k] = total.get(k, 0.0) + float(amount)
        return total

    def offsets(self, partition: int) -> dict[str, int]:
        """The offsets recorded for a partition (for tests and operators)."""
        fields = self.client.hgetall(self.keys.meta(partition))
        return {k.decode()[4:]: int(v) for k, v in fields.items() if k.startswith(b"off:")}

    def scan(self) -> Iterator[bytes]:
        return self.client.scan_iter(match=self.keys.pattern, count=1000)

    def delete_namespace(self) -> int:
        """Remove every key of the namespace; returns how many were removed."""
        removed, batch = 0, []
        for key in self.scan():
            batch.append(key)
            if len(batch) == 1000:
                removed += int(self.client.delete(*batch))
                batch = []
        if batch:
            removed += int(self.client.delete(*batch))
        return removed


def _mget(pipe: Any, keys: list[str]) -> None:
    # As a raw command: redis-py's cluster pipeline refuses `mget()` (keys could span
    # slots), but these share one hash tag, so one node answers them all.
    pipe.execute_command("MGET", *keys)


def _states(ids: list[str], blobs: list[bytes | None]) -> dict[str, CustomerState]:
    return {c: decode_state(b) for c, b in zip(ids, blobs, strict=True) if b is not None}


def _text(offsets: Mapping[str, int]) -> dict[str, str]:
    # Offsets travel as text: Lua numbers print large integers in exponent form.
    return {topic: str(offset) for topic, offset in offsets.items()}
