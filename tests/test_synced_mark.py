"""The rule for a damaged end of the log (docs/FORMAT.md, section 6.1).

Past the synced mark (what was durable at the writer's last clean close) a bad tail is a torn
write: open cuts it off and reports it, keeping a copy when it held complete frames (what a
power loss leaves of unsynced pages). Before the mark the records were durable and acknowledged:
damage there, or a log that ends before the mark, is a ``CorruptionError`` and ``verify`` exits
1. Open and verify agree on every case.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from logkv.cli.main import main
from logkv.engine import Engine
from logkv.errors import CorruptionError
from logkv.format import SyncedMark, decode_synced_mark, encode_synced_mark
from logkv.layout import (
    DAMAGED_SUFFIX,
    SYNCED_FILE,
    is_own_name,
    list_segments,
    segment_name,
    torn_tail_copy_name,
)
from logkv.modes import Durability
from logkv.verify import verify


def _closed_store(folder: Path, count: int = 5, durability: str = "process") -> list[int]:
    """A store of ``count`` keys, closed cleanly; return each record's end offset."""
    ends = []
    with Engine.open(folder, durability=durability) as engine:
        for i in range(count):
            engine.set(f"k{i}", f"value-{i}".encode() * 10)
            ends.append((folder / segment_name(1)).stat().st_size)
    return ends


def _abandoned_store(folder: Path, before: int, after: int) -> list[int]:
    """A store closed cleanly with ``before`` keys, then reopened under fsync and written
    ``after`` more (acknowledged) keys, and never closed: a power loss or kill comes next.
    The writer's files are copied aside as a crash would leave them (without the lock)."""
    live = folder.with_name(folder.name + "-live")
    ends = _closed_store(live, before)
    engine = Engine.open(live, durability=Durability.FSYNC)
    for i in range(after):
        engine.set(f"n{i}", b"synced" * 10)
        ends.append((live / segment_name(1)).stat().st_size)
    folder.mkdir()
    for name in (segment_name(1), SYNCED_FILE):
        shutil.copyfile(live / name, folder / name)
    engine.close()
    return ends


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0x40]))


def _verify_exit(folder: Path, capsys: pytest.CaptureFixture[str]) -> int:
    code = main(["verify", str(folder)])
    capsys.readouterr()
    return code


def test_mark_round_trip_and_damaged_mark_is_ignored(tmp_path: Path) -> None:
    mark = SyncedMark(7, 123_456)
    assert decode_synced_mark(encode_synced_mark(mark)) == mark
    data = bytearray(encode_synced_mark(mark))
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 1
        assert decode_synced_mark(bytes(damaged)) is None
    assert decode_synced_mark(bytes(data[:-1])) is None


