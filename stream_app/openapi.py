"""The worker's HTTP API as an OpenAPI 3.1 document, served at `/openapi.json`.

Generated from the types the views decode and encode (`scoring.predict_contract`):
msgspec writes their JSON Schema (2020-12, the dialect OpenAPI 3.1 uses), so the
document cannot drift from what the worker accepts and answers.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import msgspec

from scoring.predict_contract import (
    ChurnPrediction,
    CustomerFeatures,
    Lookup,
    PredictBody,
    Prediction,
    Problem,
    ScoreRequest,
)

REF = "#/components/schemas/{name}"
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every endpoint the worker serves."""
    types = (CustomerFeatures, PredictBody, ChurnPrediction, Prediction, Lookup, ScoreRequest)
    refs, components = msgspec.json.schema_components((*types, Problem), ref_template=REF)
    ref = dict(zip(types, refs, strict=False))
    customer = {
        "name": "customer_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:@-]{1,128}$"},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "churn-risk worker",
            "version": version("churn-risk"),
            "description": "Scores on demand with the model the stream serves, and the "
            "worker's health. Every scoring endpoint needs the bearer token "
            "(CHURN_WEB_TOKEN); without one set they answer 403.",
        },
        "paths": {
            "/predict": {
                "post": {
                    "summary": "Score a customer described in the body",
                    "description": "The seed guide's CustomerFeatures (any field only it "
                    "has makes a body one) is answered with a ChurnPrediction; a body of "
                    "base columns with a Prediction.",
                    "security": BEARER,
                    "requestBody": _json(
                        {"oneOf": [ref[CustomerFeatures], ref[PredictBody]]}, required=True
                    ),
                    "responses": _answers(
                        {"oneOf": [ref[ChurnPrediction], ref[Prediction]]}, 400, 413, 422
                    ),
                }
            },
            "/customers/{customer_id}": {
                "get": {
                    "summary": "A stored customer's published risk and their score now",
                    "security": BEARER,
                    "parameters": [customer],
                    "responses": _answers(ref[Lookup], 400, 404),
                }
            },
            "/customers/{customer_id}/score": {
                "post": {
                    "summary": "A stored customer scored as of an instant (what-if)",
                    "security": BEARER,
                    "parameters": [customer],
                    "requestBody": _json(ref[ScoreRequest], required=False),
                    "responses": _answers(ref[Prediction], 400, 404, 413, 422),
                }
            },
            "/health": _open("Liveness: the process answers", "application/json"),
            "/ready": _open("Readiness: Kafka, Redis, the model, the agent", "application/json"),
            "/metrics": _open("Prometheus metrics", "text/plain"),
            "/openapi.json": _open("This document", "application/json"),
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _json(schema: dict[str, Any], required: bool) -> dict[str, Any]:
    """A JSON request body."""
    return {"required": required, "content": _content(schema)}


def _answers(schema: dict[str, Any], *refusals: int) -> dict[str, Any]:
    """200 with `schema`, and a Problem for each of `refusals` and those every scoring
    endpoint may give (401, 403, 503)."""
    problem = _content({"$ref": REF.format(name="Problem")})
    answers: dict[str, Any] = {"200": {"description": "the answer", "content": _content(schema)}}
    for status in sorted({*refusals, 401, 403, 503}):
        answers[str(status)] = {"description": _REFUSALS[status], "content": problem}
    return answers


def _open(summary: str, media: str) -> dict[str, Any]:
    """An endpoint open to anyone, described by its media type only."""
    return {
        "get": {
            "summary": summary,
            "security": [],
            "responses": {"200": {"description": summary, "content": {media: {}}}},
        }
    }


_REFUSALS = {
    400: "not JSON, or an id out of the rule",
    401: "no valid bearer token",
    403: "scoring on demand is off (CHURN_WEB_TOKEN unset)",
    404: "unknown customer",
    413: "body over 16 KiB",
    422: "JSON that breaks the schema or contradicts itself; the message names the field",
    503: "Redis or the model did not answer in time",
}
