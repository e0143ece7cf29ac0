"""Hint files of sealed segments: written after rotation, read by open instead of a scan, and
never trusted when they do not describe their segment as it is (docs/FORMAT.md, section 15).

Every damaged, cut, stale or foreign hint must make the open scan the segment and build exactly
the index a scan builds; a writable open then writes the hint again.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from logkv import Engine
from logkv import engine as engine_module
from logkv import hints as hints_module
from logkv.errors import CorruptionError
from logkv.format import RECORD_MAGIC
from logkv.hints import load_segment_hint, write_segment_hint
from logkv.layout import hint_name, list_hints, list_segments, list_snapshots, segment_name
from logkv.snapshot import load_snapshot
from logkv.verify import verify

SEGMENT_SIZE = 4096


@pytest.fixture(autouse=True)
def _hint_small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny segments (many of them, quickly) get hints too in these tests."""
    monkeypatch.setattr(hints_module, "MIN_HINTED_SEGMENT", 0)


def fill(path: Path, rounds: int = 3, seed: int = 0) -> dict[str, bytes | None]:
    """A store of many small segments with overwrites, deletes, stored Nones and a batch;
    every sealed segment's hint written. Returns the expected contents."""
    rng = random.Random(seed)
    model: dict[str, bytes | None] = {}
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        for i in range(rounds * 60):
            key = f"k{rng.randrange(90):03d}"
            if rng.random() < 0.15 and key in model:
                engine.delete(key)
                del model[key]
            else:
                value = None if rng.random() < 0.1 else rng.randbytes(rng.randrange(0, 300))
                engine.set(key, value, rng.choice([None, "text/plain", "application/json"]))
                model[key] = value
            if i % 50 == 49:
                items = [(f"b{i}-{j}", b"x" * j, None) for j in range(3)]
                engine.set_many(items, deletes=[key])
                model.update((k, v) for k, v, _ in items)
                model.pop(key, None)
        assert engine._hints is not None
        engine._hints.wait()
    return model


def contents(engine: Engine) -> dict[str, bytes | None]:
    return {key: engine.get(key) for key in list(engine.keys())}


def state(engine: Engine) -> tuple[object, ...]:
    """What an open built: the index (every entry), the figures, the chain."""
    stats = engine.stats()
    position = engine._position
    return (
        engine._index.entries(),
        list(engine.keys()),
        stats.keys,
        stats.live_bytes,
        stats.dead_bytes,
        stats.segments,
        position.seq,
        position.chain,
        position.last_us,
    )


def scanned_state(path: Path, tmp: Path) -> tuple[object, ...]:
    """The state of a read-only open of a copy of ``path`` without any hint file."""
    copy = tmp / f"scan-{time.monotonic_ns()}"
    shutil.copytree(path, copy)
    for _, hint in list_hints(copy):
        hint.unlink()
    with Engine.open(copy, readonly=True) as engine:
        return state(engine)


def sealed(path: Path) -> list[int]:
    return [n for n, _ in list_segments(path)][:-1]


