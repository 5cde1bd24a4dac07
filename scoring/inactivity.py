"""When to rescore a customer who has gone quiet.

Churn is mostly silence, and an event-driven scorer never hears silence. So each
customer is due for a rescore a few fixed spans of event time after their latest
event (the rungs), and is scored as of that exact instant: the answer depends only
on the customer's own history, not on when the worker got round to it, so a replay
gives the same answers as the live run.
"""

from __future__ import annotations

from feature_store.definitions import SECONDS_PER_DAY

# Days of silence after which a customer is rescored; none after the last.
RESCORE_AFTER_DAYS: tuple[int, ...] = (7, 14, 21, 30, 45, 60, 90)


def rungs(seen: float) -> list[float]:
    """Every rescore of a silence that began at `seen`, in order."""
    return [seen + days * SECONDS_PER_DAY for days in RESCORE_AFTER_DAYS]


def first_due(seen: float) -> float:
    return seen + RESCORE_AFTER_DAYS[0] * SECONDS_PER_DAY


def next_due(seen: float, rescored_at: float) -> float | None:
    """The next rescore after one as of `rescored_at`, or None when silence is over."""
    return next((due for due in rungs(seen) if due > rescored_at), None)
