"""The on-demand scoring contract (`POST /predict`): a customer's facts in, a score out.

The request carries the base columns the feature definitions compute from
(`feature_store.definitions.BASE_COLUMNS`), not the model's features: a caller has
counts, sums and dates, while features such as `engagement_score` need constants
fixed at training time and shipped in the artifact, which only the worker knows.
The request type is built from BASE_COLUMNS, so a new base column is accepted
without a second list to update.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from feature_store.definitions import BASE_COLUMNS, FIRST_TIME, LAST_TIME, WINDOWS
from schemas.events import Reason, RiskLevel, UtcTime

MAX_BODY_BYTES = 16_384
# Any window sum a shop could have (spend in the order's currency, counts, hours);
# bounded so that no infinite or absurd number reaches the model.
MAX_BASE_VALUE = 1e12
AS_OF = "as_of_ts"

Total = Annotated[float, msgspec.Meta(ge=0, le=MAX_BASE_VALUE)]
Age = Annotated[int, msgspec.Meta(ge=0, le=130)]  # as in the customers topic

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
    raise RuntimeError(f"schemas.predict gives no type to {set(BASE_COLUMNS) - set(_TYPES)}")

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


class Prediction(msgspec.Struct, frozen=True):
    """The served model's answer for one request."""

    as_of_ts: datetime
    probability: float
    risk: RiskLevel
    model_version: str
    reasons: list[Reason]
    features: dict[str, float | None]


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
