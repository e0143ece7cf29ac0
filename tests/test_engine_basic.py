"""Engine basics: keys, values, content types, errors on misuse, stats and housekeeping."""

from __future__ import annotations

import contextlib
import os
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest

from logkv import (
    MISSING,
    Engine,
    InvalidKeyError,
    KeyInfo,
    ReadOnlyStoreError,
    StoreClosedError,
    StoreNotFoundError,
)
from logkv import engine as engine_module
from logkv.index import MERGE_BATCH
from logkv.layout import list_segments

OpenEngine = Callable[..., Engine]


def log_size(path: Path) -> int:
    """Total bytes of every segment of the store at ``path``."""
    return sum(seg.stat().st_size for _, seg in list_segments(path))


# ---------------------------------------------------------------------------------- keys

UNICODE_KEYS = [
    "plain",
    "ключ",
    "鍵",
    "🔑",
    "👩‍👩‍👧‍👦",  # emoji joined by zero-width joiners
    "e\u0301",  # e + combining acute accent
    "\u00e9",  # precomposed é: a different key from the one above
    "a\u0300\u0301\u0302",  # several combining marks
    "\u200b",  # zero-width space alone
    " ",
    "x" * 1024,
    "🔑" * 1024,  # 1024 characters, 4096 UTF-8 bytes
]


def test_unicode_keys_round_trip_across_reopen(open_engine: OpenEngine, store_path: Path) -> None:
    engine = open_engine()
    for i, key in enumerate(UNICODE_KEYS):
        engine.set(key, f"value {i}".encode())
    engine.close()
    engine = open_engine()
    assert len(engine) == len(UNICODE_KEYS)
    for i, key in enumerate(UNICODE_KEYS):
        assert engine.get(key) == f"value {i}".encode()
    assert list(engine.keys()) == sorted(UNICODE_KEYS)


def test_canonically_equal_keys_stay_distinct(open_engine: OpenEngine) -> None:
    composed, decomposed = "\u00e9", "e\u0301"
    assert unicodedata.normalize("NFC", decomposed) == composed
    engine = open_engine()
    engine.set(composed, b"composed")
    engine.set(decomposed, b"decomposed")
    assert engine.get(composed) == b"composed"
    assert engine.get(decomposed) == b"decomposed"
    assert len(engine) == 2


@pytest.mark.parametrize(
    "key",
    [
        "",
        "x" * 1025,
        "🔑" * 1025,
        "\ud800",  # lone high surrogate
        "a\udc80b",  # lone low surrogate (as produced by surrogateescape)
        b"bytes-key",
        42,
        None,
        ("a",),
    ],
    ids=[
        "empty",
        "1025-chars",
        "1025-emoji",
        "high-surrogate",
        "low-surrogate",
        "bytes",
        "int",
        "none",
        "tuple",
    ],
)
def test_invalid_keys_are_refused(open_engine: OpenEngine, store_path: Path, key: object) -> None:
    engine = open_engine()
    engine.set("good", b"1")
    size = log_size(store_path)
    with pytest.raises(InvalidKeyError):
        engine.set(key, b"value")  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError):
        engine.set(key, None)  # type: ignore[arg-type]
    if isinstance(key, str) and key and len(key) <= 1024:
        # Only UTF-8 fails (a lone surrogate): such a key can never be stored, so a delete
        # may refuse it or report it missing, but never writes.
        with contextlib.suppress(InvalidKeyError):
            assert engine.delete(key) is False
    else:
        with pytest.raises(InvalidKeyError):
            engine.delete(key)  # type: ignore[arg-type]
    assert isinstance(InvalidKeyError("x"), ValueError)
    assert log_size(store_path) == size
    assert engine.last_seq == 1
    assert list(engine.keys()) == ["good"]


def test_key_subclass_of_str_is_refused(open_engine: OpenEngine) -> None:
    class Key(str):
        pass

    with pytest.raises(InvalidKeyError):
        open_engine().set(Key("k"), b"v")


