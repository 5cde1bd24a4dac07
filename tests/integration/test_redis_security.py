"""Redis security on a real redis-server of the test's own: TLS only (no plain-text
port, client certificates required), the default user off, and an ACL user that may
run only the worker's commands on the worker's keys. A real worker process scores
events with its state there; other clients are refused; a server that could evict
the state, an unreachable server and a wrong password stop the worker at start with
a message that never holds the password."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from feature_store.redis_store import RedisStateStore
from feature_store.store import Begin
from schemas import Order, SupportTicket, topics
from stream_app.partitioning import partition_of
from stream_app.redis_client import RedisSetupError, acl_rules, check_no_eviction, connect
from tests.support import (
    ROOT,
    RedisServer,
    Worker,
    consume,
    encode,
    free_port,
    produce,
    wait_for_orders,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
USER = "churn"


def make_certs(directory: Path) -> Path:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "certs.sh"), str(directory)],
        check=True,
        capture_output=True,
    )
    return directory


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def password() -> str:
    return secrets.token_hex(16)


@pytest.fixture
def secure_redis(
    tmp_path: Path, certs: Path, namespace: str, password: str
) -> Iterator[tuple[RedisServer, str]]:
    """The TLS-only server with the ACL user of this test's namespace, and its URL."""
    rule = f"{USER} on >{password} {acl_rules(namespace)}"
    server = RedisServer(tmp_path / "redis", certs=certs, users=[rule])
    server.start()
    yield server, server.url_for(USER, password)
    server.kill()


def test_the_worker_scores_events_over_tls_as_an_acl_user_confined_to_its_namespace(
    worker: Worker,
    worker_env: dict[str, str],
    kafka_bootstrap: str,
    secure_redis: tuple[RedisServer, str],
    password: str,
    drift_models_dir: Path,
) -> None:
    server, url = secure_redis
    namespace, prefix = worker_env["CHURN_REDIS_NAMESPACE"], worker_env["CHURN_TOPIC_PREFIX"]
    # A model with a drift reference: the drift monitor's commands run under the ACL too.
    models = {"CHURN_MODELS_DIR": str(drift_models_dir), "CHURN_DRIFT_INTERVAL_SECONDS": "0.2"}
    worker.env.update({"REDIS_URL": url, **server.tls_env, **models})
    worker.start()
    order = Order("OA1", "A", T0, 50.0, "card", "delivered")
    produce(kafka_bootstrap, [(prefix + topics.ORDERS, "A", encode(order))])
    wait_for_orders(worker, "A", 1)
    # 40 days without an order: the recency model says HIGH.
    ticket = SupportTicket("TA1", "A", T0 + timedelta(days=40), "delivery")
    produce(kafka_bootstrap, [(prefix + topics.SUPPORT_TICKETS, "A", encode(ticket))])
    changes = consume(kafka_bootstrap, [prefix + topics.CHURN_RISK], lambda m: len(m) >= 1)
    decoded = [json.loads(m.value()) for m in changes]
    assert [(c["customer_id"], c["previous_risk"], c["risk"]) for c in decoded] == [
        ("A", "LOW", "HIGH")
    ]
    assert worker.get("/health")[0] == 200
    log = worker.log()
    assert password not in log, "the worker logged the Redis password"

    # The state is in the secured server, readable by the same ACL user.
    client = connect(url, **server.tls_files)
    store = RedisStateStore(client, namespace)
    state = store.read(partition_of("A", 4), ["A"])["A"]
    assert (state.risk, state.totals["o"]) == ("HIGH", 1)
    admin = server.admin()
    # The drift monitor has counted the scores and judged (its book is in Redis).
    deadline = time.monotonic() + 30
    while not admin.exists(f"{{{namespace}:drift}}:alerts"):
        assert time.monotonic() < deadline, "the drift monitor never wrote its alert book"
        time.sleep(0.2)
    # The work-list's reads run under the same rule.
    status, _, page = worker.request("/worklist")
    assert status == 200 and b'data-customer="A"' in page, page[:500]
    status, _, page = worker.request("/worklist/customers/A")
    assert status == 200 and b"Recent changes" in page, page[:500]
    keys = [k.decode() for k in admin.scan_iter(count=1000)]
    assert keys and all(k.startswith(f"{{{namespace}:") for k in keys), keys
    assert any(":tally:drift:" in k for k in keys), keys
    # The worker never ran into its ACL: the rule holds everything it needs.
    assert admin.acl_log() == [], admin.acl_log()

    worker.stop()
    assert store.delete_namespace() == len(keys)
    assert admin.dbsize() == 0
    assert admin.acl_log() == [], admin.acl_log()


