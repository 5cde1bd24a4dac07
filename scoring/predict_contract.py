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

from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec

from feature_store.definitions import BASE_COLUMNS, FIRST_TIME, LAST_TIME, WINDOWS
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
    **{name: Total for name in WINDOWS},
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
