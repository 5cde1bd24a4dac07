"""`python -m stream_app worker`: start the scoring worker (also `replay`, `report`,
`settings`).

Everything that can be wrong before processing starts (settings, model artifact,
Redis, Kafka) is checked first, and stops the program with a message saying what
to fix rather than failing later mid-stream.
"""

from __future__ import annotations

import argparse
import gc
import sys
from contextlib import nullcontext
from datetime import date
from pathlib import Path
from typing import NoReturn

import redis
from confluent_kafka import KafkaException

from scoring.artifact import ArtifactError, load_model
from stream_app import kafka_security
from stream_app.kafka_admin import (
    KafkaAuthenticationError,
    Replication,
    TopicLayoutError,
    connect_admin,
    ensure_topics,
    input_partitions,
)
from stream_app.redis_client import RedisSetupError, check_no_eviction, connect_with, scrubbed
from stream_app.settings import Settings, SettingsError, load_actions, redacted

# Collector thresholds of the worker (the defaults are 700, 10, 10): see run_worker.
GC_THRESHOLDS = (50_000, 20, 100)


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def open_redis(settings: Settings, check_eviction: bool) -> redis.Redis | redis.RedisCluster:
    """A client of REDIS_URL that answered (on a server that cannot evict the state,
    with `check_eviction`), or exit saying what to fix."""
    where = redacted(settings.redis_url)
    try:
        client = connect_with(settings)
        client.ping()
        if check_eviction:
            check_no_eviction(client)
        return client
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


def open_topics(settings: Settings, create: bool) -> int:
    """The input topics' partition count (the product's topics made first when
    missing, with `create`), or exit saying what to fix."""
    config = kafka_security.confluent_config(settings)
    try:
        if create:
            replication = Replication(settings.replication_factor, settings.min_insync_replicas)
            return ensure_topics(
                config, settings.partitions, settings.topic_prefix, 15, replication
            )
        return input_partitions(config, settings.topic_prefix, 15)
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


def checked_settings() -> Settings:
    """The settings, with the Kafka security ones checked; or stop, saying what to fix."""
    try:
        settings = Settings.from_env()
        kafka_security.check(settings)
    except SettingsError as err:
        fail(f"bad configuration: {err}")
    return settings


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
    client = open_redis(settings, check_eviction=True)
    partitions = open_topics(settings, create=True)
    if settings.engine == "confluent":
        from stream_app import confluent_worker

        freeze_collector()
        print(f"serving model {model.version} from {settings.models_dir}", file=sys.stderr)
        confluent_worker.start(settings, model, client, partitions, actions)
        return
    import faust  # here: the confluent engine runs without it

    from stream_app.worker import build_app, install_uvloop

    install_uvloop()
    app = build_app(settings, model, client, partitions, actions)
    freeze_collector()
    print(f"serving model {model.version} from {settings.models_dir}", file=sys.stderr)
    faust.Worker(app, loglevel=settings.log_level).execute_from_commandline()


def freeze_collector() -> None:
    # Everything allocated so far (modules, the model) lives as long as the process:
    # kept out of the collector, a full collection takes ~1.5 ms instead of 130-180 ms
    # (bench/PROFILE.md: p99 at 1,000 events/s 98 -> 46.5 ms).
    gc.freeze()
    # What the consumer holds for a few seconds (prefetched records, events until
    # acknowledged: ~100,000 objects under a backlog) outlives the young generations,
    # and every ~1.5 s a full collection walked it, 120 ms each: 9% of the worker's
    # time. Rarer young collections let most of it die young first.
    gc.set_threshold(*GC_THRESHOLDS)


def run_replay(path: Path, out_path: Path | None, alerts_path: Path | None) -> None:
    from stream_app.replay import replay

    try:
        settings = Settings.from_env()
        actions = load_actions(settings.actions_file)
        model = load_model(settings.models_dir)
    except (SettingsError, ArtifactError) as err:
        fail(str(err))
    if not path.is_file():
        fail(f"no such file: {path}")
    if alerts_path is not None and model.drift is None:
        fail(f"model {model.version} has no drift reference: retrain it to judge drift")
    with (
        out_path.open("wb") if out_path else nullcontext(sys.stdout.buffer) as out,
        alerts_path.open("wb") if alerts_path else nullcontext() as alerts,
    ):
        counts = replay(
            path,
            model,
            out,
            settings.partitions,
            settings.batch_size,
            settings.hysteresis,
            actions,
            settings.limits(),
            settings.drift() if alerts_path else None,
            alerts,
            settings.retention_days,
            settings.targeting(),
            settings.holdout(),
        )
    print(f"replayed {path} with model {model.version}: {counts}", file=sys.stderr)


