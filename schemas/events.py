"""Event contracts: the one definition of every message on the wire.

The JSON Schema files beside this module are generated from these types
(`python -m schemas`), and a test fails if they drift apart.

Every number, string and list is bounded, so no single message can overflow an
aggregate or make the worker spend unbounded memory or time on it; an input outside
a bound is dead-lettered with the field and the bound in its reason. The bounds that
depend on the deployment (event times, message size, nesting depth) are settings,
checked by `scoring.decoding`; docs/bad-input.md lists them all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

# Bounds of the input contracts (see the module doc).
MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 100
MAX_AMOUNT = 10_000_000  # one order's total, or one item's price, in the order's currency
MAX_QUANTITY = 10_000
MAX_ITEMS = 1_000
MAX_RESOLUTION_HOURS = 87_600  # ten years

UtcTime = Annotated[datetime, msgspec.Meta(tz=True, description="ISO-8601 with a UTC offset")]
Amount = Annotated[float, msgspec.Meta(ge=0, le=MAX_AMOUNT)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_LENGTH)]
Age = Annotated[int, msgspec.Meta(ge=0, le=130)]

RiskLevel = Literal["LOW", "MEDIUM", "HIGH"]
DeliveryStatus = Literal[
    "pending", "shipped", "delivered", "delayed", "failed", "returned", "cancelled"
]
# Delivery outcomes the customer experiences as a problem.
PROBLEM_DELIVERY_STATUSES: frozenset[str] = frozenset({"delayed", "failed", "returned"})


class OrderItem(msgspec.Struct, frozen=True):
    product_category: Text
    quantity: Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)]
    price: Amount


class Order(msgspec.Struct, frozen=True):
    """An order placed by a customer (topic `orders`, keyed by customer_id)."""

    order_id: Id
    customer_id: Id
    order_ts: UtcTime
    total_amount: Amount
    payment_method: Text
    delivery_status: DeliveryStatus
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")] = "USD"
    items: Annotated[list[OrderItem], msgspec.Meta(max_length=MAX_ITEMS)] = []


class SupportTicket(msgspec.Struct, frozen=True):
    """A support ticket (topic `support-tickets`, keyed by customer_id)."""

    ticket_id: Id
    customer_id: Id
    created_ts: UtcTime
    category: Text
    resolved_ts: UtcTime | None = None
    resolution_time_hours: Annotated[float, msgspec.Meta(ge=0, le=MAX_RESOLUTION_HOURS)] | None = (
        None
    )
    satisfaction_score: Annotated[int, msgspec.Meta(ge=1, le=5)] | None = None


class Customer(msgspec.Struct, frozen=True):
    """A customer profile upsert (compacted topic `customers`, keyed by customer_id).

    A tombstone (the customer's key with a null value) erases the customer: their
    state and scheduled rescores are deleted and nothing more is published for them
    until a later event brings them back.

    v2 adds `updated_at`, the profile change's event time, which orders it among the
    customer's orders and tickets; v1 messages (without it) stay valid and count as
    changed at `registration_date`.
    """

    customer_id: Id
    registration_date: UtcTime
    age: Age | None = None
    gender: Text | None = None
    city: Text | None = None
    email_verified: bool = False
    phone_verified: bool = False
    updated_at: UtcTime | None = None

    @property
    def changed_at(self) -> datetime:
        """The event time of this upsert."""
        return self.updated_at or self.registration_date


class Reason(msgspec.Struct, frozen=True):
    """One feature's contribution to the score (log-odds, from TreeSHAP)."""

    feature: str
    value: float | None
    contribution: float


class Trigger(msgspec.Struct, frozen=True):
    """What made the worker rescore: an input event, or the passing of time."""

    kind: Literal["event", "inactivity"]
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    event_id: str | None = None


class ChurnRiskChanged(msgspec.Struct, frozen=True):
    """A customer's risk category changed (topic `churn-risk`, keyed by customer_id).

    `event_id` is deterministic (the customer's n-th transition), so a replay or a
    redelivery yields the same id and consumers can de-duplicate on it.
    """

    event_id: str
    customer_id: Id
    previous_risk: RiskLevel | None
    risk: RiskLevel
    probability: Annotated[float, msgspec.Meta(ge=0, le=1)]
    model_version: str
    reasons: list[Reason]
    recommended_actions: list[str]
    trigger: Trigger
    event_time: UtcTime
    scored_at: UtcTime
    schema_version: Literal[1] = 1
    # The customer is in the campaign's holdout: take no retention action on them (their
    # changes into HIGH are not sent on `churn-risk-high`), so that what the campaign
    # achieves can be measured against them.
    held_out: bool = False


class DeadLetter(msgspec.Struct, frozen=True):
    """An input message the worker could not process, with why (topic
    `churn-dead-letter`, keyed by the input's key).

    v2 bounds its size, so publishing a dead letter cannot fail however large the
    input: `value` keeps only the value's first bytes (a setting), `value_bytes` and
    `value_sha256` identify the whole of it in the input topic.
    """

    reason: str
    topic: str
    partition: int
    offset: int
    key: str | None  # as UTF-8 (invalid bytes replaced), its first 1 KiB
    value: str | None  # the value's first bytes as UTF-8 (invalid bytes replaced); None: null
    value_bytes: int  # the whole value's length
    value_sha256: str | None
    value_truncated: bool
    failed_at: UtcTime
    schema_version: Literal[2] = 2


class DriftThresholds(msgspec.Struct, frozen=True):
    """When an alert is raised and cleared: the statistic above `raise_above`, or
    below `clear_below`, for `consecutive_slices` judged slices in a row (for the mean
    shift, its magnitude)."""

    raise_above: float
    clear_below: float
    consecutive_slices: int


class DriftWindow(msgspec.Struct, frozen=True):
    """The sliding window judged: the scores of input events in [start, end) of event
    time, made of slices of `slice_seconds`; `mean` of its non-missing values."""

    start: UtcTime
    end: UtcTime
    slice_seconds: int
    scores: int
    mean: float | None


class DriftReference(msgspec.Struct, frozen=True):
    """What the window is compared with: the scores the model gave the events of its
    training period (`rows` of them, as of instants in [since, until])."""

    rows: int
    since: UtcTime
    until: UtcTime
    mean: float | None


class DriftStatistics(msgspec.Struct, frozen=True):
    """The window against the reference: PSI over the reference's bins, the
    Kolmogorov-Smirnov distance of the binned distributions and the relative mean
    shift, (window mean - reference mean) / |reference mean|."""

    psi: float
    ks: float | None
    mean_shift: float | None


class DriftAlert(msgspec.Struct, frozen=True):
    """A drift alert raised or cleared (topic `churn-drift-alerts`, keyed by feature).

    `feature` is a model feature, `order_total` (the amount of the orders scored),
    `score` (the churn probability) or `risk_mix` (the share of each risk category).
    `statistic` is the one that raised the alert (`value` and `thresholds` are its):
    PSI, or for `order_total` also the relative mean shift. An alert is cleared once
    every statistic it is judged by is below its clear threshold. `event_id` is
    deterministic (feature, state and the window's end): an alert judged again after a
    crash has the same id.
    """

    event_id: str
    feature: str
    state: Literal["raised", "cleared"]
    statistic: Literal["psi", "mean_shift"]
    value: float
    thresholds: DriftThresholds
    window: DriftWindow
    reference: DriftReference
    statistics: DriftStatistics
    model_version: str
    detected_at: UtcTime
    schema_version: Literal[1] = 1


class BatchRecord(msgspec.Struct, frozen=True):
    """One batch of one input partition, as committed (internal topic `churn-batches`,
    compacted, keyed by `<app id>.<input partition>`, in the same Kafka transaction as the
    batch's outputs).

    The batch ran over each input topic's offsets after `after` through `through`
    (its cut), under the state store's claim `epoch`; `model_version` scored it with
    the risk policy of `margin` (hysteresis) and `actions`, whose fingerprint is
    `policy_fingerprint`, and `targeting` (`scoring.risk.ValueTargeting`'s fields; None:
    HIGH from the cut-off), and `holdout` (`scoring.risk.Holdout`'s fields; None: none).
    A store that lost writes is brought forward by computing
    these batches again, exactly as they were cut and scored, without publishing.
    """

    partition: int
    epoch: int
    after: dict[str, int]
    through: dict[str, int]
    model_version: str
    margin: float
    actions: dict[str, list[str]]
    policy_fingerprint: str
    targeting: dict[str, float] | None = None
    schema_version: Literal[1] = 1
    holdout: dict[str, float | str] | None = None


class Tick(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Time passed on a quiet input partition (internal topic `churn-ticks`, written
    by the worker into that partition, no key).

    A partition's stream time moves with its own events only, so one that receives
    none would hold back its customers' inactivity rescores and the group's drift
    watermark. A tick carries the latest stream time any partition has reached, and
    moves the partition's there; being in the log, a replay meets it where the live
    run did.
    """

    stream_time: UtcTime
    schema_version: Literal[1] = 1


INPUT_EVENTS: dict[str, type[msgspec.Struct]] = {
    "orders": Order,
    "support-tickets": SupportTicket,
    "customers": Customer,
}

# Contract version of each schema file; a compatible change bumps it (see the type's
# docstring for what changed).
SCHEMA_VERSIONS: dict[str, int] = {"customers": 2, "dead-letter": 2}

# File stem in schemas/ -> type. One list, so generation and the drift test agree.
SCHEMA_FILES: dict[str, type[msgspec.Struct]] = {
    "orders": Order,
    "support-tickets": SupportTicket,
    "customers": Customer,
    "churn-risk": ChurnRiskChanged,
    "dead-letter": DeadLetter,
    "drift-alerts": DriftAlert,
    "batches": BatchRecord,
    "ticks": Tick,
}
