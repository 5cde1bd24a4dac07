"""Hostile inputs, generated with Hypothesis from the contracts' JSON Schemas.

Each input says what the worker must do with it: dead-letter it (most), erase (a
tombstone on `customers`) or process it (a valid event with an unknown field, which
the contracts allow). Every input is about a customer of its own ("FZ..."), so
what it does, if anything, cannot touch the valid customers it is mixed with; and
its event time, where it has a valid one, is the stream's first instant, so it
never moves a partition's stream time.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import count
from typing import Any, Literal

import msgspec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bench.decoder import SHAPES
from schemas import INPUT_EVENTS, schema_path, topics
from stream_app.partitioning import partition_of

Expect = Literal["dead", "erased", "processed"]
SCHEMA_NAMES = {
    topics.ORDERS: "orders",
    topics.SUPPORT_TICKETS: "support-tickets",
    topics.CUSTOMERS: "customers",
}
# Hypothesis does not repeat an example: a draw that only tells examples apart lets
# the kinds with few shapes (a tombstone, a bad key) come up as often as the others.
SALT = st.integers(0, 2**32)


@dataclass(frozen=True)
class Hostile:
    kind: str  # what is wrong with it, for the counts
    topic: str
    key: bytes | None
    value: bytes | None
    expect: Expect
    partition: int | None = None  # None: the key's partition


@dataclass(frozen=True)
class Field:
    name: str
    schema: dict[str, Any]
    nullable: bool
    required: bool


def contract_fields(topic: str) -> list[Field]:
    """The top-level fields of a topic's contract, from its JSON Schema file."""
    document = json.loads(schema_path(SCHEMA_NAMES[topic]).read_text())
    name = document["$ref"].rsplit("/", 1)[1]
    definition = document["$defs"][name]
    fields = []
    for field_name, schema in definition["properties"].items():
        options = schema.get("anyOf", [schema])
        typed = [o for o in options if o.get("type") != "null"]
        fields.append(
            Field(
                field_name,
                typed[0],
                nullable=len(typed) < len(options),
                required=field_name in definition.get("required", []),
            )
        )
    return fields


