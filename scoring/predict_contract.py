"""The on-demand scoring contract (`POST /predict`): a customer's facts in, a score out.

The request carries the base columns the feature definitions compute from
(`feature_store.definitions.BASE_COLUMNS`), not the model's features: a caller has
counts, sums and dates, while features such as `engagement_score` need constants
fixed at training time and shipped in the artifact, which only the worker knows.
The request type is built from BASE_COLUMNS, so a new base column is accepted
without a second list to update.

The guide's names are accepted where one says what a base column says
(`GUIDE_NAMES`: `recency_days` is `last_order_ts` that many days before
`as_of_ts`, `frequency` is `orders_lifetime`, ...); names that do not map to one
column (`avg_order_value`, a ratio of two; `support_tickets`, over no stated
window) are unknown fields, refused like any other.

`POST /customers/{id}/score` takes `ScoreRequest`: the instant to score the stored
customer as of.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec

from feature_store.definitions import (
    BASE_COLUMNS,
    FIRST_TIME,
    LAST_TIME,
    RECENT_GAP_COLUMNS,
    SECONDS_PER_HOUR,
    WINDOWS,
    recent_gap_moments,
)
from schemas.events import Age, Reason, RiskLevel, UtcTime

MAX_BODY_BYTES = 16_384
# Any window sum a shop could have (spend in the order's currency, counts, hours);
# bounded so that no infinite or absurd number reaches the model.
MAX_BASE_VALUE = 1e12
AS_OF = "as_of_ts"

Total = Annotated[float, msgspec.Meta(ge=0, le=MAX_BASE_VALUE)]
Days = Annotated[float, msgspec.Meta(ge=0, le=36_525)]  # a century at most

# The type of each base column other than AS_OF; every one may be left out (null:
# unknown, NaN to the model, as for a customer the stream knows nothing of).
_TYPES: dict[str, Any] = {
    **{name: Total for name in (*WINDOWS, *RECENT_GAP_COLUMNS)},
    **{name: UtcTime for name in (*LAST_TIME.values(), *FIRST_TIME.values())},
    "registration_ts": UtcTime,
    "age": Age,
    "email_verified": bool,
    "phone_verified": bool,
}
if set(_TYPES) | {AS_OF} != set(BASE_COLUMNS):
    raise RuntimeError(
        f"scoring.predict_contract gives no type to {set(BASE_COLUMNS) - set(_TYPES)}"
    )

PredictRequest: type[msgspec.Struct] = msgspec.defstruct(
    "PredictRequest",
    [
        (AS_OF, UtcTime),
        *((name, _TYPES[name] | None, None) for name in BASE_COLUMNS if name != AS_OF),
    ],
    forbid_unknown_fields=True,
    frozen=True,
    module=__name__,
)
PredictRequest.__doc__ = (
    "A customer's base columns as of `as_of_ts` (required); any other may be null."
)

# The guide's `/predict` names for base columns: days before `as_of_ts` for a time,
# the same number for a total.
GUIDE_DAYS_BEFORE: dict[str, str] = {
    "recency_days": "last_order_ts",
    "days_since_last_ticket": "last_ticket_ts",
    "tenure_days": "registration_ts",
}
GUIDE_TOTALS: dict[str, str] = {"frequency": "orders_lifetime", "monetary": "spend_lifetime"}
GUIDE_NAMES: dict[str, str] = {**GUIDE_DAYS_BEFORE, **GUIDE_TOTALS}

# What the body of `POST /predict` may hold: the base columns or the guide's names.
PredictBody: type[msgspec.Struct] = msgspec.defstruct(
    "PredictBody",
    [
        *((f.encode_name, f.type, f.default) for f in msgspec.structs.fields(PredictRequest)),
        *((name, Days | None, None) for name in GUIDE_DAYS_BEFORE),
        *((name, _TYPES[column] | None, None) for name, column in GUIDE_TOTALS.items()),
    ],
    forbid_unknown_fields=True,
    frozen=True,
    module=__name__,
)


Count = Annotated[int, msgspec.Meta(ge=0, le=int(MAX_BASE_VALUE))]
Rate = Annotated[float, msgspec.Meta(ge=0, le=MAX_BASE_VALUE)]


class CustomerFeatures(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The seed guide's `/predict` body, as its training query computes each field:
    totals over all time, `order_frequency` orders per month between the first and the
    last order (at least one month), `recency_days` since the last order. Mapped onto
    base columns by `from_customer_features`. Two fields are this product's: the
    caller's `customer_id`, echoed in the answer, and `as_of_ts` (default: now)."""

    age: Age
    recency_days: Days
    total_orders: Count
    total_spent: Total
    order_frequency: Rate
    avg_order_value: Total | None = None
    engagement_score: float | None = None
    complaint_count: Count = 0
    negative_experiences: Count = 0
    is_email_verified: bool = True
    is_phone_verified: bool = True
    customer_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    as_of_ts: UtcTime | None = None


