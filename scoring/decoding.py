"""What an input message may be: its contract, its key, its size and its times.

Every message the worker reads comes through `InputDecoder`, which turns it into
an event with its event time, an erasure (a tombstone on `customers`), a tick
(`schemas.Tick`: time passing on a quiet partition), or a reason it cannot be
processed (then it is dead-lettered and the partition moves on). Nothing here can
raise on any input: whatever a producer, buggy or hostile, puts on a topic becomes
one of these.

The bounds that depend on the deployment are `Limits`; the contracts' own bounds
(amounts, lengths, list sizes) are in `schemas.events`.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

import msgspec
import msgspec.inspect
import numpy as np

from feature_store.online import event_time
from schemas import INPUT_EVENTS, DeadLetter, Tick, topics
from schemas.events import MAX_ID_LENGTH
from scoring.merge import Decoded, InputMessage

EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
# The setting that moves Limits.min_event_time, read by the worker and by training
# alike (stream_app.settings, training.__main__): one notion of a valid event.
MIN_EVENT_TIME_SETTING = "CHURN_MIN_EVENT_TIME"
# A dead letter keeps the input's key whole up to this size (real keys are ids of at
# most MAX_ID_LENGTH characters); its reason, up to the other.
DEAD_LETTER_KEY_BYTES = 1024
DEAD_LETTER_REASON_CHARS = 1000

# Every refusal has one of these categories: the dead letter carries the reason's full
# text, metrics count the category (a bounded label, `churn_dead_letters_total`).
REFUSALS = (
    "too_large",  # key + value over max_message_bytes
    "nesting",  # JSON nested deeper than max_depth
    "malformed_json",  # not JSON (or not UTF-8, or non-finite numbers like NaN)
    "wrong_type",  # the contract's
    "missing_field",
    "out_of_bounds",  # a bound of the contract: amounts, lengths, list sizes, 1e999
    "invalid_value",  # an enum, a pattern, a time without its time zone
    "contract",  # anything else the contract refuses
    "before_floor",  # a date before min_event_time
    "beyond_skew",  # a date after the broker timestamp + max_clock_skew
    "key_null",
    "key_too_long",
    "key_not_utf8",
    "key_mismatch",  # the key is not the body's customer_id
    "wrong_partition",  # the key's murmur2 partition is another
    "tombstone",  # a null value on a topic other than customers
    "unknown_topic",
    "features_out_of_range",  # decoded, but the features cannot take it (online.InputError)
    "model_failed",  # the model could not score its row
)

# msgspec says what failed only in its message; its wording is mapped here, once, and
# tests/test_decoding.py pins one message per category. Wording not listed: "contract".
_CONTRACT_REFUSALS = (
    (re.compile(r"Object missing required field "), "missing_field"),
    (re.compile(r"Expected `[^`]*`, got "), "wrong_type"),
    (re.compile(r"Expected `[^`]*` (?:of length )?[<>]=? |Number out of range"), "out_of_bounds"),
    (re.compile(r"Invalid |Expected `[^`]*` (?:matching|with a timezone)"), "invalid_value"),
)


@dataclass(frozen=True)
class Limits:
    """The deployment's bounds on input messages (settings; docs/bad-input.md)."""

    # Event times (and the profile's dates) must lie in [min_event_time, the message's
    # broker timestamp + max_clock_skew]: one event dated in the future would move
    # its partition's stream time, hence everyone's silence, forward for good.
    min_event_time: float = EPOCH_2000
    max_clock_skew: float = 3600.0
    max_message_bytes: int = 256 * 1024  # key + value, checked before parsing
    max_depth: int = 32  # JSON nesting; the contracts need 3
    dead_letter_value_bytes: int = 16 * 1024


@dataclass(frozen=True, slots=True)
class Erasure:
    """A tombstone on `customers`: erase the customer (see `schemas.Customer`)."""

    customer_id: str


_DECODERS = {topic: msgspec.json.Decoder(event_type) for topic, event_type in INPUT_EVENTS.items()}
_TICKS = msgspec.json.Decoder(Tick)


