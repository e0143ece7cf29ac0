"""Followers: a read-only copy that tails a store's bucket copy (docs/FORMAT.md, section 13.5).

A follower catches up with a live writer and a read-only open of its folder sees the new
keys; it follows across a compaction; it keeps its files byte-identical prefixes of the
writer's; a gap or a folder with other bytes stops it and leaves the copy as it was; it never
writes to the bucket."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from logkv import (
    Configuration,
    Engine,
    KeyValueStore,
    ReplicaDivergedError,
    ReplicaGapError,
    StoreLockedError,
)
from logkv.cli.main import main
from logkv.layout import list_segments, list_snapshots
from logkv.verify import verify

pytest.importorskip("obstore")

import obstore
from obstore.store import MemoryStore

from logkv.replica import Bucket, Follower, Replica, open_replica_bucket
from logkv.replica.slots import fold_slots

URL_TAIL = "key_value_stores/pages"


def writer(folder: Path, bucket: Bucket) -> tuple[Engine, Replica]:
    """A writable engine that replicates (what a replicated open does)."""
    replica = Replica.claim(bucket, folder, 0.02)
    engine = Engine.open(folder, segment_size=4096)
    replica.start(engine)
    return engine, replica


def contents(engine: Engine) -> dict[str, bytes | None]:
    keys = list(engine.keys())
    return {key: engine.get(key) for key in keys}


def objects(bucket: Bucket) -> list[str]:
    return sorted(m["path"] for chunk in obstore.list(bucket.store, bucket.root) for m in chunk)


def prefixes_of(copy: Path, original: Path) -> None:
    """Every file of ``copy`` is a byte-identical prefix of the same file in ``original``
    (unless the writer's compaction retired it there before its successor was shipped)."""
    for _, path in list_segments(copy) + list_snapshots(copy):
        data = path.read_bytes()
        if (original / path.name).exists():
            assert (original / path.name).read_bytes()[: len(data)] == data, path.name


@pytest.fixture
def bucket(s3: Any) -> Bucket:
    return open_replica_bucket(f"{s3.root}/{URL_TAIL}", allow_http=True)


def test_follower_catches_up_and_a_readonly_open_sees_new_keys(
    bucket: Bucket, tmp_path: Path
) -> None:
    engine, replica = writer(tmp_path / "w" / "pages", bucket)
    copy = tmp_path / "f" / "pages"
    try:
        for i in range(50):
            engine.set(f"a{i}", b"v" * 100)
        replica.flush(10)
        follower = Follower(bucket, copy)
        assert follower.catch_up() == engine.last_seq
        reader = Engine.open(copy, readonly=True)
        try:
            assert contents(reader) == contents(engine)
            for i in range(80):  # rotates segments (4 KiB each)
                engine.set(f"b{i}", b"w" * 100)
            engine.delete("a3")
            replica.flush(10)
            before = objects(bucket)
            assert follower.catch_up() == engine.last_seq
            assert objects(bucket) == before  # a follower never writes to the bucket
            reader.refresh()
            assert contents(reader) == contents(engine)
            assert "a3" not in contents(reader) and reader.get("b79") == b"w" * 100
            prefixes_of(copy, engine.path)
            with pytest.raises(StoreLockedError):  # no local writer on a followed folder
                Engine.open(copy)
        finally:
            reader.close()
            follower.close()
    finally:
        engine.close()
        replica.close(5)
    assert verify(copy).ok


def refreshing_at_every_step(
    monkeypatch: pytest.MonkeyPatch, reader: Engine, seen: list[dict[str, bytes | None]]
) -> None:
    """Make each install step of a follower (a value file, the snapshot, a segment's new
    bytes, the retirement of covered files) refresh ``reader`` before and after it (so also
    around ``META.json``'s replacement), and note what the reader holds each time."""

    def look() -> None:
        reader.refresh()
        seen.append(contents(reader))

    def around(name: str) -> None:
        step = getattr(Follower, name)

        def wrapped(self: Follower, *args: Any) -> Any:
            look()
            try:
                return step(self, *args)
            finally:
                look()

        monkeypatch.setattr(Follower, name, wrapped)

    for name in ("_put_value_file", "_put_snapshot", "_append", "_retire"):
        around(name)


def test_follower_across_a_compaction(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only open of the copy, refreshed between any two steps of the follower's install
    of a compaction (the snapshot is in place before the segment after it, and the segments it
    covers go last), sees a state the writer had: never an error, never a mix."""
    engine, replica = writer(tmp_path / "w" / "pages", bucket)
    copy = tmp_path / "f" / "pages"
    try:
        for i in range(100):
            engine.set(f"k{i % 30}", f"{i}".encode() * 30)
        replica.flush(10)
        states = [contents(engine)]
        with Follower(bucket, copy) as follower:
            follower.catch_up()
            reader = Engine.open(copy, readonly=True)
            try:
                engine.compact()
                for i in range(40):
                    engine.set(f"n{i}", b"after")
                    states.append(contents(engine))
                replica.flush(10)
                seen: list[dict[str, bytes | None]] = []
                with monkeypatch.context() as patch:
                    refreshing_at_every_step(patch, reader, seen)
                    follower.catch_up()
                assert len(seen) >= 6 and all(state in states for state in seen)
                covers = max(c for c, _ in list_snapshots(copy))
                assert [c for c, _ in list_snapshots(copy)] == [covers]
                assert all(n > covers for n, _ in list_segments(copy))  # covered ones gone
                reader.refresh()
                assert contents(reader) == contents(engine)
            finally:
                reader.close()
        prefixes_of(copy, engine.path)
    finally:
        engine.close()
        replica.close(5)
    assert verify(copy).ok


@pytest.mark.slow
def test_follower_thread_tails_a_live_writer(bucket: Bucket, tmp_path: Path) -> None:
    """A writer thread writes and compacts while a follower polls; a read-only open of the
    copy sees each new key within about an interval."""
    engine, replica = writer(tmp_path / "w" / "pages", bucket)
    copy = tmp_path / "f" / "pages"
    engine.set("first", b"1")
    replica.flush(10)
    follower = Follower(bucket, copy)
    follower.catch_up()
    stop = threading.Event()
    thread = threading.Thread(target=follower.run, args=(0.05, stop))
    thread.start()
    reader = Engine.open(copy, readonly=True)
    try:
        for i in range(6):
            for j in range(30):
                engine.set(f"k{i}-{j}", b"x" * 200)
            if i == 3:
                engine.compact()
            deadline = time.monotonic() + 10
            while reader.get(f"k{i}-29") != b"x" * 200:
                assert time.monotonic() < deadline, f"round {i} never reached the copy"
                time.sleep(0.02)
                reader.refresh()
        replica.flush(10)
        deadline = time.monotonic() + 10
        while follower.seq < engine.last_seq:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        reader.refresh()
        assert contents(reader) == contents(engine)
    finally:
        stop.set()
        thread.join(10)
        reader.close()
        follower.close()
        engine.close()
        replica.close(5)
    assert not thread.is_alive()


def test_a_gap_stops_the_follower_and_leaves_the_copy(bucket: Bucket, tmp_path: Path) -> None:
    engine, replica = writer(tmp_path / "w" / "pages", bucket)
    copy = tmp_path / "f" / "pages"
    try:
        engine.set("a", b"1")
        replica.flush(10)
        with Follower(bucket, copy) as follower:
            follower.catch_up()
            held = {p.name: p.read_bytes() for _, p in list_segments(copy)}
            done = fold_slots(bucket).number
            engine.set("b", b"2")
            replica.flush(10)
            new = fold_slots(bucket).files
            piece = next(p for ps in new.values() for p in ps if p.offset > 0)
            obstore.delete(bucket.store, f"{bucket.root}/{piece.name}")
            with pytest.raises(ReplicaGapError, match="is missing"):
                follower.catch_up()
            assert main(["follow", bucket.describe, str(tmp_path / "g"), "--once"]) == 1
            assert {p.name: p.read_bytes() for _, p in list_segments(copy)} == held
            assert done < follower.folded.number
    finally:
        engine.close()
        replica.close(5)


def test_a_folder_with_other_bytes_is_refused(bucket: Bucket, tmp_path: Path) -> None:
    engine, replica = writer(tmp_path / "w" / "pages", bucket)
    try:
        engine.set("a", b"1" * 50)
        replica.flush(10)
    finally:
        engine.close()
        replica.close(5)
    other = tmp_path / "other" / "pages"
    with Engine.open(other) as elsewhere:
        elsewhere.set("a", b"2" * 50)
    with pytest.raises(ReplicaDivergedError, match="not a copy"), Follower(bucket, other) as f:
        f.catch_up()
    assert main(["follow", bucket.describe, str(other), "--once"]) == 2


def test_a_follower_cut_short_at_every_byte_resumes(tmp_path: Path) -> None:
    """A copy whose last append was cut short at any byte (a follower killed mid-write) is
    cut back to the last whole piece by the next follower on the folder, which goes on; one
    wrong byte in the last whole piece is refused instead."""
    bucket = Bucket(MemoryStore(), URL_TAIL, f"memory://{URL_TAIL}")
    engine, replica = writer(tmp_path / "w" / "pages", bucket)
    copy = tmp_path / "f" / "pages"
    try:
        engine.set("a", b"1" * 50)
        replica.flush(10)
        with Follower(bucket, copy) as follower:
            follower.catch_up()
        held = list_segments(copy)[-1][1]
        size = held.stat().st_size
        engine.set_many([("b", b"2" * 50, None), ("c", b"3", None)])
        replica.flush(10)
        original = (engine.path / held.name).read_bytes()
        assert len(original) > size + 1
        for cut in range(size + 1, len(original)):
            os.truncate(held, size)
            with held.open("ab") as file:
                file.write(original[size:cut])
            with Follower(bucket, copy) as follower:
                assert follower.catch_up() == engine.last_seq
            assert held.read_bytes() == original
        prefixes_of(copy, engine.path)
        assert verify(copy).ok
        damaged = bytearray(original)
        damaged[-3] ^= 0xFF
        held.write_bytes(bytes(damaged))
        with pytest.raises(ReplicaDivergedError, match="differ"), Follower(bucket, copy) as f:
            f.catch_up()
    finally:
        engine.close()
        replica.close(5)


KEYS = st.sampled_from([f"k{i}" for i in range(8)])
VALUES = st.binary(max_size=300)


class FollowedStore(RuleBasedStateMachine):
    """Random writes, batches, deletes and compactions on a replicated engine (obstore's
    in-memory store as the bucket); after every flush a follower catches up, and a read-only
    open of its copy, refreshed, holds the model's state; its files are prefixes of the
    writer's; followers restart on the same folder."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="logkv-follow-model-"))
        self.bucket = Bucket(MemoryStore(), URL_TAIL, f"memory://{URL_TAIL}")
        self.engine, self.replica = writer(self.dir / "w", self.bucket)
        self.copy = self.dir / "copy"
        self.follower = Follower(self.bucket, self.copy)
        self.reader: Engine | None = None
        self.model: dict[str, bytes] = {}

    @rule(key=KEYS, value=VALUES)
    def set(self, key: str, value: bytes) -> None:
        self.engine.set(key, value)
        self.model[key] = value

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        self.engine.delete(key)
        self.model.pop(key, None)

    @rule(items=st.dictionaries(KEYS, VALUES, min_size=2, max_size=4))
    def batch(self, items: dict[str, bytes]) -> None:
        self.engine.set_many([(k, v, None) for k, v in items.items()])
        self.model.update(items)

    @rule()
    def compact(self) -> None:
        self.engine.compact()

    @rule()
    def flush_and_follow(self) -> None:
        if self.engine.last_seq == 0:
            return
        self.replica.flush(10)
        assert self.follower.catch_up() == self.engine.last_seq
        if self.reader is None:
            self.reader = Engine.open(self.copy, readonly=True)
        self.reader.refresh()
        assert contents(self.reader) == self.model
        prefixes_of(self.copy, self.engine.path)

    @rule()
    def restart_follower(self) -> None:
        self.follower.close()
        self.follower = Follower(self.bucket, self.copy)

    def teardown(self) -> None:
        if self.reader is not None:
            self.reader.close()
        self.follower.close()
        self.engine.close()
        self.replica.close(5)
        shutil.rmtree(self.dir, ignore_errors=True)


TestFollowedStore = pytest.mark.slow(FollowedStore.TestCase)
TestFollowedStore.settings = settings(
    max_examples=10,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.slow
async def test_cli_follow_once_and_a_readonly_key_value_store(
    s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configuration = Configuration(
        storage_dir=str(tmp_path / "w"), purge_on_start=False, replica_interval=0.05
    )
    kvs = await KeyValueStore.open(name="pages", configuration=configuration, replica_url=s3.root)
    await kvs.set_value("one", {"n": 1})
    await kvs.flush_replica(timeout=30)
    url = f"{s3.root}/{URL_TAIL}"
    copy = tmp_path / "f" / URL_TAIL
    assert main(["follow", url, str(copy), "--once"]) == 0
    assert f"up to seq {(await kvs.get_info()).last_seq}" in capsys.readouterr().out
    followed = Configuration(storage_dir=str(tmp_path / "f"), purge_on_start=False)
    reader = await KeyValueStore.open(name="pages", configuration=followed, readonly=True)
    try:
        assert reader.id == kvs.id
        assert await reader.get_value("one") == {"n": 1}
        await kvs.set_value("two", {"n": 2})
        await kvs.flush_replica(timeout=30)
        assert main(["follow", url, str(copy), "--once", "--json"]) == 0
        assert await reader.get_value("two") == {"n": 2}
    finally:
        await reader.close()
        await kvs.close()
    assert main(["verify", str(copy)]) == 0