# Fields only the guide's body has: a body with any of them is a CustomerFeatures.
GUIDE_ONLY = frozenset(CustomerFeatures.__struct_fields__) - set(PredictBody.__struct_fields__)
# The guide's classifier answers `predicted_churn` with its own cut (`model.predict`).
PREDICTED_CHURN_AT = 0.5
_DAY = timedelta(days=1)


def from_customer_features(
    body: CustomerFeatures, now: datetime, engagement_scale: float
) -> tuple[msgspec.Struct, list[str], list[str]]:
    """The PredictRequest the guide's fields determine, a note for each field the
    served model cannot honour as sent, and the base columns left unknown: those the
    fields do not determine (a 30-day count when orders spread over more than 30
    days), null to the model as any missing value. ValueError when the fields
    contradict each other."""
    as_of = body.as_of_ts or now
    n, notes = body.total_orders, []
    columns: dict[str, Any] = {
        "age": body.age,
        "orders_lifetime": n,
        "spend_lifetime": body.total_spent,
        "email_verified": body.is_email_verified,
        "phone_verified": body.is_phone_verified,
    }
    if n == 0:
        if body.total_spent > 0:
            raise ValueError("`total_spent` is over 0 with `total_orders` 0")
        notes.append("recency_days: not used, there is no order to be recent")
        columns |= {"last_order_ts": None, "first_order_ts": None, "delivery_problems_90d": 0}
        columns |= _windows("orders", None, 0, 0) | _windows("spend", None, 0, 0)
        columns |= dict.fromkeys(RECENT_GAP_COLUMNS, 0)
    else:
        _check_average(body)
        last = as_of - timedelta(days=body.recency_days)
        first = _first_order(body, last, notes)
        columns |= {"last_order_ts": last, "first_order_ts": first}
        columns |= _windows("orders", (as_of - last) / _DAY, (as_of - first) / _DAY, n)
        columns |= _windows(
            "spend", (as_of - last) / _DAY, (as_of - first) / _DAY, body.total_spent
        )
        if (as_of - last) / _DAY > 90:
            columns["delivery_problems_90d"] = 0
        columns |= _recent_gaps(n, first, last)
    columns |= _tickets(body, notes)
    notes.append(
        "engagement_score: not used; the guide scales it by its data set's largest spend, "
        "which a stream cannot know: the model computes its own, orders_90d x "
        f"ln(1 + spend_90d) / {engagement_scale:g}"
    )
    unknown = [name for name in BASE_COLUMNS if name != AS_OF and name not in columns]
    return PredictRequest(as_of_ts=as_of, **columns), notes, unknown


def _check_average(body: CustomerFeatures) -> None:
    """`avg_order_value` is total_spent / total_orders in the guide: refuse another."""
    if body.avg_order_value is None:
        return
    average = body.total_spent / body.total_orders
    if abs(body.avg_order_value - average) > 0.005 + 1e-9 * average:
        raise ValueError(
            f"`avg_order_value` {body.avg_order_value:g} is not total_spent / total_orders "
            f"({average:g}): the model computes it from those two; send them consistent "
            "or leave avg_order_value out"
        )


def _first_order(body: CustomerFeatures, last: datetime, notes: list[str]) -> datetime:
    """The first order's time that the guide's `order_frequency` implies: its orders
    per 30 days between the first and the last order, over at least 30 days."""
    n, frequency = body.total_orders, body.order_frequency
    if n == 1:
        return last
    if frequency is None:
        notes.append(
            "order_frequency: not sent, so the first order is taken 30 days before the last"
        )
        return last - 30 * _DAY
    if frequency == 0 or frequency > n * (1 + 1e-9):
        raise ValueError(
            f"`order_frequency` {frequency:g} with `total_orders` {n}: orders per month over "
            "at least one month is over 0 and at most total_orders"
        )
    if frequency >= n * (1 - 1e-9):
        notes.append(
            "order_frequency: equal to total_orders, so the orders span a month or less; "
            "taken as a month"
        )
    return last - timedelta(days=30 * n / frequency)


def _recent_gaps(n: int, first: datetime, last: datetime) -> dict[str, int]:
    """The recent gaps' moments the first and last order determine: with at most two
    orders, every gap there is (with more, the gaps between are unknown)."""
    if n > 2:
        return {}
    hour = SECONDS_PER_HOUR
    gap = math.floor(last.timestamp() / hour) - math.floor(first.timestamp() / hour)
    moments = recent_gap_moments([0, gap][:n])
    return dict(zip(RECENT_GAP_COLUMNS, moments, strict=True))


