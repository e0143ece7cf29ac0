"""Online compaction and audit history.

* compaction keeps exactly the live state, reclaims dead records and retires (or archives)
  the covered segments;
* writers keep writing while it runs (threads), and a write that lands at any step between
  the rotation and the switch ends up where it belongs;
* the snapshot is the state as of its sequence number, so history (``state_at``,
  ``key_history``) stays exact across compactions: complete with retention archive, and with
  retention delete complete from the snapshot on (``HistoryGap`` before it);
* ``verify`` is clean on good stores and finds the first broken link of the hash chain when a
  record was altered and its CRC recomputed, which no checksum can notice.
"""

from __future__ import annotations

import os
import random
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
from store_model import Model, Value, dump

from logkv import MISSING, Durability, Engine, ReadOnlyStoreError, StoreClosedError, history
from logkv import compaction as compaction_module
from logkv import turns as turns_module
from logkv.compaction import CompactionResult, CompactionRunningError
from logkv.format import FRAME_HEADER_SIZE, FRAME_KINDS, RECORD_MAGIC, SetRecord, checksum
from logkv.history import (
    HistoryGap,
    LoggedRecord,
    iter_log,
    iter_snapshot_records,
    key_history,
    state_at,
)
from logkv.layout import ARCHIVE_DIR, list_segments, list_snapshots
from logkv.replay import Entry
from logkv.snapshot import SnapshotInfo, SnapshotWriter, load_snapshot
from logkv.turns import PAUSE, WORK_SLICE, Turns
from logkv.verify import verify

SEGMENT_SIZE = 4096
DELETED = "deleted"


def as_model(state: dict[str, SetRecord]) -> Model:
    """``state_at``'s answer in the shape of a model."""
    return {key: (record.value, record.content_type) for key, record in state.items()}


class Recorder:
    """Writes through an engine and keeps the model as of every sequence number."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.model: Model = {}
        self.states: list[Model] = [{}]  # states[seq]: the model after record seq
        self.events: dict[str, list[tuple[int, Value | str]]] = {}

    def set(self, key: str, value: bytes | None, content_type: str | None = None) -> None:
        seq = self.engine.set(key, value, content_type)
        assert seq == len(self.states)
        self.model[key] = (value, content_type)
        self.states.append(dict(self.model))
        self.events.setdefault(key, []).append((seq, (value, content_type)))

    def delete(self, key: str) -> None:
        if self.engine.delete(key):
            seq = self.engine.last_seq
            assert seq == len(self.states)
            del self.model[key]
            self.states.append(dict(self.model))
            self.events.setdefault(key, []).append((seq, DELETED))
        else:
            assert key not in self.model

    def churn(self, rng: random.Random, ops: int, keys: int = 120) -> None:
        """Random sets (some of stored None, some large) and deletes over a small key space."""
        for _ in range(ops):
            key = f"k/{rng.randrange(keys):04d}"
            roll = rng.random()
            if roll < 0.2:
                self.delete(key)
            elif roll < 0.25:
                self.set(key, None, "application/x-none")
            else:
                size = rng.choice([0, 3, 40, 200, 900])
                self.set(key, rng.randbytes(size), rng.choice([None, "text/plain"]))


def history_of(records: list[LoggedRecord]) -> list[tuple[int, Value | str]]:
    """``key_history``'s answer in the shape of :attr:`Recorder.events`."""
    out: list[tuple[int, Value | str]] = []
    for logged in records:
        record = logged.record
        if isinstance(record, SetRecord):
            out.append((record.seq, (record.value, record.content_type)))
        else:
            out.append((record.seq, DELETED))
    return out


def sample_seqs(last: int, boundaries: list[int], rng: random.Random, count: int = 40) -> list[int]:
    """Sequence numbers to check: the edges, each boundary and its neighbours, and a sample."""
    picked = {0, 1, last}
    for b in boundaries:
        picked.update({b - 1, b, b + 1})
    picked.update(rng.sample(range(last + 1), min(count, last + 1)))
    return sorted(s for s in picked if 0 <= s <= last)


# ---------------------------------------------------------------------------- basics


