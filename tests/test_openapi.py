"""The worker's OpenAPI document: valid OpenAPI 3.1 to a third party's validator, and
true to what the views accept and answer (both come from the same types)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from scoring.artifact import load_model
from scoring.model import Model
from scoring.pipeline import Scorer
from scoring.predict import parse, predict, predict_customer
from stream_app.openapi import document
from tests.support import train_soft_model

T0 = datetime(2026, 3, 2, 10, tzinfo=UTC)
GUIDE = {
    "age": 41,
    "recency_days": 45,
    "total_orders": 12,
    "total_spent": 1500.0,
    "avg_order_value": 125.0,
    "order_frequency": 1.2,
    "engagement_score": 52.3,
    "complaint_count": 2,
    "negative_experiences": 1,
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    models = train_soft_model(tmp_path_factory.mktemp("models"), "recency_days", 10, 50, "v1")
    return load_model(models)


def conforms(instance: Any, name: str) -> bool:
    """`instance` is valid against the document's component `name`."""
    doc = document()
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return OAS31Validator(schema).is_valid(instance)


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document()
    validate(doc)  # raises, naming the place, on an invalid document
    assert doc["openapi"] == "3.1.0"
    assert {"/predict", "/customers/{customer_id}", "/customers/{customer_id}/score"} <= set(
        doc["paths"]
    )


def test_the_guides_body_and_its_answer_conform_to_the_document(model: Model) -> None:
    policy = Scorer(lambda: model).policy(model)
    assert conforms(GUIDE, "CustomerFeatures")
    assert not conforms({**GUIDE, "churned": 1}, "CustomerFeatures")
    assert not conforms({k: v for k, v in GUIDE.items() if k != "total_orders"}, "CustomerFeatures")
    request = parse(json.dumps(GUIDE).encode())
    answer = json.loads(msgspec.json.encode(predict_customer(model, policy, request, T0)))
    assert conforms(answer, "ChurnPrediction")
    assert not conforms(answer, "Prediction")


def test_a_base_column_body_and_its_answer_conform_to_the_document(model: Model) -> None:
    policy = Scorer(lambda: model).policy(model)
    body = {"as_of_ts": T0.isoformat(), "orders_lifetime": 3, "recency_days": 20}
    assert conforms(body, "PredictBody")
    assert not conforms({"orders_lifetime": 3}, "PredictBody")  # as_of_ts is required
    answer = json.loads(
        msgspec.json.encode(predict(model, policy, parse(json.dumps(body).encode())))
    )
    assert conforms(answer, "Prediction")