def test_clean_close_records_the_synced_end(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    ends = _closed_store(folder)
    mark = decode_synced_mark((folder / SYNCED_FILE).read_bytes())
    assert mark == SyncedMark(1, ends[-1])


def test_flipped_byte_in_the_last_record_of_a_closed_store_is_corruption(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reported defect: a complete, acknowledged last record with a flipped byte used to
    be cut off silently as a torn tail on open, while verify exited 1."""
    folder = tmp_path / "s"
    ends = _closed_store(folder)
    _flip(folder / segment_name(1), ends[-2] + 40)
    with pytest.raises(CorruptionError) as raised:
        Engine.open(folder)
    assert raised.value.offset == ends[-2]
    assert "synced mark" in raised.value.reason
    assert (folder / segment_name(1)).stat().st_size == ends[-1]  # nothing was changed
    assert _verify_exit(folder, capsys) == 1
    with Engine.open(folder, recovery="salvage") as engine:  # salvage keeps the rest
        assert len(engine) == len(ends) - 1
        assert engine.report.dropped


@pytest.mark.parametrize("cut", [1, 5, 20, 31])
def test_cut_into_synced_records_is_corruption(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cut: int
) -> None:
    folder = tmp_path / "s"
    ends = _closed_store(folder)
    with open(folder / segment_name(1), "r+b") as file:
        file.truncate(ends[-1] - cut)
    with pytest.raises(CorruptionError):
        Engine.open(folder)
    with pytest.raises(CorruptionError):
        Engine.open(folder, readonly=True)
    assert _verify_exit(folder, capsys) == 1


def test_log_cut_at_a_frame_boundary_before_the_mark_is_corruption(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whole acknowledged records missing from the end: the frames left are all valid, only
    the mark shows the loss."""
    folder = tmp_path / "s"
    ends = _closed_store(folder)
    with open(folder / segment_name(1), "r+b") as file:
        file.truncate(ends[-3])
    with pytest.raises(CorruptionError) as raised:
        Engine.open(folder)
    assert "acknowledged records are missing" in raised.value.reason
    assert _verify_exit(folder, capsys) == 1


def test_missing_last_segment_named_by_the_mark_is_corruption(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    with Engine.open(folder, segment_size=4096) as engine:
        for i in range(60):
            engine.set(f"k{i}", b"x" * 200)
    segments = list_segments(folder)
    assert len(segments) > 2
    segments[-1][1].unlink()
    with pytest.raises(CorruptionError) as raised:
        Engine.open(folder)
    assert f"segment {segments[-1][0]} is missing" in raised.value.reason
    assert not verify(folder).ok


def test_power_loss_garbage_past_the_mark_opens_unattended(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under fsync, after a power loss the unsynced end of the file may hold anything, even a
    full frame's length of zeros. Past the mark that is a torn tail: the store opens, the drop
    is reported and logged, and its bytes are kept."""
    folder = tmp_path / "s"
    ends = _abandoned_store(folder, before=3, after=2)
    garbage = bytes(300)
    with open(folder / segment_name(1), "ab") as file:
        file.write(garbage)
    assert _verify_exit(folder, capsys) == 0  # verify and open agree: a torn tail
    assert verify(folder).torn_tail is not None
    with caplog.at_level(logging.WARNING, logger="logkv"), Engine.open(folder) as engine:
        torn = engine.report.torn_tail
        assert torn is not None and not torn.cut_short
        assert (torn.start, torn.end) == (ends[-1], ends[-1] + len(garbage))
        assert len(engine) == 5  # every acknowledged record is there
    kept = folder / f"{segment_name(1)}.tail-{ends[-1]}{DAMAGED_SUFFIX}"
    assert kept.read_bytes() == garbage
    assert "kept in" in caplog.text
    assert (folder / segment_name(1)).stat().st_size == ends[-1]


def test_damaged_record_written_after_the_mark_is_a_torn_tail(tmp_path: Path) -> None:
    """A complete frame past the mark that fails its checksum (a power loss that wrote part of
    the page) is dropped, reported, and kept: never silently."""
    folder = tmp_path / "s"
    ends = _abandoned_store(folder, before=3, after=2)
    _flip(folder / segment_name(1), ends[-2] + 40)
    with Engine.open(folder) as engine:
        torn = engine.report.torn_tail
        assert torn is not None and torn.start == ends[-2] and not torn.cut_short
        assert len(engine) == 4
    assert (folder / f"{segment_name(1)}.tail-{ends[-2]}{DAMAGED_SUFFIX}").exists()


def test_cut_short_tail_past_the_mark_is_dropped_without_a_copy(tmp_path: Path) -> None:
    """A kill mid-append leaves a record cut short by the end of the file: the ordinary torn
    tail, dropped with a warning and nothing kept."""
    folder = tmp_path / "s"
    ends = _abandoned_store(folder, before=3, after=2)
    with open(folder / segment_name(1), "r+b") as file:
        file.truncate(ends[-1] - 7)
    with Engine.open(folder) as engine:
        torn = engine.report.torn_tail
        assert torn is not None and torn.cut_short and torn.start == ends[-2]
        assert len(engine) == 4
    assert not list(folder.glob(f"*{DAMAGED_SUFFIX}"))


def test_store_without_a_mark_keeps_the_old_rule(tmp_path: Path) -> None:
    """Stores written before the mark existed (or never closed cleanly) have no mark: a bad
    tail is a torn tail as before."""
    folder = tmp_path / "s"
    ends = _closed_store(folder)
    (folder / SYNCED_FILE).unlink()
    _flip(folder / segment_name(1), ends[-2] + 40)
    with Engine.open(folder) as engine:
        assert engine.report.torn_tail is not None
        assert len(engine) == len(ends) - 1


def test_damaged_mark_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "s"
    _closed_store(folder)
    (folder / SYNCED_FILE).write_bytes(b"\x00" * 32)
    with caplog.at_level(logging.WARNING, logger="logkv"), Engine.open(folder) as engine:
        assert len(engine) == 5
    assert "synced mark is damaged" in caplog.text
    assert decode_synced_mark((folder / SYNCED_FILE).read_bytes()) is not None  # rewritten


def test_salvage_forgets_the_mark_of_rewritten_segments(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    ends = _closed_store(folder)
    _flip(folder / segment_name(1), ends[1] + 40)  # damage in the middle: salvage rewrites
    with Engine.open(folder, recovery="salvage") as engine:
        assert len(engine) == len(ends) - 1
    with Engine.open(folder) as engine:  # the new mark fits the rewritten segment
        assert len(engine) == len(ends) - 1
        assert engine.report.clean


def test_dump_draws_the_same_line_as_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``logkv dump`` labels damage before the mark as corruption (exit 1) and bad bytes past
    it as a torn tail (exit 0), as open does."""
    closed = tmp_path / "closed"
    ends = _closed_store(closed)
    _flip(closed / segment_name(1), ends[-2] + 40)
    assert main(["dump", str(closed), "--json"]) == 1
    assert '"corruption"' in capsys.readouterr().out
    abandoned = tmp_path / "abandoned"
    _abandoned_store(abandoned, before=3, after=2)
    with open(abandoned / segment_name(1), "ab") as file:
        file.write(bytes(300))
    assert main(["dump", str(abandoned), "--json"]) == 0
    assert '"torn_tail"' in capsys.readouterr().out


def test_files_of_the_mark_and_a_kept_tail_are_logkv_own(tmp_path: Path) -> None:
    """The synced mark and a kept torn tail are logkv's own files: a store folder holding them
    is not taken for one that another client wrote into."""
    assert is_own_name(SYNCED_FILE)
    assert is_own_name(torn_tail_copy_name(segment_name(3), 4096))
    assert not is_own_name("00000003.seg.tail-x.damaged")


@pytest.mark.parametrize("loss", ["newest-segment", "cut-at-a-record"])
def test_salvage_goes_on_without_what_the_mark_says_is_lost(tmp_path: Path, loss: str) -> None:
    """Salvage opens a store whose log ends before the synced mark, reports the loss, and the
    next (strict) open needs no salvage."""
    folder = tmp_path / "s"
    with Engine.open(folder, segment_size=4096) as engine:
        for i in range(60):
            engine.set(f"k{i}", b"v" * 200)
    *_, last = list_segments(folder)
    if loss == "newest-segment":
        last[1].unlink()
    else:
        with open(last[1], "r+b") as file:
            file.truncate(last[1].stat().st_size - 1)  # cut into the last record
    with Engine.open(folder, recovery="salvage") as engine:
        assert not engine.report.clean
        assert engine.report.lost is not None or engine.report.dropped
        survivors = len(engine)
    assert 0 < survivors < 60
    with Engine.open(folder) as engine:
        assert len(engine) == survivors
        assert engine.report.clean
