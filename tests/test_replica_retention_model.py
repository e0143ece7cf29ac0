"""Model-based retention in the bucket: the replicated store of ``test_replica_model`` with
retention runs (random count, grace 0 or an hour) and checkpoints between its writes and
compactions. After
every flush a restore of the newest state equals the engine's, a restore to every kept restore
point equals the model's state there, a restore to any other point is exact or refused (as not
retained, or a gap), and no object a kept point needs was ever deleted."""

from __future__ import annotations

import time

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from logkv import Engine, ReplicaError

pytest.importorskip("obstore")

import test_replica_model
from test_replica_model import ReplicatedStore

from logkv.replica import RetentionPolicy, restore, retire
from logkv.replica.retention import kept_points
from logkv.replica.slots import DATA_DIR, fold_slots, write_checkpoint

pytestmark = pytest.mark.slow


class RetainedStore(ReplicatedStore):
    @rule(keep=st.integers(min_value=1, max_value=3), grace=st.sampled_from([0.0, 3600.0]))
    def retain(self, keep: int, grace: float) -> None:
        self.replica.flush(10)
        folded = fold_slots(self.bucket)
        policy = RetentionPolicy(keep_snapshots=keep, keep_for=0.0, grace=grace)
        result = retire(self.bucket, folded, policy)
        stored = set(self.bucket.list_after(DATA_DIR))
        kept = kept_points(folded, policy, time.time_ns() // 1000)
        for file, pieces in folded.files.items():
            needed = file.endswith(".seg") and int(file[:-4]) > kept[0]
            needed |= file.endswith(".snap") and int(file[:-5]) in kept
            if needed:
                assert all(p.name in stored for p in pieces), f"{file} lost an object"
        assert not set(result.deleted) & stored

    @rule()
    def checkpoint(self) -> None:
        """Readers that start from nothing now start from this checkpoint."""
        self.replica.flush(10)
        write_checkpoint(self.bucket, fold_slots(self.bucket))

    @precondition(lambda self: self.restores < 4)
    @rule(data=st.data())
    def flush_and_restore(self, data: st.DataObject) -> None:
        """The newest state and a random point as in ``ReplicatedStore``, then every snapshot
        the bucket copy lists: exact, or refused as not retained when a marker retired it."""
        super().flush_and_restore(data)
        folded = fold_slots(self.bucket)
        for covers in sorted(folded.snapshots):
            last_seq = folded.snapshots[covers][0]
            target = self.dir / f"point-{self.restores}-{covers}"
            try:
                restore(self.bucket, target, until_seq=last_seq)
            except ReplicaError as exc:
                assert "not retained" in str(exc), exc
                assert any(p.name in folded.retired for p in folded.files[f"{covers:08d}.snap"])
                continue
            with Engine.open(target) as restored:
                assert {k: restored.get(k) for k in list(restored.keys())} == self.states[last_seq]


TestRetainedStore = RetainedStore.TestCase
TestRetainedStore.settings = test_replica_model.TestReplicatedStore.settings