LOOK_ALIKES = [
    "a",
    "a.",
    "a/b",
    "a\\b",
    "..",
    ".",
    "/",
    "a\x00b",
    "a\x00",
    "A",
    "a ",
    " a",
    "a\n",
    "con",
    "nul.txt",
]


def test_look_alike_keys_are_distinct(open_engine: OpenEngine, store_path: Path) -> None:
    engine = open_engine()
    for i, key in enumerate(LOOK_ALIKES):
        engine.set(key, str(i).encode())
    engine.close()
    engine = open_engine()
    assert len(engine) == len(LOOK_ALIKES)
    for i, key in enumerate(LOOK_ALIKES):
        assert engine.get(key) == str(i).encode()
    # Keys never become file names: the folder holds only the lock, the log and its synced mark.
    assert {p.name for p in store_path.iterdir()} == {"LOCK", "00000001.seg", "SYNCED"}


def test_keys_iterate_in_python_string_order(open_engine: OpenEngine) -> None:
    keys = [
        "b",
        "B",
        "a",
        "ä",
        "Z",
        "10",
        "9",
        "_",
        "~",
        "é",
        "e\u0301",
        "🔑",
        "\uffff",
        "a" * 3,
        "a\x00",
        "\x01",
    ]
    engine = open_engine()
    for key in keys:
        engine.set(key, b"")
    assert list(engine.keys()) == sorted(keys)
    assert [info.key for info in engine.infos()] == sorted(keys)


def test_paging_is_exact(open_engine: OpenEngine) -> None:
    engine = open_engine()
    keys = sorted(f"key-{i:05d}" for i in range(1300))  # more than one internal batch
    for key in keys:
        engine.set(key, key.encode())
    for page in (1, 7, 512, 513, 1000):
        collected: list[str] = []
        start: str | None = None
        while True:
            batch = list(engine.keys(exclusive_start_key=start, limit=page))
            assert len(batch) <= page
            collected.extend(batch)
            if len(batch) < page:
                break
            start = batch[-1]
        assert collected == keys
    # A start key that is not stored starts after where it would sort.
    assert list(engine.keys("key-00010x", 3)) == ["key-00011", "key-00012", "key-00013"]
    assert list(engine.keys("key-99999")) == []
    assert list(engine.keys(limit=0)) == []
    with pytest.raises(ValueError):
        list(engine.keys(limit=-1))


# ---------------------------------------------------------------------------------- values


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, 1 << 20])
def test_values_round_trip(open_engine: OpenEngine, size: int) -> None:
    value = os.urandom(size)
    engine = open_engine()
    engine.set("k", value)
    assert engine.get("k") == value
    engine.close()
    assert open_engine().get("k") == value


def test_fifty_megabyte_value_round_trips(open_engine: OpenEngine) -> None:
    size = 50 * 1024 * 1024
    engine = open_engine()
    engine.set("big", os.urandom(size))
    first = engine.get("big")
    assert isinstance(first, bytes)
    assert len(first) == size
    engine.set("after", b"small")
    engine.close()
    engine = open_engine()
    again = engine.get("big")
    assert again == first
    del first, again
    assert engine.get("after") == b"small"
    info = next(engine.infos())
    assert info == KeyInfo("after", None, 5)
    assert list(engine.infos("after")) == [KeyInfo("big", None, size)]


def test_none_is_stored_and_distinct_from_missing(open_engine: OpenEngine) -> None:
    engine = open_engine()
    engine.set("none", None, "application/json")
    engine.set("empty", b"")
    assert engine.get("none") is None
    assert engine.get("empty") == b""
    assert engine.get("missing") is MISSING
    assert engine.get("missing", "default") == "default"
    assert "none" in engine
    assert "missing" not in engine
    assert engine.get_with_type("none") == (None, "application/json")
    assert engine.get_with_type("missing") is None
    assert list(engine.infos()) == [
        KeyInfo("empty", None, 0),
        KeyInfo("none", "application/json", 0),
    ]
    engine.close()
    engine = open_engine()
    assert engine.get("none") is None
    assert engine.get("missing") is MISSING


