"""What an input message may be (`scoring.decoding`): each limit refuses with a reason
that names it, nothing raises, and a dead letter stays small whatever the input."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.decoder import SHAPES, seconds
from schemas import Customer, Order, OrderItem, topics
from scoring.decoding import (
    DEAD_LETTER_KEY_BYTES,
    REFUSALS,
    Erasure,
    InputDecoder,
    Limits,
    _depth,
)
from scoring.merge import InputMessage
from tests.core import partition_of

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
LIMITS = Limits()


def decoder(limits: Limits = LIMITS) -> InputDecoder:
    return InputDecoder(limits, partition_of=partition_of, clock=NOW.timestamp)


def message(
    value: bytes | None,
    key: bytes | None = b"C1",
    topic: str = topics.ORDERS,
    timestamp: float | None = NOW.timestamp(),
    partition: int | None = None,
) -> InputMessage:
    if partition is None:
        partition = partition_of(key.decode("utf-8", "replace")) if key else 0
    return InputMessage(topic, partition, 7, key, value, timestamp)


def order(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "order_id": "O1",
        "customer_id": "C1",
        "order_ts": "2026-06-01T11:00:00Z",
        "total_amount": 20.0,
        "payment_method": "card",
        "delivery_status": "delivered",
    }
    fields.update(changes)
    return json.dumps(fields).encode()


def reason(msg: InputMessage, limits: Limits = LIMITS) -> str | None:
    return decoder(limits)(msg).reason


def test_a_valid_order_decodes_with_its_event_time() -> None:
    decoded = decoder()(message(order()))
    assert decoded.reason is None and isinstance(decoded.event, Order)
    assert decoded.time == datetime(2026, 6, 1, 11, tzinfo=UTC).timestamp()


def test_an_event_dated_beyond_the_broker_time_plus_the_skew_is_refused() -> None:
    assert "(the message's broker timestamp + max clock skew)" in str(
        reason(message(order(order_ts="2999-01-01T00:00:00Z")))
    )
    within = (NOW + timedelta(minutes=59)).isoformat()
    beyond = (NOW + timedelta(minutes=61)).isoformat()
    assert reason(message(order(order_ts=within))) is None
    assert "order_ts" in str(reason(message(order(order_ts=beyond))))


def test_without_a_broker_timestamp_the_wall_clock_bounds_event_times() -> None:
    late = (NOW + timedelta(hours=2)).isoformat()
    assert "latest accepted" in str(reason(message(order(order_ts=late), timestamp=None)))


def test_an_event_dated_before_the_floor_is_refused_and_the_floor_is_a_setting() -> None:
    old = order(order_ts="1999-12-31T23:59:59Z")
    assert "min event time" in str(reason(message(old)))
    floor = Limits(min_event_time=datetime(1990, 1, 1, tzinfo=UTC).timestamp())
    assert reason(message(old), floor) is None


def test_every_date_of_a_profile_is_bounded_not_only_its_event_time() -> None:
    future_signup = Customer("C1", NOW + timedelta(days=400), updated_at=NOW)
    msg = message(msgspec.json.encode(future_signup), topic=topics.CUSTOMERS)
    assert "registration_date" in str(reason(msg))


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"total_amount": 1e18}, "<= 10000000.0 - at `$.total_amount`"),
        ({"total_amount": -1}, ">= 0.0 - at `$.total_amount`"),
        ({"payment_method": "x" * 101}, "length <= 100 - at `$.payment_method`"),
        ({"order_id": ""}, "length >= 1 - at `$.order_id`"),
        ({"items": [{"product_category": "a", "quantity": 10**6, "price": 1}]}, "quantity"),
        ({"items": [{"product_category": "a", "quantity": 1, "price": 1}] * 1001}, "<= 1000"),
        ({"delivery_status": "teleported"}, "delivery_status"),
    ],
)
def test_a_value_outside_the_contract_is_refused_naming_field_and_bound(
    changes: dict[str, object], named: str
) -> None:
    assert named in str(reason(message(order(**changes))))


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"1e999", b"-1e999"])
def test_non_finite_amounts_are_refused(number: bytes) -> None:
    value = order(total_amount=0).replace(b'"total_amount": 0', b'"total_amount": ' + number)
    assert reason(message(value)) is not None


def test_deep_nesting_is_refused_before_parsing_however_deep() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert reason(message(deep)) == "JSON nested 100000 deep exceeds the limit of 32"
    hidden = order(extra=json.loads("[" * 900 + "]" * 900))
    assert reason(message(hidden)) == "JSON nested 901 deep exceeds the limit of 32"
    # Brackets inside strings do not count; a large order is not deep.
    text = order(payment_method="[[[[{{{{" * 13)
    assert "payment_method" in str(reason(message(text)))  # too long, not too deep
    items = [msgspec.to_builtins(OrderItem("a", 1, 1.0))] * 1000
    assert reason(message(order(items=items))) is None


def test_a_message_over_the_size_limit_is_refused_without_being_parsed() -> None:
    big = order(payment_method="x" * 300_000)
    assert (
        reason(message(big)) == f"message of {len(big) + 2} bytes exceeds the limit of 262144 bytes"
    )


def test_keys_must_be_the_customer_id_on_its_partition() -> None:
    assert reason(message(order(), key=None)) == "null key: inputs are keyed by customer_id"
    assert reason(message(order(), key=b"C2")) == "key mismatch: key 'C2', customer_id 'C1'"
    assert reason(message(order(), key=b"\xff\xfe")) == "key is not UTF-8"
    assert "longer than any customer_id" in str(reason(message(order(), key=b"k" * 600)))
    wrong = (partition_of("C1") + 1) % 4
    assert "belongs to partition" in str(reason(message(order(), partition=wrong)))


def test_a_tombstone_on_customers_is_an_erasure_elsewhere_a_dead_letter() -> None:
    decoded = decoder()(message(None, topic=topics.CUSTOMERS))
    assert decoded.event == Erasure("C1") and decoded.time == NOW.timestamp()
    assert "tombstone" in str(reason(message(None, topic=topics.ORDERS)))
    assert reason(message(None, key=None, topic=topics.CUSTOMERS)) is not None


def test_a_dead_letter_keeps_a_bounded_prefix_with_the_whole_value_length_and_hash() -> None:
    value = b'"' * 600_000
    msg = message(value, key=b"C1")
    decode = decoder()
    letter = decode.dead_letter(msg, str(decode(msg).reason), NOW)
    assert letter.key == "C1" and letter.value_bytes == 600_000 and letter.value_truncated
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
    assert letter.value == '"' * LIMITS.dead_letter_value_bytes
    # JSON escapes a quote as two bytes: the letter is about twice the kept prefix.
    assert len(msgspec.json.encode(letter)) < 2 * LIMITS.dead_letter_value_bytes + 1024


@pytest.mark.parametrize(
    ("msg", "category"),
    [
        (message(order(payment_method="x" * 300_000)), "too_large"),
        (message(b"[" * 40 + b"]" * 40), "nesting"),
        (message(b"not json"), "malformed_json"),
        (message(order().replace(b"20.0", b"NaN")), "malformed_json"),
        (message(order(total_amount="20")), "wrong_type"),
        (message(b"[1]"), "wrong_type"),
        (message(b'{"customer_id": "C1"}'), "missing_field"),
        (message(order(total_amount=1e18)), "out_of_bounds"),
        (message(order(order_id="")), "out_of_bounds"),
        (message(order().replace(b"20.0", b"1e999")), "out_of_bounds"),
        (
            message(order(items=[{"product_category": "a", "quantity": 1, "price": 1}] * 1001)),
            "out_of_bounds",
        ),
        (message(order(delivery_status="teleported")), "invalid_value"),
        (message(order(currency="euro")), "invalid_value"),
        (message(order(order_ts="yesterday")), "invalid_value"),
        (message(order(order_ts="2026-06-01T11:00:00")), "invalid_value"),
        (message(order(order_ts="1999-12-31T23:59:59Z")), "before_floor"),
        (message(order(order_ts="2999-01-01T00:00:00Z")), "beyond_skew"),
        (message(order(), key=None), "key_null"),
        (message(order(), key=b"k" * 600), "key_too_long"),
        (message(order(), key=b"\xff\xfe"), "key_not_utf8"),
        (message(order(), key=b"C2"), "key_mismatch"),
        (message(order(), partition=(partition_of("C1") + 1) % 4), "wrong_partition"),
        (message(None), "tombstone"),
        (message(order(), topic="unknown"), "unknown_topic"),
    ],
)
def test_each_refusal_has_its_category(msg: InputMessage, category: str) -> None:
    decoded = decoder()(msg)
    assert decoded.reason is not None and decoded.category == category
    assert category in REFUSALS


@settings(max_examples=300, deadline=None)
@given(
    topic=st.sampled_from([*topics.INPUT_TOPICS, "unknown"]),
    key=st.none() | st.binary(max_size=DEAD_LETTER_KEY_BYTES * 2),
    value=st.none() | st.binary(max_size=4096),
    timestamp=st.none() | st.floats(allow_nan=True, allow_infinity=True),
)
def test_no_input_makes_the_decoder_raise_and_every_dead_letter_is_small(
    topic: str, key: bytes | None, value: bytes | None, timestamp: float | None
) -> None:
    msg = InputMessage(topic, 0, 0, key, value, timestamp)
    decode = decoder()
    decoded = decode(msg)
    assert (decoded.reason is None) != (decoded.event is None)
    assert (decoded.reason is None) == (decoded.category is None)
    assert decoded.category is None or decoded.category in REFUSALS
    if decoded.reason is not None:
        letter = decode.dead_letter(msg, decoded.reason, NOW)
        # Worst case: every kept byte JSON-escaped as \\uXXXX (6 bytes).
        bound = 6 * (LIMITS.dead_letter_value_bytes + DEAD_LETTER_KEY_BYTES) + 8 * 1024
        assert len(msgspec.json.encode(letter)) < bound


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_message_costs_time_linear_in_its_size_whatever_its_shape(shape: str) -> None:
    # The sizes' ratio is 8: linear costs about that (cache effects add a little),
    # while the quadratic nesting check this replaces cost 58 times as much (3.4 s
    # against 197 s). Each decode is refused, and says why.
    small, large = 32 * 1024, LIMITS.max_message_bytes - 64
    decode = decoder()
    for size in (small, large):
        assert decode(message(SHAPES[shape](size))).category in ("nesting", "malformed_json")
    ratio = seconds(decode, SHAPES[shape](large)) / seconds(decode, SHAPES[shape](small))
    assert ratio <= 12, f"{shape}: the larger message cost {ratio:.1f} times the smaller"


def test_strings_hide_their_brackets_from_the_nesting_check() -> None:
    inside = json.dumps({"note": "[" * 100 + '\\"{' * 100}).encode()
    assert _depth(inside, LIMITS.max_depth) == 1
    escaped_quote_then_deep = b'["\\\\"' + b"[" * 40 + b"]" * 41
    assert _depth(escaped_quote_then_deep, LIMITS.max_depth) == 41
    unterminated = b"[" * 40 + b'"' + b'\\"' * 1000
    assert _depth(unterminated, LIMITS.max_depth) == 40
