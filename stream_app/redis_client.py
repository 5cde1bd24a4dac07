"""One way to connect to Redis, for the worker, the demo and the tools: a single
server or a Redis Cluster (told apart by asking the server), in plain text or TLS
(`rediss://`, the server's certificate checked against a CA), with or without an
ACL user. Also the start-up check that the server cannot evict the worker's state,
and `redacted()`, which every message naming a Redis URL goes through."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, unquote, urlsplit

import redis

from stream_app.settings import QUERY_PASSWORD, Settings, redacted

# What redis-py raises when Redis refuses a write: full (maxmemory reached under
# noeviction) or read-only (a replica; a failover under way). (The type stubs predate
# OutOfMemoryError.)
RedisFull: type[Exception] = redis.exceptions.OutOfMemoryError  # type: ignore[attr-defined]
RedisReadOnly: type[Exception] = redis.exceptions.ReadOnlyError

# The worker's state has no TTL, so only these policies can evict it (volatile-* can
# evict the daily report's counters, which expire: `scoring.daily`).
EVICTING_POLICIES = ("allkeys-lru", "allkeys-lfu", "allkeys-random")

# Every command the worker runs: the store (feature_store/redis_store.py and the
# commands partition.lua calls, which ACLs check too), the drift monitor
# (stream_app/redis_drift.py, drift.lua), the start-up checks (INFO for cluster
# mode and the eviction policy) and delete_namespace (SCAN, DEL).
ACL_COMMANDS = (
    *("ping", "info", "evalsha", "script|load"),
    *("hget", "hgetall", "hincrby", "hset", "hdel", "mget", "mset", "set", "zadd", "zrem"),
    *("zrange", "scan", "del"),
    *("get", "hincrbyfloat", "expire"),  # the tallies partition.lua adds to with each commit
    *("zcard", "zrevrangebyscore", "zcount", "zscore", "hmget"),  # the work-list index
)
# What redis-py's cluster client adds: the slot map and the command table.
ACL_CLUSTER_COMMANDS = ("cluster|slots", "command")


def acl_rules(namespace: str, cluster: bool = False) -> str:
    """The ACL rules (after `ACL SETUSER <user> on ><password>`) that let the worker
    of `namespace` run and touch nothing but its own keys (feature_store/keys.py: the
    partitions' `{<namespace>:p<N>}` and the group's `{<namespace>:drift}`).
    SCAN is keyless: it may list other key names, but not read them."""
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", namespace)  # a glob: escape its specials
    commands = ACL_COMMANDS + (ACL_CLUSTER_COMMANDS if cluster else ())
    return f"resetkeys ~{{{pattern}:* resetchannels -@all " + " ".join(f"+{c}" for c in commands)


class RedisSetupError(Exception):
    """The server is reachable but not fit to hold the state; the message says why."""


def scrubbed(text: str, url: str) -> str:
    """`text` (an error message, say) with the URL's password replaced by ***."""
    secrets: set[str] = set()
    try:
        parts = urlsplit(url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        if at and ":" in userinfo:
            secrets.add(userinfo.split(":", 1)[1])
        secrets.update(m.group(0).split("=", 1)[1] for m in QUERY_PASSWORD.finditer(parts.query))
    except ValueError:
        secrets.add(url)
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            for form in {secret, unquote(secret), quote(unquote(secret), safe="")}:
                text = text.replace(form, "***")
    return text


def connect(
    url: str,
    timeout: float = 10.0,
    *,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> redis.Redis | redis.RedisCluster:
    """A client for the server at `url` (replies as bytes); a RedisCluster client when
    the server runs in cluster mode. Raises redis.RedisError when unreachable.

    A `rediss://` URL always checks the server's certificate and host name: against
    `ca_file` when given, else against the system's CAs. `cert_file` and `key_file`
    present a client certificate (servers with `tls-auth-clients yes`)."""
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if urlsplit(url).scheme == "rediss":
        # Explicit: redis-py before 6 did not check the host name by default.
        options.update(ssl_cert_reqs="required", ssl_check_hostname=True)
        if ca_file:
            options["ssl_ca_certs"] = str(ca_file)
        if cert_file:
            options["ssl_certfile"] = str(cert_file)
        if key_file:
            options["ssl_keyfile"] = str(key_file)
    elif ca_file or cert_file or key_file:
        # The files would be silently unused and the traffic in clear.
        raise ValueError(f"TLS files given for {redacted(url)}, which is not rediss://")
    single = redis.Redis.from_url(url, **options)
    if single.info("cluster").get("cluster_enabled"):
        single.close()
        return redis.RedisCluster.from_url(url, **options)
    return single


def connect_with(settings: Settings, timeout: float = 10.0) -> redis.Redis | redis.RedisCluster:
    """`connect` to REDIS_URL with the CHURN_REDIS_SSL_* files of `settings`."""
    return connect(
        settings.redis_url,
        timeout,
        ca_file=settings.redis_ssl_ca_file,
        cert_file=settings.redis_ssl_cert_file,
        key_file=settings.redis_ssl_key_file,
    )


def eviction_policies(client: redis.Redis | redis.RedisCluster) -> dict[str, str]:
    """maxmemory_policy of every server holding state (every primary of a cluster),
    by host:port, read with `INFO memory` (which ACL users may usually run, unlike
    CONFIG GET)."""
    if isinstance(client, redis.RedisCluster):
        nodes = {
            f"{node.host}:{node.port}": cast(redis.Redis, client.get_redis_connection(node))
            for node in client.get_primaries()
        }
    else:
        kwargs = client.get_connection_kwargs()
        nodes = {f"{kwargs.get('host')}:{kwargs.get('port')}": client}
    return {name: str(node.info("memory")["maxmemory_policy"]) for name, node in nodes.items()}


def check_no_eviction(client: redis.Redis | redis.RedisCluster) -> None:
    """Raise RedisSetupError when a server could evict the worker's keys.

    allkeys-* evict any key once maxmemory is reached, a customer's state or a
    partition's offsets and epoch included: features would silently restart from
    zero and fencing would break. Refused even while maxmemory is 0 (no limit), since
    CONFIG SET can add a limit at any time. volatile-* evict only keys with a TTL,
    and the state has none (SET in partition.lua clears any), so they behave like
    noeviction for it: a full server refuses writes, the batch is retried, nothing is
    lost. Only the daily report's counters, which expire, could be evicted."""
    try:
        policies = eviction_policies(client)
    except redis.exceptions.NoPermissionError as err:
        raise RedisSetupError(
            f"cannot read maxmemory_policy ({err}): allow the worker's user `+info`"
        ) from err
    evicting = {node: policy for node, policy in policies.items() if policy in EVICTING_POLICIES}
    if evicting:
        found = ", ".join(f"{policy} on {node}" for node, policy in sorted(evicting.items()))
        raise RedisSetupError(
            f"maxmemory-policy {found} could evict the worker's state (customers' "
            "features, offsets, fencing epochs); set `maxmemory-policy noeviction` "
            "(or a volatile-* policy: the state has no TTL) in redis.conf or "
            "with CONFIG SET"
        )
