"""Keeps the shop database training reads up to date from the input topics, so that
retraining learns from what the worker consumed (`python -m stream_app shop-sink`).

It reads `customers`, `orders` and `support-tickets` from the start, decodes each
message with the worker's decoder and limits (`scoring.decoding`: what the worker
dead-letters, the sink skips), and writes the rows of the seed schema
(`schemas.shop_db`): a profile replaces the customer's row, an order or a ticket is
added once (a repeated id is the producer's duplicate, as the worker counts it), and a
tombstone on `customers` erases the customer as the worker does: every row of theirs
dated up to the tombstone's time goes, and stays gone however late such an event
arrives (the topics are read side by side, not merged by event time: the erasure's
instant is kept in `erasures`, so the order they arrive in does not matter); a later
event brings them back. Each batch's rows and the next offset of every partition it read are
one SQLite transaction, and the sink resumes from those offsets, so every message is
in the database exactly once however often the sink stops. The consumer group is
never joined: offsets live with the rows.

`--catch-up` stops once every partition's end is written (the retraining job runs it
first); without it the sink follows the topics until stopped.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from schemas import Customer, Order, SupportTicket, topics
from schemas.shop_db import (
    SHOP_INDEXES,
    SHOP_TABLES,
    customer_row,
    iso,
    item_rows,
    order_row,
    ticket_row,
)
from scoring.decoding import Erasure, InputDecoder, Limits
from scoring.merge import InputMessage

log = logging.getLogger(__name__)

OFFSETS = """
CREATE TABLE IF NOT EXISTS stream_offsets (
    topic TEXT, -- with the deployment's prefix: a new prefix reads its topics anew
    partition INTEGER,
    next_offset INTEGER,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS erasures (customer_id TEXT PRIMARY KEY, erased_at TEXT);
"""
BATCH = 1000
# The client needs a group id, and asks for the group's coordinator though it never
# joins nor commits: its principal may describe and read this group (kafka_acls).
GROUP = "churn-shop-sink"


class ShopSink:
    def __init__(self, db: Path, config: dict[str, object], prefix: str, limits: Limits) -> None:
        db.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(db)
        self.conn.execute("PRAGMA journal_mode = WAL")  # training reads while it writes
        self.conn.executescript(SHOP_TABLES + SHOP_INDEXES + OFFSETS)
        self.consumer = Consumer(
            {
                **config,
                "group.id": GROUP,
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        self.prefix = prefix
        self.decoder = InputDecoder(limits)
        self.counts: Counter[str] = Counter()

    def assign(self, timeout: float = 30.0) -> list[TopicPartition]:
        """Every partition of the input topics, from the offset the database records."""
        stored = {
            (topic, partition): offset
            for topic, partition, offset in self.conn.execute("SELECT * FROM stream_offsets")
        }
        assigned = []
        for topic in topics.INPUT_TOPICS:
            name = self.prefix + topic
            metadata = self.consumer.list_topics(name, timeout=timeout).topics[name]
            if metadata.error is not None:
                raise KafkaException(metadata.error)
            for partition in sorted(metadata.partitions):
                start = stored.get((name, partition), OFFSET_BEGINNING)
                assigned.append(TopicPartition(name, partition, start))
        self.consumer.assign(assigned)
        return assigned

    def run(self, catch_up: bool) -> Counter[str]:
        """Write batches until stopped (or, with `catch_up`, until every partition's end
        is written); what was written, by kind."""
        waiting = {(tp.topic, tp.partition) for tp in self.assign()}
        while not (catch_up and not waiting):
            messages = self.consumer.consume(BATCH, timeout=1.0)
            events = []
            for message in messages:
                error = message.error()
                key = _where(message)
                if error is None:
                    events.append(message)
                    waiting.add(key)
                elif error.code() == KafkaError._PARTITION_EOF:
                    waiting.discard(key)
                else:
                    raise KafkaException(error)
            if events:
                self.write(events)
        return self.counts

    def write(self, messages: Sequence[Message]) -> None:
        """The messages' rows and the partitions' next offsets, in one transaction."""
        next_offsets: dict[tuple[str, int], int] = {}
        with self.conn:
            for message in messages:
                name, partition = _where(message)
                topic = name.removeprefix(self.prefix)
                self._apply(*self._decode(topic, message))
                next_offsets[name, partition] = (message.offset() or 0) + 1
            self.conn.executemany(
                "INSERT OR REPLACE INTO stream_offsets VALUES (?, ?, ?)",
                [(t, p, o) for (t, p), o in next_offsets.items()],
            )

    def _decode(self, topic: str, message: Message) -> tuple[object | None, float]:
        kind, millis = message.timestamp()
        decoded = self.decoder(
            InputMessage(
                topic,
                _where(message)[1],
                message.offset() or 0,
                message.key(),
                message.value(),
                None if kind == TIMESTAMP_NOT_AVAILABLE else millis / 1000,
            )
        )
        return decoded.event, decoded.time

    def _apply(self, event: object | None, time: float) -> None:
        sql = self.conn.execute
        customer = getattr(event, "customer_id", None)
        if isinstance(event, Erasure):
            erase(self.conn, event.customer_id, iso(utc(time)))
            self.counts["erasures"] += 1
        elif customer is not None and self._erased_after(customer, time):
            self.counts["erased"] += 1  # dated before the customer's erasure
        elif isinstance(event, Order):
            added = sql("INSERT OR IGNORE INTO orders VALUES (?, ?, ?, ?, ?, ?)", order_row(event))
            if added.rowcount == 1:
                self.conn.executemany(
                    "INSERT INTO order_items VALUES (?, ?, ?, ?)", item_rows(event)
                )
            self.counts["orders" if added.rowcount == 1 else "duplicates"] += 1
        elif isinstance(event, SupportTicket):
            added = sql(
                "INSERT OR IGNORE INTO support_tickets VALUES (?, ?, ?, ?, ?)", ticket_row(event)
            )
            self.counts["tickets" if added.rowcount == 1 else "duplicates"] += 1
        elif isinstance(event, Customer):
            sql(
                "INSERT OR REPLACE INTO customers VALUES (?, ?, ?, ?, ?, ?, ?)", customer_row(event)
            )
            self.counts["profiles"] += 1
        else:
            self.counts["skipped"] += 1  # the worker dead-letters it

    def _erased_after(self, customer: str, time: float) -> bool:
        found = self.conn.execute(
            "SELECT erased_at FROM erasures WHERE customer_id = ?", (customer,)
        ).fetchone()
        return found is not None and iso(utc(time)) <= found[0]

    def close(self) -> None:
        self.consumer.close()
        self.conn.close()


def _where(message: Message) -> tuple[str, int]:
    """A fetched message's topic and partition (typed optional by the client)."""
    return message.topic() or "", message.partition() or 0


def erase(conn: sqlite3.Connection, customer_id: str, at: str) -> None:
    """Delete the customer's profile and their rows dated up to `at` (ISO UTC text,
    which compares as time does), and keep `at` for their events still to come."""
    orders = "SELECT order_id FROM orders WHERE customer_id = ? AND order_date <= ?"
    conn.execute(f"DELETE FROM order_items WHERE order_id IN ({orders})", (customer_id, at))
    conn.execute("DELETE FROM orders WHERE customer_id = ? AND order_date <= ?", (customer_id, at))
    conn.execute(
        "DELETE FROM support_tickets WHERE customer_id = ? AND created_at <= ?", (customer_id, at)
    )
    conn.execute("DELETE FROM customers WHERE customer_id = ?", (customer_id,))
    conn.execute(
        "INSERT INTO erasures VALUES (?, ?) ON CONFLICT (customer_id) "
        "DO UPDATE SET erased_at = max(erased_at, excluded.erased_at)",
        (customer_id, at),
    )


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
