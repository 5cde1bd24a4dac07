"""The work-list index (scoring.worklist, applied by the store's commit): who is listed,
in what order, with what path, within its bound; the same in memory as in Redis
(tests/integration/test_worklist_store.py runs the Lua)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from feature_store.definitions import FEATURE_NAMES
from feature_store.store import Commit, MemoryStore
from schemas import ChurnRiskChanged, Reason, Trigger
from scoring import worklist
from scoring.worklist import PATH_LENGTH, PHRASES, WorkReason, in_words

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def change(
    customer: str, previous: str | None, risk: str, p: float, day: int = 0
) -> ChurnRiskChanged:
    return ChurnRiskChanged(
        event_id=f"{customer}-{day}",
        customer_id=customer,
        previous_risk=previous,  # type: ignore[arg-type]
        risk=risk,  # type: ignore[arg-type]
        probability=p,
        model_version="v1",
        reasons=[Reason("overdue_ratio", 3.2, 1.5), Reason("tickets_30d", None, 0.4)],
        recommended_actions=["call them"],
        trigger=Trigger("inactivity" if day else "event"),
        event_time=T0 + timedelta(days=day),
        scored_at=T0,
    )


def commit(
    store: MemoryStore,
    n: int,
    changes: list[ChurnRiskChanged],
    size: int = 1000,
    deleted: tuple[str, ...] = (),
) -> None:
    store.commit(
        [
            Commit(
                0,
                1,
                {"orders": n - 1},
                {"orders": n},
                None,
                listings=worklist.moves(changes, deleted),
                list_size=size,
                path_bytes=worklist.PATH_BYTES,
            )
        ]
    )


def listed(store: MemoryStore, risk: str) -> list[tuple[str, float]]:
    found = store.listed([0], *worklist.bounds(risk), 100)
    return [(customer, worklist.decode(entry).probability) for _, customer, _, entry, _ in found]


def fresh_store() -> MemoryStore:
    store = MemoryStore()
    store.claim(0)
    return store


def test_high_and_medium_customers_are_listed_by_probability_and_low_ones_leave() -> None:
    store = fresh_store()
    commit(
        store,
        0,
        [
            change("A", None, "HIGH", 0.8),
            change("B", None, "MEDIUM", 0.5),
            change("C", None, "HIGH", 0.9),
            change("D", None, "LOW", 0.1),
        ],
    )
    assert listed(store, "HIGH") == [("C", 0.9), ("A", 0.8)]
    assert listed(store, "MEDIUM") == [("B", 0.5)]
    commit(
        store,
        1,
        [change("C", "HIGH", "LOW", 0.2, day=3), change("B", "MEDIUM", "HIGH", 0.75, day=3)],
    )
    assert listed(store, "HIGH") == [("A", 0.8), ("B", 0.75)]
    assert listed(store, "MEDIUM") == []
    assert store.count_listed([0], *worklist.bounds("HIGH")) == 2


def test_an_entry_says_since_when_why_and_what_to_do_and_its_path_the_changes_since_listed() -> (
    None
):
    store = fresh_store()
    commit(store, 0, [change("A", None, "MEDIUM", 0.5)])
    commit(store, 1, [change("A", "MEDIUM", "HIGH", 0.85, day=30)])
    found = store.listing(0, "A")
    assert found is not None
    item = worklist.decode(found[3])
    assert (item.risk, item.probability, item.since) == (
        "HIGH",
        0.85,
        (T0 + timedelta(days=30)).timestamp(),
    )
    assert item.actions == ["call them"]
    assert [in_words(r) for r in item.reasons] == [
        "3.2 usual gaps without an order",
        "tickets 30d unknown",
    ]
    path = worklist.decode_path(found[4])
    assert [(s.previous, s.risk, s.trigger) for s in path] == [
        (None, "MEDIUM", "event"),
        ("MEDIUM", "HIGH", "inactivity"),
    ]
    assert path[1].probability == 0.85


def test_a_customer_who_left_and_came_back_starts_a_new_path() -> None:
    store = fresh_store()
    commit(
        store,
        0,
        [
            change("A", None, "HIGH", 0.8),
            change("A", "HIGH", "LOW", 0.2, day=1),
            change("A", "LOW", "MEDIUM", 0.5, day=2),
        ],
    )
    found = store.listing(0, "A")
    assert found is not None
    assert [s.risk for s in worklist.decode_path(found[4])] == ["MEDIUM"]


def test_the_path_keeps_only_its_latest_changes() -> None:
    store = fresh_store()
    risks = ["MEDIUM", "HIGH"] * PATH_LENGTH
    for n, (before, after) in enumerate(zip([None, *risks], risks, strict=False)):
        commit(store, n, [change("A", before, after, 0.5 + 0.01 * n, day=n)])
    found = store.listing(0, "A")
    assert found is not None
    path = worklist.decode_path(found[4])
    assert len(path) == PATH_LENGTH
    assert path[-1].at == (T0 + timedelta(days=len(risks) - 1)).timestamp()


def test_the_index_is_bounded_and_medium_customers_give_way_first() -> None:
    store = fresh_store()
    commit(
        store,
        0,
        [
            change("M1", None, "MEDIUM", 0.6),
            change("H1", None, "HIGH", 0.7),
            change("H2", None, "HIGH", 0.95),
        ],
        size=2,
    )
    assert listed(store, "HIGH") == [("H2", 0.95), ("H1", 0.7)]
    assert listed(store, "MEDIUM") == []
    assert store.listing(0, "M1") is None


def test_an_erased_customer_is_unlisted() -> None:
    store = fresh_store()
    commit(store, 0, [change("A", None, "HIGH", 0.8)])
    commit(store, 1, [], deleted=("A",))
    assert listed(store, "HIGH") == []


def test_every_feature_has_a_phrase_that_shows_its_value() -> None:
    assert set(PHRASES) == set(FEATURE_NAMES)
    for feature in FEATURE_NAMES:
        assert "7" in in_words(WorkReason(feature, 1.0, 7.0)), feature