def test_content_types_round_trip(open_engine: OpenEngine) -> None:
    types = {
        "a": "application/json; charset=utf-8",
        "b": "text/plain",
        "c": None,
        "d": "",
        "e": "application/x-ünïcode",
    }
    engine = open_engine()
    for key, content_type in types.items():
        engine.set(key, b"x", content_type)
    engine.close()
    engine = open_engine()
    for key, content_type in types.items():
        assert engine.get_with_type(key) == (b"x", content_type)
    assert [info.content_type for info in engine.infos()] == list(types.values())


def test_bytes_like_values_are_stored_as_bytes(open_engine: OpenEngine) -> None:
    engine = open_engine()
    engine.set("ba", bytearray(b"array"))  # type: ignore[arg-type]
    engine.set("mv", memoryview(b"view"))  # type: ignore[arg-type]
    assert engine.get("ba") == b"array"
    assert engine.get("mv") == b"view"
    assert type(engine.get("ba")) is bytes


@pytest.mark.parametrize("value", ["text", 1, 1.5, {"a": 1}, [b"x"]])
def test_non_bytes_values_are_refused(open_engine: OpenEngine, value: object) -> None:
    engine = open_engine()
    with pytest.raises(TypeError):
        engine.set("k", value)  # type: ignore[arg-type]
    assert "k" not in engine
    assert engine.last_seq == 0


def test_non_str_content_type_is_refused(open_engine: OpenEngine) -> None:
    engine = open_engine()
    with pytest.raises(TypeError):
        engine.set("k", b"v", b"text/plain")  # type: ignore[arg-type]
    assert "k" not in engine


def test_overwrite_and_delete(open_engine: OpenEngine) -> None:
    engine = open_engine()
    assert engine.set("k", b"1") == 1
    assert engine.set("k", b"2", "text/plain") == 2
    assert engine.get_with_type("k") == (b"2", "text/plain")
    assert engine.delete("k") is True
    assert engine.get("k") is MISSING
    assert engine.last_seq == 3
    engine.close()
    engine = open_engine()
    assert "k" not in engine
    assert engine.last_seq == 3
    assert engine.set("k", b"3") == 4


# ---------------------------------------------------------------------------------- errors


def test_use_after_close_raises(open_engine: OpenEngine) -> None:
    engine = open_engine()
    engine.set("k", b"v")
    keys = engine.keys()
    engine.close()
    assert engine.closed
    engine.close()  # idempotent
    calls = [
        lambda: engine.get("k"),
        lambda: engine.get_with_type("k"),
        lambda: engine.entry("k"),
        lambda: engine.set("k", b"v"),
        lambda: engine.delete("k"),
        lambda: "k" in engine,
        lambda: len(engine),
        lambda: list(engine.keys()),
        lambda: list(engine.infos()),
        lambda: next(keys),
        engine.stats,
        engine.sync,
        engine.refresh,
    ]
    for call in calls:
        with pytest.raises(StoreClosedError):
            call()


def test_context_manager_closes(store_path: Path) -> None:
    with Engine.open(store_path) as engine:
        engine.set("k", b"v")
    assert engine.closed
    with Engine.open(store_path) as engine:
        assert engine.get("k") == b"v"


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(StoreNotFoundError):
        Engine.open(missing, readonly=True)
    with pytest.raises(StoreNotFoundError):
        Engine.open(missing, create=False)
    assert not missing.exists()
    with Engine.open(missing / "nested") as engine:  # created with its parents
        assert len(engine) == 0


def test_segment_size_too_small(store_path: Path) -> None:
    with pytest.raises(ValueError):
        Engine.open(store_path, segment_size=4095)
    assert not store_path.exists()


def test_bad_option_values(store_path: Path) -> None:
    with pytest.raises(ValueError):
        Engine.open(store_path, durability="sometimes")
    with pytest.raises(ValueError):
        Engine.open(store_path, recovery="lenient")


