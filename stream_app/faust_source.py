"""The Faust engine: the input topics through a Faust agent, as `scoring.source.Source`.

Faust's `take_events` acknowledges a batch in a `finally`, even when the body raised
or the worker is being stopped (faust #606), so the agent takes with `noack_take`;
this source keeps each delivered event until the processor says its offset is
committed in the state store, and acknowledges it only then. Faust's committed
offsets therefore never pass the store's: a message not yet committed (held back by
the merge, or in a batch that failed) is delivered again after a restart and
skipped if it was done.

Pausing uses Faust's own flow control (`Consumer.on_buffer_full`, what its stream
buffers use): Faust's `pause_partitions` drops the rest of a fetched batch of the
partition it pauses (its `getmany` filters what aiokafka already fetched), and lost
4.6% of a 1M-event backlog here; a partition in flow control keeps what was fetched.
Should the store have lost writes, the input behind them is read again from the log
(`stream_app.log_reader`), beside Faust's consumer.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, cast

import faust
from faust.streams import Stream
from faust.types import TP, AgentT, EventT, StreamT

from schemas import topics
from scoring.merge import InputMessage
from scoring.processor import StreamProcessor
from stream_app.log_reader import LogBacked, LogReader
from stream_app.wiring import step_or_stop

log = logging.getLogger(__name__)


class FaustSource(LogBacked):
    def __init__(self, app: faust.App, prefix: str, reader: LogReader) -> None:
        self.app = app
        self.reader = reader
        self.logical = {topics.qualified(name, prefix): name for name in topics.SOURCE_TOPICS}
        self.qualified = {name: full for full, name in self.logical.items()}
        # Events delivered and not yet acknowledged, per topic-partition, in order.
        self.pending: dict[TP, deque[EventT]] = {}
        self.tps: dict[tuple[str, int], TP] = {}

    def messages(self, events: Sequence[EventT]) -> list[InputMessage]:
        """A batch Faust delivered, as the core's messages; each event is kept until
        the processor acknowledges its offset."""
        out = []
        logical, pending = self.logical, self.pending
        for event in events:
            message = event.message
            queue = pending.get(message.tp)
            if queue is None:
                queue = pending[message.tp] = deque()
            queue.append(event)
            timestamp = message.timestamp
            out.append(
                InputMessage(
                    logical[message.topic],  # the core speaks logical topic names
                    message.partition,
                    message.offset,
                    message.key,
                    message.value,
                    timestamp if timestamp and timestamp > 0 else None,
                )
            )
        return out

    def attach(self, processor: StreamProcessor, batch_size: int, batch_wait: float) -> AgentT:
        """The agent that feeds the processor, and the rebalance signals; returns the
        agent (the web's readiness check looks at it)."""

        async def score_customers(stream: StreamT) -> AsyncIterator[None]:
            async for events in cast(Stream, stream).noack_take(batch_size, within=batch_wait):
                messages = self.messages(cast(Sequence[EventT], events))
                await step_or_stop(processor.deliver(messages))
                yield None

        async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            await processor.assigned(self._partitions(args[0]))

        async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            processor.revoked(self._partitions(args[0]))
            for tp in args[0]:  # their events stay unacknowledged: the new owner's
                self.pending.pop(tp, None)

        self.app.on_partitions_assigned.connect(on_assigned)
        self.app.on_partitions_revoked.connect(on_revoked)
        inputs = self.app.topic(*self.logical)
        return self.app.agent(inputs, name="score-customers", concurrency=1)(score_customers)

    def _partitions(self, tps: Iterable[TP]) -> set[int]:
        return {tp.partition for tp in tps if tp.topic in self.logical}

    # --- scoring.source.Source ----------------------------------------------------------

    def tp(self, topic: str, partition: int) -> TP:
        key = (topic, partition)
        found = self.tps.get(key)
        if found is None:
            found = self.tps[key] = TP(self.qualified[topic], partition)
        return found

    def unread(self, topic: str, partition: int, after: int) -> bool:
        tp = self.tp(topic, partition)
        if tp not in self.app.consumer.assignment():
            return True
        highwater = self.app.consumer.highwater(tp)
        return highwater is None or after + 1 < highwater

    def owns(self, partition: int) -> bool:
        assignment = self.app.consumer.assignment()
        return any(self.tp(topic, partition) in assignment for topic in self.qualified)

    def pause(self, topic: str, partition: int) -> None:
        self.app.consumer.on_buffer_full(self.tp(topic, partition))

    def resume(self, topic: str, partition: int) -> None:
        self.app.consumer.on_buffer_drop(self.tp(topic, partition))

    def acknowledge(self, topic: str, partition: int, through: int) -> None:
        events = self.pending.get(self.tp(topic, partition))
        while events and events[0].message.offset <= through:
            events.popleft().ack()
