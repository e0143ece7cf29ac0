"""Retention in the bucket (docs/FORMAT.md, section 13.7), on obstore's in-memory store: exactly
the objects no kept restore point needs are retired, and deleted only after the grace period; a
restore to a kept point works and one to a dropped point is refused as not retained; a stale
writer is still fenced after retention; the writer runs retention itself after a compaction."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from logkv import Engine, FencedError, ReplicaError

pytest.importorskip("obstore")

from obstore.store import MemoryStore
from replica_memory_bucket import bucket_of, open_replicated

from logkv.replica import Bucket, Replica, RetentionPolicy, restore, retention, retire
from logkv.replica.retention import kept_points
from logkv.replica.slots import (
    CHECKPOINTS_DIR,
    DATA_DIR,
    RETIRED_DIR,
    Folded,
    checkpoint_name,
    decode_checkpoint,
    decode_slot,
    fold_slots,
    slot_name,
    write_checkpoint,
)


def write_and_compact(engine: Engine, replica: Replica, rounds: int) -> list[int]:
    """``rounds`` rounds of writes, each ending in a compaction; the last seq of each round."""
    ends = []
    for round_ in range(rounds):
        for i in range(120):
            engine.set(f"k{i % 40:02d}", f"{round_}-{i}".encode() * 6)
        ends.append(engine.last_seq)
        engine.compact()
        replica.flush(10)
    engine.set("tail", b"after the last snapshot")
    replica.flush(10)
    return ends


def replicated_rounds(folder: Path, rounds: int) -> tuple[Bucket, list[int]]:
    """A bucket holding a store written in ``rounds`` compacted rounds, its writer closed;
    the last seq of each round."""
    bucket = bucket_of(MemoryStore())
    engine, replica = open_replicated(folder, bucket)
    ends = write_and_compact(engine, replica, rounds)
    engine.close()
    replica.close(5)
    return bucket, ends


def committed_objects(folded: Folded) -> set[str]:
    names = {p.name for pieces in folded.files.values() for p in pieces}
    return names | {p.name for p in folded.metas}


def needed_objects(folded: Folded, kept: list[int]) -> set[str]:
    """What restores to the kept points read: their snapshots, every segment after the oldest
    one, and the newest META.json."""
    needed: set[str] = set()
    for file, pieces in folded.files.items():
        if file.endswith(".snap"):
            keep = int(file.removesuffix(".snap")) in kept
        else:
            keep = int(file.removesuffix(".seg")) > kept[0]
        if keep:
            needed.update(p.name for p in pieces)
    return needed | ({folded.meta.name} if folded.meta is not None else set())


def stored(bucket: Bucket) -> set[str]:
    return set(bucket.list_after(DATA_DIR))


def test_retires_exactly_the_unneeded_and_deletes_after_the_grace_period(tmp_path: Path) -> None:
    bucket, ends = replicated_rounds(tmp_path / "a", 4)

    folded = fold_slots(bucket)
    assert len(folded.snapshots) == 4
    policy = RetentionPolicy(keep_snapshots=2, keep_for=0, grace=3600)
    result = retire(bucket, folded, policy)
    kept = kept_points(folded, policy, time.time_ns() // 1000)
    assert kept == sorted(folded.snapshots)[-2:]
    unneeded = committed_objects(folded) - needed_objects(folded, kept)
    assert set(result.retired) == unneeded and unneeded
    assert result.deleted == []  # the grace period is not over
    assert unneeded <= stored(bucket), "nothing is deleted before the grace period"

    # A second run retires nothing new and deletes nothing yet.
    again = retire(bucket, fold_slots(bucket), policy)
    assert again.retired == [] and again.deleted == []

    # A reader that folds the slots now sees the marker: the dropped points are refused.
    with pytest.raises(ReplicaError, match="not retained"):
        restore(bucket, tmp_path / "old", until_seq=ends[0])
    with pytest.raises(ReplicaError, match=r"not retained|segment 1 is missing"):
        restore(bucket, tmp_path / "origin", until_seq=1)
    assert not (tmp_path / "old").exists()

    # After the grace period: exactly the retired objects are gone.
    before = stored(bucket)
    done = retire(bucket, fold_slots(bucket), RetentionPolicy(2, 0, grace=0))
    assert set(done.deleted) == unneeded
    assert stored(bucket) == before - unneeded
    assert any(n.endswith(".deleted") for n in bucket.list_after(RETIRED_DIR))
    assert retire(bucket, fold_slots(bucket), RetentionPolicy(2, 0, grace=0)).deleted == []

    # Kept points still restore, to the newest state and to the older kept snapshot.
    restore(bucket, tmp_path / "newest")
    with Engine.open(tmp_path / "newest") as restored:
        assert restored.get("tail") == b"after the last snapshot"
    restore(bucket, tmp_path / "kept", until_seq=ends[2])
    with Engine.open(tmp_path / "kept") as restored:
        assert restored.last_seq == ends[2]
    with pytest.raises(ReplicaError, match="not retained"):
        restore(bucket, tmp_path / "old2", until_seq=ends[1])


def test_keep_for_keeps_young_points(tmp_path: Path) -> None:
    """Points younger than keep_for are kept whatever their count."""
    bucket, _ = replicated_rounds(tmp_path / "a", 3)
    folded = fold_slots(bucket)
    result = retire(bucket, folded, RetentionPolicy(keep_snapshots=1, keep_for=3600, grace=0))
    assert result.kept == sorted(folded.snapshots)
    assert all(not n.startswith("snap") for n in result.retired)
    with pytest.raises(ReplicaError, match=r"not retained|segment 1 is missing"):
        restore(bucket, tmp_path / "b", until_seq=1)  # the log from segment 1 is not kept


def test_a_stale_writer_is_still_fenced_after_retention(tmp_path: Path) -> None:
    """Slots are never deleted: after the new writer's retention deleted what it could, the
    old writer's next commit still fails, and its store refuses writes."""
    bucket = bucket_of(MemoryStore())
    engine_a, replica_a = open_replicated(tmp_path / "a", bucket)
    write_and_compact(engine_a, replica_a, 3)
    engine_b, replica_b = open_replicated(tmp_path / "b", bucket)
    retire(bucket, replica_b.folded, RetentionPolicy(keep_snapshots=1, keep_for=0, grace=0))
    retire(bucket, replica_b.folded, RetentionPolicy(keep_snapshots=1, keep_for=0, grace=0))
    engine_a.set("late", b"from the old writer")
    with pytest.raises(FencedError):
        replica_a.flush(10)
    with pytest.raises(FencedError):
        engine_a.set("later", b"refused")
    engine_b.set("new", b"from the new writer")
    replica_b.flush(10)
    for engine, replica in ((engine_a, replica_a), (engine_b, replica_b)):
        engine.close()
        replica.close(5)
    restore(bucket, tmp_path / "c")
    with Engine.open(tmp_path / "c") as restored:
        assert "late" not in set(restored.keys())
        assert restored.get("new") == b"from the new writer"