def run_report(day: date, out: Path | None) -> None:
    from feature_store.redis_store import RedisStateStore
    from scoring.campaign import TALLY as CAMPAIGN
    from scoring.campaign import uplifts
    from scoring.daily import TTL_SECONDS, read_day
    from stream_app.redis_drift import drift_status
    from stream_app.report import NO_DRIFT_STATE, DriftStates, report_html, summary_text

    settings = checked_settings()
    if out is not None and not out.parent.is_dir():
        fail(f"cannot write {out}: no directory {out.parent}")
    client = open_redis(settings, check_eviction=False)
    # Every partition the workers own: the input topics' count, as the workers read it.
    partitions = open_topics(settings, create=False)
    store = RedisStateStore(client, settings.redis_namespace)
    counts = read_day(store, range(partitions), day)
    if counts.empty:
        fail(
            f"no counts for {day.isoformat()} in Redis namespace "
            f"{settings.redis_namespace!r} ({partitions} partitions): no worker committed a "
            f"batch that UTC day, or it is more than {TTL_SECONDS // 86400} days ago "
            "(the counters expire)",
            code=1,
        )
    # The drift monitor's current alert state per feature, read from Redis (None while
    # it has recorded none). The report shows it as it is given.
    status = drift_status(client, settings.redis_namespace)
    drift: DriftStates | None = status.states() or None
    no_drift = NO_DRIFT_STATE
    if status.judged_through is not None:
        no_drift = (
            f"drift monitor: judged through {status.judged_through:%Y-%m-%d %H:%M} UTC, but no "
            f"window has had the {settings.drift_min_scores} scores it needs "
            "(CHURN_DRIFT_MIN_SCORES)"
        )
    campaign = uplifts(store.tallies(range(partitions), CAMPAIGN))
    print(summary_text(counts, partitions, drift, no_drift, campaign))
    if out is not None:
        page = report_html(counts, partitions, drift, no_drift, campaign)
        out.write_text(page, encoding="utf-8")
        print(f"\nreport: {out}")


# `performance --retrain-below-auc`'s exit code when the realised AUC has dropped: a
# scheduler retrains on it (docs/training.md, "Retraining"); 1 stays "nothing to judge yet".
AUC_DROPPED = 3


def run_performance(retrain_below_auc: float | None, min_samples: int) -> None:
    from feature_store.redis_store import RedisStateStore
    from scoring.campaign import TALLY as CAMPAIGN
    from scoring.campaign import uplift_text, uplifts
    from scoring.performance import TALLY, auc_drop, figures, performance_text

    settings = checked_settings()
    client = open_redis(settings, check_eviction=False)
    partitions = open_topics(settings, create=False)
    store = RedisStateStore(client, settings.redis_namespace)
    found = figures(store.tallies(range(partitions), TALLY))
    campaign = uplifts(store.tallies(range(partitions), CAMPAIGN))
    if campaign:
        print(uplift_text(campaign), end="\n\n")
    if not found:
        fail(
            f"no realised performance in Redis namespace {settings.redis_namespace!r} "
            f"({partitions} partitions): no sampled score's horizon has passed in event time "
            f"yet (CHURN_PERFORMANCE_SAMPLE={settings.performance_sample})",
            code=1,
        )
    print(performance_text(found))
    if retrain_below_auc is None:
        return
    dropped = auc_drop(found, retrain_below_auc, min_samples)
    if dropped is not None:
        print(
            f"realised AUC {dropped.auc:.3f} of cohort {dropped.cohort} (model "
            f"{dropped.model_version}, {dropped.samples} samples) is below "
            f"{retrain_below_auc:g}: retrain",
            file=sys.stderr,
        )
        sys.exit(AUC_DROPPED)


