"""Streamed values: value files written and read a chunk at a time, committed by one record.

Round trips from pieces and from files; sources that fail or are not bytes; every byte cut and
bit flip of a value file caught on read and by verify; cut-off streams removed by a writable
open (and left alone by a read-only one); compaction carrying the reference and removing what
no record needs; a follower reading through a writer's compactions; dump; kill -9 during
streamed writes and during compactions of big values; and a 2 GiB value written and read back
in bounded memory.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CHILD_PATIENCE, ROOT, OpenEngine
from test_cli import logkv

from logkv import CorruptionError, Engine, KeyInfo, ReadOnlyStoreError
from logkv.cli.dump import record_line
from logkv.compaction import COPY_WHOLE
from logkv.format import Op, decode_value_ref
from logkv.history import key_log
from logkv.layout import VALUES_DIR, list_value_files, value_file_name
from logkv.scan import SegmentReader
from logkv.values import CHUNK_HEADER, CHUNK_SIZE, INLINE_LIMIT, VALUE_HEADER, ValueFileWriter
from logkv.verify import verify


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that differ from chunk to chunk (a chunk moved elsewhere shows)."""
    block = bytes((seed + i) % 251 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 5]
)
@pytest.mark.parametrize("piece", [1000, CHUNK_SIZE, 3 * CHUNK_SIZE])
def test_round_trip_from_pieces(open_engine: OpenEngine, size: int, piece: int) -> None:
    engine = open_engine()
    data = pattern(size)
    seq = engine.set_stream("k", pieces(data, piece), "video/mp4")
    entry = engine.entry("k")
    assert entry is not None and entry.streamed and entry.value_size == size
    assert entry.content_type == "video/mp4"
    with engine.open_value("k") as stream:  # type: ignore[union-attr]
        chunks = list(stream)
    assert b"".join(chunks) == data
    assert all(0 < len(c) <= CHUNK_SIZE for c in chunks)
    assert engine.get("k") == data
    assert list(engine.infos()) == [engine_info("k", "video/mp4", size)]
    assert [seq for seq, _ in list_value_files(engine.path)] == [seq]


def engine_info(key: str, content_type: str | None, size: int) -> KeyInfo:
    return KeyInfo(key, content_type, size)


def test_round_trip_from_a_file_and_reopen(open_engine: OpenEngine, tmp_path: Path) -> None:
    source = tmp_path / "video.bin"
    data = pattern(2 * CHUNK_SIZE + 123, seed=3)
    source.write_bytes(data)
    engine = open_engine()
    with source.open("rb") as file:
        engine.set_stream("video", file)
    engine.set("small", b"inline")
    engine.close()
    engine = open_engine(durability="fsync")
    assert engine.report.clean
    stream = engine.open_value("video")
    assert stream is not None and stream.size == len(data) and stream.content_type is None
    assert stream.read_all() == data
    assert engine.open_value("small").read_all() == b"inline"  # type: ignore[union-attr]
    engine.set_stream("video", io.BytesIO(b"shorter"))  # under fsync too
    assert engine.get("video") == b"shorter"
    engine._check()


def test_stored_none_and_absent_keys_as_streams(open_engine: OpenEngine) -> None:
    engine = open_engine()
    engine.set("none", None)
    stream = engine.open_value("none")
    assert stream is not None and stream.size is None and list(stream) == []
    assert stream.read_all() is None
    assert engine.open_value("absent") is None


class Boom(Exception):
    pass


def test_a_failing_source_changes_nothing(open_engine: OpenEngine) -> None:
    engine = open_engine()
    engine.set("k", b"old")

    def failing() -> Iterator[bytes]:
        yield pattern(CHUNK_SIZE + 10)
        raise Boom

    with pytest.raises(Boom):
        engine.set_stream("k", failing())
    assert engine.get("k") == b"old"
    assert list((engine.path / VALUES_DIR).iterdir()) == []
    assert engine.last_seq == 1