def test_the_writer_runs_retention_after_a_compaction(tmp_path: Path) -> None:
    bucket = bucket_of(MemoryStore())
    policy = RetentionPolicy(keep_snapshots=1, keep_for=0, grace=0)
    engine, replica = open_replicated(tmp_path / "a", bucket, policy)
    write_and_compact(engine, replica, 3)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        folded = fold_slots(bucket)
        if folded.retired and folded.deleted == set(folded.markers):
            break
        time.sleep(0.05)
    assert folded.retired, "the shipper retired the objects of the older snapshots"
    assert not folded.retired & stored(bucket)
    expected = {k: engine.get(k) for k in list(engine.keys())}
    engine.close()
    replica.close(5)
    restore(bucket, tmp_path / "b")
    with Engine.open(tmp_path / "b") as restored:
        assert {k: restored.get(k) for k in list(restored.keys())} == expected


class CountingGets(Bucket):
    """Counts the slots a fold reads."""

    def __init__(self, bucket: Bucket) -> None:
        super().__init__(bucket.store, bucket.root, bucket.describe)
        self.slot_gets = 0

    def get(self, name: str) -> bytes:
        self.slot_gets += name.startswith("slots/")
        return super().get(name)


def comparable(folded: Folded) -> tuple[object, ...]:
    return (folded.number, folded.seq, folded.last_us, folded.files, folded.sealed,
            folded.snapshots, folded.meta, folded.last)  # fmt: skip