@pytest.mark.parametrize("retention", ["delete", "archive"])
def test_compaction_keeps_the_live_state_and_retires_the_log(
    tmp_path: Path, retention: str
) -> None:
    path = tmp_path / "store"
    rng = random.Random(1)
    with Engine.open(path, segment_size=SEGMENT_SIZE, retention=retention) as engine:
        rec = Recorder(engine)
        rec.churn(rng, 1500)
        before = engine.stats()
        segments_before = [n for n, _ in list_segments(path)]
        assert before.dead_bytes > 0
        result = engine.compact()
        assert isinstance(result, CompactionResult)
        assert result.retention.value == retention
        assert result.covers == segments_before[-1]
        assert result.records == len(rec.model)
        assert result.retired_files == len(segments_before)
        assert result.reclaimed > 0
        assert result.bytes_after == engine.disk_bytes()
        assert isinstance(result.longest_lock_hold_s, float)
        assert result.longest_lock_hold_s >= 0
        assert dump(engine) == rec.model
        after = engine.stats()
        assert after.snapshot_covers == result.covers
        assert after.keys == before.keys
        assert after.live_bytes == before.live_bytes
        assert after.dead_bytes < before.dead_bytes
        assert after.last_seq == before.last_seq
        # Only the new (empty) active segment is left in the folder.
        assert [n for n, _ in list_segments(path)] == [result.covers + 1]
        archived = (
            [n for n, _ in list_segments(path / ARCHIVE_DIR)] if retention == "archive" else []
        )
        assert archived == (segments_before if retention == "archive" else [])
        # Nothing more to compact until something is written.
        again = engine.compact()
        assert again.snapshot is None
        assert again.notes == ["nothing to compact"]
        rec.churn(rng, 50)
        stats = engine.stats()
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        assert engine.report.clean
        assert dump(engine) == rec.model
        reopened = engine.stats()
        assert (reopened.keys, reopened.live_bytes, reopened.dead_bytes, reopened.last_seq) == (
            stats.keys,
            stats.live_bytes,
            stats.dead_bytes,
            stats.last_seq,
        )
    assert verify(path).ok


def test_successive_compactions_with_mixed_retention(tmp_path: Path) -> None:
    path = tmp_path / "store"
    rng = random.Random(2)
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        rec = Recorder(engine)
        for round_, retention in enumerate(["archive", "delete", "archive", "archive", "delete"]):
            rec.churn(rng, 300)
            engine.compact(retention=retention)
            assert len(list_snapshots(path)) == 1  # older snapshots are always removed
            assert dump(engine) == rec.model, round_
            with Engine.open(path, readonly=True) as reader:
                assert dump(reader) == rec.model
    with Engine.open(path) as engine:
        assert dump(engine) == rec.model
    assert verify(path).ok


