"""Model-based replication: random writes, batches, deletes, compactions and segment rotations
on a replicated engine (obstore's in-memory store as the bucket); after every flush, a restore
of the newest state equals the engine's state, and a restore ``until`` a random earlier seq
equals the model's state at that seq (or is refused when compaction retired that part of the
log before it was shipped, never silently wrong)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from logkv import Engine, ReplicaError

pytest.importorskip("obstore")

from obstore.store import MemoryStore

from logkv.replica import Bucket, Replica, restore

pytestmark = pytest.mark.slow

KEYS = st.sampled_from([f"k{i}" for i in range(8)])
VALUES = st.binary(max_size=300)


class ReplicatedStore(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="logkv-replica-model-"))
        self.bucket = Bucket(MemoryStore(), "kvs/a", "memory://kvs/a")
        self.replica = Replica.claim(self.bucket, self.dir / "a", 0.01)
        self.engine = Engine.open(self.dir / "a", segment_size=4096)
        self.replica.start(self.engine)
        self.model: dict[str, bytes] = {}
        self.states: dict[int, dict[str, bytes]] = {0: {}}
        self.times: dict[int, int] = {0: 0}  # seq -> its record's timestamp (µs)
        self.restores = 0

    def _note(self) -> None:
        seq = self.engine.last_seq
        self.states[seq] = dict(self.model)
        self.times[seq] = round(self.engine.last_timestamp * 1_000_000)

    @rule(key=KEYS, value=VALUES)
    def set(self, key: str, value: bytes) -> None:
        self.engine.set(key, value)
        self.model[key] = value
        self._note()

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        self.engine.delete(key)
        self.model.pop(key, None)
        self._note()

    @rule(items=st.dictionaries(KEYS, VALUES, min_size=2, max_size=4))
    def batch(self, items: dict[str, bytes]) -> None:
        self.engine.set_many([(k, v, None) for k, v in items.items()])
        self.model.update(items)
        self._note()

    @rule()
    def compact(self) -> None:
        self.engine.compact()

    @precondition(lambda self: self.restores < 4)
    @rule(data=st.data())
    def flush_and_restore(self, data: st.DataObject) -> None:
        assert self.replica.flush(10) == self.engine.last_seq
        self.restores += 1
        target = self.dir / f"newest-{self.restores}"
        restore(self.bucket, target)
        with Engine.open(target) as restored:
            assert {k: restored.get(k) for k in list(restored.keys())} == self.model
        until = data.draw(st.sampled_from(sorted(self.states)))
        by_time = data.draw(st.booleans())
        target = self.dir / f"until-{self.restores}"
        try:
            if by_time:
                restore(self.bucket, target, until_us=self.times[until])
            else:
                restore(self.bucket, target, until_seq=until)
        except ReplicaError as exc:
            # Refused, never wrong: compaction retired that part of the log before it was
            # shipped whole (the shipper's timing decides), and no older snapshot covers it;
            # or retention in the bucket retired it (test_replica_retention_model).
            message = str(exc)
            assert any(
                words in message
                for words in ("incomplete", "cannot restore to that point", "not retained")
            ), message
            return
        if by_time:  # records written in the same microsecond share the state of the last one
            until = max(s for s, t in self.times.items() if t <= self.times[until])
        with Engine.open(target) as restored:
            assert {k: restored.get(k) for k in list(restored.keys())} == self.states[until]

    @invariant()
    def lag_is_sane(self) -> None:
        lag = self.replica.lag()
        assert 0 <= lag.records <= self.engine.last_seq

    def teardown(self) -> None:
        self.engine.close()
        self.replica.close(5)
        shutil.rmtree(self.dir, ignore_errors=True)


TestReplicatedStore = ReplicatedStore.TestCase
TestReplicatedStore.settings = settings(
    max_examples=12,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
