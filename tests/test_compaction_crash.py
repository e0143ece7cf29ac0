"""Crashes at every step of a compaction: injected failures, and real SIGKILLs.

Each step of :func:`logkv.compaction.compact` (rotate, copy, install, switch, retire) is made to
fail part-way by patching the function that runs it. Afterwards the store is either used on
(the failure was an exception the caller caught) or abandoned as a killed process leaves it
(no cleanup: the temp snapshot stays, the lock and descriptors are simply dropped). Either way
the next open must find every acknowledged write, no deleted key back, no key twice, no
``*.tmp`` file left, and a later compaction must work. The real thing follows: a child process
compacting a 20,000-record store while another thread writes is killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_command
from store_model import Model, dump

from logkv import Engine
from logkv import compaction as compaction_module
from logkv import snapshot as snapshot_module
from logkv.fsutil import fsync_dir, write_all
from logkv.history import key_history
from logkv.index import Index
from logkv.layout import ARCHIVE_DIR, TEMP_SUFFIX, list_segments, list_snapshots
from logkv.modes import Retention
from logkv.snapshot import SnapshotWriter
from logkv.verify import verify

SEGMENT_SIZE = 4096


class InjectedCrash(Exception):
    """The failure a test injects into a compaction step."""


class Store:
    """An engine plus the model of what it must hold and every change of a few watched keys."""

    WATCHED = ("k/00003", "k/00010", "k/00021", "k/00600")

    def __init__(self, path: Path, retention: str) -> None:
        self.path = path
        self.retention = retention
        self.engine = Engine.open(path, segment_size=SEGMENT_SIZE, retention=retention)
        self.model: Model = {}
        self.history: dict[str, list[tuple[int, bytes | None]]] = {k: [] for k in self.WATCHED}

    def set(self, i: int, tag: str) -> None:
        key = f"k/{i:05d}"
        value = None if i % 13 == 0 else f"{tag}:{i}".encode() * (1 + i % 4)
        seq = self.engine.set(key, value, "text/plain")
        self.model[key] = (value, "text/plain")
        if key in self.history:
            self.history[key].append((seq, value))

    def delete(self, i: int) -> None:
        key = f"k/{i:05d}"
        if self.engine.delete(key):
            del self.model[key]
            if key in self.history:
                self.history[key].append((self.engine.last_seq, b"<deleted>"))

    def prepare(self) -> None:
        """A first snapshot, then overwrites, deletes (of keys in that snapshot too) and new
        keys in the log after it."""
        for i in range(600):
            self.set(i, "first")
        for i in range(0, 600, 5):
            self.delete(i)
        self.engine.compact()
        for i in range(0, 600, 3):
            self.set(i, "second")
        for i in range(0, 700, 7):
            self.delete(i)
        for i in range(600, 700):
            self.set(i, "new")

    def write_meanwhile(self) -> None:
        """Writes that land while the compaction runs (after its rotation)."""
        self.set(1, "meanwhile")  # an early key: copied already
        self.set(598, "meanwhile")  # a late key: not copied yet
        self.delete(597)
        self.delete(21)
        self.set(5000, "meanwhile")  # a new key

    def abandon(self) -> None:
        """Drop the engine as a killed process would: no flush, no cleanup, lock released."""
        self.engine._release()
        self.engine._closed = True


def check_reopened(store: Store) -> None:
    """The checks after any failure: open, compare, compact again, compare again."""
    with Engine.open(store.path, segment_size=SEGMENT_SIZE, retention=store.retention) as engine:
        assert not list(store.path.glob("*" + TEMP_SUFFIX))
        assert not engine.report.damaged_snapshots
        assert len(list_snapshots(store.path)) <= 1
        covers = engine.stats().snapshot_covers
        assert all(n > covers for n, _ in list_segments(store.path))
        keys = list(engine.keys())
        assert keys == sorted(set(keys))  # no key twice
        assert dump(engine) == store.model  # nothing lost, no delete undone
        engine.set("k/09999", b"after the crash")
        store.model["k/09999"] = (b"after the crash", None)
        result = engine.compact()  # a compaction after the failure works
        assert result.snapshot is not None
        assert dump(engine) == store.model
    with Engine.open(store.path, readonly=True) as reader:
        assert reader.report.clean
        assert dump(reader) == store.model
    report = verify(store.path)
    assert report.ok, report.problems
    if store.retention == "archive":  # the whole history is still there
        for key, changes in store.history.items():
            found = [
                (r.record.seq, getattr(r.record, "value", b"<deleted>"))
                for r in key_history(store.path, key)
            ]
            assert found == changes, key


# ---------------------------------------------------------------------------- the faults


def fail_on_call(n: int, real: Callable[..., Any], before: Callable[[], None] | None = None) -> Any:
    """A stand-in for ``real`` that raises :class:`InjectedCrash` on its ``n``-th call."""
    calls = [0]

    def stand_in(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1 and before is not None:
            before()
        if calls[0] == n:
            raise InjectedCrash(f"{getattr(real, '__name__', real)} failed on call {n}")
        return real(*args, **kwargs)

    return stand_in


def partial_retire(count: int) -> Callable[..., list[int]]:
    """A ``retire_files`` that retires only the first ``count`` covered segments."""

    def retire(folder: Path, covers: int, retention: Retention, *, sync: bool = True) -> list[int]:
        for number, path in list_segments(folder)[:count]:
            assert number <= covers
            if retention is Retention.ARCHIVE:
                (folder / ARCHIVE_DIR).mkdir(exist_ok=True)
                os.replace(path, folder / ARCHIVE_DIR / path.name)
            else:
                path.unlink()
        raise InjectedCrash("retire failed part-way")

    return retire


Fault = Callable[[pytest.MonkeyPatch, Store], None]


def _meanwhile_on_first_add(patch: pytest.MonkeyPatch, store: Store, fail_at: int = 0) -> None:
    real = SnapshotWriter.add
    stand_in = fail_on_call(fail_at or 1 << 30, real, store.write_meanwhile)
    patch.setattr(SnapshotWriter, "add", stand_in)


def rotate_header(patch: pytest.MonkeyPatch, store: Store) -> None:
    patch.setattr("logkv.segments.write_all", fail_on_call(1, write_all))


def copy_first_record(patch: pytest.MonkeyPatch, store: Store) -> None:
    _meanwhile_on_first_add(patch, store, fail_at=1)


def copy_middle(patch: pytest.MonkeyPatch, store: Store) -> None:
    _meanwhile_on_first_add(patch, store, fail_at=300)


def finish_fsync(patch: pytest.MonkeyPatch, store: Store) -> None:
    _meanwhile_on_first_add(patch, store)
    patch.setattr(os, "fsync", fail_on_call(1, os.fsync))  # the temp snapshot's fsync


def install_rename(patch: pytest.MonkeyPatch, store: Store) -> None:
    _meanwhile_on_first_add(patch, store)
    patch.setattr(os, "replace", fail_on_call(1, os.replace))  # temp -> NNNNNNNN.snap


def install_fsync_dir(patch: pytest.MonkeyPatch, store: Store) -> None:
    _meanwhile_on_first_add(patch, store)
    patch.setattr("logkv.snapshot.fsync_dir", fail_on_call(1, fsync_dir))  # after the rename


def install_stored(patch: pytest.MonkeyPatch, store: Store) -> None:
    """The step that makes the snapshot's keys the index's stored keys, in one hold."""
    _meanwhile_on_first_add(patch, store)
    patch.setattr(Index, "take_stored", fail_on_call(1, Index.take_stored))


def forget_older_middle(patch: pytest.MonkeyPatch, store: Store) -> None:
    """Between two batches of dropping the entries from before the rotation."""
    _meanwhile_on_first_add(patch, store)
    patch.setattr(Index, "forget_older", fail_on_call(2, Index.forget_older))
    patch.setattr(compaction_module, "_BATCH", 1)


def switch_first(patch: pytest.MonkeyPatch, store: Store) -> None:
    """The switch a key at a time (a snapshot with no key table: keys crafted to collide)."""
    _meanwhile_on_first_add(patch, store)
    patch.setattr(snapshot_module, "build_key_table", lambda keys: None)
    patch.setattr(SnapshotWriter, "entry", fail_on_call(1, SnapshotWriter.entry))


def switch_middle(patch: pytest.MonkeyPatch, store: Store) -> None:
    _meanwhile_on_first_add(patch, store)
    patch.setattr(snapshot_module, "build_key_table", lambda keys: None)
    patch.setattr(SnapshotWriter, "entry", fail_on_call(520, SnapshotWriter.entry))


def retire_part_way(patch: pytest.MonkeyPatch, store: Store) -> None:
    _meanwhile_on_first_add(patch, store)
    patch.setattr("logkv.compaction.retire_files", partial_retire(2))


def retire_before_fsync(patch: pytest.MonkeyPatch, store: Store) -> None:
    _meanwhile_on_first_add(patch, store)
    patch.setattr("logkv.retire.fsync_dir", fail_on_call(1, fsync_dir))


def after_retire(patch: pytest.MonkeyPatch, store: Store) -> None:
    _meanwhile_on_first_add(patch, store)
    readers = store.engine._readers
    patch.setattr(readers, "retire", fail_on_call(1, readers.retire))


#: Each fault, and whether the new snapshot was already installed when it struck.
FAULTS: dict[str, Fault] = {
    "rotate-header": rotate_header,
    "copy-first-record": copy_first_record,
    "copy-middle": copy_middle,
    "finish-fsync": finish_fsync,
    "install-rename": install_rename,
    "install-fsync-dir": install_fsync_dir,
    "install-stored": install_stored,
    "forget-older-middle": forget_older_middle,
    "switch-first": switch_first,
    "switch-middle": switch_middle,
    "retire-part-way": retire_part_way,
    "retire-before-fsync": retire_before_fsync,
    "after-retire": after_retire,
}
INSTALLED_BEFORE = {
    "install-fsync-dir",
    "install-stored",
    "forget-older-middle",
    "switch-first",
    "switch-middle",
    "retire-part-way",
    "retire-before-fsync",
    "after-retire",
}


@pytest.mark.parametrize("mode", ["caught", "crashed"])
@pytest.mark.parametrize("retention", ["delete", "archive"])
@pytest.mark.parametrize("fault", FAULTS)
def test_failure_at_every_step_of_a_compaction(
    tmp_path: Path, fault: str, retention: str, mode: str
) -> None:
    store = Store(tmp_path / "store", retention)
    store.prepare()
    [(first_covers, _)] = list_snapshots(store.path)
    patch = pytest.MonkeyPatch()
    try:
        FAULTS[fault](patch, store)
        if mode == "crashed":  # a killed process cleans nothing up
            patch.setattr(SnapshotWriter, "abort", lambda self: self._file.close())
        with pytest.raises(InjectedCrash):
            store.engine.compact()
    finally:
        patch.undo()
    # The fault struck at the step it names: before or after the new snapshot's install.
    installed = list_snapshots(store.path)[-1][0] > first_covers
    assert installed == (fault in INSTALLED_BEFORE)
    if mode == "crashed" and fault.startswith(("copy", "finish")):
        assert list(store.path.glob("*.snap" + TEMP_SUFFIX))  # the crash left its temp file
    if mode == "crashed":
        store.abandon()
    else:
        # The caught failure left a working store: it reads and writes as before, and the
        # next compaction finishes the job.
        assert not list(store.path.glob("*" + TEMP_SUFFIX))  # the failed attempt cleaned up
        assert dump(store.engine) == store.model
        store.set(7001, "after-failure")
        store.delete(2)
        store.engine.compact()
        assert dump(store.engine) == store.model
        store.engine.close()
    check_reopened(store)


def test_two_failed_compactions_in_a_row_then_one_that_works(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", "archive")
    store.prepare()
    for fault in (switch_middle, retire_part_way):
        patch = pytest.MonkeyPatch()
        try:
            fault(patch, store)
            with pytest.raises(InjectedCrash):
                store.engine.compact()
        finally:
            patch.undo()
        assert dump(store.engine) == store.model
    store.engine.compact()
    assert dump(store.engine) == store.model
    store.abandon()
    check_reopened(store)


@pytest.mark.parametrize("fault", ["install-fsync-dir", "switch-middle", "retire-part-way"])
def test_an_interrupted_archive_compaction_is_finished_as_archive(
    tmp_path: Path, fault: str
) -> None:
    """The open that finishes a crashed compaction archives what it covers, as that
    compaction was asked to, even when the store is reopened with retention delete."""
    store = Store(tmp_path / "store", "archive")
    store.prepare()
    with pytest.MonkeyPatch.context() as patch:
        FAULTS[fault](patch, store)
        patch.setattr(SnapshotWriter, "abort", lambda self: self._file.close())
        with pytest.raises(InjectedCrash):
            store.engine.compact()
    store.abandon()
    with Engine.open(store.path, retention="delete") as engine:
        assert dump(engine) == store.model
    for key, changes in store.history.items():
        found = [
            (r.record.seq, getattr(r.record, "value", b"<deleted>"))
            for r in key_history(store.path, key)
        ]
        assert found == changes, key


# ---------------------------------------------------------------------------- real SIGKILLs


@pytest.mark.slow
def test_sigkill_during_compactions_loses_no_acknowledged_write(tmp_path: Path) -> None:
    store = tmp_path / "store"
    rounds = 6
    options = ["--json", "--seed", "7", "--rounds", str(rounds), "--records", "20000"]
    done = run_command(
        *options, "--store", store, module="tools.compaction_torture", text=True, timeout=300
    )
    summary = json.loads(done.stdout)
    assert summary["problems"] == [], done.stderr
    assert done.returncode == 0
    assert summary["ok"] is True
    assert summary["rounds"] == summary["kills"] == rounds  # every child died by SIGKILL
    assert summary["kills_during_compaction"] >= rounds // 2  # the kills hit compactions
    assert summary["acked_ops"] > rounds  # and the writer thread wrote meanwhile
    assert summary["parent_compactions"] == rounds // 2
    assert isinstance(summary["longest_lock_hold_s"], float)
    assert summary["longest_lock_hold_s"] >= 0
    with Engine.open(store) as engine:
        assert engine.report.clean
        assert len(engine) == summary["keys"]
    report = verify(store)
    assert report.ok, report.problems