def _windows(
    aggregate: str, since_last: float | None, since_first: float | None, total: float
) -> dict[str, float]:
    """The 7/30/90-day sums of `aggregate` the totals determine: none in a window that
    ends before the last order, all of them in one that holds the first. (A day's
    margin: windows are counted in calendar days.)"""
    sums = {}
    for days in (7, 30, 90):
        if since_last is None or since_last > days + 1:
            sums[f"{aggregate}_{days}d"] = 0.0
        elif since_first is not None and since_first < days - 1:
            sums[f"{aggregate}_{days}d"] = float(total)
    return sums


def _tickets(body: CustomerFeatures, notes: list[str]) -> dict[str, float | None]:
    """The ticket columns: all zero for a customer who never complained; otherwise
    unknown, as the guide counts over all time and the model over 30 and 90 days."""
    if body.negative_experiences > body.complaint_count:
        raise ValueError("`negative_experiences` is over `complaint_count`")
    if body.complaint_count == 0:
        return {
            "last_ticket_ts": None,
            "tickets_30d": 0,
            "tickets_90d": 0,
            "negative_experiences_90d": 0,
            "resolution_hours_lifetime": 0,
            "resolved_tickets_lifetime": 0,
        }
    notes.append(
        "complaint_count, negative_experiences: not used; they count over all time and the "
        "model reads tickets of the last 30 and 90 days (send tickets_30d, tickets_90d and "
        "negative_experiences_90d in the base-column body)"
    )
    return {}


def from_guide(body: msgspec.Struct) -> msgspec.Struct:
    """The PredictRequest a PredictBody says, the guide's names turned into base
    columns; ValueError naming both when a guide name and its column are both given."""
    fields = {name: getattr(body, name) for name in BASE_COLUMNS}
    for name, column in GUIDE_NAMES.items():
        value = getattr(body, name)
        if value is None:
            continue
        if fields[column] is not None:
            raise ValueError(f"`{name}` and `{column}` say the same thing: send one of them")
        if name in GUIDE_DAYS_BEFORE:
            value = body.as_of_ts - timedelta(days=value)  # type: ignore[attr-defined]
        fields[column] = value
    return PredictRequest(**fields)


class ScoreRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What `POST /customers/{id}/score` may hold: the instant to score as of (None:
    the partition's event time)."""

    as_of: UtcTime | None = None


class Prediction(msgspec.Struct, frozen=True):
    """The served model's answer for one request."""

    as_of_ts: datetime
    probability: float
    risk: RiskLevel
    model_version: str
    reasons: list[Reason]
    recommended_actions: list[str]
    features: dict[str, float | None]


class ChurnPrediction(msgspec.Struct, frozen=True):
    """The answer to the guide's body: the guide's fields, then what the stream's
    answer carries, then `notes` on each guide field not honoured as sent and
    `unknown`, the base columns the body left unknown to the model."""

    customer_id: str | None
    churn_probability: float
    predicted_churn: bool  # churn_probability >= PREDICTED_CHURN_AT
    risk_category: RiskLevel
    recommended_actions: list[str]
    reasons: list[Reason]
    model_version: str
    as_of_ts: datetime
    features: dict[str, float | None]
    notes: list[str]
    unknown: list[str]


class Problem(msgspec.Struct, frozen=True):
    """Every refusal's body."""

    error: str


class Published(msgspec.Struct, frozen=True):
    """The score behind a stored customer's published category. `recomputed`: the
    state predates keeping it, so it is the served model's as of the same instant."""

    risk: RiskLevel
    probability: float
    as_of_ts: datetime
    model_version: str
    recomputed: bool
    features: dict[str, float | None]


class Lookup(msgspec.Struct, frozen=True):
    """`GET /customers/{id}`: the published category and the score behind it, and the
    customer scored now (as of the partition's event time), each labelled."""

    customer_id: str
    risk: RiskLevel | None
    published: Published | None
    current: Prediction


def base_values(request: msgspec.Struct) -> dict[str, float]:
    """The request as numbers, in BASE_COLUMNS order: times as epoch seconds,
    booleans as 0/1, a missing value as NaN."""
    values: dict[str, float] = {}
    for name in BASE_COLUMNS:
        value = getattr(request, name)
        if value is None:
            values[name] = float("nan")
        elif isinstance(value, datetime):
            values[name] = value.timestamp()
        else:
            values[name] = float(value)
    return values
