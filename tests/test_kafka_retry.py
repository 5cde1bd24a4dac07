"""The log reader's metadata calls ride out a coordinator that moves or reloads (a
broker that stalled answers NOT_COORDINATOR for a while), and give up on anything else."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream_app import log_reader
from stream_app.log_reader import retrying


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_reader.time, "sleep", lambda _: None)


def failing(codes: list[int], answer: str = "offsets"):  # type: ignore[no-untyped-def]
    def call() -> str:
        if codes:
            raise KafkaException(KafkaError(codes.pop(0)))
        return answer

    return call


def test_a_coordinator_that_moves_or_reloads_is_asked_again_until_it_answers() -> None:
    codes = [KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS]
    assert retrying(failing(codes), "committed offsets") == "offsets"
    assert codes == []


def test_an_error_that_will_not_pass_is_raised_at_once() -> None:
    codes = [KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.NOT_COORDINATOR]
    with pytest.raises(KafkaException, match="TOPIC_AUTHORIZATION_FAILED"):
        retrying(failing(codes), "committed offsets")
    assert codes == [KafkaError.NOT_COORDINATOR]


def test_a_transient_error_that_lasts_past_the_timeout_is_raised() -> None:
    codes = [KafkaError.NOT_COORDINATOR] * 1000
    with pytest.raises(KafkaException, match="NOT_COORDINATOR"):
        retrying(failing(codes), "committed offsets", timeout=0.0)
