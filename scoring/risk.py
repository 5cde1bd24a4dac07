"""Risk policy: calibrated probability -> category, with hysteresis and actions.

HIGH is where marketing acts. By default it is a fixed cut-off on the probability;
with `ValueTargeting` it is where acting pays: the probability times what keeping the
customer is worth exceeds the action's cost, so a valuable customer is acted on at a
lower probability than one who spends little, and one who spends nothing never.

A `Holdout` leaves a deterministic share of customers out of the HIGH campaign: their
changes are published flagged `held_out` and not sent to marketing, so the churn of
the treated and the held-out HIGH customers measures what acting achieves
(`scoring.campaign`).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass, field

from scoring.model import Thresholds

LEVELS = ("LOW", "MEDIUM", "HIGH")
RANK = {level: rank for rank, level in enumerate(LEVELS)}

# The seed article's retention playbook, as defaults a deployment can override.
DEFAULT_ACTIONS: dict[str, tuple[str, ...]] = {
    "HIGH": (
        "Personal outreach from the retention team within 24 hours",
        "Offer a targeted discount (15-20%) on their favourite category",
        "Prioritise and resolve any open support tickets",
    ),
    "MEDIUM": (
        "Send a personalised re-engagement email campaign",
        "Recommend products based on purchase history",
        "Offer bonus loyalty points on the next order",
    ),
    "LOW": (
        "Keep in the regular newsletter",
        "Invite to the loyalty programme",
    ),
}

# Namespace of transition ids: uuid5(namespace, customer and transition number).
TRANSITION_NAMESPACE = uuid.UUID("4f0f3f9e-2b1c-4a51-9d3e-6c1d2f0a7b10")


def level_of(probability: float, thresholds: Thresholds, high: float | None = None) -> str:
    """The category of `probability`: HIGH from `high` (default: the cut-off)."""
    if probability >= (thresholds.high if high is None else high):
        return "HIGH"
    if probability >= thresholds.medium:
        return "MEDIUM"
    return "LOW"


# The settings of value targeting, read by the worker and by training's report alike.
VALUE_PER_SPEND_SETTING = "CHURN_VALUE_PER_SPEND"
ACTION_COST_SETTING = "CHURN_ACTION_COST"


@dataclass(frozen=True)
class ValueTargeting:
    """HIGH where probability x value > cost: the customer's value is `value_per_spend`
    times their spend over the last 90 days (4: a year of it), `action_cost` what the
    HIGH actions cost per customer (in the orders' currency)."""

    value_per_spend: float = 4.0
    action_cost: float = 20.0

    def __post_init__(self) -> None:
        if not (self.value_per_spend > 0 and self.action_cost > 0):
            raise ValueError("value per spend and action cost must be > 0")

    def high_cut(self, spend_90d: float) -> float:
        """The probability from which acting on a customer who spent this pays."""
        value = self.value_per_spend * spend_90d
        return self.action_cost / value if value > 0 else math.inf


# The settings of the campaign's holdout, read by the worker and the reports alike.
HOLDOUT_SHARE_SETTING = "CHURN_HOLDOUT_SHARE"
HOLDOUT_SALT_SETTING = "CHURN_HOLDOUT_SALT"


@dataclass(frozen=True)
class Holdout:
    """The customers marketing leaves alone: those whose id, hashed with `salt`, falls
    in the first `share` of the hash space. The same on every worker and replay; a new
    salt draws a new holdout (a new measurement period)."""

    share: float = 0.1
    salt: str = "holdout-1"

    def __post_init__(self) -> None:
        if not 0 <= self.share < 1:
            raise ValueError("the holdout share must be in [0, 1)")

    def held_out(self, customer_id: str) -> bool:
        if self.share <= 0:
            return False
        digest = hashlib.blake2b(f"{self.salt}/{customer_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") < self.share * 2.0**64


@dataclass(frozen=True)
class RiskPolicy:
    """Moving up takes the threshold; moving down takes the threshold minus `margin`,
    so a customer hovering at a cut-off does not flap between categories."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    margin: float = 0.05
    actions: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_ACTIONS))
    targeting: ValueTargeting | None = None  # None: HIGH from the cut-off
    holdout: Holdout | None = None  # None: every customer is acted on

    def __post_init__(self) -> None:
        if not 0 <= self.margin < self.thresholds.medium:
            raise ValueError(f"hysteresis margin must be in [0, {self.thresholds.medium})")
        if set(self.actions) != set(LEVELS):
            raise ValueError(f"actions must be given for exactly {LEVELS}")

    def category(self, probability: float, previous: str | None, spend_90d: float = 0.0) -> str:
        """The category of a score; `spend_90d` (NaN: unknown, as 0) matters only
        with value targeting."""
        high = None
        if self.targeting is not None:
            high = self.targeting.high_cut(0.0 if math.isnan(spend_90d) else spend_90d)
        raw = level_of(probability, self.thresholds, high)
        if previous is None or RANK[raw] >= RANK[previous]:
            return raw
        # Going down: stay at `previous` unless the probability is clear of its cut-off.
        sticky = level_of(probability + self.margin, self.thresholds, high)
        return LEVELS[max(RANK[raw], min(RANK[previous], RANK[sticky]))]

    def held_out(self, customer_id: str) -> bool:
        """Is the customer in the campaign's holdout (their changes flagged, never sent
        to marketing)?"""
        return self.holdout is not None and self.holdout.held_out(customer_id)


def is_news(previous: str | None, current: str) -> bool:
    """A change worth publishing. A customer's first category is news unless LOW."""
    return current != previous and not (previous is None and current == "LOW")


def transition_id(customer_id: str, sequence: int, origin: str = "") -> str:
    """Deterministic id of a customer's n-th published change: a replay or redelivery
    of the same events yields the same id, so consumers can de-duplicate. `origin`
    (where the customer's state began) tells apart the lives of a customer who was
    erased and came back, whose changes count from 1 again."""
    name = f"{customer_id}/{sequence}" if not origin else f"{customer_id}/{origin}/{sequence}"
    return str(uuid.uuid5(TRANSITION_NAMESPACE, name))