def record_scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The numbers of the segments opens scan from now on (not those read from hints)."""
    scans: list[int] = []
    real_scan = engine_module.Replayer.scan

    def spy(
        self: engine_module.Replayer, p: Path, number: int, start: int, is_last: bool
    ) -> object:
        scans.append(number)
        return real_scan(self, p, number, start, is_last)

    monkeypatch.setattr(engine_module.Replayer, "scan", spy)
    return scans


def test_sealed_segments_get_hints_and_open_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store"
    model = fill(path)
    numbers = sealed(path)
    assert len(numbers) >= 5
    assert [n for n, _ in list_hints(path)] == numbers  # every sealed segment, not the last
    scans = record_scans(monkeypatch)
    with Engine.open(path, readonly=True) as engine:
        assert scans == [numbers[-1] + 1]  # only the active segment is scanned
        assert contents(engine) == model
        engine._check()
        hinted = state(engine)
    monkeypatch.undo()
    assert hinted == scanned_state(path, tmp_path)


def test_open_rebuilds_missing_hints_and_drops_stale_ones(tmp_path: Path) -> None:
    path = tmp_path / "store"
    fill(path)
    numbers = sealed(path)
    (path / hint_name(numbers[0])).unlink()
    (path / hint_name(numbers[-1] + 5)).write_bytes(b"a hint of no segment")
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        assert engine._hints is not None
        engine._hints.wait()
    assert [n for n, _ in list_hints(path)] == numbers


def test_compaction_retires_the_hints_of_the_segments_it_covers(tmp_path: Path) -> None:
    path = tmp_path / "store"
    model = fill(path)
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        result = engine.compact()
        engine.set("after", b"1")
        model["after"] = b"1"
    assert all(n > result.covers for n, _ in list_hints(path))
    with Engine.open(path) as engine:
        assert contents(engine) == model


def _hint_bytes(path: Path) -> tuple[Path, bytes]:
    number = sealed(path)[len(sealed(path)) // 2]
    hint = path / hint_name(number)
    return hint, hint.read_bytes()


def _hinted_store(tmp_path: Path, rounds: int = 3) -> tuple[Path, tuple[object, ...], Path, bytes]:
    """A filled store, the state a scan gives, and one sealed segment's hint file and bytes."""
    path = tmp_path / "store"
    fill(path, rounds=rounds)
    expected = scanned_state(path, tmp_path)
    hint, data = _hint_bytes(path)
    return path, expected, hint, data


def _opens_like_a_scan(path: Path, expected: tuple[object, ...]) -> None:
    with Engine.open(path, readonly=True) as engine:
        assert engine.report.clean
        assert state(engine) == expected


@pytest.mark.slow
def test_every_cut_of_a_hint_falls_back_to_the_scan(tmp_path: Path) -> None:
    path, expected, hint, data = _hinted_store(tmp_path)
    for cut in range(len(data)):
        hint.write_bytes(data[:cut])
        _opens_like_a_scan(path, expected)
    hint.write_bytes(data + b"\x00")
    _opens_like_a_scan(path, expected)


@pytest.mark.slow
def test_every_flipped_bit_of_a_hint_falls_back_to_the_scan(tmp_path: Path) -> None:
    path, expected, hint, data = _hinted_store(tmp_path)
    for offset in range(len(data)):
        for bit in (0, 5) if offset % 3 else (7,):
            damaged = bytearray(data)
            damaged[offset] ^= 1 << bit
            hint.write_bytes(bytes(damaged))
            _opens_like_a_scan(path, expected)


