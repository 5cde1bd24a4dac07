"""A batch's outputs as messages (`stream_app.publisher.output_messages`): each change
on `churn-risk`, on `churn-risk-high` when into HIGH, and on `churn-risk-current`;
a customer whose state the batch deleted gets a tombstone there, after their
changes; dead letters last."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from schemas import BatchRecord, ChurnRiskChanged, DeadLetter, Trigger, topics
from scoring.runner import Outputs
from stream_app.publisher import output_messages

AT = datetime(2026, 3, 1, tzinfo=UTC)


def change(customer: str, n: int, previous: str | None, risk: str) -> ChurnRiskChanged:
    return ChurnRiskChanged(
        f"{customer}-{n}",
        customer,
        previous,  # type: ignore[arg-type]
        risk,  # type: ignore[arg-type]
        0.8,
        "v1",
        [],
        [],
        Trigger("event"),
        AT,
        AT,
    )


def test_changes_go_to_the_current_risk_topic_and_a_deleted_customer_is_tombstoned() -> None:
    record = BatchRecord(0, 1, {}, {}, "v1", 0.05, {}, "f")
    letter = DeadLetter("bad", "orders", 0, 7, "k", "x", 1, "sha", False, AT)
    batch = Outputs(
        0,
        [
            change("a", 1, None, "HIGH"),
            change("b", 1, None, "MEDIUM"),
            change("a", 2, "HIGH", "LOW"),
        ],
        [letter],
        record,
        deleted=["a"],
    )
    sent = [(t.removeprefix("p."), k, v) for t, k, v in output_messages(batch, "p.")]
    current = [(k, v) for t, k, v in sent if t == topics.CHURN_RISK_CURRENT]
    assert [k for k, _ in current] == [b"a", b"b", b"a", b"a"]
    assert current[-1] == (b"a", None)  # the tombstone, after a's changes
    risks = [msgspec.json.decode(v)["risk"] for _, v in current[:-1] if v is not None]
    assert risks == ["HIGH", "MEDIUM", "LOW"]
    assert [k for t, k, _ in sent if t == topics.CHURN_RISK_HIGH] == [b"a"]
    assert [t for t, _, _ in sent][-1] == topics.DEAD_LETTER
