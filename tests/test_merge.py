"""A partition's input is released in one order whatever the fetch timing: the
earliest head first, never past a topic-partition that may still hold an earlier
event, and never out of a topic-partition's own order."""

from __future__ import annotations

from scoring.merge import Decoded, InputMessage, PartitionMerger, merged

TOPICS = ("customers", "orders", "support-tickets")


def event(topic: str, offset: int, time: float) -> Decoded:
    return Decoded(InputMessage(topic, 0, offset, b"C", b"{}"), object(), time)


def released(items: list[Decoded]) -> list[tuple[str, int]]:
    return [(d.message.topic, d.message.offset) for d in items]


def test_an_input_still_behind_holds_the_others_back() -> None:
    merger = PartitionMerger(TOPICS, idle=0.0)
    merger.add(event("support-tickets", 0, 60.0), 0.0)
    assert merger.release(0.0, behind=lambda topic: topic == "orders") == []
    merger.add(event("orders", 0, 10.0), 0.0)
    merger.add(event("orders", 1, 70.0), 0.0)
    # The orders' head comes first; then the tickets' (no order earlier than 70 is
    # unread); the order of 70 waits for the tickets' next.
    assert released(merger.release(0.0, behind=lambda topic: topic == "support-tickets")) == [
        ("orders", 0),
        ("support-tickets", 0),
    ]


def test_a_caught_up_input_holds_the_others_back_for_the_idle_time_only() -> None:
    merger = PartitionMerger(TOPICS, idle=0.5)
    merger.add(event("orders", 0, 10.0), 100.0)
    caught_up = lambda topic: False  # noqa: E731
    assert merger.release(100.0, caught_up) == []
    assert merger.release(100.4, caught_up) == []
    assert released(merger.release(100.5, caught_up)) == [("orders", 0)]


def test_equal_times_go_by_topic_rank_then_offset() -> None:
    merger = PartitionMerger(TOPICS, idle=0.0)
    for topic in reversed(TOPICS):
        merger.add(event(topic, 0, 5.0), 0.0)
    assert [t for t, _ in released(merger.release(0.0, lambda topic: False))] == list(TOPICS)


def test_a_late_event_keeps_its_place_in_its_own_topic() -> None:
    items = [event("orders", 0, 50.0), event("orders", 1, 20.0), event("support-tickets", 0, 30.0)]
    # Not a sort by time: the order of 20 cannot overtake the order of 50 before it.
    assert released(merged(items, {t: r for r, t in enumerate(TOPICS)})) == [
        ("support-tickets", 0),
        ("orders", 0),
        ("orders", 1),
    ]


def test_a_redelivered_message_is_buffered_once() -> None:
    merger = PartitionMerger(TOPICS, idle=0.0)
    assert merger.add(event("orders", 3, 1.0), 0.0)
    assert not merger.add(event("orders", 3, 1.0), 0.0)
    merger.skip_through({"orders": 10})
    assert not merger.add(event("orders", 9, 1.0), 0.0)
    assert len(merger) == 1


def test_an_input_just_drained_holds_the_others_back_for_the_idle_time_again() -> None:
    # The ticket of day 20 must wait: the order stream was emptied a moment ago, and
    # its next order (say of day 15) may be on its way from the broker.
    merger = PartitionMerger(TOPICS, idle=0.5)
    merger.add(event("orders", 0, 10.0), 0.0)
    merger.add(event("support-tickets", 0, 20.0), 0.0)
    caught_up = lambda topic: False  # noqa: E731
    assert merger.release(0.0, caught_up) == []  # the quiet profiles: just found empty
    assert released(merger.release(1.0, caught_up)) == [("orders", 0)]
    assert merger.release(1.4, caught_up) == []
    merger.add(event("orders", 1, 15.0), 1.4)
    assert merger.release(1.4, caught_up) == []  # just arrived: the profiles may follow
    assert released(merger.release(1.9, caught_up)) == [("orders", 1)]
    assert merger.release(2.3, caught_up) == []
    assert released(merger.release(2.4, caught_up)) == [("support-tickets", 0)]


def test_an_input_quiet_for_long_still_holds_a_newcomer_back_for_the_idle_time() -> None:
    # The profiles have been quiet for a minute. An order arrives: a profile sent
    # with it (registered just before) may reach this consumer a moment later, so
    # the order waits the idle time from its own arrival, not from the profiles'.
    merger = PartitionMerger(TOPICS, idle=0.5)
    caught_up = lambda topic: False  # noqa: E731
    assert merger.release(0.0, caught_up) == []  # everything quiet
    merger.add(event("orders", 0, 20.0), 60.0)
    assert merger.release(60.0, caught_up) == []
    assert merger.release(60.4, caught_up) == []
    merger.add(event("customers", 0, 10.0), 60.4)  # the profile, just behind
    assert merger.release(60.4, caught_up) == []  # it waits for the tickets, in turn
    assert released(merger.release(60.9, caught_up)) == [("customers", 0)]
    assert released(merger.release(61.4, caught_up)) == [("orders", 0)]  # just drained


def test_a_quiet_topic_the_workers_write_themselves_holds_nothing_back() -> None:
    # The ticks are rare: waited for like an input, they would hold every event at the
    # live edge for the idle time.
    caught_up = lambda topic: False  # noqa: E731
    waited_for = PartitionMerger(("orders", "ticks"), idle=0.5)
    announced = PartitionMerger(("orders", "ticks"), idle=0.5, announced=("ticks",))
    for merger in (waited_for, announced):
        merger.add(event("orders", 0, 10.0), 0.0)
    assert waited_for.release(0.0, caught_up) == []
    assert released(announced.release(0.0, caught_up)) == [("orders", 0)]
    # Still merged by time with what the topic has buffered, and waited for when behind.
    announced.add(event("orders", 1, 30.0), 1.0)
    announced.add(event("ticks", 0, 20.0), 1.0)
    assert released(announced.release(1.0, caught_up)) == [("ticks", 0), ("orders", 1)]
    announced.add(event("orders", 2, 40.0), 2.0)
    assert announced.release(2.0, lambda topic: topic == "ticks") == []


def test_an_announced_message_holds_the_others_back_until_it_is_buffered() -> None:
    merger = PartitionMerger(TOPICS, idle=0.0, announced=("customers",))
    caught_up = lambda topic: False  # noqa: E731
    merger.expect("customers", float("inf"))  # written, its offset not known yet
    merger.add(event("orders", 0, 20.0), 0.0)
    merger.add(event("support-tickets", 0, 30.0), 0.0)
    assert merger.release(5.0, caught_up) == []
    merger.expect("customers", 7)
    assert merger.release(5.0, caught_up) == []
    merger.add(event("customers", 7, 10.0), 5.0)  # it came: merged by time
    assert released(merger.release(5.0, caught_up)) == [
        ("customers", 7),
        ("orders", 0),
        ("support-tickets", 0),
    ]


def test_an_announced_message_that_will_not_come_holds_nothing_back() -> None:
    merger = PartitionMerger(TOPICS, idle=0.0, announced=("customers",))
    merger.expect("customers", float("inf"))
    merger.add(event("orders", 0, 20.0), 0.0)
    merger.add(event("support-tickets", 0, 30.0), 0.0)
    merger.expect("customers", -1)  # the write failed
    assert len(merger.release(0.0, lambda topic: False)) == 2
