"""Replication on obstore's in-memory store, whose create-only put is atomic: the fencing race
between two writers, compaction and rotation while replicating, ``--until`` and batches, gaps,
a folder that diverged from its bucket copy, the endpoint down, and an endpoint without
create-only puts (docs/FORMAT.md, section 13)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from logkv import Engine, FencedError, ReplicaDivergedError, ReplicaError
from logkv.layout import list_snapshots, list_value_files

pytest.importorskip("obstore")

import obstore
from obstore.store import MemoryStore
from replica_memory_bucket import ROOT, bucket_of, open_replicated

from logkv.rebuild import replay_store
from logkv.replica import Bucket, Follower, Replica, restore
from logkv.replica.bucket import BucketUnavailable
from logkv.replica.remote import remote_store
from logkv.replica.restore import value_file_seq
from logkv.replica.retention import RetentionPolicy, retire, unneeded
from logkv.replica.slots import (
    SHIP,
    Folded,
    Piece,
    Slot,
    decode_slot,
    encode_slot,
    fold_slots,
    slot_name,
)
from logkv.value_refs import named_value_seqs
from logkv.verify import verify


def state(engine: Engine) -> dict[str, bytes | None]:
    keys = list(engine.keys())
    return {key: engine.get(key) for key in keys}  # type: ignore[misc]


def close(engine: Engine, replica: Replica) -> None:
    engine.close()
    replica.close(5)


def test_rotation_and_compaction_while_replicating(tmp_path: Path) -> None:
    """Segments rotate and compaction retires them while the shipper runs: the snapshot is
    shipped, and a restore starts from it and holds exactly the live state."""
    bucket = bucket_of(MemoryStore())
    engine, replica = open_replicated(tmp_path / "a", bucket)
    for round_ in range(3):
        for i in range(150):
            engine.set(f"k{i % 60:02d}", f"{round_}-{i}".encode() * 5)
        if round_ == 1:
            engine.compact()
        replica.flush(10)
    engine.delete("k05")
    replica.flush(10)
    expected = state(engine)
    assert replica.folded.snapshots, "the snapshot was shipped"
    close(engine, replica)

    restore(bucket, tmp_path / "b")
    assert list_snapshots(tmp_path / "b"), "the restore started from the snapshot"
    with Engine.open(tmp_path / "b") as restored:
        assert state(restored) == expected


def test_restore_until_cuts_before_a_batch(tmp_path: Path) -> None:
    """``until_seq`` inside a batch keeps nothing of the batch (batches are atomic)."""
    bucket = bucket_of(MemoryStore())
    engine, replica = open_replicated(tmp_path / "a", bucket)
    engine.set("a", b"1")  # seq 1
    engine.set("b", b"2")  # seq 2
    engine.set_many([("c", b"3", None), ("d", b"4", None), ("e", b"5", None)])  # seq 3..5
    engine.set("f", b"6")  # seq 6
    replica.flush(10)
    close(engine, replica)

    for until, keys in [(2, "ab"), (3, "ab"), (4, "ab"), (5, "abcde"), (6, "abcdef"), (0, "")]:
        target = tmp_path / f"until-{until}"
        result = restore(bucket, target, until_seq=until)
        with Engine.open(target) as restored:
            assert "".join(restored.keys()) == keys, until
            assert result.last_seq == restored.last_seq


def test_fencing_race_keeps_every_replicated_write(tmp_path: Path) -> None:
    """Writer A writes and flushes in a loop while writer B takes the store over: A ends
    fenced (FencedError on flush and on write), and B's copy holds every write A's flush
    acknowledged."""
    store = MemoryStore()
    engine_a, replica_a = open_replicated(tmp_path / "a", bucket_of(store))
    acknowledged: list[str] = []
    failure: list[BaseException] = []

    def write_a() -> None:
        try:
            for i in range(100_000):
                engine_a.set(f"a{i:06d}", b"x" * 20)
                if i % 7 == 0:
                    replica_a.flush(10)
                    acknowledged.append(f"a{i:06d}")
        except FencedError as exc:
            failure.append(exc)

    thread = threading.Thread(target=write_a)
    thread.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 5 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)  # let A replicate a few flushes first
    engine_b, replica_b = open_replicated(tmp_path / "b", bucket_of(store))
    thread.join(30)
    assert not thread.is_alive()
    assert failure and isinstance(failure[0], FencedError)
    with pytest.raises(FencedError):
        engine_a.set("late", b"1")
    assert acknowledged
    missing = [key for key in acknowledged if key not in engine_b]
    assert not missing
    engine_b.set("b", b"mine")
    replica_b.flush(10)
    close(engine_a, replica_a)
    close(engine_b, replica_b)


def test_gap_in_slots_or_data_is_refused(tmp_path: Path) -> None:
    store = MemoryStore()
    bucket = bucket_of(store)
    engine, replica = open_replicated(tmp_path / "a", bucket)
    for i in range(3):
        engine.set(f"k{i}", b"v")
        replica.flush(10)
    close(engine, replica)
    data = sorted(p for p in bucket.list_after("data") if not p.endswith("000000000000"))
    obstore.delete(store, f"{ROOT}/{data[0]}")
    with pytest.raises(ReplicaError, match="missing"):
        restore(bucket, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    obstore.delete(store, f"{ROOT}/{slot_name(2)}")
    with pytest.raises(ReplicaError, match="slot 2 is missing"):
        restore(bucket, tmp_path / "c")


def test_folder_behind_its_bucket_copy_is_refused(tmp_path: Path) -> None:
    """A folder that lacks records the bucket holds (another machine wrote on) is refused,
    never silently diverged; so is one with other bytes."""
    store = MemoryStore()
    engine, replica = open_replicated(tmp_path / "a", bucket_of(store))
    engine.set("k", b"1")
    replica.flush(10)
    close(engine, replica)
    engine, replica = open_replicated(tmp_path / "b", bucket_of(store))  # restored, then on
    engine.set("k", b"2")
    replica.flush(10)
    close(engine, replica)
    with pytest.raises(ReplicaDivergedError, match="behind"):
        open_replicated(tmp_path / "a", bucket_of(store))

    other = MemoryStore()
    engine, replica = open_replicated(tmp_path / "c", bucket_of(other))
    engine.set("k", b"3")
    replica.flush(10)
    close(engine, replica)
    with Engine.open(tmp_path / "d") as stranger:
        stranger.set("k", b"4")
        stranger.set("k", b"5")
    with pytest.raises(ReplicaDivergedError, match="other bytes"):
        open_replicated(tmp_path / "d", bucket_of(other))


class Flaky(Bucket):
    """A bucket that can be taken down (every request fails as an unreachable endpoint)."""

    down = False

    def put_new(self, name: str, data: bytes) -> None:
        if self.down:
            raise BucketUnavailable("endpoint down")
        super().put_new(name, data)


def test_endpoint_down_writes_go_on_and_catch_up(tmp_path: Path) -> None:
    bucket = Flaky(MemoryStore(), ROOT, "flaky")
    engine, replica = open_replicated(tmp_path / "a", bucket)
    engine.set("before", b"1")
    replica.flush(10)
    bucket.down = True
    for i in range(50):
        engine.set(f"k{i}", b"v")  # never slowed, never refused
    time.sleep(0.2)
    lag = replica.lag()
    assert lag.records == 50 and lag.seconds > 0.1
    with pytest.raises(TimeoutError):
        replica.flush(0.2)
    bucket.down = False
    assert replica.flush(10) == engine.last_seq
    assert replica.lag().records == 0
    close(engine, replica)
    restore(bucket, tmp_path / "b")
    with Engine.open(tmp_path / "b") as restored:
        assert len(restored) == 51


class NoConditionalPuts(Bucket):
    """An endpoint that ignores ``If-None-Match: *``."""

    def put_new(self, name: str, data: bytes) -> None:
        obstore.put(self.store, f"{self.root}/{name}", data)


def test_endpoint_without_create_only_puts_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReplicaError, match="create-only"):
        Replica.claim(NoConditionalPuts(MemoryStore(), ROOT, "lax"), tmp_path / "a", 0.1)


def test_hostile_slots_are_refused_cleanly(tmp_path: Path) -> None:
    """A slot cut at every byte, garbage, or one whose piece does not start where the file's
    committed bytes end: a ReplicaError naming the slot, never another exception."""
    good = Slot(SHIP, "w", "h", 1, 0, 1, 0, [Piece("data/w/1", "00000001.seg", 0, 10, b"x" * 32)])
    data = encode_slot(good)
    for cut in range(len(data)):
        with pytest.raises(ReplicaError, match="not a valid slot"):
            decode_slot(data[:cut], "slot 1")
    assert decode_slot(data, "slot 1") == good
    with pytest.raises(ReplicaError, match="not a valid slot"):
        decode_slot(b"\x93\x01\x02\x03", "slot 1")

    folded = Folded("here")
    folded.add(1, good)
    skipping = Slot(SHIP, "w", "h", 1, 0, 2, 0, [Piece("data/w/2", "00000001.seg", 11, 5, b"")])
    with pytest.raises(ReplicaError, match="has a gap"):
        folded.add(2, skipping)
    with pytest.raises(ReplicaError, match="slot 2 is missing"):
        folded.add(3, good)

    store = MemoryStore()
    bucket = bucket_of(store)
    bucket.put_new(slot_name(1), b"not msgpack \xc1")
    with pytest.raises(ReplicaError, match="not a valid slot"):
        restore(bucket, tmp_path / "x")


class Refusing(Bucket):
    """An endpoint that refuses the credentials (HTTP 403) on every request."""

    def put_new(self, name: str, data: bytes) -> None:
        with self._errors(name):
            raise obstore.exceptions.PermissionDeniedError("403 InvalidAccessKeyId")


def test_refused_credentials_fail_at_open_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReplicaError, match="refused the credentials"):
        Replica.claim(Refusing(MemoryStore(), ROOT, "strict"), tmp_path / "a", 0.1)


def value_files(folder: Path) -> set[int]:
    """The seqs of the value files in a store folder."""
    return {seq for seq, _ in list_value_files(folder)}


def named_by_records(folder: Path) -> set[int]:
    """The seqs of the value files a store folder's own records name."""
    return named_value_seqs(folder, [p.name for p in folder.iterdir() if p.is_file()])