def test_delete_of_missing_key_writes_nothing(open_engine: OpenEngine, store_path: Path) -> None:
    engine = open_engine()
    engine.set("present", b"v")
    size, seq, stats = log_size(store_path), engine.last_seq, engine.stats()
    assert engine.delete("absent") is False
    assert log_size(store_path) == size
    assert engine.last_seq == seq
    assert engine.stats() == stats
    assert engine.delete("present") is True
    assert engine.delete("present") is False
    assert engine.last_seq == seq + 1


def test_readonly_refuses_writes(open_engine: OpenEngine, store_path: Path) -> None:
    writer = open_engine()
    writer.set("k", b"v")
    reader = open_engine(readonly=True)
    size = log_size(store_path)
    for call in (
        lambda: reader.set("k", b"x"),
        lambda: reader.set("new", None),
        lambda: reader.delete("k"),
        lambda: reader.delete("absent"),
        reader.sync,
    ):
        with pytest.raises(ReadOnlyStoreError):
            call()
    assert log_size(store_path) == size
    assert reader.get("k") == b"v"
    assert reader.stats().readonly


# ---------------------------------------------------------------------------------- stats


def test_stats_follow_overwrites_and_deletes(open_engine: OpenEngine, store_path: Path) -> None:
    engine = open_engine()
    empty = engine.stats()
    assert (empty.keys, empty.live_bytes, empty.dead_bytes, empty.last_seq) == (0, 0, 0, 0)
    assert empty.disk_bytes == log_size(store_path) == 16
    assert empty.segments == 1

    engine.set("a", b"x" * 100)
    first = engine.stats()
    assert first.keys == 1
    assert first.live_bytes > 100
    assert first.dead_bytes == 0
    assert first.disk_bytes == log_size(store_path)
    record_a = first.live_bytes

    engine.set("b", b"y" * 10)
    second = engine.stats()
    assert second.keys == 2
    record_b = second.live_bytes - record_a
    assert 10 < record_b < record_a

    engine.set("a", b"z" * 1000)  # overwrite: the old record of a becomes dead
    third = engine.stats()
    assert third.keys == 2
    assert third.dead_bytes == record_a
    assert third.live_bytes > second.live_bytes + 900
    assert third.disk_bytes == log_size(store_path) == 16 + third.live_bytes + third.dead_bytes

    engine.delete("a")  # delete: the live record and the delete record itself are dead
    fourth = engine.stats()
    assert fourth.keys == 1
    assert fourth.live_bytes == record_b
    assert fourth.disk_bytes == log_size(store_path) == 16 + fourth.live_bytes + fourth.dead_bytes
    assert fourth.dead_bytes > third.dead_bytes + 1000
    assert fourth.last_seq == 4

    engine.close()
    reopened = open_engine().stats()
    assert reopened == fourth


def test_stats_count_segments(open_engine: OpenEngine, store_path: Path) -> None:
    engine = open_engine(segment_size=4096)
    for i in range(40):
        engine.set(f"k{i}", b"v" * 500)
    stats = engine.stats()
    assert stats.segments == len(list_segments(store_path)) > 1
    assert stats.disk_bytes == log_size(store_path)
    engine.close()
    assert open_engine(segment_size=4096).stats() == stats


def test_log_bytes_is_a_deprecated_name_of_disk_bytes(open_engine: OpenEngine) -> None:
    engine = open_engine()
    engine.set("a", b"x" * 100)
    engine.compact()
    stats = engine.stats()
    with pytest.warns(DeprecationWarning, match="disk_bytes"):
        assert stats.log_bytes == stats.disk_bytes > 0


# ---------------------------------------------------------------------------------- housekeeping


def test_temp_files_are_removed_on_writable_open(open_engine: OpenEngine, store_path: Path) -> None:
    open_engine().close()
    leftovers = [store_path / "00000001.seg.tmp", store_path / "snapshot.tmp"]
    for leftover in leftovers:
        leftover.write_bytes(b"half-written")
    reader = open_engine(readonly=True)
    assert all(p.exists() for p in leftovers)  # a reader changes nothing
    reader.close()
    open_engine()
    assert not any(p.exists() for p in leftovers)


