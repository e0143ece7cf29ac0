"""Stores written by format version 2 (``tests/fixtures/v2``) open, read, verify and compact
under version 3, and what a version 2 store becomes when version 3 writes it.

The fixtures were written by logkv before version 3 (CRC-32 frames, SHA-256 chain): ``log`` is
a log of four segments with batches, a stored None, a 10 KiB value and a synced mark;
``snapshot`` a snapshot with archived segments and a log with a batch after it. The expected
states below repeat the writes that made them.
"""

from __future__ import annotations

import mmap
import shutil
from pathlib import Path

import pytest
from test_format_v1 import check_an_older_store, read_state

from logkv import Engine
from logkv.format import (
    FRAME_HEADER,
    RECORD_MAGIC,
    RECORD_MAGIC_V2,
    SEGMENT_HEADER,
    iter_frames,
)
from logkv.history import iter_log
from logkv.snapshot import load_snapshot
from logkv.verify import verify

FIXTURES = Path(__file__).parent / "fixtures" / "v2"
State = dict[str, tuple[bytes | None, str | None]]


def _log_state() -> State:
    state: State = {}
    for i in range(40):
        state[f"k{i:03d}"] = (bytes([i]) * (i * 9), "text/plain" if i % 3 else None)
    state["none"] = (None, None)
    state.update({f"b{i}": (f"batch {i}".encode(), "text/plain") for i in range(5)})
    del state["k000"], state["k005"]
    state["big"] = (bytes(range(256)) * 40, None)
    for i in range(10, 40, 5):
        del state[f"k{i:03d}"]
    state["k001"] = (b"rewritten", "application/json")
    del state["b4"]
    return state


def _snapshot_state() -> State:
    state: State = {f"s{i:03d}": (b"v" * (i * 13), None) for i in range(30)}
    state.update({"s003": (None, None), "t": (b"batched", "text/plain")})
    del state["s004"]
    state.update({f"after{i}": (b"a" * i, "text/plain") for i in range(6)})
    del state["s005"]
    state["s006"] = (b"later", None)
    return state


EXPECTED = {"log": _log_state, "snapshot": _snapshot_state}


def _magics(path: Path, start: int, end: int | None = None) -> list[bytes]:
    """The magic of every frame of ``path`` from ``start`` (to ``end``)."""
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        stop = len(buf) if end is None else end
        found = [
            FRAME_HEADER.unpack_from(buf, offset)[0]
            for offset, _, _ in iter_frames(buf, start, stop, batches=False)
        ]
    return found


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_version_2_store_opens_reads_verifies_and_compacts(tmp_path: Path, name: str) -> None:
    for path in (FIXTURES / name).glob("*.seg"):
        assert SEGMENT_HEADER.unpack(path.read_bytes()[:16])[1] == 2
    check_an_older_store(tmp_path / name, FIXTURES / name, EXPECTED[name](), 2)


def test_version_3_appends_segments_and_keeps_version_2_frames_verbatim(tmp_path: Path) -> None:
    # A version 2 store that version 3 writes: new records go to a new version 3 segment whose
    # first record chains (by BLAKE3) on the last version 2 record; compaction copies the old
    # frames into a version 3 snapshot as they are, and every frame is checked by its own kind.
    store = tmp_path / "log"
    shutil.copytree(FIXTURES / "log", store)
    expected = _log_state()
    with Engine.open(store, segment_size=1 << 20) as engine:
        engine.set("new", b"n" * 20_000, "text/plain")
        expected["new"] = (b"n" * 20_000, "text/plain")
    records = list(iter_log(store))
    old = [r for r in records if r.path.name != "00000005.seg"]
    new = [r for r in records if r.path.name == "00000005.seg"]
    assert len(new) == 1 and new[0].record.seq == old[-1].record.seq + 1
    assert _magics(store / "00000005.seg", 16) == [RECORD_MAGIC]
    assert set(_magics(store / "00000004.seg", 16)) == {RECORD_MAGIC_V2}
    report = verify(store)
    assert report.ok and report.chain_checked == len(records)  # from the genesis value
    with Engine.open(store) as engine:
        engine.compact()
        assert read_state(engine) == expected
    (snapshot,) = store.glob("*.snap")
    info, _ = load_snapshot(snapshot, int(snapshot.stem))
    magics = _magics(snapshot, SEGMENT_HEADER.size, SEGMENT_HEADER.size + info.record_bytes)
    assert set(magics) == {RECORD_MAGIC, RECORD_MAGIC_V2} and len(magics) == len(expected)
    assert verify(store).ok
    with Engine.open(store, readonly=True) as reader:
        assert read_state(reader) == expected


def test_salvage_rewrites_a_damaged_version_2_segment_as_version_2(tmp_path: Path) -> None:
    store = tmp_path / "log"
    shutil.copytree(FIXTURES / "log", store)
    segment = store / "00000004.seg"
    data = bytearray(segment.read_bytes())
    data[SEGMENT_HEADER.size + 40] ^= 0x01  # damage the first record of the last segment
    segment.write_bytes(bytes(data))
    (store / "SYNCED").unlink()  # so that only what lies before good records is damage
    with Engine.open(store, recovery="salvage") as engine:
        assert engine.report.dropped
        engine.set("after", b"salvage")
    header = segment.read_bytes()[: SEGMENT_HEADER.size]
    assert SEGMENT_HEADER.unpack(header)[1] == 2  # its frames are version 2 frames
    assert SEGMENT_HEADER.unpack((store / "00000005.seg").read_bytes()[:16])[1] == 3
    assert set(_magics(segment, SEGMENT_HEADER.size)) == {RECORD_MAGIC_V2}
    assert verify(store).ok is False  # the dropped record broke the chain, visibly
    with Engine.open(store) as engine:
        assert engine.report.clean and engine.get("after") == b"salvage"