def test_restore_and_replay_keep_exactly_the_value_files_their_records_name(
    tmp_path: Path,
) -> None:
    """One rule for both copies: a value file no kept record names (a dead streamed value the
    bucket still holds, one committed after the target) is never brought back."""
    bucket = bucket_of(MemoryStore())
    engine, replica = open_replicated(tmp_path / "a", bucket)
    first = engine.set_stream("video", [b"first" * 100], "video/mp4")
    engine.set("page", b"<p>")
    middle = engine.last_seq
    second = engine.set_stream("video", [b"second"])  # the first is dead from here
    third = engine.set_stream("other", [b"third"])
    replica.flush(10)  # the dead value file is shipped and sealed before it goes locally
    engine.compact(retention="archive")  # history kept: replay reaches every point
    engine.set("after", b"x")
    replica.flush(10)
    close(engine, replica)
    sealed = {value_file_seq(n) for n in replica.folded.sealed if n.startswith("values/")}
    assert sealed == {first, second, third}

    restore(bucket, tmp_path / "newest")  # its snapshot names the two live values alone
    assert value_files(tmp_path / "newest") == named_by_records(tmp_path / "newest")
    assert value_files(tmp_path / "newest") == {second, third}
    assert verify(tmp_path / "newest").ok
    replayed = replay_store(tmp_path / "a", tmp_path / "replayed", until_seq=third + 1)
    assert value_files(replayed.target) == named_by_records(replayed.target)
    assert value_files(replayed.target) == {first, second, third}  # its log holds all three
    assert verify(replayed.target).ok
    restore(bucket, tmp_path / "then", until_seq=middle)
    then = replay_store(tmp_path / "a", tmp_path / "then-replayed", until_seq=middle)
    for copy in (tmp_path / "then", then.target):
        assert value_files(copy) == named_by_records(copy) == {first}, copy
        with Engine.open(copy, readonly=True) as engine:
            assert engine.get("video") == b"first" * 100


