"""Samples of realised performance: which scores are kept, and how each turns out.

The scorer keeps a bounded sample of what it scored (`in_sample`, `first_of_week`),
and every change into HIGH, treated or held out (`scoring.campaign`),
waiting in the partition's own state until its horizon has passed in event time;
`churned` then reads the outcome off the customer's state. `scoring.performance`
tallies the outcomes and turns them into figures (its module doc says how).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping
from datetime import date, timedelta

import msgspec

from feature_store.definitions import LAST_TIME, SECONDS_PER_DAY
from feature_store.online import CustomerState
from schemas import topics

_LAST_ORDER = LAST_TIME[topics.ORDERS]
TREATED, HELD_OUT = "treated", "held_out"  # the campaign's arms
_EPOCH_MONDAY = date(1970, 1, 5)


class Sample(msgspec.Struct, array_like=True, frozen=True):
    """One sampled score, waiting for its horizon to pass."""

    customer_id: str
    as_of: float
    probability: float
    risk: str
    model_version: str
    horizon_days: int
    # Which life of the customer's state it is of (CustomerState.origin): a customer
    # erased and back is another life, whose orders say nothing of this sample.
    origin: str = ""
    # "": a sample of realised performance; TREATED or HELD_OUT: a change into HIGH,
    # followed for the campaign's uplift (`scoring.campaign`).
    arm: str = ""

    @property
    def due(self) -> float:
        """The instant after which its outcome is decided."""
        return self.as_of + self.horizon_days * SECONDS_PER_DAY

    @property
    def cohort(self) -> str:
        return cohort(self.as_of)

    def encode(self) -> str:
        """The sample as the member of the partition's pending set."""
        return _ENCODER.encode(self).decode()


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Sample)


def decode_sample(member: str | bytes) -> Sample:
    return _DECODER.decode(member)


def cohort(as_of: float) -> str:
    """The weekly cohort of an instant: the Monday (UTC) its week starts on."""
    return (_EPOCH_MONDAY + timedelta(weeks=_week(as_of))).isoformat()


def _week(ts: float) -> int:
    """Weeks (Monday to Sunday, UTC) since the first Monday of 1970 (day 4 of the epoch)."""
    return (math.floor(ts / SECONDS_PER_DAY) - 4) // 7


@functools.lru_cache(maxsize=1 << 16)  # asked at every score: a customer scores again and again
def in_sample(customer_id: str, rate: float) -> bool:
    """A deterministic hash-sample of customers: the same on every worker and replay."""
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(customer_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2.0**64


def horizon_days(metadata: Mapping[str, object]) -> int | None:
    """The churn horizon a model was trained for (its artifact's metadata), or None:
    a model that does not say is not sampled."""
    days = metadata.get("horizon_days")
    return days if isinstance(days, int) and days > 0 else None


def first_of_week(scored_to: float | None, as_of: float) -> bool:
    """Is a score as of `as_of` the customer's first of its week? (`scored_to`: the
    latest instant they were scored as of before; scores move forward in time.)"""
    return scored_to is None or _week(scored_to) != _week(as_of)


def churned(state: CustomerState, as_of: float) -> bool:
    """The outcome of a sample as of `as_of`, decided from the customer's state once
    the stream time has passed its horizon: no order after `as_of` has been applied.
    (Every event applied by then is at or before the horizon's end, in stream order.)"""
    last_order = state.times.get(_LAST_ORDER)
    return last_order is None or last_order <= as_of