@pytest.mark.parametrize(
    "source", ["text", b"bytes held in memory", 42, [b"ok", "not bytes"], [b"ok", 7]]
)
def test_sources_that_are_not_streams_of_bytes_are_refused(
    open_engine: OpenEngine, source: object
) -> None:
    engine = open_engine()
    with pytest.raises(TypeError):
        engine.set_stream("k", source)
    assert "k" not in engine and engine.last_seq == 0
    assert list((engine.path / VALUES_DIR).iterdir()) == []


def test_bad_keys_and_content_types_are_refused_before_reading(open_engine: OpenEngine) -> None:
    engine = open_engine()
    read = []

    def source() -> Iterator[bytes]:
        read.append(1)
        yield b"x"

    with pytest.raises(ValueError):
        engine.set_stream("", source())
    with pytest.raises(TypeError):
        engine.set_stream("k", source(), content_type=3)  # type: ignore[arg-type]
    assert read == []


def test_a_read_only_store_refuses_streams(open_engine: OpenEngine) -> None:
    open_engine().set("a", b"1")
    reader = open_engine(readonly=True)
    with pytest.raises(ReadOnlyStoreError):
        reader.set_stream("k", [b"x"])


# ------------------------------------------------------------------------- damage on disk


def _one_value_store(open_engine: OpenEngine, size: int) -> tuple[Engine, Path, bytes]:
    engine = open_engine()
    data = pattern(size, seed=9)
    seq = engine.set_stream("k", pieces(data, 70_000))
    return engine, engine.path / VALUES_DIR / value_file_name(seq), data


def _read_fails(engine: Engine) -> CorruptionError:
    with pytest.raises(CorruptionError) as caught:
        engine.open_value("k").read_all()  # type: ignore[union-attr]
    with pytest.raises(CorruptionError):
        engine.get("k")
    return caught.value


def test_every_byte_cut_of_a_value_file_is_caught(open_engine: OpenEngine) -> None:
    engine, path, data = _one_value_store(open_engine, 2 * CHUNK_SIZE + 100)
    whole = path.read_bytes()
    first_chunk = VALUE_HEADER.size + CHUNK_HEADER.size
    cuts = [0, 5, VALUE_HEADER.size, VALUE_HEADER.size + 3, first_chunk, first_chunk + 1]
    cuts += [first_chunk + CHUNK_SIZE, len(whole) - 100, len(whole) - 1]
    for cut in cuts:
        path.write_bytes(whole[:cut])
        _read_fails(engine)
        report = verify(engine.path)
        assert not report.ok and str(path) in " ".join(report.problems or []), cut
    path.write_bytes(whole + b"\x00")  # a byte too many
    _read_fails(engine)
    assert not verify(engine.path).ok
    path.write_bytes(whole)
    assert engine.get("k") == data
    report = verify(engine.path)
    assert report.ok and report.value_files == 1


def test_every_bit_flip_region_of_a_value_file_is_caught(open_engine: OpenEngine) -> None:
    engine, path, data = _one_value_store(open_engine, CHUNK_SIZE + 5000)
    whole = path.read_bytes()
    chunk_2 = VALUE_HEADER.size + CHUNK_HEADER.size + CHUNK_SIZE
    places = [0, 8, 12, VALUE_HEADER.size, VALUE_HEADER.size + 4, VALUE_HEADER.size + 8]
    places += [VALUE_HEADER.size + 8 + 4000, chunk_2, chunk_2 + 4, chunk_2 + 8, len(whole) - 1]
    for place in places:
        for bit in (0, 7):
            damaged = bytearray(whole)
            damaged[place] ^= 1 << bit
            path.write_bytes(damaged)
            _read_fails(engine)
            assert not verify(engine.path).ok, (place, bit)
    path.write_bytes(whole)
    assert engine.get("k") == data