def test_a_few_cuts_and_flips_of_a_hint(tmp_path: Path) -> None:
    """The fast loop's sample of the two tests above."""
    path, expected, hint, data = _hinted_store(tmp_path, rounds=1)
    rng = random.Random(5)
    for cut in [0, 1, 15, 16, 20, len(data) // 2, len(data) - 1]:
        hint.write_bytes(data[:cut])
        _opens_like_a_scan(path, expected)
    for offset in rng.sample(range(len(data)), 12):
        damaged = bytearray(data)
        damaged[offset] ^= 0x10
        hint.write_bytes(bytes(damaged))
        _opens_like_a_scan(path, expected)


def test_a_hint_that_disagrees_with_its_segment_is_not_used(tmp_path: Path) -> None:
    """Stale or foreign hints: another segment's hint under this name, the hint of a segment
    that was rewritten since (same size, another last frame), a segment cut short or grown."""
    path = tmp_path / "store"
    fill(path)
    expected = scanned_state(path, tmp_path)
    numbers = sealed(path)
    target = numbers[1]
    hint = path / hint_name(target)
    original = hint.read_bytes()

    # Another segment's hint renamed: its header names the other segment.
    hint.write_bytes((path / hint_name(numbers[2])).read_bytes())
    with pytest.raises(Exception, match="hint"):
        load_segment_hint(path, target, path / segment_name(target))
    _opens_like_a_scan(path, expected)

    # A hint of the same segment number from another store of identical sizes.
    other = tmp_path / "other"
    fill(other, seed=1)
    hint.write_bytes((other / hint_name(target)).read_bytes())
    with pytest.raises(Exception, match="hint"):
        load_segment_hint(path, target, path / segment_name(target))
    _opens_like_a_scan(path, expected)

    # The segment's last frame changed (its chain bytes), size unchanged: the hint is stale.
    hint.write_bytes(original)
    segment = path / segment_name(target)
    data = segment.read_bytes()
    hinted = load_segment_hint(path, target, segment)
    assert hinted is not None
    last_frame_chain = data.rindex(RECORD_MAGIC) + 12
    damaged = bytearray(data)
    damaged[last_frame_chain] ^= 1
    segment.write_bytes(bytes(damaged))
    with pytest.raises(Exception, match="chain value"):
        load_segment_hint(path, target, segment)
    segment.write_bytes(data)

    # The segment cut short, or grown: the sizes differ.
    for changed in (data[:-1], data + b"\x00"):
        segment.write_bytes(changed)
        with pytest.raises(Exception, match="bytes"):
            load_segment_hint(path, target, segment)
    segment.write_bytes(data)
    assert load_segment_hint(path, target, segment) == hinted


def test_a_damaged_sealed_segment_gets_no_hint(tmp_path: Path) -> None:
    path = tmp_path / "store"
    fill(path, rounds=1)
    number = sealed(path)[0]
    (path / hint_name(number)).unlink()
    segment = path / segment_name(number)
    data = bytearray(segment.read_bytes())
    data[40] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert write_segment_hint(path, number) is False
    assert not (path / hint_name(number)).exists()


def test_a_segment_damaged_after_its_hint_opens_as_a_scan_would(tmp_path: Path) -> None:
    """A value byte flipped in a sealed segment whose hint is intact: the segment's checksum
    differs from the hint's, so the open scans it and fails on the damaged frame, exactly as
    without a hint; salvage drops that record. Damage never hides behind a hint."""
    path = tmp_path / "store"
    fill(path, rounds=1)
    number = sealed(path)[1]
    with Engine.open(path, readonly=True) as engine:
        key, entry = next(
            (k, e)
            for k in list(engine.keys())
            if (e := engine.entry(k)) is not None and e.file_id == number and e.size > 20
        )
    segment = path / segment_name(number)
    data = bytearray(segment.read_bytes())
    data[entry.offset + entry.head + 3] ^= 1
    segment.write_bytes(bytes(data))
    assert (path / hint_name(number)).exists()
    with pytest.raises(CorruptionError) as caught:
        Engine.open(path)
    assert (caught.value.path, caught.value.offset) == (segment, entry.offset)
    assert not verify(path).ok
    with Engine.open(path, recovery="salvage") as engine:
        assert engine.get(key, None) != bytes(data[entry.offset + entry.head :][: entry.size])
        assert engine.report.dropped


@pytest.mark.slow
def test_kill9_while_writing_hints_never_leaves_a_wrong_index(tmp_path: Path) -> None:
    """A child rewrites every hint of a store in a loop and is killed at random moments; every
    open afterwards builds the index a scan builds, and a writable open removes the temp
    file a kill left."""
    path = tmp_path / "store"
    fill(path)
    expected = scanned_state(path, tmp_path)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from logkv.hints import write_segment_hint\n"
        "folder, numbers = Path(sys.argv[1]), [int(n) for n in sys.argv[2:]]\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    for n in numbers:\n"
        "        write_segment_hint(folder, n)\n"
    )
    rng = random.Random(9)
    for _ in range(8):
        kill_child(script, [str(path), *map(str, sealed(path))], rng.uniform(0.0, 0.3))
        _opens_like_a_scan(path, expected)
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        assert state(engine)[:-3] == expected[:-3]
    assert not list(path.glob("*.tmp"))


