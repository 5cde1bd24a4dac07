"""The shop database training reads (the seed article's schema), and each input
event's rows in it: one definition for the simulator's writer
(`simulator/sqlite_sink.py`) and the sink that keeps it up to date from the input
topics (`stream_app/shop_sink.py`).

Times are ISO-8601 UTC text, e.g. 2025-07-01T12:00:00+00:00.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas.events import Customer, Order, SupportTicket

# The shop's tables, exactly as in the seed article.
SHOP_TABLES = """
CREATE TABLE IF NOT EXISTS customers (
    customer_id TEXT PRIMARY KEY,
    age INTEGER,
    gender TEXT,
    city TEXT,
    registration_date TEXT,
    email_verified INTEGER,
    phone_verified INTEGER
);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    customer_id TEXT,
    order_date TEXT,
    total_amount REAL,
    payment_method TEXT,
    delivery_status TEXT
);
CREATE TABLE IF NOT EXISTS order_items (
    order_id TEXT,
    product_category TEXT,
    quantity INTEGER,
    price REAL
);
CREATE TABLE IF NOT EXISTS support_tickets (
    ticket_id TEXT PRIMARY KEY,
    customer_id TEXT,
    created_at TEXT,
    resolution_time_hours REAL,
    satisfaction_score INTEGER
);
"""

# Built after a bulk insert: building an index once is cheaper than maintaining it.
SHOP_INDEXES = """
CREATE INDEX IF NOT EXISTS idx_customers_registration_date ON customers (registration_date);
CREATE INDEX IF NOT EXISTS idx_orders_customer_id ON orders (customer_id);
CREATE INDEX IF NOT EXISTS idx_orders_order_date ON orders (order_date);
CREATE INDEX IF NOT EXISTS idx_order_items_order_id ON order_items (order_id);
CREATE INDEX IF NOT EXISTS idx_support_tickets_customer_id ON support_tickets (customer_id);
CREATE INDEX IF NOT EXISTS idx_support_tickets_created_at ON support_tickets (created_at);
"""


def iso(ts: datetime) -> str:
    return ts.isoformat()


def customer_row(c: Customer) -> tuple[Any, ...]:
    """`customers`' row of a profile."""
    return (
        c.customer_id,
        c.age,
        c.gender,
        c.city,
        iso(c.registration_date),
        int(c.email_verified),
        int(c.phone_verified),
    )


def order_row(o: Order) -> tuple[Any, ...]:
    """`orders`' row of an order."""
    return (
        o.order_id,
        o.customer_id,
        iso(o.order_ts),
        o.total_amount,
        o.payment_method,
        o.delivery_status,
    )


def item_rows(o: Order) -> list[tuple[Any, ...]]:
    """`order_items`' rows of an order."""
    return [(o.order_id, i.product_category, i.quantity, i.price) for i in o.items]


def ticket_row(t: SupportTicket) -> tuple[Any, ...]:
    """`support_tickets`' row of a ticket."""
    return (
        t.ticket_id,
        t.customer_id,
        iso(t.created_ts),
        t.resolution_time_hours,
        t.satisfaction_score,
    )
