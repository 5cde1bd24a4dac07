"""The work-list index in Redis (the commit script, `feature_store/partition.lua`)
holds exactly what the in-memory store holds for the same commits: the same customers
in the same order, the same entries and paths, the same bound, on one Redis and on a
Redis Cluster."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import redis
from redis.cluster import RedisCluster

from feature_store.redis_store import RedisStateStore
from feature_store.store import Commit, MemoryStore, StateStore
from scoring import worklist
from scoring.worklist import LISTED
from tests.test_worklist import change

pytestmark = pytest.mark.integration

PARTITIONS = (0, 1)
SIZE = 8  # small, so that the bound drops customers


def commits(seed: int) -> Iterator[Commit]:
    """Random batches of changes (and erasures) over 30 customers, per partition."""
    rng = random.Random(seed)
    risk: dict[str, str | None] = {}
    for n in range(60):
        partition = rng.choice(PARTITIONS)
        changes, deleted = [], []
        for _ in range(rng.randint(0, 6)):
            customer = f"C{partition}-{rng.randint(0, 14)}"
            if rng.random() < 0.05:
                deleted.append(customer)
                risk[customer] = None
                continue
            after = rng.choice(["LOW", "MEDIUM", "HIGH"])
            changes.append(change(customer, risk.get(customer), after, rng.random(), day=n))
            risk[customer] = after
        yield Commit(
            partition,
            1,
            {"orders": n - 1},
            {"orders": n},
            None,
            listings=worklist.moves(changes, deleted),
            list_size=SIZE,
            path_bytes=worklist.PATH_BYTES,
        )


def apply(store: StateStore, seed: int) -> None:
    for p in PARTITIONS:
        store.claim(p)
    previous = {p: -1 for p in PARTITIONS}
    for c in commits(seed):
        c = Commit(**{**c.__dict__, "previous": {"orders": previous[c.partition]}})
        assert store.commit([c])[c.partition][0] == "committed"
        previous[c.partition] = c.offsets["orders"]


def contents(store: StateStore) -> dict[str, object]:
    found: dict[str, object] = {}
    for risk in LISTED:
        found[risk] = store.listed(PARTITIONS, *worklist.bounds(risk), 100)
        found[f"{risk} count"] = store.count_listed(PARTITIONS, *worklist.bounds(risk))
    for p in PARTITIONS:
        for i in range(15):
            found[f"C{p}-{i}"] = store.listing(p, f"C{p}-{i}")
    return found


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_redis_holds_the_same_work_list_as_memory(
    redis_url: str, namespace: str, seed: int
) -> None:
    memory, store = MemoryStore(), RedisStateStore(redis.Redis.from_url(redis_url), namespace)
    apply(memory, seed)
    apply(store, seed)
    expected = contents(memory)
    assert contents(store) == expected
    assert all(len(memory.partitions[p].listed) <= SIZE for p in PARTITIONS)
    assert expected["HIGH"] and expected["MEDIUM"], "the seed lists no one: a weak test"


def test_a_redis_cluster_holds_the_same_work_list_as_memory(
    redis_cluster_url: str, namespace: str
) -> None:
    cluster = RedisCluster.from_url(redis_cluster_url)
    store = RedisStateStore(cluster, namespace)
    try:
        memory = MemoryStore()
        apply(memory, 4)
        apply(store, 4)
        assert contents(store) == contents(memory)
    finally:
        store.delete_namespace()
        cluster.close()