def test_a_checkpoint_lets_a_cold_reader_fold_only_the_newer_slots(tmp_path: Path) -> None:
    bucket = bucket_of(MemoryStore())
    engine, replica = open_replicated(tmp_path / "a", bucket)
    write_and_compact(engine, replica, 2)
    name = write_checkpoint(bucket, fold_slots(bucket))
    assert name == checkpoint_name(replica.folded.number)
    at_checkpoint = replica.folded.number
    write_and_compact(engine, replica, 1)
    engine.close()
    replica.close(5)

    counting = CountingGets(bucket)
    from_checkpoint = fold_slots(counting)
    assert counting.slot_gets == from_checkpoint.number - at_checkpoint
    full = Folded(bucket.describe)
    for number in range(1, from_checkpoint.number + 1):
        full.add(number, decode_slot(bucket.get(slot_name(number)), "slot"))
    assert comparable(from_checkpoint) == comparable(full)
    restore(bucket, tmp_path / "b", folded=from_checkpoint)
    with Engine.open(tmp_path / "b") as restored:
        assert restored.get("tail") == b"after the last snapshot"

    # A damaged newest checkpoint is passed over for the one before it.
    bucket.put_new(checkpoint_name(from_checkpoint.number), b"\xc1 not msgpack")
    assert comparable(fold_slots(bucket)) == comparable(full)

    # A writer that takes the store over starts from the checkpoint too, and goes on.
    engine, replica = open_replicated(tmp_path / "b", bucket)
    engine.set("after", b"the takeover")
    replica.flush(10)
    engine.close()
    replica.close(5)
    restore(bucket, tmp_path / "c")
    with Engine.open(tmp_path / "c") as restored:
        assert restored.get("after") == b"the takeover"


def test_retention_writes_checkpoints_without_the_deleted_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "CHECKPOINT_EVERY", 3)
    bucket, ends = replicated_rounds(tmp_path / "a", 4)
    policy = RetentionPolicy(keep_snapshots=1, keep_for=0, grace=0)
    first = retire(bucket, fold_slots(bucket), policy)
    assert first.checkpoint is not None and first.deleted
    checkpoint = decode_checkpoint(bucket.get(first.checkpoint), "checkpoint")
    assert not {p.name for ps in checkpoint.files.values() for p in ps} & set(first.deleted)
    assert list(checkpoint.snapshots) == first.kept
    restore(bucket, tmp_path / "b")  # from the checkpoint: the newest state
    with Engine.open(tmp_path / "b") as restored:
        assert restored.get("tail") == b"after the last snapshot"
    with pytest.raises(ReplicaError, match=r"not retained|missing"):
        restore(bucket, tmp_path / "c", until_seq=ends[1])
    # Older checkpoints are deleted as newer ones come: the newest two stay.
    for _ in range(3):
        engine, replica = open_replicated(tmp_path / "b", bucket)
        engine.set("more", b"x")
        replica.flush(10)
        engine.close()
        replica.close(5)
        retire(bucket, fold_slots(bucket), policy)
    assert len(bucket.list_after(CHECKPOINTS_DIR)) == retention.CHECKPOINTS_KEPT


def test_a_damaged_marker_is_refused_not_ignored(tmp_path: Path) -> None:
    """A marker that is not one stops the fold: which objects it retired is unknown."""
    bucket, _ = replicated_rounds(tmp_path / "a", 1)
    bucket.put_new(f"{RETIRED_DIR}/00000000000000000001-x", b"\x92\x01")
    with pytest.raises(ReplicaError, match="not a valid retirement marker"):
        fold_slots(bucket)


def test_a_waiting_writer_learns_it_was_fenced(tmp_path: Path) -> None:
    bucket = bucket_of(MemoryStore())
    engine_a, replica_a = open_replicated(tmp_path / "a", bucket)
    engine_a.set("a", b"1")
    replica_a.flush(10)
    Replica.claim(bucket, tmp_path / "b", 0.02)  # takes the store over
    engine_a.set("b", b"2")
    outcome: list[BaseException | None] = []
    done = threading.Event()

    def committed(error: BaseException | None) -> None:
        outcome.append(error)
        done.set()

    replica_a.when_committed(engine_a.last_seq, committed)
    assert done.wait(10)
    assert isinstance(outcome[0], FencedError)
    replica_a.when_committed(engine_a.last_seq, committed)  # after the fence: at once
    assert isinstance(outcome[1], FencedError)
    engine_a.close()
    replica_a.close(5)
