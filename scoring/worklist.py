"""Marketing's work-list: the customers currently HIGH or MEDIUM, by probability.

Each partition keeps a bounded index of its listed customers, written in the same
fenced commit as their states, so it is exactly what `churn-risk` says, once: a
customer enters (or moves within) it with a change into HIGH or MEDIUM, leaves it with
a change to LOW or when their state is deleted, and only the `size` highest of a
partition stay (a MEDIUM customer gives way first). The store keeps, per listed
customer, a `WorkItem` (MessagePack: their latest change) and their path, the changes
since they were listed, as fixed-size `Step` records: the store appends each new one
and keeps the last PATH_LENGTH without reading them (`feature_store.store.Listing`).

Reasons are shown in words (`in_words`): one phrase per feature, the value in it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from feature_store.definitions import FEATURE_NAMES
from feature_store.store import Listing
from schemas import ChurnRiskChanged
from scoring.risk import RANK

LISTED = ("HIGH", "MEDIUM")
DEFAULT_SIZE = 1000  # customers listed per partition (CHURN_WORKLIST_SIZE)
PATH_LENGTH = 10  # changes kept per listed customer
_encoder = msgspec.msgpack.Encoder()


class WorkReason(msgspec.Struct, frozen=True):
    """A reason as the entry keeps it (`schemas.Reason`'s fields)."""

    feature: str
    contribution: float
    value: float | None = None


class WorkItem(msgspec.Struct, frozen=True):
    """A listed customer: their category since `since`, the score that put them there,
    its reasons and the recommended actions."""

    risk: str
    probability: float
    since: float  # event time of the change into `risk`, epoch seconds
    model_version: str
    reasons: list[WorkReason]
    actions: list[str]
    held_out: bool = False  # of the campaign's holdout: its HIGH actions are not taken

    @property
    def to_do(self) -> list[str]:
        """The actions to take: none on a HIGH customer held out of the campaign."""
        return [] if self.held_out and self.risk == LISTED[0] else self.actions


_decoder = msgspec.msgpack.Decoder(WorkItem)


class Step(msgspec.Struct, frozen=True):
    """One change on a listed customer's path."""

    previous: str | None
    risk: str
    probability: float
    at: float  # event time, epoch seconds
    trigger: str  # "event" | "inactivity"


# A Step as a fixed-size record: event time, probability, then one letter each for the
# previous and new category ('-': none) and the trigger.
_STEP = struct.Struct("<dd3s")
_LETTER = {"LOW": "L", "MEDIUM": "M", "HIGH": "H", None: "-"}
_CATEGORY = {letter: name for name, letter in _LETTER.items()}
PATH_BYTES = PATH_LENGTH * _STEP.size


def encode_step(step: Step) -> bytes:
    letters = _LETTER[step.previous] + _LETTER[step.risk] + step.trigger[0]
    return _STEP.pack(step.at, step.probability, letters.encode())


def decode_path(path: bytes) -> list[Step]:
    """A stored path, oldest change first."""
    steps = []
    for at, probability, letters in _STEP.iter_unpack(path):
        previous, risk, trigger = letters.decode()
        kind = "event" if trigger == "e" else "inactivity"
        steps.append(Step(_CATEGORY[previous], str(_CATEGORY[risk]), probability, at, kind))
    return steps


def score(risk: str, probability: float) -> float:
    """The index's order: HIGH above MEDIUM, then by probability."""
    return 2 * RANK[risk] + probability


def bounds(risk: str) -> tuple[float, float]:
    """The scores of the customers listed as `risk`."""
    return score(risk, 0.0), score(risk, 1.0)


def moves(changes: Sequence[ChurnRiskChanged], deleted: Iterable[str]) -> dict[str, Listing | None]:
    """What a batch does to its partition's index: customer -> their Listing (the
    last change's entry, and every change of theirs in the batch as steps), or None
    to unlist them."""
    out: dict[str, Listing | None] = {}
    for change in changes:  # in order: a customer's last change wins
        customer = change.customer_id
        if change.risk not in LISTED:
            out[customer] = None
            continue
        item = WorkItem(
            risk=change.risk,
            probability=change.probability,
            since=change.event_time.timestamp(),
            model_version=change.model_version,
            reasons=[WorkReason(r.feature, r.contribution, r.value) for r in change.reasons],
            actions=list(change.recommended_actions),
            held_out=change.held_out,
        )
        step = encode_step(
            Step(
                change.previous_risk,
                change.risk,
                change.probability,
                change.event_time.timestamp(),
                change.trigger.kind,
            )
        )
        before = out.get(customer, ...)
        if before is ...:  # the customer's first change in the batch: onto their path
            steps, fresh = step, False
        elif before is None:  # unlisted earlier in the batch: a new path
            steps, fresh = step, True
        else:
            steps, fresh = before.steps + step, before.fresh
        out[customer] = Listing(
            score(change.risk, change.probability), _encoder.encode(item), steps, fresh
        )
    for customer in deleted:
        out[customer] = None
    return out


def decode(blob: bytes) -> WorkItem:
    return _decoder.decode(blob)


# One phrase per feature: what its value says about the customer.
PHRASES: Mapping[str, str] = {
    "recency_days": "{:.0f} days since the last order",
    "orders_7d": "{:.0f} orders in the last 7 days",
    "orders_30d": "{:.0f} orders in the last 30 days",
    "orders_90d": "{:.0f} orders in the last 90 days",
    "orders_lifetime": "{:.0f} orders in all",
    "spend_7d": "{:.2f} spent in the last 7 days",
    "spend_30d": "{:.2f} spent in the last 30 days",
    "spend_90d": "{:.2f} spent in the last 90 days",
    "spend_lifetime": "{:.2f} spent in all",
    "avg_order_value": "{:.2f} per order on average",
    "order_value_trend": "recent orders worth {:.2f}x the 90-day average",
    "order_frequency_30d": "{:.1f} orders a month",
    "delivery_problems_90d": "{:.0f} delivery problems in 90 days",
    "tickets_30d": "{:.0f} support tickets in 30 days",
    "tickets_90d": "{:.0f} support tickets in 90 days",
    "negative_experiences_90d": "{:.0f} bad support experiences in 90 days",
    "mean_resolution_hours": "tickets took {:.0f} hours to resolve on average",
    "days_since_last_ticket": "{:.0f} days since the last support ticket",
    "tenure_days": "a customer for {:.0f} days",
    "age": "aged {:.0f}",
    "email_verified": "email verified: {:.0f} (1 yes, 0 no)",
    "phone_verified": "phone verified: {:.0f} (1 yes, 0 no)",
    "engagement_score": "engagement {:.2f}",
    "order_gap_days": "orders every {:.0f} days as a rule",
    "overdue_ratio": "{:.1f} usual gaps without an order",
    "gap_spread": "gaps between orders vary by {:.0%} of the usual gap",
}
if set(PHRASES) != set(FEATURE_NAMES):
    raise RuntimeError(f"scoring.worklist has no phrase for {set(FEATURE_NAMES) - set(PHRASES)}")


def in_words(reason: WorkReason) -> str:
    """A reason as marketing reads it: 'overdue: 3.2 usual gaps without an order'."""
    if reason.value is None:
        return f"{reason.feature.replace('_', ' ')} unknown"
    return PHRASES[reason.feature].format(reason.value)
