"""Scoring on demand without services: what a `POST /predict` request may hold (base
columns or the guide's names), that its answer is the stream's for the same customer,
and a stored customer scored as of an instant (what-if) and looked up."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from feature_store.definitions import BASE_COLUMNS, RECENT_GAP_COLUMNS
from feature_store.online import CustomerState, decode_state, encode_state
from schemas import Order, topics
from scoring.artifact import load_model
from scoring.merge import Decoded, InputMessage
from scoring.model import Model
from scoring.outcome import PartitionOutcome
from scoring.pipeline import Scorer
from scoring.predict import (
    Refused,
    lookup,
    parse,
    parse_score,
    predict,
    predict_customer,
    score_state,
)
from scoring.predict_contract import MAX_BODY_BYTES, CustomerFeatures
from scoring.risk import RiskPolicy, ValueTargeting
from tests.support import train_soft_model

T0 = datetime(2026, 3, 2, 10, tzinfo=UTC)
# A deployment's own playbook: an answer carries these, not the defaults.
ACTIONS = {"HIGH": ("call them",), "MEDIUM": ("email them",), "LOW": ("leave them be",)}


@pytest.fixture(scope="module")
def policy(model: Model) -> RiskPolicy:
    return Scorer(lambda: model, actions=ACTIONS).policy(model)


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
    model: Model, policy: RiskPolicy
) -> None:
    prediction = predict(model, policy, parse(body()))
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


@pytest.mark.parametrize("name", ["support_tickets", "churned", "orders_365d"])
def test_an_unknown_field_is_refused_with_422_by_name(name: str) -> None:
    refused = refusal(body(**{name: 3}))
    assert refused.status == 422
    assert name in str(refused)


def test_the_guides_names_say_what_their_base_columns_say(model: Model, policy: RiskPolicy) -> None:
    guide = predict(
        model,
        policy,
        parse(
            body(
                recency_days=12.5,
                days_since_last_ticket=3,
                tenure_days=400,
                frequency=4,
                monetary=120.0,
            )
        ),
    )
    assert guide.features["recency_days"] == 12.5
    assert guide.features["days_since_last_ticket"] == 3
    assert guide.features["tenure_days"] == 400
    assert guide.features["orders_lifetime"] == 4
    assert guide.features["spend_lifetime"] == 120.0
    assert guide.features["avg_order_value"] == 30.0
    base = predict(
        model,
        policy,
        parse(
            body(
                last_order_ts=(T0 - timedelta(days=12.5)).isoformat(),
                last_ticket_ts=(T0 - timedelta(days=3)).isoformat(),
                registration_ts=(T0 - timedelta(days=400)).isoformat(),
                orders_lifetime=4,
                spend_lifetime=120.0,
            )
        ),
    )
    assert guide == base


def test_a_guide_name_and_its_base_column_together_are_refused_naming_both() -> None:
    refused = refusal(body(frequency=2, orders_lifetime=2))
    assert refused.status == 422
    assert "frequency" in str(refused) and "orders_lifetime" in str(refused)
    refused = refusal(body(recency_days=-1))
    assert (refused.status, "recency_days" in str(refused)) == (422, True)


def test_a_missing_as_of_instant_is_refused_by_name() -> None:
    refused = refusal(b'{"orders_7d": 1}')
    assert refused.status == 422
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
def test_a_wrong_type_or_an_out_of_range_value_is_a_422_naming_the_field(
    field: str, value: str
) -> None:
    refused = refusal(f'{{"as_of_ts": "{T0.isoformat()}", "{field}": {value}}}'.encode())
    assert refused.status == 422
    assert field in str(refused), str(refused)


def test_a_body_that_is_not_json_is_a_400_and_json_of_the_wrong_shape_a_422() -> None:
    for raw in (b"", b"orders_7d=1", b'{"as_of_ts": NaN}'):
        assert refusal(raw).status == 400
    assert refusal(b"[]").status == 422


def test_an_oversized_body_is_refused_with_413() -> None:
    raw = body(orders_7d=1)[:-1] + b" " * MAX_BODY_BYTES + b"}"
    refused = refusal(raw)
    assert refused.status == 413
    assert str(MAX_BODY_BYTES) in str(refused)


def silent_customer(model: Model, targeting: ValueTargeting | None = None) -> PartitionOutcome:
    """What the stream makes of a customer who ordered on T0 and then went silent: an
    inactivity rescore, once another customer's order moves time on."""
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
    scorer = Scorer(lambda: model, actions=ACTIONS, targeting=targeting)
    outcome = scorer.process(0, released, {}, [], [], None)
    assert outcome.changes, "the silent customer was never at risk"
    return outcome