class Factory:
    """Builds hostile inputs around valid events of fresh customers."""

    def __init__(self, first_instant: datetime, partitions: int, max_message_bytes: int) -> None:
        self.first_instant = first_instant
        self.partitions = partitions
        self.max_message_bytes = max_message_bytes
        self.ids = count()
        # Beyond any broker time + the default skew while the test runs (fixed once:
        # strategies must not change between Hypothesis's runs).
        self.future = datetime.now().replace(microsecond=0) + timedelta(hours=3)
        self.fields = {topic: contract_fields(topic) for topic in SCHEMA_NAMES}
        for topic, event_type in INPUT_EVENTS.items():  # the templates keep the contracts
            msgspec.json.decode(json.dumps(self.valid(topic, "FZ")), type=event_type)

    def customer(self) -> str:
        return f"FZ{next(self.ids)}"

    def valid(self, topic: str, customer_id: str) -> dict[str, Any]:
        at = self.first_instant.isoformat()
        n = next(self.ids)
        if topic == topics.ORDERS:
            return {
                "order_id": f"FO{n}",
                "customer_id": customer_id,
                "order_ts": at,
                "total_amount": 10.0,
                "payment_method": "card",
                "delivery_status": "delivered",
            }
        if topic == topics.SUPPORT_TICKETS:
            return {
                "ticket_id": f"FT{n}",
                "customer_id": customer_id,
                "created_ts": at,
                "category": "delivery",
            }
        return {"customer_id": customer_id, "registration_date": at, "updated_at": at}

    def strategy(self) -> st.SearchStrategy[Hostile]:
        topic = st.sampled_from(list(SCHEMA_NAMES))
        return st.one_of(
            topic.flatmap(self._missing_field),
            topic.flatmap(self._wrong_type),
            topic.flatmap(self._out_of_bounds),
            topic.flatmap(self._bad_time),
            topic.flatmap(self._non_finite),
            topic.flatmap(self._bad_encoding),
            topic.flatmap(self._huge),
            topic.flatmap(self._deep),
            topic.flatmap(self._costly),
            topic.flatmap(self._bad_key),
            topic.flatmap(self._tombstone),
            topic.flatmap(self._unknown_field),
        )

    # ---------------------------------------------------------------- the kinds

    def _event(self, topic: str, kind: str, edit: Callable[[dict[str, Any]], None]) -> Hostile:
        customer_id = self.customer()
        event = self.valid(topic, customer_id)
        edit(event)
        return Hostile(kind, topic, customer_id.encode(), json.dumps(event).encode(), "dead")

    def _missing_field(self, topic: str) -> st.SearchStrategy[Hostile]:
        required = [f.name for f in self.fields[topic] if f.required]
        return st.builds(
            lambda name, _: self._event(topic, "missing field", lambda e: e.pop(name)),
            st.sampled_from(required),
            SALT,
        )

    def _wrong_type(self, topic: str) -> st.SearchStrategy[Hostile]:
        def wrong_values(field: Field) -> st.SearchStrategy[Any]:
            kind = field.schema.get("type")
            others: dict[str, st.SearchStrategy[Any]] = {
                "string": st.text(max_size=20),
                "number": st.floats(0, 10, allow_nan=False),
                "integer": st.integers(1, 3),
                "boolean": st.booleans(),
                "array": st.lists(st.integers(), max_size=3),
                "object": st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
            }
            allowed = {kind} | ({"integer"} if kind == "number" else set())
            if "enum" in field.schema or "format" in field.schema:
                allowed |= {"string"}  # an enum or a time: any other type is wrong
            choices = [s for k, s in others.items() if k not in allowed]
            if not field.nullable:
                choices.append(st.none())
            return st.one_of(choices)

        def build(pair: tuple[Field, Any]) -> Hostile:
            field, value = pair
            return self._event(topic, "wrong type", lambda e: e.__setitem__(field.name, value))

        return (
            st.sampled_from(self.fields[topic])
            .flatmap(lambda f: st.tuples(st.just(f), wrong_values(f)))
            .map(build)
        )

    def _out_of_bounds(self, topic: str) -> st.SearchStrategy[Hostile]:
        def outside(field: Field) -> st.SearchStrategy[Any] | None:
            s = field.schema
            options: list[st.SearchStrategy[Any]] = []
            if "maximum" in s:
                options.append(st.floats(s["maximum"], 1e300, exclude_min=True))
            if "minimum" in s:
                options.append(st.floats(-1e300, s["minimum"], exclude_max=True))
            if "maxLength" in s:
                options.append(st.text(string.ascii_letters, min_size=s["maxLength"] + 1))
            if s.get("minLength", 0) > 0:
                options.append(st.just(""))
            if "enum" in s:
                options.append(st.text(max_size=12).filter(lambda t: t not in s["enum"]))
            if "pattern" in s:
                options.append(st.sampled_from(["usd", "EURO", "", "U$D", "12"]))
            return st.one_of(options) if options else None

        bounded = [(f, outside(f)) for f in self.fields[topic]]
        choices = [
            st.tuples(st.just(f), strategy) for f, strategy in bounded if strategy is not None
        ]
        return st.one_of(choices).map(
            lambda pair: self._event(
                topic, "out of bounds", lambda e: e.__setitem__(pair[0].name, pair[1])
            )
        )

    def _bad_time(self, topic: str) -> st.SearchStrategy[Hostile]:
        far = st.one_of(
            st.datetimes(datetime(1, 1, 2), datetime(1999, 12, 31)),  # before the floor
            st.datetimes(self.future, datetime(9999, 12, 30)),
        ).map(lambda t: t.isoformat() + "Z")
        malformed = st.sampled_from(
            ["2026-01-01T00:00:00", "2026-13-45T00:00:00Z", "yesterday", "", "2026-01-01 25:00"]
        )
        times = [f for f in self.fields[topic] if f.schema.get("format") == "date-time"]
        return st.tuples(st.sampled_from(times), st.one_of(far, malformed)).map(
            lambda pair: self._event(
                topic, "bad time", lambda e: e.__setitem__(pair[0].name, pair[1])
            )
        )

    def _non_finite(self, topic: str) -> st.SearchStrategy[Hostile]:
        numbers = [f.name for f in self.fields[topic] if f.schema.get("type") == "number"]
        if not numbers:
            return self._bad_encoding(topic)

        def build(pair: tuple[str, str]) -> Hostile:
            name, literal = pair
            customer_id = self.customer()
            event = self.valid(topic, customer_id)
            event[name] = 0.5
            text = json.dumps(event).replace(f'"{name}": 0.5', f'"{name}": {literal}')
            return Hostile("non-finite number", topic, customer_id.encode(), text.encode(), "dead")

        literals = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "nan"])
        return st.tuples(st.sampled_from(numbers), literals, SALT).map(lambda t: build(t[:2]))

    def _bad_encoding(self, topic: str) -> st.SearchStrategy[Hostile]:
        # Only drawn values decide the shape: an id known only at build time must not
        # (Hypothesis replays draws and needs them to behave the same).
        def build(how: str, cut: float, noise: bytes) -> Hostile:
            customer_id = self.customer()
            valid = json.dumps(self.valid(topic, customer_id)).encode()
            value = {
                "bytes": noise,
                "truncated": valid[: max(1, int(cut * (len(valid) - 1)))],
                "utf-16": valid.decode().encode("utf-16"),
                "bom": b"\xff\xfe" + valid,
            }[how]
            return Hostile("bad encoding", topic, customer_id.encode(), value, "dead")

        hows = st.sampled_from(["bytes", "truncated", "utf-16", "bom"])
        other = st.sampled_from([b"[]", b'"text"', b"42", b"null", b"true", b"{}", b""])
        return st.one_of(
            st.builds(build, hows, st.floats(0, 1), st.binary(min_size=1, max_size=200)),
            other.map(
                lambda value: Hostile(
                    "bad encoding", topic, self.customer().encode(), value, "dead"
                )
            ),
        )

    def _huge(self, topic: str) -> st.SearchStrategy[Hostile]:
        sizes = st.integers(self.max_message_bytes + 1, self.max_message_bytes * 4)
        return sizes.map(
            lambda size: self._event(topic, "huge", lambda e: e.__setitem__("note", "x" * size))
        )

    def _deep(self, topic: str) -> st.SearchStrategy[Hostile]:
        def build(depth: int, top_level: bool) -> Hostile:
            nested = "[" * depth + "]" * depth
            customer_id = self.customer()
            if top_level:
                value = nested
            else:  # deep inside a field the contract does not know (spliced as text:
                # Python's own json module cannot nest that deep either)
                event = {**self.valid(topic, customer_id), "extra": 0}
                value = json.dumps(event).replace('"extra": 0', f'"extra": {nested}')
            return Hostile("deep", topic, customer_id.encode(), value.encode(), "dead")

        return st.builds(build, st.integers(33, 5_000), st.booleans())

    def _costly(self, topic: str) -> st.SearchStrategy[Hostile]:
        # Shapes built to make the decoder's checks walk the whole message (unterminated
        # strings, escapes, brackets inside strings, open brackets): each costs time
        # linear in its size, so the worker keeps up whatever the mix.
        def build(shape: str, size: int) -> Hostile:
            value = SHAPES[shape](size)
            return Hostile("costly", topic, self.customer().encode(), value, "dead")

        sizes = st.integers(1024, self.max_message_bytes - 64)
        return st.builds(build, st.sampled_from(sorted(SHAPES)), sizes)

    def _bad_key(self, topic: str) -> st.SearchStrategy[Hostile]:
        def build(how: str) -> Hostile:
            customer_id = self.customer()
            value = json.dumps(self.valid(topic, customer_id)).encode()
            if how == "null" and topic != topics.CUSTOMERS:  # Kafka refuses it on compacted ones
                return Hostile("null key", topic, None, value, "dead", partition=0)
            if how in ("mismatch", "null"):
                return Hostile("key mismatch", topic, self.customer().encode(), value, "dead")
            if how == "not utf-8":
                return Hostile("bad key", topic, b"\xc3\x28" + customer_id.encode(), value, "dead")
            right = partition_of(customer_id.encode(), self.partitions)
            wrong = (right + 1) % self.partitions
            return Hostile(
                "wrong partition", topic, customer_id.encode(), value, "dead", partition=wrong
            )

        hows = st.sampled_from(["null", "mismatch", "not utf-8", "wrong partition"])
        return st.builds(lambda how, _: build(how), hows, SALT)

    def _tombstone(self, topic: str) -> st.SearchStrategy[Hostile]:
        expect: Expect = "erased" if topic == topics.CUSTOMERS else "dead"
        return SALT.map(
            lambda _: Hostile("tombstone", topic, self.customer().encode(), None, expect)
        )

    def _unknown_field(self, topic: str) -> st.SearchStrategy[Hostile]:
        def build(name: str, value: Any) -> Hostile:
            customer_id = self.customer()
            event = self.valid(topic, customer_id)
            event.setdefault(name, value)
            data = json.dumps(event).encode()
            return Hostile("unknown field", topic, customer_id.encode(), data, "processed")

        names = st.text(string.ascii_lowercase, min_size=1, max_size=12).map(lambda n: f"x_{n}")
        small = st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
            max_leaves=8,
        )
        return st.builds(build, names, small)


def generate(factory: Factory, n: int) -> list[Hostile]:
    """`n` hostile inputs, the same on every run (derandomized, no example database)."""
    out: list[Hostile] = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(factory.strategy())
    def collect(hostile: Hostile) -> None:
        out.append(hostile)

    collect()
    return out
