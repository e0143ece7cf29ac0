"""The stored key table of a snapshot and the index's stored keys: every key found at its row,
crafted collisions costing only the table, a malformed table refused, an index over stored keys
agreeing with a dict through writes, deletes and a compaction, and ``verify`` catching a table
that does not find its keys."""

from __future__ import annotations

import doctest
import random
import time
import zlib
from array import array
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from logkv import Engine, key_table
from logkv import snapshot as snapshot_module
from logkv import turns as turns_module
from logkv.blocks import TAIL, encode_block, read_block
from logkv.errors import CorruptionError
from logkv.hints import Columns
from logkv.index import Index, RowTable, pack, packed_file
from logkv.key_table import MAX_PROBES, KeyTable, build, encode, table_bits
from logkv.layout import list_snapshots
from logkv.snapshot import SnapshotWriter
from logkv.verify import verify

# Keys as a store holds them: any text that UTF-8 encodes (no lone surrogates).
store_keys = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


def table_of(keys: list[str]) -> KeyTable:
    table = build(keys)
    assert table is not None
    return KeyTable.decode(encode(table), keys, Path("snapshot"), 0)


def test_module_doctests() -> None:
    assert doctest.testmod(key_table).failed == 0


@given(st.lists(store_keys, unique=True, max_size=300), st.lists(store_keys, max_size=30))
@settings(max_examples=200)
def test_every_key_is_found_at_its_row_and_no_other_key_is(
    keys: list[str], others: list[str]
) -> None:
    keys.sort()
    table = table_of(keys)
    assert len(table.table) == 1 << table_bits(len(keys))
    assert len(table.table) - table.table.count(0) == len(keys)
    assert table.misplaced() == []
    assert [table.find(key) for key in keys] == list(range(len(keys)))
    for other in others:
        assert table.find(other) == (keys.index(other) if other in keys else -1)


