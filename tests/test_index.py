"""The index against a dict: point operations, and ordered reads that merge fresh keys a batch
at a time, also while other threads write."""

from __future__ import annotations

import gc
import threading
from array import array
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logkv import Engine
from logkv import hints as hints_module
from logkv import index as index_module
from logkv.index import (
    HEAD_OVER_SIZE,
    MAX_FILE,
    MAX_HEAD,
    MAX_OFFSET,
    MAX_SIZE,
    MAX_STREAMED_SIZE,
    MERGE_BATCH,
    ROW_LIMIT,
    SIZE_SHIFT,
    Index,
    RowTable,
    entry_base,
    pack,
    packed_file,
    packed_frame_length,
    packed_size,
    packed_type_id,
    unpack,
    value_size,
)
from logkv.replay import Entry

keys = st.text(alphabet="abcdé\U0001f600", min_size=1, max_size=4)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys, st.integers(0, 10**6)),
        st.tuples(st.just("remove"), keys, st.just(0)),
        st.tuples(st.just("after"), st.one_of(st.none(), keys), st.integers(0, 12)),
        st.tuples(st.just("merge some"), st.just(""), st.just(0)),
    ),
    max_size=200,
)


def entry(n: int) -> Entry:
    return (1, n, 40, n % 97, None)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(initial=st.dictionaries(keys, st.integers(0, 10**6), max_size=30), steps=steps)
def test_index_matches_a_dict_and_sorted(
    initial: dict[str, int], steps: list[tuple[str, object, int]]
) -> None:
    model = {k: entry(v) for k, v in initial.items()}
    index = Index(dict(model))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(index_module, "MERGE_BATCH", 3)  # merges in several batches
        for op, key, n in steps:
            if op == "put":
                assert isinstance(key, str)
                assert index.put(key, entry(n)) == model.get(key)
                model[key] = entry(n)
            elif op == "remove":
                assert isinstance(key, str)
                assert index.remove(key) == model.pop(key, None)
            elif op == "after":
                expected = sorted(k for k in model if key is None or k > key)[:n]  # type: ignore[operator]
                assert index.after(key, n) == expected  # type: ignore[arg-type]
            else:
                index.merge_some()
            assert len(index) == len(model)
            assert all(index.get(k) == v for k, v in model.items())
            # Every key is either sorted or fresh, never both, and nothing else is.
            assert set(index._sorted).isdisjoint(index._fresh)
            assert set(index._sorted) | index._fresh == set(model)
            assert len(index._sorted) + index.unsorted == len(model)
    assert index.after(None, 10**6) == sorted(model)


def test_fresh_keys_merge_a_batch_at_a_time() -> None:
    index = Index({f"k{i:05d}": entry(i) for i in range(0, 2 * MERGE_BATCH, 2)})
    for i in range(1, 6 * MERGE_BATCH, 2):
        index.put(f"k{i:05d}", entry(i))
    assert index.unsorted == 3 * MERGE_BATCH
    assert index.merge_some() and index.unsorted == 2 * MERGE_BATCH
    assert index.merge_some() and index.merge_some() is False
    assert index.after("k00010", 3) == ["k00011", "k00012", "k00013"]
    index.put("k00000x", entry(1))  # one fresh key: merged by the ordered read
    index.remove("k00001")
    assert index.after(None, 3) == ["k00000", "k00000x", "k00002"]
    assert index.after(None, 10**6) == sorted(index.packed)


def test_a_key_removed_and_put_again_before_a_merge_is_listed_once() -> None:
    index = Index({"b": entry(1)})
    index.put("a", entry(2))
    index.remove("a")
    index.put("a", entry(3))
    index.remove("b")
    index.put("b", entry(4))
    assert index.after(None, 10) == ["a", "b"]
    assert index.get("a") == entry(3)