def run_acls(worker: str, simulator: str, reader: str, sink: str | None) -> None:
    """Grant each principal its ACLs on the cluster the settings point at (as a
    principal allowed to, e.g. a super user)."""
    from stream_app import kafka_acls

    settings = checked_settings()
    config = kafka_security.confluent_config(settings)
    try:
        admin, _ = connect_admin(config, 15)
        count = kafka_acls.grant(
            admin, settings.topic_prefix, settings.app_id, worker, simulator, reader, sink
        )
    except (KafkaAuthenticationError, KafkaException) as err:
        fail(f"cannot grant the ACLs at {settings.kafka_bootstrap_servers}: {err}")
    principals = ", ".join(p for p in (worker, simulator, reader, sink) if p)
    print(f"granted {count} ACLs to {principals}")


def run_shop_sink(db: Path, catch_up: bool) -> None:
    """Write the input topics into the shop database training reads (see
    stream_app/shop_sink.py)."""
    from stream_app.shop_sink import ShopSink

    settings = checked_settings()
    config = kafka_security.confluent_config(settings)
    sink = ShopSink(db, config, settings.topic_prefix, settings.limits())
    try:
        counts = sink.run(catch_up)
    except KafkaException as err:
        fail(f"cannot read the input topics at {settings.kafka_bootstrap_servers}: {err}")
    except KeyboardInterrupt:
        counts = sink.counts
    finally:
        sink.close()
    written = ", ".join(f"{n:,} {kind}" for kind, n in sorted(counts.items())) or "nothing new"
    print(f"shop database {db}: {written}")


def report_date(text: str) -> date:
    """--date: a calendar day, YYYY-MM-DD (UTC)."""
    try:
        if len(text) == 10:  # fromisoformat also takes 20261129 and 2026-W48-1
            return date.fromisoformat(text)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stream_app")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("worker", help="consume events, keep features, publish risk changes")
    replay = commands.add_parser("replay", help="run the batch runner over a JSON-lines file")
    replay.add_argument("file", type=Path, help='lines of {"topic", "key", "value"}')
    replay.add_argument("--out", type=Path, help="write risk changes here (default: stdout)")
    replay.add_argument(
        "--drift-alerts",
        type=Path,
        help="run the drift monitor too (CHURN_DRIFT_* settings) and write its alerts here",
    )
    report = commands.add_parser(
        "report", help="a day's report: events, risk mix, latency, churn rate, model versions"
    )
    report.add_argument("--date", type=report_date, required=True, help="the UTC day, YYYY-MM-DD")
    report.add_argument("--out", type=Path, help="also write the report as HTML with plots here")
    performance = commands.add_parser(
        "performance",
        help="realised AUC, HIGH precision and recall, calibration per weekly cohort and model",
    )
    performance.add_argument(
        "--retrain-below-auc",
        type=float,
        metavar="AUC",
        help=f"exit {AUC_DROPPED} when the latest judged cohort's realised AUC is below this",
    )
    performance.add_argument(
        "--min-samples",
        type=int,
        default=200,
        help="samples a cohort needs to be judged (default 200: an AUC's noise ~0.04)",
    )
    acls = commands.add_parser(
        "acls", help="grant the worker, the simulator and readers their Kafka ACLs"
    )
    for role in ("worker", "simulator", "reader"):
        acls.add_argument(f"--{role}", required=True, metavar="PRINCIPAL", help="e.g. User:name")
    acls.add_argument("--sink", metavar="PRINCIPAL", help="the shop sink's, e.g. User:name")
    sink = commands.add_parser(
        "shop-sink", help="write the input topics into the shop database training reads"
    )
    sink.add_argument("--db", type=Path, required=True, help="SQLite shop database")
    sink.add_argument(
        "--catch-up", action="store_true", help="stop once every partition's end is written"
    )
    commands.add_parser("settings", help="print the configuration table")
    args = parser.parse_args()
    if args.command == "worker":
        run_worker()
    elif args.command == "replay":
        run_replay(args.file, args.out, args.drift_alerts)
    elif args.command == "report":
        run_report(args.date, args.out)
    elif args.command == "performance":
        run_performance(args.retrain_below_auc, args.min_samples)
    elif args.command == "acls":
        run_acls(args.worker, args.simulator, args.reader, args.sink)
    elif args.command == "shop-sink":
        run_shop_sink(args.db, args.catch_up)
    else:
        print(Settings.describe())


if __name__ == "__main__":
    main()
