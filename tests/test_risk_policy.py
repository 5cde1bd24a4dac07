"""Risk categories: thresholds, hysteresis, what counts as news, stable ids."""

from __future__ import annotations

import pytest

from scoring.model import Thresholds
from scoring.risk import RiskPolicy, is_news, transition_id

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
