"""Write a history to SQLite in the seed article's shop schema (for offline training)."""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime
from pathlib import Path

import pandas as pd

from simulator.history import History

# The shop's schema, exactly as in the seed article. `simulator_truth` is ours: the
# generator's ground truth, which a real shop would not have.
SCHEMA = """
CREATE TABLE customers (
    customer_id TEXT PRIMARY KEY,
    age INTEGER,
    gender TEXT,
    city TEXT,
    registration_date TEXT,
    email_verified INTEGER,
    phone_verified INTEGER
);
CREATE TABLE orders (
    order_id TEXT PRIMARY KEY,
    customer_id TEXT,
    order_date TEXT,
    total_amount REAL,
    payment_method TEXT,
    delivery_status TEXT
);
CREATE TABLE order_items (
    order_id TEXT,
    product_category TEXT,
    quantity INTEGER,
    price REAL
);
CREATE TABLE support_tickets (
    ticket_id TEXT PRIMARY KEY,
    customer_id TEXT,
    created_at TEXT,
    resolution_time_hours REAL,
    satisfaction_score INTEGER
);
CREATE TABLE simulator_truth (
    customer_id TEXT PRIMARY KEY,
    churn_propensity REAL,
    churn_ts TEXT
);
"""

# Created after the bulk insert: building an index once is cheaper than maintaining it.
INDEXES = """
CREATE INDEX idx_customers_registration_date ON customers (registration_date);
CREATE INDEX idx_orders_customer_id ON orders (customer_id);
CREATE INDEX idx_orders_order_date ON orders (order_date);
CREATE INDEX idx_order_items_order_id ON order_items (order_id);
CREATE INDEX idx_support_tickets_customer_id ON support_tickets (customer_id);
CREATE INDEX idx_support_tickets_created_at ON support_tickets (created_at);
"""


def iso(ts: datetime) -> str:
    """ISO-8601 UTC text as stored in the database, e.g. 2025-07-01T12:00:00+00:00."""
    return ts.isoformat()


def write_sqlite(history: History, path: str | os.PathLike[str]) -> None:
    """Write `history` to a new SQLite file at `path`, replacing any existing file.

    The file is built beside the target and renamed into place, so readers never see a
    half-written database and a failed run leaves the old file intact.
    """
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        # Durability is pointless for a file we rename only once complete.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        with conn:  # one transaction
            conn.executescript(SCHEMA)
            _insert_rows(conn, history)
            conn.executescript(INDEXES)
    finally:
        conn.close()
    os.replace(tmp, target)


def _insert_rows(conn: sqlite3.Connection, history: History) -> None:
    conn.executemany(
        "INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            (
                c.customer_id,
                c.age,
                c.gender,
                c.city,
                iso(c.registration_date),
                int(c.email_verified),
                int(c.phone_verified),
            )
            for c in history.customers
        ),
    )
    conn.executemany(
        "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)",
        (
            (
                o.order_id,
                o.customer_id,
                iso(o.order_ts),
                o.total_amount,
                o.payment_method,
                o.delivery_status,
            )
            for o in history.orders
        ),
    )
    conn.executemany(
        "INSERT INTO order_items VALUES (?, ?, ?, ?)",
        (
            (o.order_id, item.product_category, item.quantity, item.price)
            for o in history.orders
            for item in o.items
        ),
    )
    conn.executemany(
        "INSERT INTO support_tickets VALUES (?, ?, ?, ?, ?)",
        (
            (
                t.ticket_id,
                t.customer_id,
                iso(t.created_ts),
                t.resolution_time_hours,
                t.satisfaction_score,
            )
            for t in history.tickets
        ),
    )
    truth = history.truth
    conn.executemany(
        "INSERT INTO simulator_truth VALUES (?, ?, ?)",
        (
            (cid, float(p), None if pd.isna(ts) else iso(ts.to_pydatetime()))
            for cid, p, ts in zip(
                truth["customer_id"], truth["churn_propensity"], truth["churn_ts"], strict=True
            )
        ),
    )
