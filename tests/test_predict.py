"""Scoring on demand (`POST /predict`) without services: what a request may hold, and
that its answer is the stream's for the same customer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from feature_store.definitions import BASE_COLUMNS
from schemas import ChurnRiskChanged, Order, topics
from schemas.predict import MAX_BODY_BYTES
from scoring.artifact import Model, load_model
from scoring.merge import Decoded, InputMessage
from scoring.pipeline import Scorer
from scoring.predict import Refused, parse, predict
from tests.support import train_soft_model

T0 = datetime(2026, 3, 2, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    # Probability rising with recency, so a customer silent for a month is at risk.
    models = train_soft_model(
        tmp_path_factory.mktemp("models"), "recency_days", 10, 50, "soft-recency"
    )
    return load_model(models)


def body(**fields: object) -> bytes:
    return json.dumps({"as_of_ts": T0.isoformat(), **fields}).encode()


def refusal(raw: bytes) -> Refused:
    with pytest.raises(Refused) as caught:
        parse(raw)
    return caught.value


def test_a_request_needs_only_its_as_of_instant_and_every_missing_column_is_unknown(
    model: Model,
) -> None:
    prediction = predict(model, parse(body()))
    assert prediction.as_of_ts == T0
    assert prediction.features["recency_days"] is None
    assert prediction.features["orders_lifetime"] is None
    assert 0.0 <= prediction.probability <= 1.0
    assert prediction.model_version == "soft-recency"


def test_every_base_column_is_accepted_by_name() -> None:
    times = {"as_of_ts", "last_order_ts", "last_ticket_ts", "first_order_ts", "registration_ts"}
    flags = {"email_verified", "phone_verified"}
    fields: dict[str, object] = {
        name: T0.isoformat() if name in times else True if name in flags else 1
        for name in BASE_COLUMNS
    }
    request = parse(json.dumps(fields).encode())
    assert msgspec.structs.asdict(request).keys() == set(BASE_COLUMNS)


def test_an_unknown_field_is_refused_by_name() -> None:
    refused = refusal(body(recency_days=3))
    assert refused.status == 400
    assert "recency_days" in str(refused)


def test_a_missing_as_of_instant_is_refused_by_name() -> None:
    refused = refusal(b'{"orders_7d": 1}')
    assert refused.status == 400
    assert "as_of_ts" in str(refused)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("orders_7d", '"three"'),
        ("email_verified", "1"),
        ("age", "41.5"),
        ("last_order_ts", '"2026-03-01T10:00:00"'),  # no time zone
        ("spend_90d", "-1"),
        ("spend_lifetime", "1e400"),  # infinite once parsed
        ("age", "131"),
    ],
)
def test_a_wrong_type_or_an_out_of_range_value_is_refused_naming_the_field(
    field: str, value: str
) -> None:
    refused = refusal(f'{{"as_of_ts": "{T0.isoformat()}", "{field}": {value}}}'.encode())
    assert refused.status == 400
    assert field in str(refused), str(refused)


def test_a_body_that_is_not_json_is_refused() -> None:
    for raw in (b"", b"orders_7d=1", b'{"as_of_ts": NaN}', b"[]"):
        assert refusal(raw).status == 400


def test_an_oversized_body_is_refused_with_413() -> None:
    raw = body(orders_7d=1)[:-1] + b" " * MAX_BODY_BYTES + b"}"
    refused = refusal(raw)
    assert refused.status == 413
    assert str(MAX_BODY_BYTES) in str(refused)


def first_change(model: Model) -> ChurnRiskChanged:
    """What the stream publishes for a customer who ordered on T0 and then went
    silent: an inactivity rescore, once another customer's order moves time on."""
    orders = [
        Order("O1", "P1", T0, 80.0, "card", "delivered"),
        Order("O2", "P2", T0 + timedelta(days=40), 10.0, "card", "delivered"),
    ]
    released = [
        Decoded(
            InputMessage(topics.ORDERS, 0, offset, order.customer_id.encode(), b""),
            order,
            order.order_ts.timestamp(),
        )
        for offset, order in enumerate(orders)
    ]
    outcome = Scorer(lambda: model).process(0, released, {}, [], None)
    assert outcome.changes, "the silent customer was never at risk"
    return outcome.changes[0]


def test_the_answer_is_what_the_stream_publishes_for_the_same_customer(model: Model) -> None:
    change = first_change(model)
    assert (change.customer_id, change.trigger.kind) == ("P1", "inactivity")
    assert change.event_time - T0 == timedelta(days=30)  # the 30-day windows hold no order
    # The same customer as a caller knows them: counts, sums and dates.
    request = {
        "as_of_ts": change.event_time.isoformat(),
        "orders_7d": 0,
        "orders_30d": 0,
        "orders_90d": 1,
        "orders_lifetime": 1,
        "spend_7d": 0,
        "spend_30d": 0,
        "spend_90d": 80.0,
        "spend_lifetime": 80.0,
        "delivery_problems_90d": 0,
        "tickets_30d": 0,
        "tickets_90d": 0,
        "negative_experiences_90d": 0,
        "resolution_hours_lifetime": 0,
        "resolved_tickets_lifetime": 0,
        "last_order_ts": T0.isoformat(),
        "first_order_ts": T0.isoformat(),
    }
    prediction = predict(model, parse(json.dumps(request).encode()))
    assert prediction.probability == change.probability
    assert prediction.risk == change.risk
    assert prediction.reasons == change.reasons
    assert prediction.model_version == change.model_version