# The date fields of each input event: every one is bounded, not only the event time.
def _date_fields(event_type: type) -> tuple[str, ...]:
    info = msgspec.inspect.type_info(event_type)
    assert isinstance(info, msgspec.inspect.StructType)

    def is_date(t: msgspec.inspect.Type) -> bool:
        if isinstance(t, msgspec.inspect.Metadata):  # Annotated with constraints
            return is_date(t.type)
        if isinstance(t, msgspec.inspect.UnionType):
            return any(is_date(option) for option in t.types)
        return isinstance(t, msgspec.inspect.DateTimeType)

    return tuple(f.name for f in info.fields if is_date(f.type))


_DATE_FIELDS = {event_type: _date_fields(event_type) for event_type in INPUT_EVENTS.values()}
# A JSON string, its closing quote optional: an unterminated one runs to the end of the
# value, so no quote after it is ever tried as the start of another. The loop is
# unrolled (runs of plain bytes, then one escape at a time), so nothing backtracks:
# blanking every string costs time linear in the value. (The form with an alternation
# inside the repetition, closing quote required, retried from every quote of an
# unterminated string: 250 KB of escaped quotes took 197 s.)
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENING = np.zeros(256, dtype=np.int64)
_OPENING[list(b"[{")] = 1


class InputDecoder:
    """Turns input messages into `Decoded` (see the module doc).

    `partition_of`: the partition a key belongs to (Kafka's default partitioner), to
    refuse a message on another partition, whose customer would then be written by
    two tasks; None skips that check. `clock`: the wall clock, the upper bound of
    event times for a message without a broker timestamp (a replayed file)."""

    def __init__(
        self,
        limits: Limits | None = None,
        partition_of: Callable[[str], int] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = limits or Limits()
        self.partition_of = partition_of
        self.clock = clock

    def __call__(self, message: InputMessage) -> Decoded:
        try:
            return self._decode(message)
        except _Refused as err:
            return Decoded(message, None, -math.inf, str(err), err.category)
        except msgspec.ValidationError as err:
            return Decoded(message, None, -math.inf, str(err), _contract_refusal(str(err)))
        except msgspec.DecodeError as err:
            return Decoded(message, None, -math.inf, str(err), "malformed_json")
        except ValueError as err:  # a value msgspec took that Python cannot (a far date)
            return Decoded(message, None, -math.inf, str(err), "contract")
        except RecursionError:  # cannot happen within max_depth; never stop the partition
            return Decoded(message, None, -math.inf, "JSON nested too deep to parse", "nesting")

    def _decode(self, message: InputMessage) -> Decoded:
        limits = self.limits
        size = len(message.key or b"") + len(message.value or b"")
        if size > limits.max_message_bytes:
            raise _Refused(
                "too_large",
                f"message of {size} bytes exceeds the limit of {limits.max_message_bytes} bytes",
            )
        if message.topic == topics.TICKS:
            return self._tick(message)
        decoder = _DECODERS.get(message.topic)
        if decoder is None:
            raise _Refused("unknown_topic", f"no event contract for topic {message.topic!r}")
        key = self._key(message)
        if message.value is None:
            if message.topic != topics.CUSTOMERS:
                raise _Refused(
                    "tombstone", f"a tombstone (null value) on {message.topic} is not an event"
                )
            # No event time of its own: it takes its place in the partition's order
            # at the broker's time of the request (first, without one).
            when = -math.inf if message.timestamp is None else message.timestamp
            return Decoded(message, Erasure(key), when)
        depth = _depth(message.value, limits.max_depth)
        if depth > limits.max_depth:
            raise _Refused(
                "nesting", f"JSON nested {depth} deep exceeds the limit of {limits.max_depth}"
            )
        event = decoder.decode(message.value)
        customer_id: str = event.customer_id  # type: ignore[attr-defined]
        if customer_id != key:
            raise _Refused(
                "key_mismatch", f"key mismatch: key {key!r}, customer_id {customer_id!r}"
            )
        earliest = limits.min_event_time
        latest = (message.timestamp or self.clock()) + limits.max_clock_skew
        for name in _DATE_FIELDS[type(event)]:
            value = getattr(event, name)
            if value is not None and not earliest <= value.timestamp() <= latest:
                _refuse_time(name, value, earliest, latest)
        return Decoded(message, event, event_time(message.topic, event))

    def _tick(self, message: InputMessage) -> Decoded:
        """A tick: its time bounded as an event's is (a tick cannot move a partition
        further ahead than an event could)."""
        if message.value is None:
            raise _Refused("tombstone", f"a tombstone on {message.topic} is not a tick")
        tick = _TICKS.decode(message.value)
        earliest = self.limits.min_event_time
        latest = (message.timestamp or self.clock()) + self.limits.max_clock_skew
        if not earliest <= tick.stream_time.timestamp() <= latest:
            _refuse_time("stream_time", tick.stream_time, earliest, latest)
        return Decoded(message, tick, tick.stream_time.timestamp())

    def _key(self, message: InputMessage) -> str:
        if message.key is None:
            raise _Refused("key_null", "null key: inputs are keyed by customer_id")
        if len(message.key) > MAX_ID_LENGTH * 4:  # 4: the most bytes a character takes
            raise _Refused(
                "key_too_long", f"key of {len(message.key)} bytes is longer than any customer_id"
            )
        try:
            key = message.key.decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused("key_not_utf8", "key is not UTF-8") from None
        if self.partition_of is not None:
            expected = self.partition_of(key)
            if expected != message.partition:
                raise _Refused(
                    "wrong_partition",
                    f"key {key!r} belongs to partition {expected} (murmur2, Kafka's default "
                    f"partitioner), not {message.partition}: its producer partitions otherwise",
                )
        return key

    def dead_letter(self, message: InputMessage, reason: str, failed_at: datetime) -> DeadLetter:
        """The dead letter of a message, bounded in size whatever the message."""
        value = message.value
        kept = self.limits.dead_letter_value_bytes
        return DeadLetter(
            reason=reason[:DEAD_LETTER_REASON_CHARS],
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=(
                None
                if message.key is None
                else message.key[:DEAD_LETTER_KEY_BYTES].decode("utf-8", "replace")
            ),
            value=None if value is None else value[:kept].decode("utf-8", "replace"),
            value_bytes=len(value or b""),
            value_sha256=None if value is None else hashlib.sha256(value).hexdigest(),
            value_truncated=value is not None and len(value) > kept,
            failed_at=failed_at,
        )


class _Refused(ValueError):
    """The message breaks a limit or a rule; the text is the dead letter's reason."""

    def __init__(self, category: str, reason: str) -> None:
        super().__init__(reason)
        self.category = category


def _contract_refusal(message: str) -> str:
    """The category of msgspec's validation error message (see _CONTRACT_REFUSALS)."""
    for pattern, category in _CONTRACT_REFUSALS:
        if pattern.match(message):
            return category
    return "contract"


def _depth(value: bytes, limit: int) -> int:
    """How deep the JSON in `value` nests (0 for a scalar), exactly when over `limit`.

    Fewer brackets than the limit cannot nest deeper than it: the common case costs
    two counts. Otherwise strings are removed, and the depth is the highest running
    sum of the brackets left (+1 opening, -1 closing). Every step is linear in the
    size of `value`."""
    if value.count(b"[") + value.count(b"{") <= limit:
        return 0
    brackets = np.frombuffer(_STRINGS.sub(b"", value).translate(None, _NOT_BRACKETS), np.uint8)
    if not len(brackets):
        return 0
    return int(np.cumsum(2 * _OPENING[brackets] - 1).max(initial=0))


def _refuse_time(name: str, value: datetime, earliest: float, latest: float) -> NoReturn:
    if value.timestamp() < earliest:
        raise _Refused(
            "before_floor",
            f"{name} {value.isoformat()} is before the earliest accepted event time "
            f"{_iso(earliest)} (min event time)",
        )
    raise _Refused(
        "beyond_skew",
        f"{name} {value.isoformat()} is after the latest accepted event time "
        f"{_iso(latest)} (the message's broker timestamp + max clock skew)",
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()
