"""The state store in Redis (or Redis Cluster): the `feature_store.store.StateStore` port.

A batch costs two round trips: `begin`, a fenced script per partition pipelined with
an MGET of the states the owner has not seen, and `commit`, one fenced script per
partition; each script is a single-slot `partition.lua` call (`feature_store.keys`
has the layout). No script runs per event: events are applied in Python, from the
one feature definition. A tally is one MessagePack map per name, which the commit
script adds to in one GET and one SET, not a command per counter.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from importlib.resources import files
from typing import Any, cast

import msgspec
import redis

from feature_store.keys import Keys
from feature_store.online import CustomerState, decode_state
from feature_store.store import (
    Amounts,
    Begin,
    Begun,
    Claim,
    Commit,
    Committed,
    Listed,
    Listing,
    Tally,
    Verdict,
    added,
)

PARTITION_SCRIPT = files("feature_store").joinpath("partition.lua").read_text()
_MSGPACK = msgspec.msgpack.Encoder()
_FLIGHT = msgspec.msgpack.Decoder(dict[str, int])
_AMOUNTS = msgspec.msgpack.Decoder(dict[str, float] | list[float])


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

    def _run_scripts(
        self,
        calls: list[tuple[list[str], list[Any]]],
        reads: Sequence[tuple[int, Sequence[str]]] = (),
    ) -> tuple[list[Any], list[list[bytes | None]]]:
        """Run `partition.lua` once per (keys, args), and MGET each partition's
        customers of `reads`, in one pipelined round trip: the scripts' raw replies,
        and the states read. A server that lost its script cache (a restart) gets it
        again and the calls are run again: each is fenced and idempotent."""
        for _attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.execute_command("EVALSHA", self._sha, len(keys), *keys, *args)
            for partition, customers in reads:
                _mget(pipe, [self.keys.customer(partition, c) for c in customers])
            replies = pipe.execute(raise_on_error=False)
            if not any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
                break
            self._sha = self._load_script()
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return list(replies[: len(calls)]), replies[len(calls) :]

    def epoch(self, partition: int) -> int:
        return int(self.client.hget(self.keys.meta(partition), "epoch") or 0)

    def claim(self, partition: int) -> Claim:
        meta = self.keys.meta(partition)
        # No MULTI needed: once the epoch is raised no other worker can write here, so
        # what is read after it is what the partition holds.
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(meta, "epoch", 1)
        pipe.hgetall(meta)
        pipe.zrange(self.keys.idle(partition), 0, -1, withscores=True)
        pipe.zrange(self.keys.samples(partition), 0, -1, withscores=True)
        epoch, fields, schedule, samples = pipe.execute()
        text = {k.decode(): v for k, v in fields.items()}
        offsets = {k[4:]: int(v) for k, v in text.items() if k.startswith("off:")}
        stream_time = float(text["st"]) if "st" in text else None
        flight = _FLIGHT.decode(text["flight"]) if "flight" in text else None
        return Claim(
            partition,
            int(epoch),
            offsets,
            stream_time,
            flight,
            {c.decode(): float(t) for c, t in schedule},
            {m.decode(): float(t) for m, t in samples},
        )

    def begin(self, batches: Collection[Begin]) -> dict[int, Begun]:
        """The fenced scripts and the reads, in one pipelined round trip."""
        scripts = []
        for b in batches:
            header = {"previous": _text(b.previous), "offsets": {}}
            args = ["begin", b.epoch, _MSGPACK.encode(header), _MSGPACK.encode(b.through)]
            scripts.append(([self.keys.meta(b.partition)], args))
        reads = [(b.partition, b.customers) for b in batches if b.customers]
        verdicts, blobs = self._run_scripts(scripts, reads)
        begun: dict[int, Begun] = {
            b.partition: (cast(Verdict, v.decode()), {})
            for b, v in zip(batches, verdicts, strict=True)
        }
        for (partition, customers), found in zip(reads, blobs, strict=True):
            begun[partition][1].update(
                (c, blob) for c, blob in zip(customers, found, strict=True) if blob is not None
            )
        return begun

    def commit(self, commits: Collection[Commit]) -> dict[int, Committed]:
        calls = [self._commit_call(c) for c in commits]
        replies, _ = self._run_scripts(calls)
        return {c.partition: _committed(c, r) for c, r in zip(commits, replies, strict=True)}

    def _commit_call(self, c: Commit) -> tuple[list[str], list[Any]]:
        header: dict[str, Any] = {
            "previous": _text(c.previous),
            "offsets": _text(c.offsets),
            "states": len(c.states),
        }
        if c.stream_time is not None:
            header["stream_time"] = repr(c.stream_time)
        if c.erased:
            header["erased"] = len(c.erased)
        header["schedule"], header["unscheduled"] = _moves(c.schedule)
        header["samples"], header["decided"] = _moves(c.samples)
        header["listed"], header["unlisted"], listed = _listings(c.listings)
        header["list_size"], header["path_bytes"] = c.list_size, c.path_bytes
        header["tallies"] = [
            (t.ttl, _how(t), t.amounts if t.sparse else {}) for t in c.tallies.values()
        ]
        keys = [
            self.keys.meta(c.partition),
            self.keys.idle(c.partition),
            *(self.keys.customer(c.partition, customer) for customer in c.states),
            *(self.keys.customer(c.partition, customer) for customer in c.erased),
            *(
                (self.keys.hash_tally if t.sparse else self.keys.tally)(c.partition, name)
                for name, t in c.tallies.items()
            ),
            self.keys.samples(c.partition),
            self.keys.listed(c.partition),
            self.keys.work(c.partition),
            self.keys.path(c.partition),
        ]
        values = [_MSGPACK.encode(t.amounts) for t in c.tallies.values() if not t.sparse]
        args = ["commit", c.epoch, _MSGPACK.encode(header), *c.states.values(), *values, *listed]
        return keys, args

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

    def stream_times(self, partitions: Collection[int]) -> dict[int, float | None]:
        """Each partition's committed stream time (None: no event yet)."""
        pipe = self.client.pipeline(transaction=False)
        for partition in partitions:
            pipe.hget(self.keys.meta(partition), "st")
        replies = pipe.execute()
        return {
            p: None if t is None else float(t) for p, t in zip(partitions, replies, strict=True)
        }

    def tallies(self, partitions: Collection[int], name: str) -> dict[str, float]:
        total: dict[str, float] = {}
        for part in read_tallies(self.client, self.keys, partitions, [name])[0]:
            if isinstance(part, dict):
                total = cast(dict[str, float], added(total, part))
        return total

    def listed(
        self, partitions: Collection[int], lowest: float, highest: float, limit: int
    ) -> list[Listed]:
        order = list(partitions)
        pipe = self.client.pipeline(transaction=False)
        for p in order:
            pipe.zrevrangebyscore(self.keys.listed(p), highest, lowest, 0, limit, withscores=True)
        ranked: list[list[tuple[bytes, float]]] = pipe.execute()
        pipe = self.client.pipeline(transaction=False)
        for p, found in zip(order, ranked, strict=True):
            customers = [c for c, _ in found]
            if customers:
                pipe.hmget(self.keys.work(p), customers)
                pipe.hmget(self.keys.path(p), customers)
        details = iter(pipe.execute())
        out: list[Listed] = []
        for p, found in zip(order, ranked, strict=True):
            if not found:
                continue
            entries, paths = next(details), next(details)
            for (customer, place), entry, path in zip(found, entries, paths, strict=True):
                if entry is not None:  # unlisted between the two reads
                    out.append((p, customer.decode(), float(place), entry, path or b""))
        return out

    def count_listed(self, partitions: Collection[int], lowest: float, highest: float) -> int:
        pipe = self.client.pipeline(transaction=False)
        for p in partitions:
            pipe.zcount(self.keys.listed(p), lowest, highest)
        return sum(pipe.execute())

    def listing(self, partition: int, customer_id: str) -> Listed | None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zscore(self.keys.listed(partition), customer_id)
        pipe.hget(self.keys.work(partition), customer_id)
        pipe.hget(self.keys.path(partition), customer_id)
        place, entry, path = pipe.execute()
        if place is None or entry is None:
            return None
        return partition, customer_id, float(place), entry, path or b""

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