def test_the_table_becomes_an_array_a_bounded_piece_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No single call converts every slot (it held the GIL for 18 ms per 100,000 keys)."""
    keys = sorted(f"page-{i:05d}" for i in range(1000))
    whole = build(keys)
    assert whole is not None
    pieces: list[int] = []

    class Recording(array):  # type: ignore[type-arg]
        def fromlist(self, items: list[int]) -> None:
            pieces.append(len(items))
            super().fromlist(items)

    monkeypatch.setattr(key_table, "array", Recording)
    monkeypatch.setattr(key_table, "SLOTS_PER_PIECE", 100)
    table = build(keys)
    assert table is not None and table.typecode == "I"
    assert table.tolist() == whole.tolist()
    assert max(pieces) <= 100 and sum(pieces) == len(whole) == 1 << table_bits(len(keys))


def test_a_key_no_store_can_hold_is_looked_up_without_an_error() -> None:
    table = table_of(["a", "b"])
    assert table.find("\ud800") == -1
    assert table.find("") == -1
    assert table_of([]).find("a") == -1


def _colliding(count: int, bits: int, seed: int) -> list[str]:
    """``count`` keys whose first slot in a table of ``2**bits`` slots is slot 0 (CRC-32 has
    no key: such keys are found by trying)."""
    found: list[str] = []
    rng = random.Random(seed)
    while len(found) < count:
        key = f"https://example.com/{rng.getrandbits(64):x}"
        if (zlib.crc32(key.encode()) * 0x9E3779B1 & 0xFFFFFFFF) >> (32 - bits) == 0:
            found.append(key)
    return sorted(found)


def test_crafted_collisions_cost_the_snapshot_its_table_and_nothing_else(tmp_path: Path) -> None:
    """Keys an adversary chose so that they all hash to one slot: the table is not built
    (lookups would walk a run of them), the snapshot is written without it, and the store
    opens (by a dict) with every key."""
    count = MAX_PROBES + 2
    keys = _colliding(count, table_bits(count), seed=7)  # slot 0 in smaller tables too
    assert build(keys[:MAX_PROBES]) is not None  # the last one sits MAX_PROBES - 1 past
    assert build(keys[: MAX_PROBES + 1]) is None
    assert build(keys) is None
    path = tmp_path / "store"
    with Engine.open(path) as engine:
        for key in keys:
            engine.set(key, key.encode())
        engine.compact()
    with Engine.open(path) as engine:
        assert not engine._index.has_stored
        assert {key: engine.get(key) for key in keys} == {key: key.encode() for key in keys}
        engine._check()
    assert verify(path).ok


def test_a_malformed_table_is_refused() -> None:
    keys = ["a", "b", "c"]
    good = encode(build(keys) or array("I"))
    with pytest.raises(TypeError):
        KeyTable.decode(list(good), keys, Path("s"), 0)
    with pytest.raises(ValueError, match="does not fit"):
        KeyTable.decode(good + bytes(4), keys, Path("s"), 0)
    with pytest.raises(ValueError, match="past its keys"):
        KeyTable.decode(good[:-1] + b"\x01", keys, Path("s"), 0)
    with pytest.raises(ValueError, match="uses 0 slots for 3 keys"):
        KeyTable.decode(bytes(len(good)), keys, Path("s"), 0)


def test_a_slot_past_the_keys_is_corruption_when_a_lookup_meets_it() -> None:
    table = KeyTable(["a"], array("I", [9, 9]), Path("00000003.snap"), 1234)
    with pytest.raises(CorruptionError, match="row 8 of 1") as caught:
        table.find("a")
    assert caught.value.offset == 1234


# ---------------------------------------------------------------------------------- the index


def _rows(file_id: int, count: int) -> RowTable:
    """``count`` rows of file ``file_id``: 10-byte frames of 6-byte text values, one after
    another from offset 16."""
    return RowTable(
        file_id,
        array("Q", range(16, 16 + 10 * count, 10)),
        array("I", [4] * count),
        array("q", [6] * count),
        array("I", [0] * count),
        ["text/plain"],
    )


def _stored_index(keys: list[str]) -> tuple[Index, dict[str, int]]:
    """An index whose entries are ``keys`` as stored keys (rows of snapshot -1), and the
    model: key -> packed entry as find() gives it."""
    index = Index()
    assert index.set_stored(table_of(keys), _rows(-1, len(keys)))
    model = {key: index.find(key) for key in keys}
    assert None not in model.values()
    return index, model  # type: ignore[return-value]


index_keys = st.sampled_from([f"k{i:02d}" for i in range(24)])


class StoredIndexMachine(RuleBasedStateMachine):
    """An index over stored keys beside a dict: writes, deletes, ordered reads, the bulk load
    of an open (writes before the keys are first sorted), and compactions of both kinds: one
    that points every key elsewhere and lets the stored keys go (handing them back, to be
    freed after the engine's lock is released), and one whose snapshot's keys become the
    stored keys."""

    @initialize(
        stored=st.lists(index_keys, unique=True, max_size=16),
        bulk=st.lists(st.tuples(index_keys, st.booleans()), max_size=12),
    )
    def load(self, stored: list[str], bulk: list[tuple[str, bool]]) -> None:
        self.index, self.model = _stored_index(sorted(stored))
        self.file = 2
        for key, delete in bulk:  # what a replay of the log after the snapshot does
            self.write(key, delete)
        self.index.sort_all()

    def write(self, key: str, delete: bool) -> None:
        index, model = self.index, self.model
        if delete:
            assert index.remove_packed(key) == model.pop(key, None)
        else:
            entry = pack(self.file, 16 + len(model), 4, 6, 0)
            assert index.put_packed(key, entry) == model.get(key)
            model[key] = entry

    @rule(key=index_keys, delete=st.booleans())
    def put_or_remove(self, key: str, delete: bool) -> None:
        self.write(key, delete)

    @rule(key=index_keys)
    def find(self, key: str) -> None:
        assert self.index.find(key) == self.model.get(key)
        assert (key in self.index) == (key in self.model)

    @rule(
        start=st.one_of(st.none(), index_keys),
        limit=st.integers(0, 30),
        prefix=st.sampled_from(["", "k0", "k1"]),
    )
    def after(self, start: str | None, limit: int, prefix: str) -> None:
        expected = [k for k in sorted(self.model) if (start is None or k > start)]
        expected = [k for k in expected if k.startswith(prefix)][:limit]
        assert self.index.after(start, limit, prefix) == expected

    @rule()
    def merge(self) -> None:
        self.index.merge_some()

    @precondition(lambda self: self.index.has_stored)
    @rule()
    def compact(self) -> None:
        """Every live key pointed at a new snapshot (covering every file written so far)
        a key at a time, as compaction's switch does when the index cannot take the
        snapshot's stored keys; then the rows of the files it covers let go: the stored keys
        with them."""
        covers = self.file
        for key in sorted(self.model):  # each key has an entry
            self.model[key] = pack(-covers, 16, 4, 6, 0)
            self.index.repoint(key, self.model[key])
        let_go = self.index.drop_rows(covers)
        assert not self.index.has_stored
        assert any(isinstance(dropped, KeyTable) for dropped in let_go)
        self.file = covers + 1

    @rule(changes=st.lists(st.tuples(index_keys, st.booleans()), max_size=8))
    def compact_taking_its_keys(self, changes: list[tuple[str, bool]]) -> None:
        """A compaction whose snapshot's keys become the stored keys in one step: the keys live
        at its rotation, then writes after the rotation (to the next file), then
        Index.take_stored with the snapshot keys changed since, then the rows of the files it
        covers let go (the new table stays)."""
        covers = self.file
        keys = sorted(self.model)  # the snapshot: every key live at the rotation
        self.file = covers + 1
        changed = {key for key, _ in changes if key in self.model}
        for key, delete in changes:
            self.write(key, delete)
        stored = table_of(keys)
        index = self.index
        assert index.take_stored(stored, _rows(-covers, len(keys)), changed) is not None
        # every key reads as before (an entry from before the rotation is still good)
        assert {k: index.find(k) is not None for k in self.model} == dict.fromkeys(self.model, True)
        assert len(index) == len(self.model)
        half = len(keys) // 2
        index.forget_older(keys[:half], covers)
        index.forget_older(keys[half:], covers)
        index.compact_written()
        first = index._stored_first
        for row, key in enumerate(keys):
            if key not in changed:
                self.model[key] = first + row
        index.drop_rows(covers)
        assert index.has_stored and index._stored is stored

    @invariant()
    def agrees(self) -> None:
        index = self.index
        index._check()
        assert len(index) == len(self.model)
        assert dict(index.items()) == self.model
        assert all(packed_file(p) <= self.file for _, p in index.items())


def test_an_index_over_stored_keys_agrees_with_a_dict() -> None:
    run_state_machine_as_test(
        StoredIndexMachine,
        settings=settings(max_examples=150, stateful_step_count=30, deadline=None),
    )


def test_the_stored_keys_must_all_be_pointed_elsewhere_before_they_go() -> None:
    index, _ = _stored_index(["a", "b"])
    index.sort_all()
    index.put_packed("a", pack(-5, 16, 4, 6, 0))
    with pytest.raises(RuntimeError, match="1 stored keys"):
        index.drop_rows(5)


# ---------------------------------------------------------------------------------- a store


def _fill(engine: Engine, count: int) -> dict[str, bytes]:
    """Set ``k000``, ``k001``, ... to ``v0``, ``v1``, ...; returns what was set."""
    expected = {f"k{i:03d}": b"v%d" % i for i in range(count)}
    for key, value in expected.items():
        engine.set(key, value)
    return expected


def test_an_open_after_compaction_reads_its_keys_from_the_stored_table(tmp_path: Path) -> None:
    """The open after a compaction builds no dict of the snapshot's keys; writes, deletes and
    re-writes of them (replayed from the log by the next open, from hints and a scan) read back
    the same, and the next compaction puts its own snapshot's keys in their place."""
    path = tmp_path / "store"
    with Engine.open(path, segment_size=4096) as engine:
        expected = _fill(engine, 300)
        engine.compact()
    with Engine.open(path, segment_size=4096) as engine:
        assert engine._index.has_stored and not engine._index.packed
        for i in range(0, 300, 3):
            engine.delete(f"k{i:03d}")
            del expected[f"k{i:03d}"]
        for i in range(0, 300, 6):
            engine.set(f"k{i:03d}", b"again")
            expected[f"k{i:03d}"] = b"again"
        engine.set("new", b"n")
        expected["new"] = b"n"
        engine._check()
    with Engine.open(path, segment_size=4096) as engine:
        assert engine._index.has_stored
        assert list(engine.keys()) == sorted(expected)
        assert {k: engine.get(k) for k in expected} == expected
        assert engine.get("k003", "absent") == "absent" and len(engine) == len(expected)
        engine._check()
        engine.compact()  # its snapshot's keys are the stored keys now; nothing else is
        assert engine._index.has_stored and not engine._index.packed
        assert {k: engine.get(k) for k in expected} == expected
        engine._check()
    assert verify(path).ok


def _rewrite_key_table(snapshot: Path, change: bytes) -> None:
    """Replace the snapshot's stored key table with ``change`` (of the same length), under a
    valid block checksum: what a bug in the writer would leave."""
    data = bytearray(snapshot.read_bytes())
    meta_offset, _ = TAIL.unpack_from(data, len(data) - TAIL.size)
    meta, _ = read_block(snapshot, data, meta_offset, "meta")
    start = meta["hint_offset"]
    hint, end = read_block(snapshot, data, start, "hint")
    assert len(hint[7]) == len(change)
    hint[7] = change
    block = encode_block(msgpack.packb(hint))
    assert len(block) == end - start
    data[start:end] = block
    snapshot.write_bytes(bytes(data))


def test_verify_finds_a_key_table_that_does_not_find_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with Engine.open(path) as engine:
        for i in range(50):
            engine.set(f"k{i:02d}", b"v")
        engine.compact()
    [(_, snapshot)] = list_snapshots(path)
    table = build([f"k{i:02d}" for i in range(50)])
    assert table is not None
    # every slot in use points at the wrong row (50 + 1 - row): a table a bug wrote
    _rewrite_key_table(snapshot, encode(array("I", [51 - row if row else 0 for row in table])))
    report = verify(path)
    assert not report.ok
    assert any("key table does not find 50 of its keys" in p for p in report.problems or [])


def test_the_documented_example_hint_byte_for_byte() -> None:
    """docs/FORMAT.md section 7.2's example: two keys' columns, no deleted keys, key table."""
    columns = Columns()
    columns.add("a", 16, 55, 2, "text/plain")
    columns.add("b", 73, 44, -1, None)
    table = build(columns.keys)
    assert table is not None and list(table) == [2, 0, 0, 1]
    documented = (
        "98 92 a1 61 a1 62 c4 10 10 00 00 00 00 00 00 00 49 00 00 00 00 00 00 00"
        " c4 08 37 00 00 00 2c 00 00 00 c4 10 02 00 00 00 00 00 00 00 ff ff ff ff ff ff ff ff"
        " c4 08 00 00 00 00 01 00 00 00 92 aa 74 65 78 74 2f 70 6c 61 69 6e c0"
        " 90 c4 10 02 00 00 00 00 00 00 00 00 00 00 00 01 00 00 00"
    )
    assert columns.encode(key_table=encode(table)) == bytes.fromhex(documented)


def test_the_build_takes_turns_with_other_threads_and_builds_the_same_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A compaction builds the table beside the store's writers: with a slice of no time, the
    build pauses every 4,096 keys, and the table is the one built without pauses."""
    keys = sorted(f"page-{i:05d}" for i in range(20_000))
    before = build(keys)
    pauses: list[float] = []
    monkeypatch.setattr(turns_module, "WORK_SLICE", 0.0)
    monkeypatch.setattr(time, "sleep", pauses.append)
    assert build(keys) == before
    assert len(pauses) >= len(keys) // 4096


@pytest.mark.parametrize("table", [True, False])
def test_writes_while_a_compaction_runs_stay_over_its_stored_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: bool
) -> None:
    """Keys overwritten, deleted, deleted and written again, and new keys, all while the
    compaction writes its snapshot: after it, its keys are the stored keys and the dict holds
    only what was written since its rotation, and every key reads as last written (the log
    after the snapshot, and the next open, agree). A snapshot without a key table (keys
    crafted to collide) makes the compaction point each key at the snapshot instead, with
    the same result."""
    if not table:
        monkeypatch.setattr(snapshot_module, "build_key_table", lambda keys: None)
    path = tmp_path / "store"
    with Engine.open(path, segment_size=4096) as engine:
        expected = _fill(engine, 200)
        finish = SnapshotWriter.finish

        def finish_while_writing(writer: SnapshotWriter, *args: Any, **kwargs: Any) -> Any:
            for i in range(0, 200, 4):  # what writers do while the snapshot is written
                engine.set(f"k{i:03d}", b"new")
                expected[f"k{i:03d}"] = b"new"
                engine.delete(f"k{i + 1:03d}")
                del expected[f"k{i + 1:03d}"]
            engine.delete("k002")
            engine.set("k002", b"back")
            expected["k002"] = b"back"
            engine.set("fresh", b"f")
            expected["fresh"] = b"f"
            return finish(writer, *args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(SnapshotWriter, "finish", finish_while_writing)
            engine.compact()
        index = engine._index
        assert index.has_stored == table
        if table:
            assert len(index.packed) == 50 + 2  # written since the rotation, and alive
        assert {k: engine.get(k) for k in expected} == expected
        assert list(engine.keys()) == sorted(expected) and len(engine) == len(expected)
        engine._check()
        engine.set("after", b"a")  # and writes after it
        engine.delete("k003")
        expected["after"] = b"a"
        del expected["k003"]
        engine._check()
    with Engine.open(path) as engine:
        assert {k: engine.get(k) for k in list(engine.keys())} == expected
    assert verify(path).ok