def test_by_value_the_stream_and_predict_flag_a_customer_worth_acting_on_sooner(
    model: Model,
) -> None:
    by_value = ValueTargeting(value_per_spend=4.0, action_cost=20.0)  # P1 is worth 320
    cutoff, valued = silent_customer(model), silent_customer(model, by_value)
    first, first_valued = cutoff.changes[0], valued.changes[0]
    # Acting on P1 pays from p = 20 / 320: HIGH at the first rescore that passes it,
    # where the cut-off waits for 0.4 (MEDIUM) and 0.7.
    assert (first.risk, first_valued.risk) == ("MEDIUM", "HIGH")
    assert 20 / 320 <= first_valued.probability < first.probability
    assert first_valued.event_time <= first.event_time
    assert first_valued.recommended_actions == list(ACTIONS["HIGH"])
    # /predict answers with the same policy: the same customer in base columns.
    policy = Scorer(lambda: model, actions=ACTIONS, targeting=by_value).policy(model)
    request = {
        "as_of_ts": first_valued.event_time.isoformat(),
        "orders_90d": 1,
        "orders_lifetime": 1,
        "spend_90d": 80.0,
        "spend_lifetime": 80.0,
        "last_order_ts": T0.isoformat(),
        "first_order_ts": T0.isoformat(),
    }
    assert predict(model, policy, parse(json.dumps(request).encode())).risk == "HIGH"


def test_the_answer_is_what_the_stream_publishes_for_the_same_customer(
    model: Model, policy: RiskPolicy
) -> None:
    change = silent_customer(model).changes[0]
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
    prediction = predict(model, policy, parse(json.dumps(request).encode()))
    assert prediction.probability == change.probability
    assert prediction.risk == change.risk
    assert prediction.reasons == change.reasons
    assert prediction.recommended_actions == change.recommended_actions
    assert change.recommended_actions == list(ACTIONS[change.risk])
    assert prediction.model_version == change.model_version


def test_a_stored_customer_scored_as_of_the_rescore_instant_is_what_the_stream_published(
    model: Model, policy: RiskPolicy
) -> None:
    outcome = silent_customer(model)
    change, state = outcome.changes[0], outcome.states["P1"]
    what_if = score_state(model, policy, state, change.event_time.timestamp())
    assert (what_if.probability, what_if.risk) == (change.probability, change.risk)
    assert what_if.reasons == change.reasons
    assert what_if.recommended_actions == change.recommended_actions
    assert what_if.as_of_ts == change.event_time


def test_a_stored_customer_cannot_be_scored_before_their_last_event(
    model: Model, policy: RiskPolicy
) -> None:
    state = silent_customer(model).states["P1"]
    with pytest.raises(Refused) as caught:
        score_state(model, policy, state, T0.timestamp() - 1)
    assert caught.value.status == 422
    assert "before the customer's last event" in str(caught.value)
    for raw in (b'{"as_of": "2026-03-01T10:00:00"}', b'{"as_of": 3}', b'{"when": null}'):
        with pytest.raises(Refused) as caught:
            parse_score(raw)
        assert caught.value.status == 422
    assert parse_score(b"").as_of is None


def test_the_lookup_shows_the_probability_behind_the_published_category_and_the_current_one(
    model: Model, policy: RiskPolicy
) -> None:
    outcome = silent_customer(model)
    change, state = outcome.changes[0], outcome.states["P1"]
    assert outcome.stream_time is not None
    found = lookup(model, policy, state, outcome.stream_time)
    assert found.risk == change.risk
    assert found.published is not None
    assert not found.published.recomputed
    assert found.published.probability == change.probability
    assert found.published.as_of_ts == change.event_time
    assert found.published.features["recency_days"] == 30
    # The current score: as of the partition's event time, ten days on.
    assert found.current.as_of_ts == T0 + timedelta(days=40)
    assert found.current.features["recency_days"] == 40
    # Ten more silent days: the recency model is surer, and says so in `current`.
    assert found.current.probability > found.published.probability
    assert found.current.risk == policy.category(found.current.probability, change.risk)


def test_a_state_stored_before_the_published_score_was_kept_loads_and_is_recomputed(
    model: Model, policy: RiskPolicy
) -> None:
    state = silent_customer(model).states["P1"]
    # The layout before: every field up to `origin`, none of the risk_* after it.
    old = msgspec.msgpack.encode(msgspec.to_builtins(state)[:11])
    loaded = decode_state(old)
    assert loaded.risk_probability is None and loaded.risk == state.risk
    assert encode_state(decode_state(encode_state(state))) == encode_state(state)
    found = lookup(model, policy, loaded, None)
    assert found.published is not None and found.published.recomputed
    assert (
        found.published.probability
        == score_state(model, policy, loaded, found.published.as_of_ts.timestamp()).probability
    )
    assert isinstance(loaded, CustomerState)


