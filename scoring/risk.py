"""Risk policy: calibrated probability -> category, with hysteresis and actions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

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


def level_of(probability: float, thresholds: Thresholds) -> str:
    if probability >= thresholds.high:
        return "HIGH"
    if probability >= thresholds.medium:
        return "MEDIUM"
    return "LOW"


@dataclass(frozen=True)
class RiskPolicy:
    """Moving up takes the threshold; moving down takes the threshold minus `margin`,
    so a customer hovering at a cut-off does not flap between categories."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    margin: float = 0.05
    actions: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_ACTIONS))

    def __post_init__(self) -> None:
        if not 0 <= self.margin < self.thresholds.medium:
            raise ValueError(f"hysteresis margin must be in [0, {self.thresholds.medium})")
        if set(self.actions) != set(LEVELS):
            raise ValueError(f"actions must be given for exactly {LEVELS}")

    def category(self, probability: float, previous: str | None) -> str:
        raw = level_of(probability, self.thresholds)
        if previous is None or RANK[raw] >= RANK[previous]:
            return raw
        # Going down: stay at `previous` unless the probability is clear of its cut-off.
        sticky = level_of(probability + self.margin, self.thresholds)
        return LEVELS[max(RANK[raw], min(RANK[previous], RANK[sticky]))]

    def categories(self, probabilities: np.ndarray, previous: list[str | None]) -> list[str]:
        return [
            self.category(float(p), prev) for p, prev in zip(probabilities, previous, strict=True)
        ]


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
