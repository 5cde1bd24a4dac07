"""The feature store benchmark: its helpers, and one tiny run on real Redis."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
import redis

from bench import features as bench
from bench.common import in_log_order, redis_work
from feature_store.online import CustomerState, apply_event, encode_state, ids_of
from schemas import Customer, Order, topics
from scoring.inactivity import RESCORE_AFTER_DAYS
from simulator.history import generate_history

DAY = 86_400.0


def test_the_parts_of_a_state_add_up_to_its_encoding() -> None:
    state = CustomerState("C1")
    apply_event(state, topics.CUSTOMERS, Customer("C1", datetime(2025, 1, 1, tzinfo=UTC)))
    order = Order("O1", "C1", datetime(2026, 1, 2, tzinfo=UTC), 12.5, "card", "failed")
    apply_event(state, topics.ORDERS, order)
    parts = bench.state_parts(state)
    assert set(parts) == set(CustomerState.__struct_fields__)
    assert parts["ids"] == len(msgspec.msgpack.encode({"orders:O1": ids_of(state)["orders:O1"]}))
    # A MessagePack array of ten items has a one-byte header.
    assert sum(parts.values()) + 1 == len(encode_state(state))


def test_a_rescore_is_the_first_one_not_before_the_instant() -> None:
    seen = 1_000 * DAY
    first = seen + RESCORE_AFTER_DAYS[0] * DAY
    assert bench.rescore_after(seen, first, seen) == first
    assert bench.rescore_after(seen, first, seen + 20 * DAY) == seen + 21 * DAY
    assert bench.rescore_after(seen, first, seen + 21 * DAY) == seen + 21 * DAY
    assert bench.rescore_after(seen, first, seen + 91 * DAY) is None


def test_messages_get_the_offsets_kafka_gives_them() -> None:
    events = list(generate_history(30, seed=1, days=30).events_in_time_order())
    messages = in_log_order(events, 4)
    assert len(messages) == len(events)
    by_tp: dict[tuple[str, int], list[int]] = {}
    for message in messages:
        by_tp.setdefault((message.topic, message.partition), []).append(message.offset)
    assert all(offsets == list(range(len(offsets))) for offsets in by_tp.values())


def test_redis_work_sums_the_named_commands_per_event_and_counts_forks() -> None:
    before = {"cpu_s": 1.0, "forks": 3, "commands": {"mget": (10, 100), "evalsha": (5, 500)}}
    after = {
        "cpu_s": 1.5,
        "forks": 4,  # Redis rewrote its AOF meanwhile
        "commands": {"mget": (20, 300), "evalsha": (7, 900), "get": (100, 1000)},
    }
    work = redis_work(before, after, events=100, commands=("mget", "evalsha"))
    assert work["commandstats_usec_per_event"] == 6.0  # (200 + 400) / 100
    assert work["info_cpu_usec_per_event"] == 5000.0
    assert set(work["commands"]) == {"mget", "evalsha"}
    assert work["commands"]["evalsha"]["usec_per_call"] == 200.0
    assert work["forks"] == 1


@pytest.mark.integration
def test_a_tiny_run_measures_and_leaves_no_keys(redis_url: str, recency_models_dir: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    before = set(client.scan_iter(match="{bench-*", count=1000))

    result = bench.run(
        client,
        customers=300,
        throughput_events=400,
        repeats=1,
        per_event_limit=100,
        model_dir=recency_models_dir,
    )

    memory, build = result["memory"], result["build"]
    assert result["customers"] == 300
    assert memory["customers_without_key"] == 0
    assert build["outcomes"]["applied"] > 0
    assert sum(build["outcomes"].values()) == build["messages"]
    assert 0 < result["redis_bytes_per_customer_mean"] <= result["redis_bytes_per_customer_max"]
    assert memory["schedule"]["entries"] > 0
    assert memory["state_key_bytes"]["mean"] > memory["state_blob_bytes"]["mean"]
    assert result["update_batched_eps"] > 0 and result["update_naive_eps"] > 0
    assert result["throughput"]["redis_usec_per_event"]["batched"]["commandstats"] > 0
    assert set(client.scan_iter(match="{bench-*", count=1000)) <= before
    assert "customers" in bench.summary(result)
