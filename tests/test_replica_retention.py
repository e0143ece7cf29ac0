"""Retention in the bucket (docs/FORMAT.md, section 13.5), on obstore's in-memory store: exactly
the objects no kept restore point needs are retired, and deleted only after the grace period; a
restore to a kept point works and one to a dropped point is refused as not retained; a stale
writer is still fenced after retention; the writer runs retention itself after a compaction."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from logkv import Engine, FencedError, ReplicaError

pytest.importorskip("obstore")

from obstore.store import MemoryStore

from logkv.replica import Bucket, Replica, RetentionPolicy, restore, retire
from logkv.replica.retention import kept_points
from logkv.replica.slots import DATA_DIR, RETIRED_DIR, Folded, fold_slots

ROOT = "crawl/key_value_stores/pages"


def bucket_of(store: Any) -> Bucket:
    return Bucket(store, ROOT, f"memory://{ROOT}")


def open_replicated(
    folder: Path, bucket: Bucket, retention: RetentionPolicy | None = None
) -> tuple[Engine, Replica]:
    replica = Replica.claim(bucket, folder, 0.02, retention)
    if not folder.exists() and replica.folded.files:
        restore(bucket, folder, folded=replica.folded)
    engine = Engine.open(folder, segment_size=4096)
    replica.start(engine)
    return engine, replica


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
    bucket = bucket_of(MemoryStore())
    engine, replica = open_replicated(tmp_path / "a", bucket)
    ends = write_and_compact(engine, replica, 4)
    engine.close()
    replica.close(5)

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
    bucket = bucket_of(MemoryStore())
    engine, replica = open_replicated(tmp_path / "a", bucket)
    write_and_compact(engine, replica, 3)
    engine.close()
    replica.close(5)
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