def kill_child(script: str, args: list[str], seconds: float) -> None:
    """Run Python ``script`` with ``args`` in a child (this logkv on its path), and kill it
    (``SIGKILL``) ``seconds`` after it printed ``ready``."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, env=env)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == b"ready"
    time.sleep(seconds)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()


def _fill_streamed(path: Path, seed: int = 0) -> dict[str, bytes | None]:
    """A store of many small segments whose keys hold streamed values (in value files), values
    in the log and stored Nones, each overwritten by the other kinds and some deleted; every
    sealed segment's hint written. Returns the expected contents."""
    rng = random.Random(seed)
    model: dict[str, bytes | None] = {}
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        for i in range(150):
            key = f"k{rng.randrange(40):02d}"
            kind = rng.random()
            if kind < 0.1 and key in model:
                engine.delete(key)
                del model[key]
            elif kind < 0.45:
                data = rng.randbytes(rng.randrange(0, 3000))
                engine.set_stream(key, [data[:1000], data[1000:]], "video/mp4")
                model[key] = data
            else:
                value = None if kind > 0.95 else rng.randbytes(rng.randrange(0, 200))
                engine.set(key, value, rng.choice([None, "text/plain"]))
                model[key] = value
            if i == 100:
                engine.compact()  # a snapshot whose hint block carries streamed entries
        engine.wait_for_hints()
    return model


def test_hints_and_snapshot_hints_carry_streamed_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed set's entry (size -2 - its value's size) goes through a segment's hint and a
    snapshot's hint block exactly: the hinted open builds the index a scan would, and every
    value, streamed or not, reads back."""
    path = tmp_path / "store"
    model = _fill_streamed(path)
    streamed_rows = 0
    for number, _ in list_hints(path):
        hint = load_segment_hint(path, number, path / segment_name(number))
        assert hint is not None
        streamed_rows += sum(1 for size in hint.rows.sizes if size < -1)
    assert streamed_rows  # the hint files hold streamed entries
    snapshot_path, covers = list_snapshots(path)[-1][1], list_snapshots(path)[-1][0]
    _, snapshot_entries = load_snapshot(snapshot_path, covers)
    assert any(entry[3] < -1 for entry in snapshot_entries.values())
    scans = record_scans(monkeypatch)
    with Engine.open(path, readonly=True) as engine:
        assert scans == [sealed(path)[-1] + 1]  # only the active segment is scanned
        assert contents(engine) == model
        engine._check()
        hinted = state(engine)
        streamed = {k: e for k, e in engine._index.entries().items() if e[3] < -1}
        assert streamed
        for key, entry in streamed.items():
            named = engine.entry(key)
            assert named is not None and named.streamed
            assert named.value_size == len(model[key] or b"") == -2 - entry[3]
    monkeypatch.undo()
    assert hinted == scanned_state(path, tmp_path)
    with Engine.open(path) as engine:  # a writable open from hints, then more writes
        assert contents(engine) == model
        engine.set_stream("k00", [b"again"])
        engine.compact()
        assert engine.get("k00") == b"again"


def test_a_hint_given_up_during_its_scan_is_not_written(tmp_path: Path) -> None:
    fill(tmp_path / "s")
    store = tmp_path / "s"
    (number, _), *_ = list_segments(store)
    assert write_segment_hint(store, number, lambda: True) is False
    assert not (store / hint_name(number)).exists()
    assert write_segment_hint(store, number, lambda: False) is True


def test_compaction_drops_the_queued_hints_of_the_segments_it_covers(tmp_path: Path) -> None:
    writer = hints_module.HintWriter(tmp_path)
    writer._queue = [1, 2, 5]  # queued, the thread not started: nothing runs meanwhile
    writer.skip_through(2)
    assert writer._queue == [5]
    assert writer._covers(2) and not writer._covers(3)
    writer.close()


def test_hints_wait_out_a_compaction_and_open_agrees(tmp_path: Path) -> None:
    model = fill(tmp_path / "s")
    with Engine.open(tmp_path / "s", segment_size=SEGMENT_SIZE) as engine:
        engine.set("after", b"x" * 5000)  # rotates: its segment's hint is queued
        engine.compact()
        engine.wait_for_hints()
        covers = engine.snapshot_covers
        assert all(n > covers for n, _ in list_hints(tmp_path / "s"))
    model["after"] = b"x" * 5000
    with Engine.open(tmp_path / "s", readonly=True) as engine:
        assert {k: engine.get(k) for k in engine.keys()} == model  # noqa: SIM118
