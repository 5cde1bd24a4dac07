"""What the feature store relies on when it runs against Redis Cluster, proved against
the real three-master cluster of scripts/services.sh (127.0.0.1:7001-7003 by default).

One customer partition's keys share a hash tag, e.g. `{churn:p3}:meta`, so a Lua
script can update them together; different partitions live on different nodes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from redis.cluster import RedisCluster
from redis.exceptions import ClusterCrossSlotError, NoScriptError, RedisClusterException

pytestmark = pytest.mark.integration

# A read-modify-write over three keys of one hash tag: bump a counter (GET then SET),
# record it in a hash and add a member to a sorted set, then read back inside the script.
UPSERT = """
local seq = tonumber(redis.call('GET', KEYS[2]) or '0') + 1
redis.call('SET', KEYS[2], seq)
redis.call('HSET', KEYS[1], 'seq', seq, 'status', ARGV[1])
redis.call('ZADD', KEYS[3], seq, ARGV[2])
return {KEYS[1], seq, redis.call('HGET', KEYS[1], 'status'), redis.call('ZCARD', KEYS[3])}
"""


@pytest.fixture
def cluster(redis_cluster_url: str) -> Iterator[RedisCluster]:
    client: RedisCluster = RedisCluster.from_url(redis_cluster_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def ns(cluster: RedisCluster) -> Iterator[str]:
    """A random key namespace; every key the test wrote under it is deleted afterwards."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    for key in list(cluster.scan_iter(match=f"{{{name}:*", count=1000)):  # all primaries
        cluster.delete(key)


def partition_keys(ns: str, partition: int) -> list[str]:
    """KEYS for UPSERT: meta hash, counter string, idle sorted set, all of one hash tag."""
    tag = f"{{{ns}:p{partition}}}"
    return [f"{tag}:meta", f"{tag}:c:C0001", f"{tag}:idle"]


def partitions_on_every_primary(cluster: RedisCluster, ns: str) -> list[int]:
    """The first partition found on each primary, so the caller's keys span all nodes."""
    by_node: dict[str, int] = {}
    for partition in range(1000):
        node = cluster.get_node_from_key(partition_keys(ns, partition)[0])
        assert node is not None
        by_node.setdefault(node.name, partition)
        if len(by_node) == 3:
            return list(by_node.values())
    raise AssertionError(f"partitions reach only the nodes {sorted(by_node)}")


def test_keys_sharing_a_hash_tag_map_to_one_slot_of_a_three_master_cluster(
    cluster: RedisCluster, ns: str
) -> None:
    assert len(cluster.get_primaries()) == 3
    assert cluster.cluster_info()["cluster_state"] == "ok"
    keys = partition_keys(ns, 3)
    slots = {cluster.keyslot(key) for key in keys}
    assert len(slots) == 1
    # The client-side hash (which routes commands) agrees with the server's.
    assert {cluster.cluster_keyslot(key) for key in keys} == slots


def test_registered_script_on_keys_of_one_hash_tag_runs_atomically_and_returns_a_list(
    cluster: RedisCluster, ns: str
) -> None:
    upsert = cluster.register_script(UPSERT)
    meta, counter, idle = keys = partition_keys(ns, 3)
    assert upsert(keys=keys, args=["new", "m0"]) == [meta, 1, "new", 1]

    # 8 threads racing on the same keys: were the script's GET and SET ever interleaved
    # with another call, two calls would see the same counter value.
    calls = 200
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(lambda i: upsert(keys=keys, args=["busy", f"m{i}"]), range(1, calls + 1))
        )
    seqs = sorted(seq for _, seq, _, _ in results)
    assert seqs == list(range(2, calls + 2))
    assert all(zcard == seq for _, seq, _, zcard in results)  # ZADD moved in step with SET
    assert cluster.get(counter) == str(calls + 1)
    assert cluster.hgetall(meta) == {"seq": str(calls + 1), "status": "busy"}
    assert cluster.zcard(idle) == calls + 1


def test_pipeline_of_evalsha_for_keys_on_different_nodes_returns_results_in_order(
    cluster: RedisCluster, ns: str
) -> None:
    """The form that works: SCRIPT LOAD (redis-py sends it to every primary), then
    EVALSHA queued with execute_command on a non-transactional cluster pipeline."""
    on_each_node = partitions_on_every_primary(cluster, ns)
    partitions = on_each_node + on_each_node[::-1]  # interleave nodes, revisit each once
    sha = cluster.script_load(UPSERT)
    pipe = cluster.pipeline()
    for i, partition in enumerate(partitions):
        pipe.execute_command("EVALSHA", sha, 3, *partition_keys(ns, partition), f"s{i}", f"m{i}")
    results = pipe.execute()

    visits: dict[int, int] = {}
    expected = []
    for i, partition in enumerate(partitions):
        visits[partition] = visits.get(partition, 0) + 1
        expected.append(
            [partition_keys(ns, partition)[0], visits[partition], f"s{i}", visits[partition]]
        )
    assert results == expected


def test_registered_script_cannot_be_queued_on_a_cluster_pipeline(
    cluster: RedisCluster, ns: str
) -> None:
    """redis-py blocks ClusterPipeline.evalsha (and its eval() is a stub), so
    `script(keys, args, client=pipe)` raises at once instead of queueing."""
    upsert = cluster.register_script(UPSERT)
    pipe = cluster.pipeline()
    with pytest.raises(RedisClusterException, match="evalsha is blocked"):
        upsert(keys=partition_keys(ns, 3), args=["s", "m"], client=pipe)


def test_pipelined_evalsha_of_a_script_no_node_has_loaded_fails_per_command_with_noscript(
    cluster: RedisCluster, ns: str
) -> None:
    """What a pipeline sees after a node restart empties its script cache: the store
    must SCRIPT LOAD again and retry (pipelined EVALSHA never falls back to EVAL)."""
    unloaded = cluster.register_script(f"-- never loaded: {ns}\n{UPSERT}")
    pipe = cluster.pipeline()
    for partition in partitions_on_every_primary(cluster, ns):
        pipe.execute_command("EVALSHA", unloaded.sha, 3, *partition_keys(ns, partition), "s", "m")
    results = pipe.execute(raise_on_error=False)
    assert [type(r) for r in results] == [NoScriptError] * 3


def test_script_with_keys_of_two_slots_is_refused_by_client_and_by_server(
    cluster: RedisCluster, ns: str
) -> None:
    upsert = cluster.register_script(UPSERT)
    first, second = partitions_on_every_primary(cluster, ns)[:2]
    keys = partition_keys(ns, first)[:2] + partition_keys(ns, second)[:1]
    # redis-py checks the slots before sending: RedisClusterException (not a RedisError).
    with pytest.raises(RedisClusterException, match="all keys must map to the same key slot"):
        upsert(keys=keys, args=["s", "m"])
    # Sent to a node anyway, the server answers CROSSSLOT (a ResponseError subclass).
    node = cluster.get_node_from_key(keys[0])
    with pytest.raises(ClusterCrossSlotError):
        cluster.execute_command("EVAL", UPSERT, 3, *keys, "s", "m", target_nodes=node)
    assert not any(cluster.exists(key) for key in keys)