# The seed guide's example customer, in its CustomerFeatures fields.
GUIDE_CUSTOMER = {
    "age": 35,
    "recency_days": 10,
    "total_orders": 3,
    "total_spent": 90.0,
    "avg_order_value": 30.0,
    "order_frequency": 1.5,  # 3 orders over 2 months: the first 60 days before the last
    "engagement_score": 52.3,
    "complaint_count": 0,
    "negative_experiences": 0,
    "is_email_verified": True,
    "is_phone_verified": False,
}


def guide_body(**fields: object) -> bytes:
    return json.dumps({**GUIDE_CUSTOMER, "as_of_ts": T0.isoformat(), **fields}).encode()


def test_two_orders_or_fewer_in_the_guides_body_leave_no_recent_gap_unknown(
    model: Model, policy: RiskPolicy
) -> None:
    for orders, frequency in ((0, 0.0), (1, 1.0), (2, 0.5)):
        body = guide_body(
            total_orders=orders,
            total_spent=30.0 * orders,
            avg_order_value=None,
            order_frequency=frequency,
        )
        answer = predict_customer(model, policy, parse(body), T0)
        assert not set(RECENT_GAP_COLUMNS) & set(answer.unknown), orders
        assert answer.features["gap_spread"] is None  # fewer than two gaps: no spread


def test_the_guides_customer_features_are_answered_as_the_same_customer_in_base_columns(
    model: Model, policy: RiskPolicy
) -> None:
    guide = predict_customer(model, policy, parse(guide_body(customer_id="C-7")), T0)
    # What the guide's fields determine exactly; the 30-day sums (the orders span 60
    # days, the last 10 days ago) and the profile's registration stay unknown.
    base = {
        "age": 35,
        "orders_lifetime": 3,
        "spend_lifetime": 90.0,
        "last_order_ts": (T0 - timedelta(days=10)).isoformat(),
        "first_order_ts": (T0 - timedelta(days=70)).isoformat(),
        "orders_7d": 0,
        "spend_7d": 0,
        "orders_90d": 3,
        "spend_90d": 90.0,
        "tickets_30d": 0,
        "tickets_90d": 0,
        "negative_experiences_90d": 0,
        "resolution_hours_lifetime": 0,
        "resolved_tickets_lifetime": 0,
        "email_verified": True,
        "phone_verified": False,
    }
    same = predict(model, policy, parse(body(**base)))
    assert guide.customer_id == "C-7"
    assert (guide.churn_probability, guide.risk_category) == (same.probability, same.risk)
    assert guide.predicted_churn == (same.probability >= 0.5)
    assert (guide.reasons, guide.features) == (same.reasons, same.features)
    assert guide.recommended_actions == list(ACTIONS[same.risk])
    assert (guide.model_version, guide.as_of_ts) == (same.model_version, T0)
    assert guide.unknown == [
        "orders_30d",
        "spend_30d",
        "delivery_problems_90d",
        "recent_gaps",  # three orders: the time of the middle one is not given
        "recent_gap_hours",
        "recent_gap_squares",
        "registration_ts",
    ]
    assert [note.split(":")[0] for note in guide.notes] == ["engagement_score"]


def test_the_guides_lifetime_complaints_are_not_read_as_recent_and_the_answer_says_so(
    model: Model, policy: RiskPolicy
) -> None:
    answer = predict_customer(
        model, policy, parse(guide_body(complaint_count=2, negative_experiences=1)), T0
    )
    assert {"tickets_30d", "tickets_90d", "negative_experiences_90d"} <= set(answer.unknown)
    assert any(note.startswith("complaint_count") for note in answer.notes)


def test_the_guide_body_is_scored_as_of_now_unless_it_says_when(
    model: Model, policy: RiskPolicy
) -> None:
    later = T0 + timedelta(days=5)
    request = parse(json.dumps(GUIDE_CUSTOMER).encode())
    assert predict_customer(model, policy, request, later).as_of_ts == later


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"avg_order_value": 31.0}, "avg_order_value"),
        ({"order_frequency": 4.0}, "order_frequency"),
        ({"order_frequency": 0}, "order_frequency"),
        ({"complaint_count": 1, "negative_experiences": 2}, "negative_experiences"),
        ({"total_orders": 0}, "total_spent"),
        ({"total_spent": None}, "total_spent"),
        ({"recency_days": -3}, "recency_days"),
        ({"orders_30d": 1}, "orders_30d"),
    ],
)
def test_guide_fields_that_contradict_each_other_or_break_the_type_are_a_422_naming_one(
    model: Model, policy: RiskPolicy, fields: dict[str, object], named: str
) -> None:
    with pytest.raises(Refused) as caught:
        predict_customer(model, policy, parse(guide_body(**fields)), T0)
    assert caught.value.status == 422
    assert named in str(caught.value)


def test_a_guide_field_makes_the_body_the_guides_and_without_one_it_is_base_columns() -> None:
    assert isinstance(parse(guide_body()), CustomerFeatures)
    assert not isinstance(parse(body(recency_days=3)), CustomerFeatures)