def test_clients_without_tls_a_certificate_or_the_right_password_are_refused(
    secure_redis: tuple[RedisServer, str], tmp_path: Path
) -> None:
    server, url = secure_redis
    tls = server.tls_files
    assert connect(url, **tls).ping()

    plain = f"redis://{USER}:x@127.0.0.1:{server.port}/0"
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(plain, socket_timeout=5, socket_connect_timeout=5).ping()
    no_password = server.url_for()
    with pytest.raises(redis.AuthenticationError):
        connect(no_password, timeout=5, **tls).ping()
    wrong_password = server.url_for(USER, "not-the-password")
    with pytest.raises(redis.AuthenticationError):
        connect(wrong_password, timeout=5, **tls).ping()
    with pytest.raises(redis.AuthenticationError):  # the disabled default user
        connect(server.url_for("default", "anything"), timeout=5, **tls).ping()
    with pytest.raises(redis.ConnectionError):  # tls-auth-clients yes
        connect(url, 5, ca_file=tls["ca_file"]).ping()
    # A server whose certificate the CA did not sign is not trusted.
    other_ca = make_certs(tmp_path / "other-certs") / "ca.pem"
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        connect(url, 5, ca_file=other_ca, cert_file=tls["cert_file"], key_file=tls["key_file"])


def test_the_acl_user_cannot_read_or_write_keys_outside_its_namespace(
    secure_redis: tuple[RedisServer, str], namespace: str
) -> None:
    server, url = secure_redis
    admin = server.admin()
    admin.set("other:secret", b"not yours")
    admin.hset("{other:p0}:meta", "epoch", 7)
    client = connect(url, **server.tls_files)
    assert isinstance(client, redis.Redis)
    denied = redis.exceptions.NoPermissionError

    inside = f"{{{namespace}:p0}}:c:A"
    client.set(inside, b"state")
    assert client.mget([inside]) == [b"state"]
    # The commands it may run, refused for the keys (not the command) outside.
    with pytest.raises(denied, match="keys"):
        client.mget(["other:secret"])
    with pytest.raises(denied, match="keys"):
        client.set("other:mine", b"x")
    with pytest.raises(denied, match="keys"):
        client.hincrby("{other:p0}:meta", "epoch", 1)  # another namespace's fencing epoch
    with pytest.raises(denied, match="keys"):
        client.delete("other:secret")
    # A script runs with its caller's rights: it cannot reach outside either.
    sha = client.script_load("return redis.call('MGET', 'other:secret')")
    with pytest.raises(redis.ResponseError, match="keys"):
        client.evalsha(sha, 1, inside)
    # Nor may it run anything else that reads or wipes data.
    for command in (("KEYS", "*"), ("FLUSHALL",), ("CONFIG", "GET", "*"), ("EVAL", "return 1", 0)):
        with pytest.raises(denied, match="command"):
            client.execute_command(*command)
    assert admin.get("other:secret") == b"not yours"
    assert admin.hget("{other:p0}:meta", "epoch") == b"7"
    assert not admin.exists("other:mine")
    assert RedisStateStore(client, namespace).delete_namespace() == 1
    assert admin.dbsize() == 2