def read_tallies(
    client: redis.Redis | redis.RedisCluster,
    keys: Keys,
    partitions: Collection[int],
    names: Sequence[str],
) -> list[list[Amounts]]:
    """Each named tally's parts over the partitions, in one round trip: a partition's
    value, and its hash of counters where one was written (realised performance's;
    every tally's until December 2026, kept until it expires)."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        for partition in partitions:
            pipe.get(keys.tally(partition, name))
            pipe.hgetall(keys.hash_tally(partition, name))
    replies = iter(pipe.execute())
    found = []
    for _name in names:
        parts: list[Amounts] = []
        for _partition in partitions:
            blob, fields = next(replies), next(replies)
            if blob:
                parts.append(_AMOUNTS.decode(blob))
            if fields:
                parts.append({k.decode(): float(v) for k, v in fields.items()})
        found.append(parts)
    return found


def _mget(pipe: Any, keys: list[str]) -> None:
    # As a raw command: redis-py's cluster pipeline refuses `mget()` (keys could span
    # slots), but these share one hash tag, so one node answers them all.
    pipe.execute_command("MGET", *keys)


def _states(ids: list[str], blobs: list[bytes | None]) -> dict[str, CustomerState]:
    return {c: decode_state(b) for c, b in zip(ids, blobs, strict=True) if b is not None}


def _how(tally: Tally) -> str:
    return "each" if tally.sparse else "whole" if tally.whole else "add"


def _committed(commit: Commit, reply: Any) -> Committed:
    """A commit script's reply: its verdict, and the value of each tally it added to."""
    if not isinstance(reply, list):
        return cast(Verdict, reply.decode()), {}
    adds = [(name, t) for name, t in commit.tallies.items() if not (t.sparse or t.whole)]
    values = {
        name: t.amounts if blob is None else _AMOUNTS.decode(blob)
        for (name, t), blob in zip(adds, reply[1:], strict=True)
    }
    return cast(Verdict, reply[0].decode()), values


