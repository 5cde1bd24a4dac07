"""When to rescore a customer who has gone quiet.

Churn is mostly silence, and an event-driven scorer never hears silence. So each
customer is due for a rescore a few fixed spans of event time after their latest
event (the rungs), and is scored as of that exact instant: the answer depends only
on the customer's own history, not on when the worker got round to it, so a replay
gives the same answers as the live run.

Optionally, a customer silent for longer than a retention horizon is forgotten: their
state and schedule are deleted (`CHURN_RETENTION_DAYS`), due like a rung.
"""

from __future__ import annotations

from feature_store.definitions import SECONDS_PER_DAY

# Days of silence after which a customer is rescored; none after the last.
RESCORE_AFTER_DAYS: tuple[int, ...] = (7, 14, 21, 30, 45, 60, 90)


def rungs(seen: float) -> list[float]:
    """Every rescore of a silence that began at `seen`, in order."""
    return [seen + days * SECONDS_PER_DAY for days in RESCORE_AFTER_DAYS]


def first_due(seen: float, retention: float | None = None) -> float:
    """The first thing due in a silence that began at `seen` (see `next_due`)."""
    due = next_due(seen, seen, retention)
    assert due is not None  # the first rung is always ahead
    return due


def next_due(seen: float, after: float, retention: float | None = None) -> float | None:
    """What is due next, after the instant `after`, in a silence that began at `seen`:
    the next rescore, or the end of the customer's retention (`retention` seconds of
    silence, None: kept for good) if that comes first; None when neither remains."""
    due = [rung for rung in rungs(seen) if rung > after][:1]
    if retention is not None and seen + retention > after:
        due.append(seen + retention)
    return min(due, default=None)


def lapsed(seen: float, when: float, retention: float | None) -> bool:
    """Whether the instant `when` ends the retention of a customer silent since
    `seen`: their state is then forgotten."""
    return retention is not None and when >= seen + retention
