"""The drift tests' shop: one simulated world, a model whose drift reference is the
scores it gives one sample of that world, and what each shift of the simulator changes.

The simulated shop opens on its first day: nobody has ordered before, so for a while
every customer's history is short and the features are not those of a shop in its
stride (the lifetime counts grow, the days since a last ticket are bounded by the
shop's age). Nothing is counted before day 110 (CHURN_DRIFT_SINCE), and the reference
is taken over days 110 to 150 of another sample, as a model trained on the same
period would carry it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from feature_store.definitions import FEATURE_NAMES
from schemas import DriftAlert
from scoring.artifact import load_model, point_current, write_artifact
from scoring.drift import ORDER_TOTAL, RISK_MIX, SCORE, SUBJECTS
from scoring.serving import served_scores
from simulator import DEFAULT_START, Shift, generate_history
from tests.support import train_recency_model

DAY = 86_400
SINCE_DAY = 110
REFERENCE_UNTIL_DAY = 150
REFERENCE_CUSTOMERS = 12_000
REFERENCE_SEED = 101


def day(number: float) -> datetime:
    return DEFAULT_START + timedelta(days=number)


SINCE = day(SINCE_DAY)

# One after the other, each well after the last has cleared.
SHIFTS = {
    "order_value": Shift("order_value", day(114), day(118)),
    "ticket_rate": Shift("ticket_rate", day(121), day(125)),
    "customer_mix": Shift("customer_mix", day(128), day(131)),
}

TICKET_FEATURES = {
    "tickets_30d",
    "tickets_90d",
    "negative_experiences_90d",
    "mean_resolution_hours",
    "days_since_last_ticket",
}
SPEND_FEATURES = {
    "spend_7d",
    "spend_30d",
    "spend_90d",
    "spend_lifetime",
    "avg_order_value",
    "order_value_trend",
    "engagement_score",
}
# The subjects each shift changes in the scores the stream's events trigger (the score
# and the risk mix follow any feature):
# Silence since the last order: 0 at every order, old customer or new.
SILENCE = {"recency_days", "overdue_ratio"}
CHANGED = {
    "order_value": SPEND_FEATURES | {ORDER_TOTAL, SCORE, RISK_MIX},
    # More scores are taken at tickets, and a score at a ticket lacks what an order adds
    # at once: no silence, the order in the last 7 days' count and spend.
    "ticket_rate": TICKET_FEATURES | SILENCE | {"orders_7d", "spend_7d", SCORE, RISK_MIX},
    # The cohort is new: its history, profile and verification all differ.
    "customer_mix": set(SUBJECTS) - SILENCE,
}
# ... and the ones each must alert within a window. An order value 40% higher moves
# no feature's PSI to the 0.2 threshold: order totals here spread over a factor of
# 2.6 (their log's standard deviation is 0.96), so +40% is a shift of 0.35 standard
# deviations, PSI ~0.07 on spend_7d and ~0.15 on the order amount itself; the order
# amount's mean shift (+0.4) raises it.
REQUIRED = {
    "order_value": {ORDER_TOTAL},
    "ticket_rate": {"tickets_30d", "days_since_last_ticket"},
    "customer_mix": {"tenure_days", "age", "orders_lifetime", "email_verified"},
}
assert all(REQUIRED[k] <= CHANGED[k] <= set(SUBJECTS) for k in SHIFTS)
assert set(FEATURE_NAMES) <= set(SUBJECTS)


def shop(customers: int, seed: int, days: int, shifts: Iterable[Shift] = ()) -> Any:
    """A simulated shop from DEFAULT_START (`simulator.History`)."""
    return generate_history(customers, seed=seed, days=days, shifts=list(shifts))


def drift_model(models_dir: Path) -> Path:
    """The tests' recency model (`tests.support`), with the drift reference the worker
    needs: its scores of a sample shop over days 110-150, by the training's own code."""
    train_recency_model(models_dir)
    model = load_model(models_dir)
    reference = shop(REFERENCE_CUSTOMERS, REFERENCE_SEED, REFERENCE_UNTIL_DAY)
    since, until = day(SINCE_DAY).timestamp(), day(REFERENCE_UNTIL_DAY).timestamp()
    profile = served_scores(reference.events_in_time_order(), model, since, until).profile()
    metadata = {k: v for k, v in model.metadata.items() if k not in ("version", "feature_names")}
    metadata["reference"] = {"serving": profile}
    write_artifact(models_dir, "recency-drift-v1", model.estimator, metadata)
    point_current(models_dir, "recency-drift-v1")
    return models_dir


WINDOW = timedelta(hours=24)  # the default window, which the tests run with


def check_alerts(alerts: Sequence[DriftAlert], shifts: dict[str, Shift]) -> dict[str, Any]:
    """What every drift test asserts of the alerts a shop with `shifts` raised, read by
    id (the same id twice is one alert): each alert falls in a shift's span (from its
    start to the next one's), names a subject that shift changes, and is raised once
    and cleared once there; each subject the shift must alert is raised within one
    window of its start and cleared after its end, within a window and a half; no
    alert before the first shift. Returns each raise's delay from its shift's start."""
    distinct: dict[str, DriftAlert] = {}
    for alert in alerts:
        kept = distinct.setdefault(alert.event_id, alert)
        assert msgspec.structs.replace(kept, detected_at=alert.detected_at) == alert, (
            f"{alert.event_id} was published with two contents"
        )
    order = sorted(shifts.values(), key=lambda s: s.start)
    spans = [(s, order[i + 1].start if i + 1 < len(order) else None) for i, s in enumerate(order)]
    delays: dict[str, Any] = {}
    for shift, until in spans:
        mine = [
            a
            for a in distinct.values()
            if shift.start < a.window.end and (until is None or a.window.end <= until)
        ]
        changed, required = CHANGED[shift.kind], REQUIRED[shift.kind]
        assert {a.feature for a in mine} <= changed, (
            f"{shift.kind} raised subjects it does not change: "
            f"{sorted({a.feature for a in mine} - changed)}"
        )
        states: dict[str, list[str]] = {}
        for alert in sorted(mine, key=lambda a: a.window.end):
            states.setdefault(alert.feature, []).append(alert.state)
        assert all(s == ["raised", "cleared"] for s in states.values()), (shift.kind, states)
        assert required <= set(states), f"{shift.kind}: {sorted(required - set(states))} not raised"
        for alert in mine:
            if alert.feature not in required:
                continue
            assert shift.end is not None
            if alert.state == "raised":
                assert alert.window.end - shift.start <= WINDOW, (shift.kind, alert.feature)
                delays[f"{shift.kind}/{alert.feature}"] = alert.window.end - shift.start
            else:
                assert shift.end < alert.window.end <= shift.end + 1.5 * WINDOW, (
                    shift.kind,
                    alert.feature,
                    alert.window.end,
                )
    first = min(s.start for s in shifts.values())
    early = [a for a in distinct.values() if a.window.end <= first]
    assert not early, f"alerts before any shift: {[(a.feature, a.window.end) for a in early]}"
    return delays