def _moves(entries: Mapping[str, float | None]) -> tuple[list[str], list[str]]:
    """A sorted set's changes: (due, member) pairs to add, flat as ZADD takes them
    (dues as text: Lua numbers would print them rounded), and members to remove."""
    added: list[str] = []
    removed: list[str] = []
    for member, due in entries.items():
        if due is None:
            removed.append(member)
        else:
            added += (repr(due), member)
    return added, removed


def _listings(
    listings: Mapping[str, Listing | None],
) -> tuple[list[Any], list[str], list[bytes]]:
    """Listings as the commit script takes them: flat (customer, score, fresh) runs to
    list, the customers to unlist, and the listed ones' entries and steps (arguments
    of their own: the script's MessagePack decoder takes no binary)."""
    listed: list[Any] = []
    unlisted = []
    blobs: list[bytes] = []
    for customer, listing in listings.items():
        if listing is None:
            unlisted.append(customer)
        else:
            listed += [customer, repr(listing.score), int(listing.fresh)]
            blobs += [listing.entry, listing.steps]
    return listed, unlisted, blobs


def _text(offsets: Mapping[str, int]) -> dict[str, str]:
    # Offsets travel as text: Lua numbers print large integers in exponent form.
    return {topic: str(offset) for topic, offset in offsets.items()}