def test_chunks_swapped_between_files_or_places_are_caught(open_engine: OpenEngine) -> None:
    engine = open_engine()
    a = engine.set_stream("a", [pattern(2 * CHUNK_SIZE, seed=1)])
    b = engine.set_stream("b", [pattern(2 * CHUNK_SIZE, seed=2)])
    folder = engine.path / VALUES_DIR
    file_a, file_b = folder / value_file_name(a), folder / value_file_name(b)
    os.replace(file_a, folder / "a.keep")
    file_b.rename(file_a)  # a's record now finds b's file: same size, other bytes
    with pytest.raises(CorruptionError, match="digest"):
        engine.get("a")
    # the two chunks of one file swapped: each fails its checksum (it covers its place)
    whole = (folder / "a.keep").read_bytes()
    head, size = VALUE_HEADER.size, CHUNK_HEADER.size + CHUNK_SIZE
    file_a.write_bytes(whole[:head] + whole[head + size :] + whole[head : head + size])
    with pytest.raises(CorruptionError, match="checksum"):
        engine.get("a")


def test_a_missing_value_file_is_reported(open_engine: OpenEngine) -> None:
    engine, path, _ = _one_value_store(open_engine, 100)
    path.unlink()
    with pytest.raises(CorruptionError, match="value file of record"):
        engine.get("k")
    with pytest.raises(CorruptionError, match="value file of record"):
        engine.open_value("k")
    report = verify(engine.path)
    assert not report.ok and "missing" in " ".join(report.problems or [])


# ------------------------------------------------------------------ crashes, cut-off streams


def test_a_writable_open_removes_cut_off_streams(open_engine: OpenEngine) -> None:
    engine = open_engine()
    engine.set_stream("k", [b"kept"])
    last = engine.last_seq
    folder = engine.path / VALUES_DIR
    writer = ValueFileWriter(engine.path, durable=False)
    writer.write(b"half a value")  # a stream cut off mid-way: its temp file
    writer.finish()
    orphan = folder / value_file_name(last + 1)  # installed, but its record never written
    orphan.write_bytes(b"whatever")
    engine.close()
    reader = open_engine(readonly=True)
    assert orphan.exists() and writer.temp.exists()  # a read-only open changes nothing
    assert reader.get("k") == b"kept"
    reader.close()
    engine = open_engine()
    assert not orphan.exists() and not writer.temp.exists()
    assert engine.get("k") == b"kept"
    engine.set_stream("k2", [b"next"])  # takes the orphan's seq: a file of its own
    assert engine.get("k2") == b"next"


def test_a_failed_append_removes_the_installed_file(
    open_engine: OpenEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = open_engine()
    writer = engine._writer
    assert writer is not None

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "append", full)
    with pytest.raises(OSError):
        engine.set_stream("k", [b"x" * 100])
    assert list((engine.path / VALUES_DIR).iterdir()) == []
    assert "k" not in engine


# ------------------------------------------------------------------------------ compaction


def test_compaction_carries_the_reference_and_removes_dead_files(
    open_engine: OpenEngine,
) -> None:
    engine = open_engine(segment_size=4096)
    data = pattern(CHUNK_SIZE + 1)
    seq = engine.set_stream("big", [data])
    path = engine.path / VALUES_DIR / value_file_name(seq)
    inode = path.stat().st_ino
    old = engine.set_stream("old", [b"soon dead"])
    engine.set("old", b"inline now")
    for i in range(50):
        engine.set(f"filler-{i}", b"x" * 200)
    engine.compact()
    assert path.stat().st_ino == inode  # never copied
    assert engine.get("big") == data
    assert not (engine.path / VALUES_DIR / value_file_name(old)).exists()
    snapshot_before = engine.stats().disk_bytes
    assert snapshot_before < len(data) + 100_000  # one copy of the value, no more
    engine.set_stream("big", [b"replaced"])  # the old file is dead but in the retained log
    assert path.exists()
    engine.compact()
    assert not path.exists()
    engine.close()
    engine = open_engine()
    assert engine.get("big") == b"replaced"
    assert verify(engine.path).ok


