"""The one log scanner (``logkv/scan.py``) and the readers that go through it.

Open, verify, history and dump all read segments through :class:`~logkv.scan.SegmentReader`,
so they must draw the same line between a torn tail and damage on every store.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from logkv import CorruptionError, Engine
from logkv.cli.dump import DumpStatus, StoreDump
from logkv.format import (
    RECORD_MAGIC,
    RECORD_MAGIC_V2,
    SEGMENT_HEADER_SIZE,
    BadFrame,
    Op,
    encode_record,
    encode_segment_header,
    read_frame,
)
from logkv.history import iter_log, key_history
from logkv.layout import SYNCED_FILE, segment_name
from logkv.scan import Damage, SegmentReader, fail_on_damage
from logkv.verify import verify


def _segment(path: Path, number: int, frames: list[bytes]) -> list[int]:
    """Write segment ``number`` holding ``frames``; return each frame's offset."""
    offsets, pos = [], SEGMENT_HEADER_SIZE
    for frame in frames:
        offsets.append(pos)
        pos += len(frame)
    path.write_bytes(encode_segment_header(number) + b"".join(frames))
    return offsets


def _frames(count: int) -> list[bytes]:
    return [encode_record(i + 1, 0, Op.SET, f"k{i}", None, b"v" * 20) for i in range(count)]


def test_bad_frame_names_its_fields() -> None:
    frame = encode_record(1, 0, Op.SET, "k", None, b"value")
    with pytest.raises(BadFrame) as caught:
        read_frame(b"xx" + frame[:-1], 2, len(frame) + 1)
    bad = caught.value
    assert (bad.reason, bad.cut_short, bad.offset) == (
        f"record of {len(frame) - 28} bytes runs past the end of the file",
        True,
        2,
    )


def test_reader_reports_damage_and_reads_on_at_the_next_valid_frame(tmp_path: Path) -> None:
    path = tmp_path / segment_name(1)
    frames = _frames(4)
    offsets = _segment(path, 1, frames)
    data = bytearray(path.read_bytes())
    data[offsets[1] + 30] ^= 0xFF
    path.write_bytes(bytes(data))
    found: list[Damage] = []
    with SegmentReader(path, 1, is_last=True, synced=None, report=found.append) as reader:
        seqs = [fields[0] for _, _, fields in reader.frames()]
        assert reader.end == len(data)
    assert seqs == [1, 3, 4]
    assert found == [Damage(path, offsets[1], offsets[2], "checksum mismatch", False, False)]


def test_reader_ends_at_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / segment_name(1)
    frames = _frames(3)
    offsets = _segment(path, 1, frames)
    os.truncate(path, offsets[2] + 10)
    found: list[Damage] = []
    with SegmentReader(path, 1, is_last=True, synced=None, report=found.append) as reader:
        assert len(list(reader.frames())) == 2
        assert reader.end == offsets[2]
    assert [(d.start, d.end, d.torn, d.cut_short) for d in found] == [
        (offsets[2], offsets[2] + 10, True, True)
    ]
    with (
        SegmentReader(path, 1, is_last=False, synced=None, report=fail_on_damage) as reader,
        pytest.raises(CorruptionError) as raised,
    ):
        list(reader.frames())
    assert raised.value.offset == offsets[2]


def test_reader_reports_a_bad_header_and_reads_past_it_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / segment_name(2)
    _segment(path, 1, _frames(2))  # the header says segment 1
    for read_past, expected in [(False, 0), (True, 2)]:
        found: list[Damage] = []
        with SegmentReader(
            path,
            2,
            is_last=False,
            synced=None,
            report=found.append,
            read_past_bad_header=read_past,
        ) as reader:
            assert len(list(reader.frames())) == expected
        assert [(d.start, d.torn, d.reason) for d in found] == [
            (0, False, "segment header says number 1, file name says 2")
        ]


# -------------------------------------------------------- one rule for every reader


def _closed(folder: Path) -> list[int]:
    """A store closed cleanly (it has a synced mark); return each record's end offset."""
    ends = []
    with Engine.open(folder) as engine:
        for i in range(6):
            engine.set(f"k{i}", f"value-{i}".encode() * 8)
            ends.append((folder / segment_name(1)).stat().st_size)
    return ends


def _without_mark(folder: Path) -> list[int]:
    ends = _closed(folder)
    (folder / SYNCED_FILE).unlink()  # a writer that never closed cleanly
    return ends


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def _cut_last_record_unmarked(folder: Path) -> None:
    ends = _without_mark(folder)
    os.truncate(folder / segment_name(1), ends[-1] - 7)


def _cut_last_record_marked(folder: Path) -> None:
    ends = _closed(folder)
    os.truncate(folder / segment_name(1), ends[-1] - 7)


def _garbage_past_the_mark(folder: Path) -> None:
    _closed(folder)
    with open(folder / segment_name(1), "ab") as file:
        file.write(bytes(300))


