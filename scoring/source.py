"""The port between the batch runner and a Kafka client: what the core needs of the
engine that reads the input topics.

An engine (the Faust worker, `stream_app.faust_source`; a file for `replay`) hands
the messages it fetched to `scoring.processor.StreamProcessor.deliver`, tells it
which partitions the group assigned or took away, and implements this port, which
the processor calls back:

* `unread(topic, partition, after)`: has the log messages past `after` that this
  consumer has not handed over yet? (behind or caught up: the merge holds an input
  back while another that could hold an earlier event is behind);
* `owns(partition)`: is the partition assigned to this consumer now?
* `pause` / `resume`: stop and restart fetching a topic-partition whose messages are
  waiting in the merge (they are bounded, whatever the backlog);
* `acknowledge(topic, partition, through)`: everything at or below `through` is
  committed in the state store, so the group may commit past it;
* `committed(partition)` and `read(topic, partition, start, end)`: the group's
  committed offsets and the log itself, to read again what lies between the state's
  offsets and what the consumer was already given (a claim, a store that lost writes);
* `bounds(partition)`: where each input topic's log of the partition starts and ends
  (a claim checks the state's offsets lie within).

Every method but the last three is called on the event loop and must not block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from scoring.merge import InputMessage


class Source(Protocol):
    def unread(self, topic: str, partition: int, after: int) -> bool: ...

    def owns(self, partition: int) -> bool: ...

    def pause(self, topic: str, partition: int) -> None: ...

    def resume(self, topic: str, partition: int) -> None: ...

    def acknowledge(self, topic: str, partition: int, through: int) -> None: ...

    async def committed(self, partition: int) -> Mapping[str, int]:
        """Per input topic, the group's committed offset of the partition (the next
        offset to read; absent where the group committed nothing)."""
        ...

    async def read(self, topic: str, partition: int, start: int, end: int) -> list[InputMessage]:
        """The messages of offsets start..end (inclusive) that the log still holds."""
        ...

    async def bounds(self, partition: int) -> Mapping[str, tuple[int, int]]:
        """Per input topic, the partition's log start offset and end offset (the next
        offset to be written)."""
        ...