def test_archive_retention_keeps_every_value_file(open_engine: OpenEngine) -> None:
    engine = open_engine(retention="archive")
    first = engine.set_stream("k", [b"first"])
    engine.set_stream("k", [b"second"])
    engine.compact()
    report = verify(engine.path)  # reads the archived segments: both files checked
    assert report.ok and report.value_files == 2
    engine.set("k", b"third")
    engine.compact(retention="delete")  # archived segments still name the first two
    assert (engine.path / VALUES_DIR / value_file_name(first)).exists()
    assert verify(engine.path).ok


def test_a_follower_reads_streamed_values_through_compactions(open_engine: OpenEngine) -> None:
    writer = open_engine(segment_size=4096)
    writer.set_stream("k", [pattern(5000, seed=1)])
    follower = open_engine(readonly=True)
    stream = follower.open_value("k")  # opened before the writer drops its file
    assert stream is not None
    writer.set_stream("k", [pattern(6000, seed=2)])
    writer.compact()  # removes the first value's file: the follower's view still names it
    assert stream.read_all() == pattern(5000, seed=1)  # held open: still readable
    assert follower.get("k") == pattern(6000, seed=2)  # reloads and reads the new one
    follower.refresh()
    assert follower.open_value("k").read_all() == pattern(6000, seed=2)  # type: ignore[union-attr]


def test_dump_and_history_name_the_value_file(open_engine: OpenEngine) -> None:
    engine = open_engine()
    seq = engine.set_stream("k", [b"abc"], "text/plain")
    number = engine._writer.number  # type: ignore[union-attr]
    engine.close()
    path = engine.path / f"{number:08d}.seg"
    with SegmentReader(path, number, is_last=True, synced=None, report=lambda d: None) as reader:
        frames = list(reader.frames())
    (offset, _, fields) = frames[-1]
    assert fields[2] == Op.SET_STREAMED
    assert decode_value_ref(fields[0], fields[5]).size == 3
    line = record_line(path.name, number, offset, fields, with_value=True)
    assert line["size"] == 3 and line["value_file"] == f"values/{value_file_name(seq)}"
    assert "value" not in line
    found = key_log(engine.path, "k")
    assert found.records[-1].value_size == 3


# ------------------------------------------------------------------------------- kill -9


_STREAMING_CHILD = textwrap.dedent(
    """
    import sys
    from logkv import Engine

    def pattern(size, seed):
        block = bytes((seed + i) % 251 for i in range(4096))
        return (block * (size // len(block) + 1))[:size]

    engine = Engine.open(sys.argv[1], durability=sys.argv[2])
    i = 0
    while True:
        size = 300_000 + (i * 77_777) % 2_500_000  # as _size
        def source(size=size, i=i):
            data = pattern(size, i)
            for start in range(0, size, 65536):
                yield data[start:start + 65536]
        engine.set_stream(f"k{i % 7}", source())
        print("acked", i, size, flush=True)
        i += 1
    """
)


def _run_and_kill(
    children: list[subprocess.Popen[str]], script: str, args: list[str], lines: int, delay: float
) -> list[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    children.append(process)
    assert process.stdout is not None
    seen = []
    for _ in range(lines):
        line = process.stdout.readline()
        assert line, "the child died before it was killed"
        seen.append(line.strip())
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    rest, _ = process.communicate(timeout=CHILD_PATIENCE)
    assert process.returncode == -signal.SIGKILL
    return seen + rest.split("\n")


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["process", "fsync"])
def test_kill9_during_streamed_writes_leaves_no_half_value(
    tmp_path: Path, children: list[subprocess.Popen[str]], durability: str
) -> None:
    store = tmp_path / "store"
    for attempt, delay in enumerate([0.0, 0.013, 0.05, 0.21]):
        said = _run_and_kill(children, _STREAMING_CHILD, [str(store), durability], 2, delay)
        acked: dict[str, tuple[int, int]] = {}
        for line in said:
            if line.startswith("acked"):
                _, i, size = line.split()
                acked[f"k{int(i) % 7}"] = (int(i), int(size))
        with Engine.open(store) as engine:
            for key, (i, _) in acked.items():
                # the acknowledged value, or the next one of the key if it was committed
                # before the kill came between its commit and its acknowledgement
                value = engine.get(key)
                assert value in [pattern(_size(j), j) for j in (i, i + 7)], (attempt, key)
            assert not list((store / VALUES_DIR).glob("*.tmp"))
            assert all(seq <= engine.last_seq for seq, _ in list_value_files(store))
        report = verify(store)
        assert report.ok, report.problems


