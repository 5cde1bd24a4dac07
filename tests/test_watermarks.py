"""A partition's event-time watermark waits for its topic-partitions still behind."""

from schemas import topics
from scoring.pipeline import Watermarks

ORDERS, TICKETS = topics.ORDERS, topics.SUPPORT_TICKETS


def test_a_topic_running_ahead_does_not_move_the_watermark_past_one_still_behind() -> None:
    marks = Watermarks()
    marks.observe(ORDERS, 0, 100.0)
    marks.observe(TICKETS, 0, 900.0)
    marks.advance([0], lagging={(ORDERS, 0)})
    assert marks.get(0) == 100.0


def test_when_every_topic_is_caught_up_the_watermark_is_the_latest_time_seen() -> None:
    marks = Watermarks()
    marks.observe(ORDERS, 0, 100.0)
    marks.observe(TICKETS, 0, 900.0)
    marks.advance([0], lagging=set())
    assert marks.get(0) == 900.0


def test_a_topic_behind_that_has_not_been_heard_from_holds_the_watermark() -> None:
    marks = Watermarks()
    marks.observe(TICKETS, 0, 900.0)
    marks.advance([0], lagging={(ORDERS, 0)})
    assert marks.get(0) is None


def test_the_watermark_never_moves_back_and_partitions_are_independent() -> None:
    marks = Watermarks()
    marks.observe(ORDERS, 0, 500.0)
    marks.observe(ORDERS, 1, 50.0)
    marks.advance([0, 1], lagging=set())
    marks.observe(TICKETS, 0, 200.0)
    marks.advance([0], lagging={(TICKETS, 0)})
    assert (marks.get(0), marks.get(1)) == (500.0, 50.0)