def test_compaction_progress_and_readonly_refusal(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        for i in range(1300):
            engine.set(f"k{i:05d}", b"v")
        calls: list[tuple[int, int]] = []
        engine.compact(progress=lambda done, total: calls.append((done, total)))
        assert calls
        assert calls[-1] == (1300, 1300)
        assert [done for done, _ in calls] == sorted(done for done, _ in calls)
        with Engine.open(path, readonly=True) as reader, pytest.raises(ReadOnlyStoreError):
            reader.compact()


def test_turns_pause_once_per_slice_of_work(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    slept: list[float] = []
    monkeypatch.setattr(turns_module.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(turns_module.time, "sleep", slept.append)
    turns = Turns()
    for _ in range(10):
        clock[0] += WORK_SLICE / 4
        turns.take()
    assert slept == [PAUSE, PAUSE]  # after the 4th and the 8th quarter slice


def test_long_steps_of_a_compaction_let_writers_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy takes a turn between records, the switch between batches and the merge of
    fresh keys between merges: with a slice of no time, each of them pauses, and the
    compaction's result is the same."""
    path = tmp_path / "store"
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        rec = Recorder(engine)
        rec.churn(random.Random(3), 1500, keys=1200)  # many fresh keys: merged in batches
        pauses = [0]
        real_sleep = turns_module.time.sleep

        def sleep(seconds: float) -> None:
            pauses[0] += seconds == PAUSE
            real_sleep(0)

        monkeypatch.setattr(turns_module, "WORK_SLICE", 0.0)
        monkeypatch.setattr(turns_module.time, "sleep", sleep)
        result = engine.compact()
        monkeypatch.undo()
        assert pauses[0] >= result.records + len(rec.model) // 512
        engine._check()
        assert dump(engine) == rec.model
    with Engine.open(path) as engine:
        assert dump(engine) == rec.model


def test_a_second_compaction_at_the_same_time_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        for i in range(600):
            engine.set(f"k{i:05d}", b"v" * 20)
        seen: list[BaseException] = []
        original = SnapshotWriter.add

        def add_and_try_again(self: SnapshotWriter, frame: bytes, key: str, entry: object) -> int:
            if not seen:
                try:
                    engine.compact()
                except CompactionRunningError as exc:
                    seen.append(exc)
            return original(self, frame, key, entry)  # type: ignore[arg-type]

        patch = pytest.MonkeyPatch()
        patch.setattr(SnapshotWriter, "add", add_and_try_again)
        try:
            engine.compact()
        finally:
            patch.undo()
        assert len(seen) == 1
        assert len(engine) == 600


# ---------------------------------------------------------------------------- writes meanwhile


@pytest.mark.parametrize("durability", [Durability.PROCESS, Durability.FSYNC])
def test_writes_at_every_step_of_a_compaction_land_where_they_belong(
    tmp_path: Path, durability: Durability
) -> None:
    """Deterministic interleaving: writes during the copy and between install and switch
    (under fsync they reach the index through group commit)."""
    path = tmp_path / "store"
    patch = pytest.MonkeyPatch()
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        for i in range(2000):
            engine.set(f"k{i:05d}", f"v{i}".encode(), "text/plain")
    with Engine.open(path, segment_size=SEGMENT_SIZE, durability=durability) as engine:
        rec = Recorder(engine)
        rec.states = [{}] * 2000  # the states before seq 2000 are not checked here
        rec.model = dump(engine)
        rec.states.append(dict(rec.model))
        rec.delete("k00007")
        rotation_seq = engine.last_seq
        calls = {"add": 0}
        original_add, original_finish = SnapshotWriter.add, SnapshotWriter.finish

        def add(self: SnapshotWriter, frame: bytes, key: str, entry: object) -> int:
            calls["add"] += 1
            if calls["add"] == 1:  # the first batch has been read; later ones have not
                rec.set("k00000", b"copied already, changed now")
                rec.set("k00100", b"in the batch being copied")
                rec.set("k01500", b"not read yet, changed now")
                rec.delete("k01600")  # not read yet, deleted now
                rec.set("k01600", b"and written again")
                rec.delete("k01700")
                rec.set("a-new-key", b"before every other key")
                rec.set("zz-new-key", b"after every other key")
            return original_add(self, frame, key, entry)  # type: ignore[arg-type]

        def finish(self: SnapshotWriter, last_seq: int, chain: bytes, *args: object) -> object:
            # Between the copy and the switch: these keys were copied with older values.
            rec.set("k00005", b"changed before the switch")
            rec.delete("k00006")
            return original_finish(self, last_seq, chain, *args)  # type: ignore[arg-type]

        patch.setattr(SnapshotWriter, "add", add)
        patch.setattr(SnapshotWriter, "finish", finish)
        try:
            result = engine.compact()
        finally:
            patch.undo()
        assert dump(engine) == rec.model
        rec.set("after", b"compaction")
        assert dump(engine) == rec.model
    assert result.snapshot is not None
    # The snapshot holds exactly the state as of the rotation, whatever was written meanwhile.
    info, entries = load_snapshot(result.snapshot, result.covers)
    assert info.last_seq == rotation_seq
    snapshot_state = {r.key: (r.value, r.content_type) for r in iter_snapshot_records(info.path)}
    assert snapshot_state == rec.states[rotation_seq]
    assert set(entries) == set(rec.states[rotation_seq])
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        assert dump(engine) == rec.model
    for seq in range(rotation_seq, len(rec.states)):
        assert as_model(state_at(path, until_seq=seq)) == rec.states[seq], seq
    with pytest.raises(HistoryGap):
        state_at(path, until_seq=rotation_seq - 1)


@pytest.mark.parametrize("retention", ["delete", "archive"])
def test_retired_files_go_with_the_lock_released(tmp_path: Path, retention: str) -> None:
    """Compaction deletes (or archives) the files its snapshot replaced after the store lock
    is released, so a write never waits for the file system meanwhile; by then the store
    counts the snapshot as installed, and reads, writes and the invariants hold while the old
    files are still there."""
    path = tmp_path / "store"
    rng = random.Random(11)
    patch = pytest.MonkeyPatch()
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        rec = Recorder(engine)
        rec.churn(rng, 600)
        engine.compact()  # the second compaction also retires a snapshot
        rec.churn(rng, 600)
        before = len(list_segments(path))
        real = compaction_module.retire_files
        seen: list[int] = []

        def retire(folder: Path, covers: int, *args: Any, **kwargs: Any) -> list[int]:
            assert engine._mutex.acquire(blocking=False), "retired with the store lock held"
            engine._mutex.release()
            assert engine.snapshot_covers == covers  # recorded before the files go
            assert [n for n, _ in list_segments(path) if n <= covers]  # still there
            engine._check()
            assert dump(engine) == rec.model
            rec.set("k/during-retire", b"written while the old files go")
            seen.append(covers)
            return real(folder, covers, *args, **kwargs)

        patch.setattr(compaction_module, "retire_files", retire)
        try:
            result = engine.compact(retention=retention)
        finally:
            patch.undo()
        assert seen == [result.covers]
        assert result.retired_files == before + 1  # the segments then (the rotation sealed the
        # active one) and the older snapshot
        assert [n for n, _ in list_segments(path) if n <= result.covers] == []
        assert [c for c, _ in list_snapshots(path)] == [result.covers]
        engine._check()
        assert dump(engine) == rec.model
    with Engine.open(path) as engine:
        assert dump(engine) == rec.model


@pytest.mark.parametrize(
    "durability", [Durability.PROCESS, pytest.param(Durability.FSYNC, marks=pytest.mark.slow)]
)
def test_writers_keep_writing_while_compaction_runs(tmp_path: Path, durability: Durability) -> None:
    path = tmp_path / "store"
    writers, ops = (3, 2500) if durability is Durability.PROCESS else (3, 400)
    with Engine.open(path, segment_size=64 * 1024) as engine:
        for i in range(15000):  # enough live records that each compaction takes a while
            engine.set(f"base/{i:06d}", b"b" * 30)
        engine.sync()
    engine = Engine.open(path, segment_size=64 * 1024, durability=durability)
    models: list[Model] = [{} for _ in range(writers)]
    results: list[CompactionResult] = []
    overlapped: list[bool] = []  # per compaction: did writes land while it ran?
    errors: list[BaseException] = []
    writing = threading.Event()
    done = threading.Event()

    def write(n: int) -> None:
        rng = random.Random(n)
        model = models[n]
        try:
            writing.set()
            for i in range(ops):
                key = f"w{n}/{rng.randrange(300):04d}"
                if rng.random() < 0.2:
                    assert engine.delete(key) == (key in model)
                    model.pop(key, None)
                else:
                    value = f"{n}:{i}".encode() * rng.randint(0, 6)
                    engine.set(key, value, "text/plain")
                    model[key] = (value, "text/plain")
                if i % 50 == 0:  # reads of own keys see own writes at once
                    probe = f"w{n}/{rng.randrange(300):04d}"
                    expected = model.get(probe)
                    assert engine.get(probe) == (MISSING if expected is None else expected[0])
        except BaseException as exc:
            errors.append(exc)

    def compact() -> None:
        writing.wait()
        retention = ["delete", "archive"]
        try:
            while not done.is_set():
                seq_before = engine.last_seq
                results.append(engine.compact(retention=retention[len(results) % 2]))
                overlapped.append(engine.last_seq > seq_before)
        except BaseException as exc:
            errors.append(exc)

    compactor = threading.Thread(target=compact)
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    compactor.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    compactor.join()
    assert errors == []
    results.append(engine.compact())
    assert len(results) >= 2
    assert any(overlapped)
    for result in results:
        assert isinstance(result.longest_lock_hold_s, float)
        assert result.longest_lock_hold_s >= 0
    expected: Model = {f"base/{i:06d}": (b"b" * 30, None) for i in range(15000)}
    for model in models:
        expected.update(model)
    assert dump(engine) == expected
    engine.close()
    with Engine.open(path) as reopened:
        assert reopened.report.clean
        assert dump(reopened) == expected
    report = verify(path)
    assert report.ok, report.problems


def _fds_into(folder: Path) -> int:
    """How many of this process's descriptors point into ``folder``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(str(folder))
    return count


@pytest.mark.parametrize("when", ["copy", "install"])
def test_close_during_a_compaction_stops_it(tmp_path: Path, when: str) -> None:
    """A compaction in another thread stops at its next step once the store is closed: it
    changes nothing more on disk (the lock is gone: another writer may own the store) and
    leaves no descriptor open."""
    path = tmp_path / "store"
    model: Model = {}
    engine = Engine.open(path, segment_size=SEGMENT_SIZE)
    for i in range(3000):
        engine.set(f"k{i:05d}", b"v" * (i % 50))
        model[f"k{i:05d}"] = (b"v" * (i % 50), None)
    paused, resume = threading.Event(), threading.Event()
    real_add, real_finish = SnapshotWriter.add, SnapshotWriter.finish

    def add(self: SnapshotWriter, frame: bytes, key: str, entry: Entry) -> int:
        if when == "copy" and not paused.is_set():
            paused.set()
            resume.wait()
        return real_add(self, frame, key, entry)

    def finish(self: SnapshotWriter, *args: Any) -> SnapshotInfo:
        info = real_finish(self, *args)
        if when == "install":
            paused.set()
            resume.wait()
        return info

    errors: list[BaseException] = []

    def run() -> None:
        try:
            engine.compact()
        except BaseException as exc:
            errors.append(exc)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SnapshotWriter, "add", add)
        patch.setattr(SnapshotWriter, "finish", finish)
        compactor = threading.Thread(target=run)
        compactor.start()
        assert paused.wait(timeout=60)
        engine.close()
        segments = [n for n, _ in list_segments(path)]
        resume.set()
        compactor.join()
    assert [type(e) for e in errors] == [StoreClosedError]
    assert [n for n, _ in list_segments(path)] == segments  # nothing retired after close
    assert not list(path.glob("*.tmp"))
    assert _fds_into(path) == 0
    assert bool(list_snapshots(path)) == (when == "install")
    with Engine.open(path, segment_size=SEGMENT_SIZE) as reopened:
        assert dump(reopened) == model
        if when == "install":  # the open finished the interrupted compaction
            assert [n for n, _ in list_segments(path)] == [segments[-1]]


# ---------------------------------------------------------------------------- history


def test_history_is_complete_across_compactions_with_archive(tmp_path: Path) -> None:
    path = tmp_path / "store"
    rng = random.Random(3)
    boundaries: list[int] = []
    with Engine.open(path, segment_size=SEGMENT_SIZE, retention="archive") as engine:
        rec = Recorder(engine)
        for _ in range(4):
            rec.churn(rng, 250, keys=60)
            engine.compact()
            boundaries.append(engine.last_seq)
        rec.churn(rng, 100, keys=60)
    engine = Engine.open(path, segment_size=SEGMENT_SIZE, retention="archive")
    rec.engine = engine
    rec.churn(rng, 100, keys=60)
    engine.compact()
    boundaries.append(engine.last_seq)
    rec.churn(rng, 30, keys=60)
    # Read beside the live writer: history needs no lock.
    last = len(rec.states) - 1
    for seq in sample_seqs(last, boundaries, rng):
        assert as_model(state_at(path, until_seq=seq)) == rec.states[seq], seq
    for key in [*rng.sample(sorted(rec.events), 12), "k/0000", "never-written"]:
        assert history_of(key_history(path, key)) == rec.events.get(key, []), key
    assert [logged.record.seq for logged in iter_log(path)] == list(range(1, last + 1))
    report = verify(path)
    assert report.ok, report.problems
    assert report.chain_checked == last
    engine.close()


def test_history_with_retention_delete_starts_at_the_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "store"
    rng = random.Random(4)
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        rec = Recorder(engine)
        rec.churn(rng, 400, keys=50)
        engine.compact(retention="archive")  # history so far is kept ...
        rec.churn(rng, 300, keys=50)
        engine.compact()  # ... until a compaction deletes what it covers
        gap = engine.last_seq
        rec.churn(rng, 200, keys=50)
        last = engine.last_seq
    for seq in sample_seqs(last, [gap], rng):
        if seq < gap:
            with pytest.raises(HistoryGap):
                state_at(path, until_seq=seq)
        else:
            assert as_model(state_at(path, until_seq=seq)) == rec.states[seq], seq
    # key_history lists the records still in the log: those after the snapshot.
    for key in sorted(rec.events):
        expected = [event for event in rec.events[key] if event[0] > gap]
        assert history_of(key_history(path, key)) == expected, key
    report = verify(path)
    assert report.ok, report.problems
    assert report.chain_checked == last - gap  # chained on from the snapshot's chain value


def test_state_at_while_a_compaction_retires_the_log_it_listed(tmp_path: Path) -> None:
    """A compaction that retires the log between a history read's listing of the files and
    its reading them must not make it answer from a log that starts late."""
    path = tmp_path / "store"
    rng = random.Random(6)
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        rec = Recorder(engine)
        rec.churn(rng, 400, keys=40)
        real = history.log_segments
        compactions: list[CompactionResult] = []

        def listing_then_compaction(folder: Path) -> list[tuple[int, Path]]:
            listed = real(folder)
            if not compactions:
                compactions.append(engine.compact())  # retention delete: the log goes
            return listed

        seq = engine.last_seq
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(history, "log_segments", listing_then_compaction)
            assert as_model(state_at(path, until_seq=seq)) == rec.states[seq]
        assert compactions[0].retired_files > 1


def test_history_reads_beside_a_compacting_writer(tmp_path: Path) -> None:
    """History takes no lock: reads racing compactions (both retentions) are exact or a gap."""
    path = tmp_path / "store"
    engine = Engine.open(path, segment_size=SEGMENT_SIZE)
    rec = Recorder(engine)
    rec.churn(random.Random(7), 300, keys=30)
    guard = threading.Lock()  # the recorder's states are read by the other thread
    stop = threading.Event()
    outcomes = {"exact": 0, "gap": 0}
    problems: list[str] = []

    def read() -> None:
        rng = random.Random(8)
        while not stop.is_set():
            with guard:  # one copy: the events are exactly those up to ``last``
                last = len(rec.states) - 1
                seq = rng.randint(max(0, last - 60), last)
                expected = rec.states[seq]
                events = list(rec.events.get("k/0003", []))
            try:
                got = as_model(state_at(path, until_seq=seq))
                found = history_of(key_history(path, "k/0003"))
            except HistoryGap:
                outcomes["gap"] += 1
                continue
            except Exception as exc:
                problems.append(repr(exc))
                continue
            if got != expected:
                problems.append(f"state_at({seq}) is wrong")
            # The changes listed up to the copy of the recorder's events (later ones may have
            # been written since) are the newest of them, in order.
            known = [change for change in found if change[0] <= last]
            if known != events[len(events) - len(known) :]:
                problems.append(f"key_history lists {known[-3:]}, not the latest changes")
            outcomes["exact"] += 1

    reader = threading.Thread(target=read)
    reader.start()
    rng = random.Random(9)
    try:
        for round_ in range(25):
            for _ in range(40):
                with guard:
                    rec.churn(rng, 1, keys=30)
            engine.compact(retention="archive" if round_ % 3 else "delete")
    finally:
        stop.set()
        reader.join()
        engine.close()
    assert problems == []
    assert outcomes["exact"] > 0


def test_state_at_a_time_is_exact_or_a_gap_never_wrong(tmp_path: Path) -> None:
    """``until_us`` before the snapshot's last record must not be answered from the snapshot:
    a record it folded in (an overwrite, a delete) may come after that time."""
    path = tmp_path / "store"
    with Engine.open(path) as engine:
        rec = Recorder(engine)
        rec.set("a", b"1")
        rec.set("b", b"2")
        rec.set("c", b"3")
        rec.delete("b")  # the snapshot will not show b at all
        rec.set("c", b"4")
        times = [logged.record.timestamp_us for logged in iter_log(path)]
        engine.compact()
        rec.set("d", b"5")
        times.append(next(iter(key_history(path, "d"))).record.timestamp_us)

    def prefix_state(until_us: int) -> Model:
        seq = 0
        while seq < len(times) and times[seq] <= until_us:
            seq += 1
        return rec.states[seq]

    answered = 0
    for moment in sorted({t + d for t in times for d in (-1, 0, 1)}):
        try:
            got = as_model(state_at(path, until_us=moment))
        except HistoryGap:
            assert moment < times[4]  # only before the snapshot's last record
            continue
        assert got == prefix_state(moment), moment
        answered += 1
    assert answered >= 3  # the snapshot's moment and everything after it are answered


def test_verify_is_clean_on_good_stores(tmp_path: Path) -> None:
    rng = random.Random(5)
    fresh, compacted = tmp_path / "fresh", tmp_path / "compacted"
    with Engine.open(fresh, segment_size=SEGMENT_SIZE) as engine:
        Recorder(engine).churn(rng, 500)
        written = engine.last_seq
    report = verify(fresh)
    assert report.ok, report.problems
    assert report.records == report.chain_checked == written
    with Engine.open(compacted, segment_size=SEGMENT_SIZE) as engine:
        rec = Recorder(engine)
        rec.churn(rng, 500)
        engine.compact(retention="archive")
        rec.churn(rng, 100)
        engine.compact()
        at_snapshot = engine.last_seq
        rec.churn(rng, 100)
        written = engine.last_seq
    report = verify(compacted)
    assert report.ok, report.problems
    assert report.snapshot_records == len(rec.states[at_snapshot])
    assert report.chain_checked == written - at_snapshot


def rewrite_record(path: Path, offset: int, new_body: bytes, chain: bytes | None = None) -> None:
    """Replace the body of the frame at ``offset`` (same length) and recompute its CRC, as a
    tamperer would; optionally also replace its chain value."""
    data = bytearray(path.read_bytes())
    _, _, length = struct.unpack_from("<4sII", data, offset)
    assert len(new_body) == length
    if chain is not None:
        data[offset + 12 : offset + 28] = chain
    data[offset + FRAME_HEADER_SIZE : offset + FRAME_HEADER_SIZE + length] = new_body
    crc = checksum(bytes(data[offset + 8 : offset + FRAME_HEADER_SIZE + length]))
    struct.pack_into("<I", data, offset + 4, crc)
    path.write_bytes(bytes(data))


def _find(path: Path, seq: int) -> LoggedRecord:
    return next(logged for logged in iter_log(path) if logged.record.seq == seq)


@pytest.mark.parametrize("archived", [False, True])
def test_verify_finds_the_first_broken_link_of_a_tampered_record(
    tmp_path: Path, archived: bool
) -> None:
    path = tmp_path / "store"
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        for i in range(400):
            engine.set(f"account/{i % 40:03d}", f"balance={i:05d}".encode())
        if archived:
            engine.compact(retention="archive")
            engine.set("after", b"compaction")
    victim, second = _find(path, 123), _find(path, 321)
    body = victim.path.read_bytes()[
        victim.offset + FRAME_HEADER_SIZE : victim.offset + victim.length
    ]
    assert b"balance=00122" in body
    rewrite_record(victim.path, victim.offset, body.replace(b"balance=00122", b"balance=99999"))
    body2 = second.path.read_bytes()[
        second.offset + FRAME_HEADER_SIZE : second.offset + second.length
    ]
    rewrite_record(second.path, second.offset, body2.replace(b"balance=00320", b"balance=00000"))

    # The CRCs are right, so a strict open accepts the forgery ...
    with Engine.open(path, readonly=True) as reader:
        assert reader.report.clean
        assert reader.get("account/002") is not None
    # ... the chain does not.
    report = verify(path)
    assert not report.ok
    assert report.problems is not None
    chain_problems = [p for p in report.problems if "hash chain" in p]
    assert len(chain_problems) == 1  # the first broken link only
    assert "sequence 123 " in chain_problems[0]
    assert str(victim.path) in chain_problems[0]
    assert report.chain_checked == 122


def test_verify_catches_a_forgery_that_also_rewrote_its_own_chain_value(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with Engine.open(path) as engine:
        for i in range(50):
            engine.set(f"k{i}", f"value {i:03d}".encode())
    victim = _find(path, 20)
    previous = _find(path, 19).chain
    data = victim.path.read_bytes()
    body = data[victim.offset + FRAME_HEADER_SIZE : victim.offset + victim.length]
    forged = body.replace(b"value 019", b"value 666")
    chain = FRAME_KINDS[RECORD_MAGIC].chain(previous, forged)
    rewrite_record(victim.path, victim.offset, forged, chain=chain)
    report = verify(path)
    assert report.problems is not None
    assert len(report.problems) == 1
    assert "sequence 21 " in report.problems[0]  # the next record no longer chains on


def test_verify_catches_a_snapshot_record_swapped_for_another_key(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with Engine.open(path) as engine:
        engine.set("b", b"beta")
        engine.set("c", b"gamma")
        result = engine.compact()
        entry = engine.entry("b")
    assert result.snapshot is not None and entry is not None
    assert verify(path).ok
    data = result.snapshot.read_bytes()
    body = data[entry[1] + FRAME_HEADER_SIZE : entry[1] + entry[2] + entry[3]]
    rewrite_record(result.snapshot, entry[1], body.replace(b"\xa1b", b"\xa1c"))
    report = verify(path)
    assert not report.ok
    assert report.problems is not None
    assert any("'c'" in p and "'b'" in p for p in report.problems)


@pytest.mark.parametrize("retention", ["delete", "archive"])
@pytest.mark.parametrize("write_between", [False, True])
def test_a_reader_refreshed_at_every_step_of_a_compaction_sees_whole_states(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, retention: str, write_between: bool
) -> None:
    """A read-only open beside the writer, refreshed between any two steps of its compaction
    (rotation, snapshot install, index switch, retirement, end), sees a state the writer had
    (the newest one once refreshed): never an error, never a mix. With ``write_between``
    the writer also sets a key at each step (writes go on during compaction)."""
    path = tmp_path / "store"
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        for i in range(600):
            engine.set(f"k{i % 90}", f"{i}".encode() * 12)
        states = [dump(engine)]
        with Engine.open(path, readonly=True) as reader:
            seen: list[Model] = []
            steps = 0

            def step_done() -> None:
                nonlocal steps
                if write_between:
                    steps += 1
                    engine.set(f"during{steps}", b"d" * steps)
                    states.append(dump(engine))
                reader.refresh()
                seen.append(dump(reader))
                assert seen[-1] == states[-1]

            def around(owner: Any, name: str) -> None:
                step = getattr(owner, name)

                def wrapped(*args: Any, **kwargs: Any) -> Any:
                    step_done()
                    try:
                        return step(*args, **kwargs)
                    finally:
                        step_done()

                monkeypatch.setattr(owner, name, wrapped)

            for name in ("rotate_for_compaction", "install_stored_keys", "retire_covered"):
                around(Engine, name)
            around(Engine, "end_compaction")
            around(SnapshotWriter, "finish")
            engine.compact(retention=retention)
            monkeypatch.undo()
            step_done()
            assert len(seen) >= 10
    assert verify(path).ok