def _size(i: int) -> int:
    return 300_000 + (i * 77_777) % 2_500_000


_COMPACTING_CHILD = textwrap.dedent(
    """
    import sys
    from logkv import Engine

    def pattern(size, seed):
        block = bytes((seed + i) % 251 for i in range(4096))
        return (block * (size // len(block) + 1))[:size]

    engine = Engine.open(sys.argv[1], segment_size=1 << 20)
    if "s0" not in engine:
        for i in range(12):
            engine.set_stream(f"s{i}", [pattern(1_500_000, i)])
            engine.set(f"i{i}", pattern(700_000, 100 + i))
    print("ready", flush=True)
    round = 0
    while True:
        round += 1
        engine.set_stream(f"s{round % 12}", [pattern(1_500_000, round % 12)])
        engine.set(f"i{round % 12}", pattern(700_000, 100 + round % 12))
        print("compacting", round, flush=True)
        engine.compact()
    """
)


@pytest.mark.slow
def test_kill9_during_compactions_of_big_values(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    store = tmp_path / "store"
    for delay in [0.0, 0.02, 0.07, 0.15, 0.4]:
        _run_and_kill(children, _COMPACTING_CHILD, [str(store)], 2, delay)
        with Engine.open(store) as engine:
            for i in range(12):
                assert engine.get(f"s{i}") == pattern(1_500_000, i)
                assert engine.get(f"i{i}") == pattern(700_000, 100 + i)
        report = verify(store)
        assert report.ok, report.problems


# ------------------------------------------------------------------------ bounded memory


def _rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


class _PeakSampler(threading.Thread):
    """Samples RssAnon every few milliseconds: the peak, not just the end."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = _rss_anon()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.002):
            self.peak = max(self.peak, _rss_anon())


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_2_gib_value_in_bounded_memory(tmp_path: Path) -> None:
    size = 2 << 30
    piece = os.urandom(1 << 20)

    def source() -> Iterator[bytes]:
        for _ in range(size // len(piece)):
            yield piece

    with Engine.open(tmp_path / "store") as engine:
        engine.set("warm", b"up")  # the engine's own first allocations, outside the measure
        list(engine.open_value("warm") or [])
        before = _rss_anon()
        sampler = _PeakSampler()
        sampler.start()
        engine.set_stream("huge", source())
        written = sampler.peak - before
        read = 0
        stream = engine.open_value("huge")
        assert stream is not None and stream.size == size
        with stream:
            for chunk in stream:
                assert chunk == piece
                read += len(chunk)
        sampler.stopped.set()
        sampler.join()
        assert read == size
        growth = max(sampler.peak, _rss_anon()) - before
    print(json.dumps({"write_peak_growth": written, "peak_growth": growth}))
    assert written <= 64 << 20, written
    assert growth <= 64 << 20, growth


# ------------------------------------------------------- big values held in the log, compacted


@pytest.mark.slow
def test_a_value_set_above_the_inline_limit_goes_to_a_value_file(
    open_engine: OpenEngine,
) -> None:
    engine = open_engine(durability="fsync")
    data = pattern(INLINE_LIMIT + 1, seed=4)
    engine.set("big", data)
    _, commit = engine.set_deferred("big2", data, "application/zip")
    commit.wait()
    del data
    for key in ("big", "big2"):
        entry = engine.entry(key)
        assert entry is not None and entry.streamed and entry.value_size == INLINE_LIMIT + 1
    assert engine.get("big2") == pattern(INLINE_LIMIT + 1, seed=4)
    engine.set("at-the-limit", pattern(INLINE_LIMIT))
    assert not engine.entry("at-the-limit").streamed  # type: ignore[union-attr]


def test_compaction_copies_a_big_inline_value_in_pieces(open_engine: OpenEngine) -> None:
    engine = open_engine()
    data = pattern(COPY_WHOLE + 3 * CHUNK_SIZE + 7, seed=5)
    engine.set("big", data)
    engine.set("small", b"s")
    engine.compact()
    assert engine.get("big") == data
    assert verify(engine.path).ok


def test_damage_in_a_big_inline_value_fails_its_compaction(open_engine: OpenEngine) -> None:
    engine = open_engine()
    engine.set("big", pattern(COPY_WHOLE + 10, seed=6))
    entry = engine.entry("big")
    assert entry is not None
    segment = engine.path / f"{entry.file_id:08d}.seg"
    with segment.open("r+b") as file:
        file.seek(entry.offset + entry.head + COPY_WHOLE // 2)
        byte = file.read(1)
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte[0] ^ 0x10]))
    with pytest.raises(CorruptionError, match="checksum"):
        engine.compact()
    assert list(engine.path.glob("*.snap*")) == []  # the unfinished snapshot is dropped
    engine.set("after", b"writes go on")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_compacting_big_inline_values_holds_none_whole(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "store") as engine:
        for i in range(3):  # 200 MiB each, in the log (a batch keeps values of any size there)
            engine.set_many([(f"big{i}", pattern(200 << 20, seed=i), None)])
            assert not engine.entry(f"big{i}").streamed  # type: ignore[union-attr]
        engine.set("big0", b"overwritten: the rest is copied")
        # the hint files of the sealed segments are being written in the background meanwhile,
        # by a scan that decodes no big value: they count in the bound too
        before = _rss_anon()
        sampler = _PeakSampler()
        sampler.start()
        engine.compact()
        sampler.stopped.set()
        sampler.join()
        growth = sampler.peak - before
        assert engine.get("big2") == pattern(200 << 20, seed=2)
    print(json.dumps({"compaction_peak_growth": growth}))
    assert growth <= 64 << 20, growth


# ---------------------------------------------------------------------- the command line


@pytest.mark.slow
def test_the_commands_understand_streamed_values(tmp_path: Path) -> None:
    store = tmp_path / "store"
    data = pattern(CHUNK_SIZE + 99, seed=8)
    with Engine.open(store, retention="archive") as engine:
        engine.set_stream("video", [data], "video/mp4")
        engine.set("page", b"<p>", "text/html")
        middle = engine.last_seq
        engine.set_stream("video", [b"later"])
        engine.compact()
    checked = logkv("verify", store)  # also reads every key and compares it with the log
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = [
        json.loads(line) for line in logkv("dump", store, "--history", "--json").stdout.splitlines()
    ]
    streamed = [line for line in lines if line.get("value_file")]
    assert [line["size"] for line in streamed] == [len(data), 5]
    history = logkv("history", store, "video", "--json")
    assert history.returncode == 0, history.stderr
    assert [json.loads(line)["size"] for line in history.stdout.splitlines()] == [len(data), 5]
    done = logkv("replay", store, "--until", str(middle), "--to", tmp_path / "then")
    assert done.returncode == 0, done.stderr
    with Engine.open(tmp_path / "then") as replayed:
        assert replayed.get("video") == data and replayed.entry("video").streamed  # type: ignore[union-attr]
    value_file = next((store / VALUES_DIR).glob("*.val"))
    damaged = bytearray(value_file.read_bytes())
    damaged[-1] ^= 1
    value_file.write_bytes(damaged)
    assert logkv("verify", store).returncode == 1