def test_the_worker_refuses_a_redis_that_could_evict_its_state(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis", config=["maxmemory-policy allkeys-lru"])
    server.start()
    try:
        worker = Worker({**worker_env, "REDIS_URL": server.url}, tmp_path / "worker.log")
        assert worker.start_expecting_exit() == 2, worker.log()
        log = worker.log()
        assert f"Redis at {server.url}: maxmemory-policy allkeys-lru on 127.0.0.1:" in log, log
        assert "set `maxmemory-policy noeviction`" in log, log
        # volatile-* evict only keys with a TTL, and the worker's have none.
        server.admin().config_set("maxmemory-policy", "volatile-lru")
        check_no_eviction(connect(server.url))
    finally:
        server.kill()


def test_an_unreachable_redis_is_named_without_its_password(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    url = f"redis://churn:secret@127.0.0.1:{port}/0"
    worker = Worker({**worker_env, "REDIS_URL": url}, tmp_path / "worker.log")
    assert worker.start_expecting_exit() == 2, worker.log()
    log = worker.log()
    assert f"cannot use Redis at redis://churn:***@127.0.0.1:{port}/0" in log, log
    assert "secret" not in log, log


def test_a_wrong_password_is_reported_without_it(
    worker_env: dict[str, str], secure_redis: tuple[RedisServer, str], tmp_path: Path
) -> None:
    server, _ = secure_redis
    wrong = "wrong-" + secrets.token_hex(8)
    env = {**worker_env, "REDIS_URL": server.url_for(USER, wrong), **server.tls_env}
    worker = Worker(env, tmp_path / "worker.log")
    assert worker.start_expecting_exit() == 2, worker.log()
    log = worker.log()
    assert f"cannot use Redis at rediss://{USER}:***@127.0.0.1:{server.port}/0" in log, log
    assert "AuthenticationError" in log, log
    assert wrong not in log, log


def test_a_tls_redis_cluster_with_the_acl_user_holds_the_state_and_is_checked_for_eviction(
    tmp_path: Path, certs: Path, namespace: str, password: str
) -> None:
    # One node holding every slot: enough for redis-py's cluster client, which maps
    # slots (CLUSTER SLOTS) and reads the command table (COMMAND) at start.
    rule = f"{USER} on >{password} {acl_rules(namespace, cluster=True)}"
    server = RedisServer(
        tmp_path / "redis",
        certs=certs,
        users=[rule],
        config=[
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            "tls-cluster yes",
            # Its own: the default (port + 10000) fails for ports above 55535.
            f"cluster-port {free_port()}",
        ],
    )
    server.start()
    try:
        admin = server.admin()
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 30
        while admin.cluster("info")["cluster_state"] != "ok":
            assert time.monotonic() < deadline, "the one-node cluster never came up"
            time.sleep(0.1)
        client = connect(server.url_for(USER, password), **server.tls_files)
        assert isinstance(client, redis.RedisCluster)
        check_no_eviction(client)
        store = RedisStateStore(client, namespace)
        claim = store.claim(2)
        assert claim.epoch == 1
        assert store.begin([Begin(2, claim.epoch, {}, {}, ["A"])]) == {2: ("committed", {})}
        assert store.delete_namespace() == 1  # the meta hash the claim raised
        assert admin.acl_log() == [], admin.acl_log()

        admin.config_set("maxmemory-policy", "allkeys-lfu")
        with pytest.raises(RedisSetupError, match=f"allkeys-lfu on 127.0.0.1:{server.port}"):
            check_no_eviction(client)
    finally:
        server.kill()


def test_compose_gives_its_redis_user_exactly_the_worker_acl_rules(tmp_path: Path) -> None:
    """docker-compose.yml's redis.conf, started by a real redis-server: its `churn` user
    has what `acl_rules` of the default namespace gives, and can answer the healthcheck."""
    from stream_app.settings import OPTIONS
    from tests.test_compose import compose, example_env, interpolate

    env = example_env()
    text = interpolate(compose()["configs"]["redis-conf"]["content"], env)
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    churn = [line.removeprefix("user ") for line in lines if line.startswith("user churn ")]
    others = [line for line in lines if not line.startswith("user ")]
    assert len(churn) == 1, lines
    server = RedisServer(tmp_path / "redis", users=churn, config=others)
    server.start()
    try:
        admin = server.admin()
        namespace = OPTIONS["redis_namespace"].default
        admin.execute_command(
            "ACL", "SETUSER", "expected", "on", ">x", *acl_rules(namespace).split()
        )
        composed, expected = admin.acl_getuser("churn"), admin.acl_getuser("expected")
        assert composed is not None and expected is not None
        for field in ("keys", "channels", "commands"):
            assert composed[field] == expected[field], field
        user = redis.Redis.from_url(server.url_for(USER, env["REDIS_PASSWORD"]))
        assert user.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.get("{other:p0}:meta")
    finally:
        server.kill()
