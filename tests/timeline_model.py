"""What the tests of the console's timelines and history index share: random writer
operations, and the check of every key's timeline against a full read of its history."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hypothesis import strategies as st

from logkv import Engine
from logkv.cli.audit import key_changes
from logkv.format import SetRecord
from logkv.web.key_index import HistoryIndexes, StoreIndex
from logkv.web.opened import OpenedStores
from logkv.web.timelines import Timelines, read_version

KEYS = ("a", "b", "c")

# An op: (0 set, 1 delete, 2 compact archive, 3 compact delete, 4 look), key index, size.
OPS = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, len(KEYS) - 1), st.integers(0, 900)),
    max_size=40,
)


def same_as_full_read(opened: OpenedStores, timelines: Timelines, folder: Path) -> None:
    """Every key's timeline is what a full read of its history says, values included."""
    for key in KEYS:
        timeline = timelines.get(opened, folder, key)
        full = key_changes(folder, key)
        assert [(v.seq, v.op, v.size, v.content_type) for v in timeline.versions] == [
            (c.seq, c.op, c.size, c.content_type) for c in full.changes
        ], key
        assert timeline.starts_at == full.starts_at
        for version, change in zip(timeline.versions, full.changes, strict=True):
            record = read_version(version)
            if change.op == "set":
                assert isinstance(record, SetRecord) and record.value == change.value


def run_ops(writer: Engine, ops: list[tuple[int, int, int]], look: Callable[[], None]) -> None:
    """Apply ``ops`` with ``writer``, calling ``look`` for each look and once at the end."""
    writer.set("a", b"first")
    for op, k, size in ops:
        key = KEYS[k]
        if op == 0:
            writer.set(key, bytes([65 + size % 26]) * size, "text/plain")
        elif op == 1:
            writer.delete(key)
        elif op in (2, 3):
            writer.compact("archive" if op == 2 else "delete")
        else:
            look()
    look()


def written(folder: Path, count: int, value: str = "{}") -> None:
    """A store at ``folder`` with ``count`` records over :data:`KEYS` (values ``value``
    formatted with the record's number)."""
    with Engine.open(folder) as writer:
        for i in range(count):
            writer.set(KEYS[i % len(KEYS)], value.format(i).encode())


def indexed_console(kept_stores: int = 4) -> tuple[OpenedStores, Timelines]:
    """A console's opens and timelines that index each store it uses, with no timeline
    kept: every view is a first view (read from the index once it is ready)."""
    timelines = Timelines(kept=0, indexes=HistoryIndexes(kept_stores))
    return OpenedStores(on_use=timelines.indexes.ensure), timelines


def index_ready(opened: OpenedStores, timelines: Timelines, folder: Path) -> StoreIndex:
    """The index of the store at ``folder``, once its build for the current snapshot ended."""
    with opened.use(folder) as store:
        covers = store.engine.snapshot_covers
    timelines.indexes.join()
    index = timelines.indexes.ready(folder, covers)
    assert index is not None
    return index


def with_last_record_to_tear(folder: Path) -> tuple[Path, bytes]:
    """A store of six changes of ``k`` (five, then one more after another key's record) with
    no synced mark, as a writer mid-append leaves it: its last segment and that segment's bytes
    (the caller cuts the last record short)."""
    with Engine.open(folder) as writer:
        for i in range(5):
            writer.set("k", f"value {i}".encode())
        writer.set("other", b"x" * 100)
        writer.set("k", b"the last one, torn at first")
    segment = sorted(folder.glob("*.seg"))[-1]
    (folder / "SYNCED").unlink()  # a writer mid-append: nothing synced past the cut
    return segment, segment.read_bytes()