def test_lock_file_names_the_holder_while_open(open_engine: OpenEngine, store_path: Path) -> None:
    engine = open_engine()
    assert (store_path / "LOCK").read_text().strip() == str(os.getpid())
    engine.close()
    assert (store_path / "LOCK").read_text() == ""


def test_readonly_open_of_an_empty_folder(open_engine: OpenEngine, store_path: Path) -> None:
    store_path.mkdir()
    reader = open_engine(readonly=True)
    assert len(reader) == 0
    assert list(reader.keys()) == []
    assert reader.refresh() == 0
    assert list(store_path.iterdir()) == []  # no lock, no segment: nothing was written


# ---------------------------------------------------------------------------------- invariants


def test_check_holds_through_writes_compaction_and_reopen(
    open_engine: OpenEngine, store_path: Path
) -> None:
    engine = open_engine(segment_size=4096)
    for i in range(60):
        engine.set(f"k{i % 25}", b"v" * (i * 7 % 300) if i % 9 else None, "text/plain")
        if i % 11 == 0:
            engine.delete(f"k{i % 7}")
    engine._check()
    engine.compact()
    engine._check()
    engine.set("after", b"compaction")
    engine.close()
    reopened = open_engine(segment_size=4096)
    reopened._check()
    follower = open_engine(readonly=True)
    follower._check()
    follower.close()


def test_check_catches_a_counter_out_of_step(open_engine: OpenEngine) -> None:
    engine = open_engine()
    engine.set("a", b"x" * 10)
    engine._position.live_bytes += 1
    with pytest.raises(AssertionError):
        engine._check()


def test_get_small_reads_small_values_and_gives_the_size_of_large_ones(
    open_engine: OpenEngine,
) -> None:
    engine = open_engine()
    engine.set("small", b"abc", "text/plain")
    engine.set("large", b"x" * 100, "application/octet-stream")
    engine.set("none", None, "application/json")
    assert engine.get_small("small", 3) == (b"abc", "text/plain")
    assert engine.get_small("large", 99) == 100  # the size: read it with get_record elsewhere
    assert engine.get_small("large", 100) == (b"x" * 100, "application/octet-stream")
    assert engine.get_small("none", 0) == (None, "application/json")
    assert engine.get_small("missing", 10) is None
    entry = engine.entry("large")
    assert entry is not None
    assert (entry.size, entry.value_size) == (100, 100)
    assert entry.content_type == "application/octet-stream"
    none_entry = engine.entry("none")
    assert none_entry is not None and (none_entry.size, none_entry.value_size) == (-1, 0)
    engine.close()
    with pytest.raises(StoreClosedError):
        engine.get_small("small", 10)


def test_merging_fresh_keys_collects_the_young_generations_a_batch_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lists of keys a merge makes are handed to the garbage collector's old generation
    a batch at a time, so that no collector pass walks all of them at once; a merge of a few
    keys, or a collector the application turned off, is left alone."""
    keys = [f"k{i:06d}" for i in range(3 * MERGE_BATCH + 10)]
    with Engine.open(tmp_path / "store") as engine:
        for key in reversed(keys):
            engine.set(key, b"v")
        calls: list[int] = []
        monkeypatch.setattr(
            engine_module.gc, "collect", lambda generation=2: calls.append(generation) or 0
        )
        engine.settle_order()
        assert calls == [1, 1, 1]  # three whole batches; the last 10 keys are too few
        assert list(engine.keys()) == keys
        engine.set("a-new-key", b"v")
        engine.settle_order()
        assert calls == [1, 1, 1]
        for i in range(MERGE_BATCH):
            engine.set(f"z{i:05d}", b"v")
        monkeypatch.setattr(engine_module.gc, "isenabled", lambda: False)
        engine.settle_order()
        assert calls == [1, 1, 1]
        assert len(list(engine.keys())) == len(keys) + 1 + MERGE_BATCH
