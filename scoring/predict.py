"""Scoring on demand: a customer's base columns, as a caller supplies them
(`POST /predict`), or a stored customer's state as of a chosen instant
(`POST /customers/{id}/score`), scored by the served model the way the stream
scores them, with the stream's policy (`scoring.risk.RiskPolicy`): its category,
its reasons and its recommended actions.

A caller's customer has no previous category to hold on to, so no hysteresis, as
for a customer the stream scores the first time. A stored customer has one, the
published category, and the what-if score starts from it as the stream's next
score would. The reasons are what pushed towards churn, or away from it when the
category went down.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import msgspec
import numpy as np

from feature_store.definitions import BASE_COLUMNS, FEATURE_NAMES, feature_matrix
from feature_store.online import CustomerState, base_row
from scoring.model import Model
from scoring.pipeline import SPEND_90D, reasons, utc
from scoring.predict_contract import (
    GUIDE_ONLY,
    MAX_BODY_BYTES,
    PREDICTED_CHURN_AT,
    ChurnPrediction,
    CustomerFeatures,
    Lookup,
    PredictBody,
    Prediction,
    Published,
    ScoreRequest,
    base_values,
    from_customer_features,
    from_guide,
)
from scoring.risk import RANK, RiskPolicy

S = TypeVar("S")


class Refused(Exception):
    """A request that is not scored: `status` is the HTTP status, the message says
    which field and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode(body: bytes, kind: type[S]) -> S:
    """`body` as a `kind`, or Refused: 413 too large, 400 not JSON at all (there is no
    field to name), 422 JSON that is not a valid `kind` (the message names the field)."""
    if len(body) > MAX_BODY_BYTES:
        raise Refused(413, f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as err:
        raise Refused(422, str(err)) from None
    except msgspec.DecodeError as err:
        raise Refused(400, f"the body is not JSON: {err}") from None


def parse(body: bytes) -> msgspec.Struct:
    """What `body` asks: the guide's CustomerFeatures when it holds any field only
    that has (`GUIDE_ONLY`), else a PredictRequest (base columns, or the guide's names
    for some); or Refused."""
    fields = decode(body, dict[str, msgspec.Raw])  # names only: values are not parsed
    if GUIDE_ONLY & fields.keys():
        return decode(body, CustomerFeatures)
    try:
        return from_guide(decode(body, PredictBody))
    except ValueError as err:
        raise Refused(422, str(err)) from None


def answer(
    model: Model, policy: RiskPolicy, request: msgspec.Struct, now: datetime
) -> Prediction | ChurnPrediction:
    """The answer to a parsed `/predict` body, in the form the body came in; `now` is
    the guide body's as-of instant unless it sends one."""
    if isinstance(request, CustomerFeatures):
        return predict_customer(model, policy, request, now)
    return predict(model, policy, request)


def predict_customer(
    model: Model, policy: RiskPolicy, features: CustomerFeatures, now: datetime
) -> ChurnPrediction:
    """The model's answer to the guide's body, in the guide's fields, or Refused (422)
    when its fields contradict each other."""
    scale = model.feature_params.engagement_scale
    try:
        request, notes, unknown = from_customer_features(features, now, scale)
    except ValueError as err:
        raise Refused(422, str(err)) from None
    prediction = predict(model, policy, request)
    return ChurnPrediction(
        customer_id=features.customer_id,
        churn_probability=prediction.probability,
        predicted_churn=prediction.probability >= PREDICTED_CHURN_AT,
        risk_category=prediction.risk,
        recommended_actions=prediction.recommended_actions,
        reasons=prediction.reasons,
        model_version=prediction.model_version,
        as_of_ts=prediction.as_of_ts,
        features=prediction.features,
        notes=notes,
        unknown=unknown,
    )


def parse_score(body: bytes) -> ScoreRequest:
    """The ScoreRequest in `body` (empty: every default), or Refused."""
    return decode(body or b"{}", ScoreRequest)


def predict(model: Model, policy: RiskPolicy, request: msgspec.Struct) -> Prediction:
    """The model's answer for a caller's customer (`parse`)."""
    return _score(model, policy, base_values(request), previous=None)


def score_state(model: Model, policy: RiskPolicy, state: CustomerState, as_of: float) -> Prediction:
    """The model's answer for a stored customer as of `as_of`, or Refused (422) for an
    instant before their last event."""
    if state.seen is None:
        raise Refused(404, f"customer {state.customer_id} has no event yet")
    if as_of < state.seen:
        raise Refused(
            422,
            f"as_of {utc(as_of).isoformat()} is before the customer's last event at "
            f"{utc(state.seen).isoformat()}: "
            "the state holds that event and keeps no history, so it cannot be read as of "
            "an earlier instant",
        )
    return _score(model, policy, _base(state, as_of), previous=state.risk)


def _base(state: CustomerState, as_of: float) -> dict[str, float]:
    """A stored customer's base columns as of `as_of`, by name."""
    return dict(zip(BASE_COLUMNS, base_row(state, as_of), strict=True))


def now(state: CustomerState, stream_time: float | None) -> float:
    """The instant a stored customer is scored "now": their partition's event time
    `stream_time`, never before their last score (nor last event)."""
    last = max(state.seen or 0.0, state.scored_to or 0.0)
    return last if stream_time is None else max(last, stream_time)


def lookup(
    model: Model, policy: RiskPolicy, state: CustomerState, stream_time: float | None
) -> Lookup:
    """A stored customer's published score and their score as of the partition's
    event time `stream_time` (never before their last score)."""
    current = score_state(model, policy, state, now(state, stream_time))
    published = None
    if state.risk is not None and state.seen is not None:
        as_of = max(state.seen, state.risk_as_of or state.scored_to or state.seen)
        features = _features(model, _base(state, as_of))
        probability, version = state.risk_probability, state.risk_model
        recomputed = probability is None or version is None
        if probability is None or version is None:
            probability, version = float(model.predict(features)[0]), model.version
        published = Published(
            risk=state.risk,  # type: ignore[arg-type]
            probability=probability,
            as_of_ts=utc(as_of),
            model_version=version,
            recomputed=recomputed,
            features=_floats(features[0]),
        )
    return Lookup(state.customer_id, state.risk, published, current)  # type: ignore[arg-type]


def _score(
    model: Model, policy: RiskPolicy, base: dict[str, float], previous: str | None
) -> Prediction:
    features = _features(model, base)
    probability = float(model.predict(features)[0])
    risk = policy.category(probability, previous, features[0, SPEND_90D])
    went_down = previous is not None and RANK[risk] < RANK[previous]
    return Prediction(
        as_of_ts=utc(base["as_of_ts"]),
        probability=probability,
        risk=risk,  # type: ignore[arg-type]
        model_version=model.version,
        reasons=reasons(features[0], model.contributions(features)[0], not went_down),
        recommended_actions=list(policy.actions[risk]),
        features=_floats(features[0]),
    )


def _features(model: Model, base: dict[str, float]) -> np.ndarray:
    """The model's inputs (one row) from one customer's base columns."""
    return feature_matrix({k: np.array([v]) for k, v in base.items()}, model.feature_params)


def _floats(row: Any) -> dict[str, float | None]:
    return {
        name: None if np.isnan(value) else float(value)
        for name, value in zip(FEATURE_NAMES, row, strict=True)
    }
