"""`python -m stream_app worker`: start the scoring worker.

Everything that can be wrong before processing starts (settings, model artifact,
Redis, Kafka) is checked first, and stops the program with a message saying what
to fix rather than failing later mid-stream.
"""

from __future__ import annotations

import argparse
import gc
import sys
from contextlib import nullcontext
from pathlib import Path

import faust
import redis
from confluent_kafka import KafkaException

from scoring.artifact import ArtifactError, load_model
from stream_app import kafka_security
from stream_app.kafka_admin import KafkaAuthenticationError, TopicLayoutError, ensure_topics
from stream_app.redis_client import (
    RedisSetupError,
    check_no_eviction,
    connect_with,
    redacted,
    scrubbed,
)
from stream_app.settings import Settings, SettingsError, load_actions


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_worker() -> None:
    try:
        settings = Settings.from_env()
        actions = load_actions(settings.actions_file)
        kafka_security.check(settings)
    except SettingsError as err:
        fail(f"bad configuration: {err}")
    try:
        model = load_model(settings.models_dir)
    except ArtifactError as err:
        fail(f"cannot serve the model: {err}")
    where = redacted(settings.redis_url)
    try:
        client = connect_with(settings)
        client.ping()
        check_no_eviction(client)
    # RedisClusterException (no reachable node) is not a RedisError; ValueError is a
    # URL redis-py cannot parse (a bad db number, say).
    except (redis.RedisError, redis.exceptions.RedisClusterException, ValueError) as err:
        # The error text says which: refused, TLS handshake, wrong password, ACL.
        # Scrubbed all the same: no redis-py message should hold the password.
        reason = scrubbed(f"{type(err).__name__}: {err}", settings.redis_url)
        fail(
            f"cannot use Redis at {where} ({reason}); start it, or fix REDIS_URL "
            "(user, password) and CHURN_REDIS_SSL_* (TLS)"
        )
    except RedisSetupError as err:
        fail(f"Redis at {where}: {scrubbed(str(err), settings.redis_url)}")
    try:
        partitions = ensure_topics(
            kafka_security.confluent_config(settings),
            settings.partitions,
            settings.topic_prefix,
            15,
        )
    except KafkaAuthenticationError as err:
        fail(
            f"Kafka at {settings.kafka_bootstrap_servers} refused the connection "
            f"({kafka_security.describe(settings)}): {err}; check CHURN_KAFKA_SASL_USERNAME, "
            "CHURN_KAFKA_SASL_PASSWORD and CHURN_KAFKA_SSL_*"
        )
    except KafkaException as err:
        fail(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers} "
            f"({kafka_security.describe(settings)}: {err}); start it, or set "
            "KAFKA_BOOTSTRAP_SERVERS and CHURN_KAFKA_SECURITY_PROTOCOL to match its listener"
        )
    except TopicLayoutError as err:
        fail(str(err))
    from stream_app.worker import build_app, install_uvloop

    install_uvloop()
    app = build_app(settings, model, client, partitions, actions)
    # Everything allocated so far (modules, the model) lives as long as the process:
    # kept out of the collector, a full collection takes ~1.5 ms instead of 130-180 ms
    # (bench/PROFILE.md: p99 at 1,000 events/s 98 -> 46.5 ms).
    gc.freeze()
    print(f"serving model {model.version} from {settings.models_dir}", file=sys.stderr)
    faust.Worker(app, loglevel=settings.log_level).execute_from_commandline()


def run_replay(path: Path, out_path: Path | None) -> None:
    from stream_app.replay import replay

    try:
        settings = Settings.from_env()
        actions = load_actions(settings.actions_file)
        model = load_model(settings.models_dir)
    except (SettingsError, ArtifactError) as err:
        fail(str(err))
    if not path.is_file():
        fail(f"no such file: {path}")
    with out_path.open("wb") if out_path else nullcontext(sys.stdout.buffer) as out:
        counts = replay(
            path,
            model,
            out,
            settings.partitions,
            settings.batch_size,
            settings.hysteresis,
            actions,
            settings.limits(),
        )
    print(f"replayed {path} with model {model.version}: {counts}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stream_app")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("worker", help="consume events, keep features, publish risk changes")
    replay = commands.add_parser("replay", help="run the batch runner over a JSON-lines file")
    replay.add_argument("file", type=Path, help='lines of {"topic", "key", "value"}')
    replay.add_argument("--out", type=Path, help="write risk changes here (default: stdout)")
    commands.add_parser("settings", help="print the configuration table")
    args = parser.parse_args()
    if args.command == "worker":
        run_worker()
    elif args.command == "replay":
        run_replay(args.file, args.out)
    else:
        print(Settings.describe())


if __name__ == "__main__":
    main()
