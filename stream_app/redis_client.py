"""One way to connect to Redis, for the worker, the replay and the tools: a single
server or a Redis Cluster, told apart by asking the server."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str, timeout: float = 10.0) -> redis.Redis | redis.RedisCluster:
    """A client for the server at `url` (replies as bytes); a RedisCluster client when
    the server runs in cluster mode. Raises redis.RedisError when unreachable."""
    single = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    if single.info("cluster").get("cluster_enabled"):
        single.close()
        return redis.RedisCluster.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    return single