def test_ordered_reads_while_many_new_keys_are_merged_and_written(tmp_path: Path) -> None:
    """Engine level: many fresh keys are merged a batch per hold of the lock while writers add
    and delete keys and readers page through the store; every listing is exact."""
    with Engine.open(tmp_path / "store") as engine:
        for i in range(20_000):
            engine.set(f"base-{i:06d}", b"v")
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer(prefix: str) -> None:
            i = 0
            try:
                while not stop.is_set():
                    engine.set(f"{prefix}-{i:06d}", b"w")
                    if i % 3 == 0:
                        engine.delete(f"base-{i % 20_000:06d}")
                    i += 1
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(p,)) for p in ("new", "other")]
        for thread in threads:
            thread.start()
        try:
            for _ in range(3):
                listed = list(engine.keys())
                assert listed == sorted(set(listed)), "pages out of order or repeated"
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert errors == []
        assert list(engine.keys()) == sorted(engine._index.packed)


@given(st.lists(keys, max_size=60), keys, keys)
def test_count_range_counts_the_keys_between_two_bounds(
    present: list[str], low: str, high: str
) -> None:
    index = Index()
    for n, key in enumerate(present):
        index.put(key, entry(n))
    assert index.count_range(low, high) == sum(low <= key < high for key in set(present))


def test_engine_count_keys_sees_keys_not_yet_merged(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "store") as engine:
        for key in ("p/1", "p/2", "r/1", "r/2", "r/3"):
            engine.set(key, b"")
        assert engine.count_keys("p/", "p0") == 2
        assert engine.count_keys("r/", "r0") == 3
        assert engine.count_keys("s", "t") == 0


sizes = st.one_of(
    st.sampled_from([-1, 0, 1, MAX_SIZE, -2, -3, -2 - MAX_STREAMED_SIZE]),
    st.integers(-1, MAX_SIZE),  # a value in the log, or a stored None (-1)
    st.integers(-2 - MAX_STREAMED_SIZE, -2),  # a streamed value: -2 - its size
)


@given(
    file_id=st.integers(-MAX_FILE, MAX_FILE),
    offset=st.integers(0, MAX_OFFSET),
    head=st.integers(0, MAX_HEAD),
    size=sizes,
    type_id=st.integers(0, 300),
)
def test_pack_and_unpack_round_trip_every_size(
    file_id: int, offset: int, head: int, size: int, type_id: int
) -> None:
    """A packed entry gives back every field exactly: stored Nones, values in the log of any
    size, and streamed values (size field -2 - their size, far beyond what the log holds)."""
    names: list[str | None] = [None, *(f"t{i}" for i in range(1, 301))]
    packed = pack(file_id, offset, head, size, type_id)
    assert unpack(packed, names) == (file_id, offset, head, size, names[type_id])
    assert packed_file(packed) == file_id
    assert packed_size(packed) == size
    assert packed_type_id(packed) == type_id
    assert packed_frame_length(packed) == (head + size if size > 0 else head)
    entry = unpack(packed, names)
    assert value_size(entry) == (size if size >= 0 else 0 if size == -1 else -2 - size)
    index = Index({"k": entry})
    assert index.get("k") == entry
    index._check()
    if size >= -1 and file_id:  # what an append packs: the index's base of file and type
        content_type = names[type_id]
        for other in (file_id, file_id - 1 if file_id > 1 else file_id + 1, file_id):
            base = index.base(other, content_type)  # another file between: a base of its own
        assert base == entry_base(file_id, index.types.id(content_type))
        appended = base | offset | (head << HEAD_OVER_SIZE | size + 1) << SIZE_SHIFT
        assert unpack(appended, index.types.names) == entry


def test_the_index_holds_nothing_the_garbage_collector_tracks(tmp_path: Path) -> None:
    """Entries are ints in a dict of str -> int: neither is tracked, so no collection walks
    the index, and an overwrite allocates nothing tracked (after an open from a snapshot, a
    hinted segment and a scanned one alike)."""
    path = tmp_path / "store"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hints_module, "MIN_HINTED_SEGMENT", 0)  # hints for these tiny segments
        _fill_compact_and_hint(path)
    assert list(path.glob("*.hint"))  # the open applies hints, scans the last segment
    with Engine.open(path) as engine:
        index = engine._index
        assert not gc.is_tracked(index.packed)
        assert all(type(p) is int for p in index.packed.values())
        for i in range(500):
            engine.set(f"k{i % 150:03d}", b"x", "text/plain")
            engine.delete(f"k{(i * 7) % 150:03d}")
        assert not gc.is_tracked(index.packed)
        assert all(type(p) is int for p in index.packed.values())
        assert not any(gc.is_tracked(p) for p in index.packed.values())


