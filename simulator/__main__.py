"""Command line: generate a history and send it to Kafka, SQLite or a JSON-lines file.

Examples::

    python -m simulator produce --customers 1000 --rate 500
    python -m simulator sqlite --customers 100000 --out data/shop.db
    python -m simulator jsonl --customers 1000 --out data/events.jsonl.gz
    python -m simulator jsonl --shift order_value,2025-10-01,2025-10-04 --out shifted.jsonl
    python -m simulator sqlite --regular-share 0.5 --out data/rhythmic.db
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from simulator.history import DEFAULT_START, SHIFT_KINDS, History, Shift, generate_history


def _start(text: str) -> datetime:
    """Parse --start; a date or a naive time is taken as UTC."""
    ts = datetime.fromisoformat(text)
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def _shift(text: str) -> Shift:
    """Parse --shift KIND,FROM[,UNTIL[,FACTOR]] (times as --start)."""
    kind, *rest = text.split(",")
    if not 1 <= len(rest) <= 3:
        raise argparse.ArgumentTypeError("expected KIND,FROM[,UNTIL[,FACTOR]]")
    try:
        start = _start(rest[0])
        end = _start(rest[1]) if len(rest) > 1 and rest[1] else None
        factor = float(rest[2]) if len(rest) > 2 else None
        return Shift(kind, start, end, factor)  # type: ignore[arg-type]
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _share(text: str) -> float:
    """Parse --regular-share: a fraction in [0, 1]."""
    try:
        share = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from err
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError("must be in [0, 1]")
    return share


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulator", description="Synthetic e-commerce history generator."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--customers", type=int, default=1000, help="number of customers")
    common.add_argument("--seed", type=int, default=7, help="random seed (same seed, same data)")
    common.add_argument("--days", type=int, default=365, help="length of the period in days")
    common.add_argument(
        "--start",
        type=_start,
        default=DEFAULT_START,
        help="start of the period, ISO-8601 (UTC if no offset); default 2025-07-01",
    )
    common.add_argument(
        "--shift",
        type=_shift,
        action="append",
        default=[],
        metavar="KIND,FROM[,UNTIL[,FACTOR]]",
        help=f"change the shop from a day (until another, or the end): KIND is one of "
        f"{', '.join(SHIFT_KINDS)} (order values x1.4, three times the tickets, a "
        "promotion's cohort of new customers); repeatable",
    )
    common.add_argument(
        "--regular-share",
        type=_share,
        default=0.0,
        metavar="SHARE",
        help="share of customers who buy in a regular rhythm (gamma gaps) rather than "
        "as a Poisson process; default 0",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    prod = sub.add_parser("produce", parents=[common], help="produce the events to Kafka")
    prod.add_argument("--rate", type=float, default=None, help="events/second (default: max)")
    prod.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)",
    )
    prod.add_argument(
        "--topic-prefix",
        default=os.environ.get("CHURN_TOPIC_PREFIX", ""),
        help="prefix for the topic names, like the worker's (default: $CHURN_TOPIC_PREFIX)",
    )
    prod.add_argument("--partitions", type=int, default=4, help="partitions for new topics")
    prod.add_argument("--replication-factor", type=int, default=1)
    prod.add_argument("--quiet", action="store_true", help="no progress on stderr")

    for name, what in (("sqlite", "a SQLite database"), ("jsonl", "JSON lines (.gz ok)")):
        p = sub.add_parser(name, parents=[common], help=f"write the history to {what}")
        p.add_argument("--out", required=True, help="output path (overwritten)")
    return parser


def kafka_security_config() -> dict[str, Any]:
    """The security part of the worker's Kafka client configuration, from the same
    CHURN_KAFKA_* variables (the brokers come from --bootstrap)."""
    from stream_app import kafka_security
    from stream_app.settings import Settings

    settings = Settings.from_env()
    kafka_security.check(settings)
    config = kafka_security.confluent_config(settings)
    del config["bootstrap.servers"]
    return config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "produce":
        from stream_app.settings import SettingsError

        try:
            client_config = kafka_security_config()
        except SettingsError as err:
            print(f"error: bad configuration: {err}", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    history = generate_history(
        args.customers,
        seed=args.seed,
        start=args.start,
        days=args.days,
        shifts=args.shift,
        regular_share=args.regular_share,
    )
    generated = time.perf_counter() - t0

    t1 = time.perf_counter()
    if args.command == "produce":
        from simulator.kafka_sink import produce

        written = produce(
            history,
            args.bootstrap,
            rate=args.rate,
            partitions=args.partitions,
            replication_factor=args.replication_factor,
            topic_prefix=args.topic_prefix,
            verbose=not args.quiet,
            client_config=client_config,
        )
        target = f"events={written} to {args.bootstrap}"
    elif args.command == "sqlite":
        from simulator.sqlite_sink import write_sqlite

        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        write_sqlite(history, args.out)
        target = f"to {args.out}"
    else:
        from simulator.jsonl_sink import write_jsonl

        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        written = write_jsonl(history, args.out)
        target = f"events={written} to {args.out}"
    wrote = time.perf_counter() - t1
    if args.command == "produce":
        target += f" ({written / max(wrote, 1e-9):,.0f} events/s)"

    print(f"{_summary(history)} {target} generate={generated:.1f}s write={wrote:.1f}s")
    return 0


def _summary(history: History) -> str:
    return (
        f"customers={len(history.customers)} orders={len(history.orders)} "
        f"tickets={len(history.tickets)} churned={history.churned_fraction:.1%} "
        f"orders/customer={history.orders_per_customer:.1f}"
    )


if __name__ == "__main__":
    sys.exit(main())
