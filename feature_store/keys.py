"""The Redis key layout, in one place.

Every key of a partition carries the partition's hash tag, `{<namespace>:p<N>}`, so
all of them sit in one Redis Cluster slot: a partition's commit, which touches its
customers, its schedule and its offsets at once, is then one atomic script on one
node, and the store scales out with the partitions (each slot, hence each partition,
can live on any node).

    {churn:p3}:meta        hash: epoch, off:<topic>, st (stream time), flight
    {churn:p3}:idle        sorted set: customer -> next inactivity rescore (epoch s)
    {churn:p3}:c:<id>      string: the customer's state (MessagePack)
    {churn:p3}:tally:<name>  string: a tally, a MessagePack map of counters added to
                           with each commit (`feature_store.store.Tally`), expiring
                           when left alone (until Dec 2026 a hash at :t:<name>,
                           still read until it expires)
    {churn:p3}:samples     sorted set: pending samples of realised performance
                           (`scoring.performance.Sample` as JSON) -> due (epoch s)
    {churn:p3}:listed      sorted set: the work-list index, customer -> place
                           (`scoring.worklist.score`), bounded
    {churn:p3}:work        hash: listed customer -> entry (`scoring.worklist.WorkItem`)
    {churn:p3}:path        hash: listed customer -> their path (`scoring.worklist.Step`
                           records)

The consumer group's own state has a hash tag of its own:

    {churn:drift}:alerts   hash: the drift monitor's alert book, `cursor` (the end of
                           the last slice judged) and `a:<feature>` (its alert, JSON),
                           changed by compare-and-set (drift.lua)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    namespace: str

    def tag(self, partition: int) -> str:
        return f"{{{self.namespace}:p{partition}}}"

    def meta(self, partition: int) -> str:
        return f"{self.tag(partition)}:meta"

    def idle(self, partition: int) -> str:
        return f"{self.tag(partition)}:idle"

    def customer(self, partition: int, customer_id: str) -> str:
        return f"{self.tag(partition)}:c:{customer_id}"

    def tally(self, partition: int, name: str) -> str:
        return f"{self.tag(partition)}:tally:{name}"

    def hash_tally(self, partition: int, name: str) -> str:
        """Where a tally was a hash of counters (read, and dropped, until it expires)."""
        return f"{self.tag(partition)}:t:{name}"

    def samples(self, partition: int) -> str:
        return f"{self.tag(partition)}:samples"

    def listed(self, partition: int) -> str:
        return f"{self.tag(partition)}:listed"

    def work(self, partition: int) -> str:
        return f"{self.tag(partition)}:work"

    def path(self, partition: int) -> str:
        return f"{self.tag(partition)}:path"

    def drift_alerts(self) -> str:
        return f"{{{self.namespace}:drift}}:alerts"

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key of the namespace."""
        return f"{{{self.namespace}:*"
