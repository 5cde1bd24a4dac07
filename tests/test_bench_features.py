"""The feature store benchmark: its memory accounting, and one tiny run on real Redis."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis

from feature_store import bench
from feature_store.online import Position, update_for
from schemas import Order, topics


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("7", 2),  # 7-bit integer: 1 byte + back-length
        ("20270", 4),  # a day number: 16-bit integer
        ("250000", 5),  # an offset: 24-bit integer
        ("1751378525", 6),  # whole epoch seconds: 32-bit integer
        ("1751378525.0", 14),  # float text: 1 + 12 + 1
        ("007", 5),  # leading zeros stay text
        ("#O000000001", 13),
        ("x" * 64, 67),  # 64+ bytes: 2-byte string header
    ],
)
def test_listpack_entry_bytes(text: str, size: int) -> None:
    assert bench.listpack_entry_bytes(text) == size


def test_every_field_of_an_order_update_has_a_kind() -> None:
    order = Order("O1", "C1", datetime(2026, 1, 2, tzinfo=UTC), 12.5, "card", "failed")
    update = update_for(topics.ORDERS, order, Position(topics.ORDERS, 3, 41))
    kinds = {bench.field_kind(name) for _, name, _ in update.ops}  # o, s, d and their tiles
    assert kinds == {"total", "tile", "time"}
    assert bench.field_kind(update.position.offset_field) == "offset"
    assert bench.field_kind("#O1") == "source_id"
    assert bench.field_kind("p:age") == "profile"
    assert bench.field_kind("risk_seq") == "risk"


@pytest.mark.integration
def test_a_tiny_run_measures_and_leaves_no_keys(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    before = set(client.scan_iter(match="bench-*", count=1000))

    result = bench.run(client, customers=300, throughput_updates=400, repeats=1)

    assert result["customers"] == 300
    assert result["memory"]["customers_without_key"] == 0
    assert result["load"]["outcomes"]["applied"] == result["load"]["updates"]
    assert 0 < result["redis_bytes_per_customer_mean"] <= result["redis_bytes_per_customer_max"]
    assert result["memory"]["listpack_share"] == 1.0
    assert result["update_batched_eps"] > 0 and result["update_single_eps"] > 0
    assert set(client.scan_iter(match="bench-*", count=1000)) <= before
    assert "customers" in bench.summary(result)