def test_retention_retires_the_value_files_no_kept_point_names(tmp_path: Path) -> None:
    """A dead streamed value's file goes with the last restore point whose records name it;
    the files the kept points name stay, and restores and followers still work."""
    bucket = bucket_of(MemoryStore())
    engine, replica = open_replicated(tmp_path / "a", bucket)
    first = engine.set_stream("video", [b"first" * 100], "video/mp4")
    engine.set("page", b"<p>")
    replica.flush(10)
    engine.compact()  # a snapshot that names the first value file: kept while it is a point
    second = engine.set_stream("video", [b"second"])  # the first is dead from here
    third = engine.set_stream("other", [b"third"])
    replica.flush(10)
    engine.compact()  # the newest snapshot names the second and third alone
    engine.set("after", b"x")
    replica.flush(10)
    close(engine, replica)
    folded = fold_slots(bucket)
    value_objects = {
        value_file_seq(name): {p.name for p in pieces}
        for name, pieces in folded.files.items()
        if name.startswith("values/")
    }
    assert set(value_objects) == {first, second, third}

    both = retire(bucket, folded, RetentionPolicy(2, 0.0, 3600.0), dry_run=True)
    assert not value_objects[first] & set(both.retired)  # the older snapshot still names it
    result = retire(bucket, folded, RetentionPolicy(1, 0.0, 0.0))
    assert value_objects[first] <= set(result.retired) and value_objects[first] <= set(
        result.deleted
    )
    for seq in (second, third):
        assert not value_objects[seq] & set(result.retired)

    restore(bucket, tmp_path / "newest")
    assert value_files(tmp_path / "newest") == {second, third}
    with Engine.open(tmp_path / "newest", readonly=True) as restored:
        assert restored.get("video") == b"second" and restored.get("other") == b"third"
    with Follower(bucket, tmp_path / "copy") as follower:
        follower.catch_up()
    assert value_files(tmp_path / "copy") == {second, third}
    with remote_store(bucket) as view:
        assert verify(view).ok


