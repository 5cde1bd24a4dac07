"""Deterministic synthetic e-commerce history, and sinks for Kafka, SQLite and JSON lines."""

from simulator.history import (
    DEFAULT_START,
    SHIFT_KINDS,
    Event,
    History,
    Shift,
    Treatment,
    generate_history,
)
from simulator.jsonl_sink import read_jsonl, write_jsonl
from simulator.kafka_sink import DeliveryError, TokenBucket, ensure_topics, produce
from simulator.sqlite_sink import write_sqlite

__all__ = [
    "DEFAULT_START",
    "SHIFT_KINDS",
    "DeliveryError",
    "Event",
    "History",
    "Shift",
    "TokenBucket",
    "Treatment",
    "ensure_topics",
    "generate_history",
    "produce",
    "read_jsonl",
    "write_jsonl",
    "write_sqlite",
]
