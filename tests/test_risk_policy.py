"""Risk categories: thresholds, hysteresis, what counts as news, stable ids."""

from __future__ import annotations

import pytest

from scoring.batches import batch_record, recorded_policy
from scoring.model import Thresholds
from scoring.risk import RiskPolicy, ValueTargeting, is_news, transition_id

POLICY = RiskPolicy(Thresholds(medium=0.4, high=0.7), margin=0.05)


@pytest.mark.parametrize(
    ("probability", "expected"), [(0.0, "LOW"), (0.39, "LOW"), (0.4, "MEDIUM"), (0.7, "HIGH")]
)
def test_first_category_follows_the_thresholds(probability: float, expected: str) -> None:
    assert POLICY.category(probability, None) == expected


def test_a_score_hovering_at_a_threshold_does_not_flap() -> None:
    risk = None
    changes = 0
    for probability in [0.71, 0.69, 0.70, 0.68, 0.72, 0.66, 0.70]:
        new = POLICY.category(probability, risk)
        changes += new != risk
        risk = new
    assert risk == "HIGH"
    assert changes == 1


def test_risk_drops_once_clear_of_the_threshold_by_the_margin() -> None:
    assert POLICY.category(0.651, "HIGH") == "HIGH"
    assert POLICY.category(0.649, "HIGH") == "MEDIUM"
    assert POLICY.category(0.10, "HIGH") == "LOW"
    assert POLICY.category(0.36, "MEDIUM") == "MEDIUM"
    assert POLICY.category(0.34, "MEDIUM") == "LOW"


def test_rising_risk_is_not_held_back_by_the_margin() -> None:
    assert POLICY.category(0.70, "LOW") == "HIGH"
    assert POLICY.category(0.40, "LOW") == "MEDIUM"


def test_a_new_low_customer_is_not_news_but_every_change_is() -> None:
    assert not is_news(None, "LOW")
    assert is_news(None, "HIGH")
    assert is_news("LOW", "MEDIUM")
    assert not is_news("HIGH", "HIGH")


def test_transition_ids_are_deterministic_and_distinct() -> None:
    assert transition_id("C1", 1) == transition_id("C1", 1)
    assert len({transition_id("C1", 1), transition_id("C1", 2), transition_id("C2", 1)}) == 3


def test_a_policy_without_actions_for_every_level_is_refused() -> None:
    with pytest.raises(ValueError, match="actions"):
        RiskPolicy(actions={"HIGH": ("call",)})


# Value targeting: a customer's value is 4 x their 90-day spend; acting costs 20.
BY_VALUE = RiskPolicy(
    Thresholds(medium=0.4, high=0.7), margin=0.05, targeting=ValueTargeting(4.0, 20.0)
)


@pytest.mark.parametrize(
    ("probability", "spend_90d", "expected"),
    [
        (0.30, 500.0, "HIGH"),  # worth 2,000: acting pays from p = 0.01
        (0.30, 10.0, "LOW"),  # worth 40: acting pays only from p = 0.5
        (0.45, 10.0, "MEDIUM"),  # below 0.5, MEDIUM by the cut-off as before
        (0.55, 10.0, "HIGH"),  # though below the 0.7 cut-off
        (0.99, 0.0, "MEDIUM"),  # spends nothing: acting never pays
        (0.99, float("nan"), "MEDIUM"),  # unknown spend counts as none
    ],
)
def test_by_value_high_is_where_probability_times_value_exceeds_the_cost(
    probability: float, spend_90d: float, expected: str
) -> None:
    assert BY_VALUE.category(probability, None, spend_90d) == expected


def test_by_value_a_customer_leaves_high_once_clear_of_their_own_cut_by_the_margin() -> None:
    # Worth 40: their cut is 0.5, so they stay HIGH down to 0.45.
    assert BY_VALUE.category(0.46, "HIGH", 10.0) == "HIGH"
    assert BY_VALUE.category(0.44, "HIGH", 10.0) == "MEDIUM"


def test_value_targeting_needs_a_positive_value_and_cost() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        ValueTargeting(0.0, 20.0)


def test_a_batch_record_pins_the_targeting_its_batch_was_scored_with() -> None:
    record = batch_record(0, 1, {"orders": 1}, {"orders": 2}, "v1", BY_VALUE)
    assert recorded_policy(record, BY_VALUE.thresholds) == BY_VALUE
    plain = batch_record(0, 1, {"orders": 1}, {"orders": 2}, "v1", POLICY)
    assert recorded_policy(plain, POLICY.thresholds) == POLICY
    assert record.policy_fingerprint != plain.policy_fingerprint