@pytest.mark.slow
def test_streamed_values_reach_the_bucket_and_come_back(tmp_path: Path) -> None:
    """Value files are shipped whole (in parts) and sealed; a restore, also to a point before
    a later streamed value, brings back exactly the files its records name; a follower and a
    retention run keep them."""
    bucket = bucket_of(MemoryStore())
    engine, replica = open_replicated(tmp_path / "a", bucket)
    big = bytes(range(256)) * 80_000  # 20 MB: two parts of the bucket's objects
    engine.set_stream("video", [big], "video/mp4")
    engine.set("page", b"<p>")
    middle = engine.last_seq
    engine.set_stream("video", [b"second"])
    engine.set_stream("other", [b"third"])
    replica.flush(10)  # shipped before the compaction removes the first (dead) value file
    engine.compact()  # the snapshot names two value files; the first is dead
    replica.flush(10)
    folded = replica.folded
    sealed = sorted(name for name in folded.sealed if name.startswith("values/"))
    assert len(sealed) == 3 and len(folded.files[sealed[0]]) == 2
    objects = {piece.name for name in sealed for piece in folded.files[name]}
    assert not objects & set(unneeded(folded, RetentionPolicy(1, 0.0, 0.0), 1 << 62))
    close(engine, replica)

    restore(bucket, tmp_path / "newest")
    with Engine.open(tmp_path / "newest") as restored:
        assert restored.get("video") == b"second" and restored.get("other") == b"third"
    restore(bucket, tmp_path / "then", until_seq=middle)
    with Engine.open(tmp_path / "then") as then:
        assert then.get("video") == big and then.get("page") == b"<p>"
        assert "other" not in then
        assert all(seq <= middle for seq, _ in list_value_files(tmp_path / "then"))

    with Follower(bucket, tmp_path / "copy") as follower:
        follower.catch_up()
    with Engine.open(tmp_path / "copy", readonly=True) as copy:
        assert copy.get("video") == b"second" and copy.get("other") == b"third"
    with remote_store(bucket) as view:  # an audit straight from the bucket, by range reads
        report = verify(view)
        assert report.ok and report.value_files == 2, report.problems
