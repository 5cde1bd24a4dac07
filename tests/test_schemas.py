"""The JSON Schema files and the Python event types are one definition."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import msgspec
import pytest

from schemas import (
    SCHEMA_FILES,
    DriftAlert,
    DriftReference,
    DriftStatistics,
    DriftThresholds,
    DriftWindow,
    Order,
    SupportTicket,
    generate_schema,
    schema_path,
    topics,
)
from schemas.generate import ASYNCAPI_PATH, generate_asyncapi


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_schema_file_matches_the_python_type(name: str) -> None:
    committed = json.loads(schema_path(name).read_text())
    assert committed == generate_schema(name), (
        f"schemas/{name}.schema.json is stale: run `python -m schemas` and commit the result"
    )


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_schema_file_is_a_valid_json_schema(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(schema_path(name).read_text()))


def test_an_encoded_order_is_valid_under_its_schema_file() -> None:
    order = Order("O1", "C1", datetime(2026, 1, 1, tzinfo=UTC), 12.5, "card", "delayed")
    jsonschema.validate(
        json.loads(msgspec.json.encode(order)), json.loads(schema_path("orders").read_text())
    )


@pytest.mark.parametrize(
    "bad_ticket",
    [
        {
            "ticket_id": "T1",
            "customer_id": "C1",
            "created_ts": "2026-01-01T00:00:00Z",
            "category": "x",
            "satisfaction_score": 9,
        },
        {
            "ticket_id": "T1",
            "customer_id": "C1",
            "created_ts": "2026-01-01T00:00:00",
            "category": "x",
        },
        {
            "ticket_id": "",
            "customer_id": "C1",
            "created_ts": "2026-01-01T00:00:00Z",
            "category": "x",
        },
    ],
    ids=["score-out-of-range", "time-without-offset", "empty-id"],
)
def test_decoder_and_schema_file_both_reject_a_bad_ticket(bad_ticket: dict) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(bad_ticket), type=SupportTicket)
    schema = json.loads(schema_path("support-tickets").read_text())
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    if bad_ticket["created_ts"].endswith("Z"):  # JSON Schema cannot express "has an offset"
        assert not validator.is_valid(bad_ticket)


def test_asyncapi_document_is_current_and_covers_every_topic() -> None:
    committed = json.loads(ASYNCAPI_PATH.read_text())
    assert committed == generate_asyncapi(), "run `python -m schemas` and commit the result"
    every_topic = {
        *topics.INPUT_TOPICS,
        topics.CHURN_RISK,
        topics.CHURN_RISK_HIGH,
        topics.CHURN_RISK_CURRENT,
    }
    internal = {topics.DEAD_LETTER, topics.DRIFT_ALERTS, topics.BATCHES, topics.TICKS}
    assert every_topic | internal == set(committed["channels"])
    for channel in committed["channels"].values():
        for message in channel["messages"].values():
            assert (schema_path("x").parent / message["payload"]["$ref"]).exists()


def test_an_encoded_drift_alert_is_valid_under_its_schema_file_and_decodes_back() -> None:
    day = datetime(2026, 1, 2, tzinfo=UTC)
    alert = DriftAlert(
        event_id="0b9f2a52-6b4d-5d7c-9a4e-2f3c1b0d9e77",
        feature="spend_7d",
        state="raised",
        statistic="psi",
        value=0.31,
        thresholds=DriftThresholds(raise_above=0.2, clear_below=0.1, consecutive_slices=3),
        window=DriftWindow(start=day, end=day, slice_seconds=3600, scores=812, mean=None),
        reference=DriftReference(rows=23000, since=day, until=day, mean=51.5),
        statistics=DriftStatistics(psi=0.31, ks=None, mean_shift=0.4),
        model_version="v1",
        detected_at=day,
    )
    encoded = msgspec.json.encode(alert)
    jsonschema.validate(json.loads(encoded), json.loads(schema_path("drift-alerts").read_text()))
    assert msgspec.json.decode(encoded, type=DriftAlert) == alert
