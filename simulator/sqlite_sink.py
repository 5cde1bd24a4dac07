"""Write a history to SQLite in the seed article's shop schema (for offline training)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pandas as pd

from schemas.shop_db import (
    SHOP_INDEXES,
    SHOP_TABLES,
    customer_row,
    iso,
    item_rows,
    order_row,
    ticket_row,
)
from simulator.history import History

# The shop's tables (schemas.shop_db), and ours: `simulator_truth`, the generator's
# ground truth, which a real shop would not have.
SCHEMA = (
    SHOP_TABLES
    + """
CREATE TABLE simulator_truth (
    customer_id TEXT PRIMARY KEY,
    churn_propensity REAL,
    churn_ts TEXT,
    rhythm_shape REAL  -- the gamma shape of the customer's gaps; 1: memoryless (Poisson)
);
"""
)


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
            conn.executescript(SHOP_INDEXES)
    finally:
        conn.close()
    os.replace(tmp, target)


def _insert_rows(conn: sqlite3.Connection, history: History) -> None:
    conn.executemany(
        "INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?)",
        (customer_row(c) for c in history.customers),
    )
    conn.executemany(
        "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)", (order_row(o) for o in history.orders)
    )
    conn.executemany(
        "INSERT INTO order_items VALUES (?, ?, ?, ?)",
        (row for o in history.orders for row in item_rows(o)),
    )
    conn.executemany(
        "INSERT INTO support_tickets VALUES (?, ?, ?, ?, ?)",
        (ticket_row(t) for t in history.tickets),
    )
    truth = history.truth
    conn.executemany(
        "INSERT INTO simulator_truth VALUES (?, ?, ?, ?)",
        (
            (cid, float(p), None if pd.isna(ts) else iso(ts.to_pydatetime()), float(shape))
            for cid, p, ts, shape in zip(
                truth["customer_id"],
                truth["churn_propensity"],
                truth["churn_ts"],
                truth["rhythm_shape"],
                strict=True,
            )
        ),
    )
