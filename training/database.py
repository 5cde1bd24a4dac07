"""Read the shop's SQLite database into the frames the offline feature path expects.

The database follows the seed schema (customers, orders, order_items,
support_tickets). Only the columns some feature reads are required; order_items,
gender, city and payment_method feed no feature yet, so their absence is no error.
Timestamps are ISO-8601 text; text without an offset is taken to be UTC.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd

from feature_store.offline import CUSTOMER_COLUMNS, ORDER_COLUMNS, TICKET_COLUMNS, History

# Table -> the columns read from it, in the seed schema's names.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": (
        "customer_id",
        "age",
        "registration_date",
        "email_verified",
        "phone_verified",
    ),
    "orders": ("order_id", "customer_id", "order_date", "total_amount", "delivery_status"),
    "support_tickets": (
        "ticket_id",
        "customer_id",
        "created_at",
        "resolution_time_hours",
        "satisfaction_score",
    ),
}

_TRUE_TEXT = frozenset({"1", "true", "t", "yes", "y"})


class DatabaseError(Exception):
    """The database cannot be read as a shop history; the message says what is wrong."""


def load_history(db_path: str | Path) -> History:
    """The database's customers, orders and tickets as a `feature_store.offline.History`."""
    path = Path(db_path)
    if not path.is_file():
        raise DatabaseError(f"database {path} does not exist")
    # Read-only URI: a mistyped path must never leave an empty database behind.
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            _check_schema(conn, path)
            # Table and column names come from REQUIRED_COLUMNS, never from input.
            frames = {
                table: pd.read_sql_query(f"SELECT {', '.join(columns)} FROM {table}", conn)
                for table, columns in REQUIRED_COLUMNS.items()
            }
    except (sqlite3.Error, pd.errors.DatabaseError) as err:
        raise DatabaseError(f"cannot read {path} as SQLite: {err}") from err
    return History(
        orders=_orders(frames["orders"]),
        tickets=_tickets(frames["support_tickets"]),
        customers=_customers(frames["customers"]),
    )


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    tables = {
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
    }
    missing: list[str] = []
    for table, columns in REQUIRED_COLUMNS.items():
        if table not in tables:
            missing.append(f"table {table}")
            continue
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        missing += [f"column {table}.{c}" for c in columns if c not in present]
    if missing:
        raise DatabaseError(f"database {path} lacks {', '.join(missing)}")


def to_epoch_seconds(values: pd.Series, what: str) -> np.ndarray:
    """ISO-8601 text -> epoch seconds as float64 (NaN where NULL).

    Equal to the online path's `datetime.timestamp()`: that is the integer number of
    microseconds divided by 10**6, and whole microseconds since 1970 stay below 2**53,
    so the int64 -> float64 step is exact and the division rounds the same way.
    """
    try:
        moments = pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError) as err:
        raise DatabaseError(f"{what} holds a value that is not an ISO-8601 time: {err}") from err
    micros = moments.dt.tz_convert(None).to_numpy(dtype="datetime64[us]")
    seconds = micros.astype(np.int64) / 1e6
    seconds[np.isnat(micros)] = np.nan
    return seconds


def _ids(frame: pd.DataFrame, table: str, columns: tuple[str, ...]) -> dict[str, pd.Series]:
    # Ids are strings on the wire (schemas.events), whatever type the database used.
    out = {}
    for column in columns:
        _require_values(frame[column], f"{table}.{column}")
        out[column] = frame[column].astype(str)
    return out


def _require_values(values: pd.Series, what: str) -> None:
    nulls = int(values.isna().sum())
    if nulls:
        raise DatabaseError(f"{what} has {nulls} NULL values; every row needs one")


def _numbers(values: pd.Series, what: str) -> pd.Series:
    try:
        return pd.to_numeric(values, errors="raise").astype("float64")
    except (ValueError, TypeError) as err:
        raise DatabaseError(f"{what} holds a value that is not a number: {err}") from err


def _flags(values: pd.Series) -> pd.Series:
    """0/1 from integers, booleans or text like 'true'; NULL is 0 (the contract's default)."""

    def flag(value: object) -> int:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return 0
        if isinstance(value, str):
            return int(value.strip().lower() in _TRUE_TEXT)
        return int(bool(value))

    return values.map(flag).astype("int64")


def _event_times(frame: pd.DataFrame, table: str, column: str) -> np.ndarray:
    ts = to_epoch_seconds(frame[column], f"{table}.{column}")
    nulls = int(np.isnan(ts).sum())
    if nulls:
        raise DatabaseError(f"{table}.{column} has {nulls} NULL values; every event needs a time")
    return ts


def _orders(frame: pd.DataFrame) -> pd.DataFrame:
    amount = _numbers(frame["total_amount"], "orders.total_amount")
    _require_values(amount, "orders.total_amount")
    columns = {
        **_ids(frame, "orders", ("customer_id", "order_id")),
        "ts": _event_times(frame, "orders", "order_date"),
        "total_amount": amount,
        "delivery_status": frame["delivery_status"],
    }
    return pd.DataFrame(columns, columns=list(ORDER_COLUMNS))


def _tickets(frame: pd.DataFrame) -> pd.DataFrame:
    columns = {
        **_ids(frame, "support_tickets", ("customer_id", "ticket_id")),
        "ts": _event_times(frame, "support_tickets", "created_at"),
        "resolution_time_hours": _numbers(
            frame["resolution_time_hours"], "support_tickets.resolution_time_hours"
        ),
        "satisfaction_score": _numbers(
            frame["satisfaction_score"], "support_tickets.satisfaction_score"
        ),
    }
    return pd.DataFrame(columns, columns=list(TICKET_COLUMNS))


def _customers(frame: pd.DataFrame) -> pd.DataFrame:
    columns = {
        **_ids(frame, "customers", ("customer_id",)),
        "age": _numbers(frame["age"], "customers.age"),
        "email_verified": _flags(frame["email_verified"]),
        "phone_verified": _flags(frame["phone_verified"]),
        # A missing registration date leaves tenure unknown rather than failing the run.
        "registration_ts": to_epoch_seconds(
            frame["registration_date"], "customers.registration_date"
        ),
    }
    return pd.DataFrame(columns, columns=list(CUSTOMER_COLUMNS))


def load_truth(db_path: str | Path) -> pd.Series | None:
    """The simulator's latent churn propensity per customer, or None for a real shop.

    Only a simulated database has the `simulator_truth` table; it feeds the oracle
    AUC in the report and never the model."""
    uri = f"{Path(db_path).resolve().as_uri()}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'simulator_truth'"
        ).fetchone()
        if found is None:
            return None
        frame = pd.read_sql_query("SELECT customer_id, churn_propensity FROM simulator_truth", conn)
    return pd.Series(
        frame["churn_propensity"].to_numpy(dtype=np.float64),
        index=frame["customer_id"].astype(str),
        name="churn_propensity",
    )