def _fill_compact_and_hint(path: Path) -> None:
    with Engine.open(path, segment_size=4096) as engine:
        for i in range(300):
            engine.set(f"k{i % 120:03d}", b"v" * (i % 50), "text/plain" if i % 3 else None)
        engine.compact()
        for i in range(200):
            engine.set(f"k{i % 150:03d}", None if i % 7 == 0 else b"w" * i, "application/json")
        engine.wait_for_hints()


def test_row_references_read_their_table_and_are_let_go(tmp_path: Path) -> None:
    """Entries loaded in bulk from a hint are row references into its columns: they unpack
    (and give file, size and frame length) exactly as packed entries do, a compaction lets go
    of the tables of the files it retired, and a dropped index lets go of the rest."""
    index = Index()
    table = RowTable(
        5,
        array("Q", [16, 70, 200]),
        array("I", [40, 44, 90]),
        array("q", [3, -1, -2 - (1 << 40)]),
        array("I", [0, 1, 0]),
        ["text/plain", None],
    )
    refs = index.add_rows(table)
    assert refs is not None and all(0 <= r < ROW_LIMIT for r in refs)
    index.packed = dict(zip(["a", "b", "c"], refs, strict=True))
    index.sort_all()
    index._check()
    assert index.get("a") == (5, 16, 40, 3, "text/plain")
    assert index.get("b") == (5, 70, 44, -1, None)
    assert index.get("c") == (5, 200, 90, -2 - (1 << 40), "text/plain")
    assert [packed_file(r) for r in refs] == [5, 5, 5]
    assert [packed_size(r) for r in refs] == [3, -1, -2 - (1 << 40)]
    assert [packed_frame_length(r) for r in refs] == [43, 44, 90]
    index.put("a", (6, 16, 40, 1, None))
    index.remove("b")
    index.drop_rows(4)  # a compaction of segments 1..4 leaves segment 5 referenced
    index._check()
    assert index.get("c") == (5, 200, 90, -2 - (1 << 40), "text/plain")
    slot = refs[0] >> index_module.ROW_SHIFT
    assert index_module._row_tables[slot] is table
    index.put("c", (6, 60, 40, 1, None))
    index.drop_rows(5)
    assert index_module._row_tables[slot] is index_module.RELEASED
    index._check()
    again = Index()
    refs = again.add_rows(table)
    assert refs is not None
    slot = refs[0] >> index_module.ROW_SHIFT
    del again
    gc.collect()
    assert index_module._row_tables[slot] is index_module.RELEASED


def test_an_open_from_hints_then_compaction_keeps_no_stale_row_reference(tmp_path: Path) -> None:
    """After an open that loads a snapshot and segment hints, overwrites, deletes and a
    compaction leave every entry pointing at a live file, with the same values."""
    path = tmp_path / "store"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hints_module, "MIN_HINTED_SEGMENT", 0)
        _fill_compact_and_hint(path)
        with Engine.open(path, segment_size=4096) as engine:
            expected = {k: engine.get(k) for k in list(engine.keys())}
            assert any(0 <= p < ROW_LIMIT for _, p in engine._index.items())
            for i in range(40):
                engine.set(f"k{i * 3:03d}", b"n" * i)
                expected[f"k{i * 3:03d}"] = b"n" * i
                engine.delete(f"k{i * 3 + 1:03d}")
                expected.pop(f"k{i * 3 + 1:03d}", None)
            engine.compact()
            engine._check()
            # the only row table left is the new snapshot's: its keys are the stored keys
            [slot] = engine._index._rows
            assert index_module._row_tables[slot].file_id == -engine.stats().snapshot_covers
            refs = [p for _, p in engine._index.items() if 0 <= p < ROW_LIMIT]
            assert refs and all(p >> index_module.ROW_SHIFT == slot for p in refs)
            assert {k: engine.get(k) for k in list(engine.keys())} == expected