def _flip_before_a_good_record(folder: Path) -> None:
    ends = _without_mark(folder)
    _flip(folder / segment_name(1), ends[-3] + 40)


def _short_last_segment(folder: Path) -> None:
    _without_mark(folder)
    (folder / segment_name(2)).write_bytes(encode_segment_header(2)[:5])


def _short_middle_segment(folder: Path) -> None:
    _without_mark(folder)
    (folder / segment_name(2)).write_bytes(encode_segment_header(2)[:5])
    (folder / segment_name(3)).write_bytes(encode_segment_header(3))


def _version_2_then_3(folder: Path) -> int:
    """The version 2 fixture ``log`` (segments 1-4) written on by version 3 (segment 5), left
    without a synced mark; return where segment 5's last record starts."""
    shutil.copytree(Path(__file__).parent / "fixtures" / "v2" / "log", folder)
    with Engine.open(folder) as engine:
        engine.set("v3-first", b"f" * 5000)
        last = (folder / segment_name(5)).stat().st_size
        engine.set("v3-last", b"l" * 100)
    (folder / SYNCED_FILE).unlink()
    return last


def _torn_version_3_record_after_version_2(folder: Path) -> None:
    last = _version_2_then_3(folder)
    os.truncate(folder / segment_name(5), last + 50)


def _bad_version_2_frame_before_version_3(folder: Path) -> None:
    _version_2_then_3(folder)
    _flip(folder / segment_name(3), SEGMENT_HEADER_SIZE + 60)


def _version_2_magic_turned_version_3(folder: Path) -> None:
    # The last byte of a version 2 frame's magic ("R") made "3": a version 3 frame by its
    # magic, whose CRC-32C does not match its CRC-32.
    _version_2_then_3(folder)
    path = folder / segment_name(2)
    data = bytearray(path.read_bytes())
    assert data[SEGMENT_HEADER_SIZE : SEGMENT_HEADER_SIZE + 4] == RECORD_MAGIC_V2
    data[SEGMENT_HEADER_SIZE + 3] = RECORD_MAGIC[3]
    path.write_bytes(bytes(data))


SCENARIOS: dict[str, tuple[Callable[[Path], None], bool]] = {
    "torn version 3 record after version 2 segments": (
        _torn_version_3_record_after_version_2,
        False,
    ),
    "bad version 2 frame before version 3 records": (_bad_version_2_frame_before_version_3, True),
    "version 2 magic turned version 3": (_version_2_magic_turned_version_3, True),
    "torn last record, no mark": (_cut_last_record_unmarked, False),
    "last record cut before the mark": (_cut_last_record_marked, True),
    "garbage past the mark": (_garbage_past_the_mark, False),
    "bad frame before a good one": (_flip_before_a_good_record, True),
    "last segment shorter than its header": (_short_last_segment, False),
    "middle segment shorter than its header": (_short_middle_segment, True),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_open_verify_history_and_dump_draw_the_same_line(tmp_path: Path, name: str) -> None:
    build, damaged = SCENARIOS[name]
    folder = tmp_path / "store"
    build(folder)

    report = verify(folder)
    assert report.ok is not damaged, report.problems
    if not damaged:
        assert report.torn_tail is not None

    lines = StoreDump(folder)
    kinds = {line.get("error") for line in lines} - {None}
    assert lines.status is (DumpStatus.DAMAGED if damaged else DumpStatus.OK), kinds
    assert kinds == ({"corruption"} if damaged else {"torn_tail"})

    if damaged:
        with pytest.raises(CorruptionError):
            list(iter_log(folder))
        with pytest.raises(CorruptionError):
            Engine.open(folder, readonly=True)
    else:
        logged = list(iter_log(folder))
        with Engine.open(folder, readonly=True) as engine:
            assert engine.report.torn_tail is not None
            assert [r.record.seq for r in logged] == list(range(1, engine.last_seq + 1))


def test_key_history_raises_on_a_damaged_record_of_the_key(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    ends = _without_mark(folder)
    _flip(folder / segment_name(1), ends[-2] - 10)  # in the value of k4, mid-log
    with pytest.raises(CorruptionError):
        key_history(folder, "k4")  # never a shorter answer
    assert [r.record.key for r in key_history(folder, "k0")] == ["k0"]  # an intact key's


def test_key_history_drops_a_torn_tail_as_open_does(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    _cut_last_record_unmarked(folder)  # k5's record is the torn tail
    assert key_history(folder, "k5") == []
    assert [r.record.key for r in key_history(folder, "k4")] == ["k4"]


def test_key_history_raises_on_a_cut_record_before_the_synced_mark(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    _cut_last_record_marked(folder)  # acknowledged and synced: damage, not a torn write
    with pytest.raises(CorruptionError):
        key_history(folder, "k5")
