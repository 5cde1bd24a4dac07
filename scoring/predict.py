"""Scoring on demand (`POST /predict`): one customer's base columns, as a caller
supplies them, scored by the served model the way the stream scores them.

The category is the model's thresholds alone: there is no previous category to
hold on to, so no hysteresis, as for a customer the stream scores the first time.
The reasons are those of a first score too: what pushed towards churn.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import numpy as np

from feature_store.definitions import FEATURE_NAMES, feature_matrix
from schemas.predict import MAX_BODY_BYTES, Prediction, PredictRequest, base_values
from scoring.artifact import Model
from scoring.pipeline import reasons
from scoring.risk import level_of


class Refused(Exception):
    """A request that is not scored: `status` is the HTTP status, the message says
    which field and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse(body: bytes) -> msgspec.Struct:
    """The request in `body`, or Refused (413 too large, 400 anything else)."""
    if len(body) > MAX_BODY_BYTES:
        raise Refused(413, f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        return msgspec.json.decode(body, type=PredictRequest)
    except msgspec.ValidationError as err:
        raise Refused(400, str(err)) from None
    except msgspec.DecodeError as err:
        raise Refused(400, f"the body is not a JSON object: {err}") from None


def predict(model: Model, request: msgspec.Struct) -> Prediction:
    """The model's probability, category and top reasons for one request."""
    base = base_values(request)
    features = feature_matrix({k: np.array([v]) for k, v in base.items()}, model.feature_params)
    probability = float(model.predict(features)[0])
    contributions = model.contributions(features)[0]
    return Prediction(
        as_of_ts=datetime.fromtimestamp(base["as_of_ts"], tz=UTC),
        probability=probability,
        risk=level_of(probability, model.thresholds),  # type: ignore[arg-type]
        model_version=model.version,
        reasons=reasons(features[0], contributions, toward_churn=True),
        features={
            name: None if np.isnan(value) else float(value)
            for name, value in zip(FEATURE_NAMES, features[0], strict=True)
        },
    )
