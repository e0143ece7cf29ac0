"""Hint files written from the hint data the writer collects as it appends (docs/FORMAT.md,
section 15.2): byte for byte the file a scan of the same segment writes, whatever the records
(overwrites, deletes, stored Nones, batches, large and streamed values), across failed
appends, reopens and compactions; a segment the writer did not see whole is scanned.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from logkv import Engine
from logkv import hints as hints_module
from logkv.engine import LARGE_VALUE
from logkv.format import SEGMENT_HEADER_SIZE
from logkv.hints import CollectedHint, HintWriter, load_segment_hint, write_segment_hint
from logkv.layout import hint_name, list_hints, list_segments, segment_name
from logkv.scan import Damage, SegmentReader

SEGMENT_SIZE = 4096
_real_pwrite = os.pwrite
_real_pwritev = os.pwritev


@pytest.fixture(autouse=True)
def _hint_small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny segments (many of them, quickly) get hints too in these tests."""
    monkeypatch.setattr(hints_module, "MIN_HINTED_SEGMENT", 0)


class Scans:
    """Records the segments whose hint the hint thread writes from a scan (instead of from
    collected data)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.numbers: list[int] = []
        real = hints_module._write_segment_hint

        def spy(folder: Path, number: int, given_up: Any) -> bool:
            if threading.current_thread().name.startswith("logkv-hints"):
                self.numbers.append(number)
            return real(folder, number, given_up)

        monkeypatch.setattr(hints_module, "_write_segment_hint", spy)


def scanned_hints_agree(path: Path) -> list[int]:
    """Check that every hint file in ``path`` holds the bytes a scan of its segment writes
    (the scan's hint replaces it); return the segments checked."""
    checked = []
    for number, hint in list_hints(path):
        collected = hint.read_bytes()
        assert write_segment_hint(path, number)
        assert hint.read_bytes() == collected, f"segment {number}"
        checked.append(number)
    return checked


def fail_next_append(monkeypatch: pytest.MonkeyPatch, offset: int | None = None) -> None:
    """Make the next frame write (at ``offset``, or anywhere) write half its bytes and fail
    with ENOSPC; writes work again from then on."""

    def failing(fd: int, data: Any, at: int) -> int:
        if offset is not None and at != offset:
            return _real_pwrite(fd, data, at)
        monkeypatch.setattr(os, "pwrite", _real_pwrite)
        monkeypatch.setattr(os, "pwritev", _real_pwritev)
        view = memoryview(b"".join(data) if isinstance(data, list | tuple) else data)
        _real_pwrite(fd, view[: len(view) // 2], at)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", failing)
    monkeypatch.setattr(os, "pwritev", failing)  # a large value's frame is written in pieces


def apply(engine: Engine, op: tuple[Any, ...], model: dict[str, bytes | None]) -> None:
    """Run one operation of :data:`operations` against ``engine`` and ``model``."""
    kind, key, size, content_type = op
    if kind == "set":
        value = None if size < 0 else bytes([size % 251]) * size
        engine.set(key, value, content_type)
        model[key] = value
    elif kind == "large":
        value = os.urandom(LARGE_VALUE + size)
        engine.set(key, value, content_type)
        model[key] = value
    elif kind == "delete":
        engine.delete(key)
        model.pop(key, None)
    elif kind == "batch":
        items = [(f"{key}-{j}", b"b" * (size + j), content_type) for j in range(3)]
        engine.set_many(items, deletes=[key, f"{key}-0"])
        model.update((k, v) for k, v, _ in items)
        model.pop(key, None)
        model.pop(f"{key}-0", None)
    elif kind == "stream":
        data = os.urandom(size * 7)
        engine.set_stream(key, [data[: size * 3], data[size * 3 :]], content_type)
        model[key] = data
    else:
        raise AssertionError(kind)


keys = st.sampled_from([f"k{i:02d}" for i in range(24)])
operations = st.one_of(
    st.tuples(
        st.just("set"),
        keys,
        st.integers(-1, 900),
        st.sampled_from([None, "text/plain", "application/json"]),
    ),
    st.tuples(st.just("delete"), keys, st.just(0), st.none()),
    st.tuples(st.just("batch"), keys, st.integers(0, 300), st.sampled_from([None, "image/png"])),
    st.tuples(st.just("stream"), keys, st.integers(1, 600), st.sampled_from([None, "video/mp4"])),
    st.tuples(st.just("large"), keys, st.integers(0, 100), st.none()),
)
steps = st.lists(st.one_of(operations, st.sampled_from(["reopen", "compact", "fail"])), max_size=60)


def run_steps(path: Path, plan: list[Any], monkeypatch: pytest.MonkeyPatch) -> int:
    """Run ``plan`` on a store at ``path``, checking every hint file against a scan's before
    each reopen and compaction and at the end, the contents against the model, and that only
    inherited segments were scanned; return how many hint files were checked."""
    scans = Scans(monkeypatch)
    model: dict[str, bytes | None] = {}
    inherited: list[int] = []
    checked: set[int] = set()
    engine = Engine.open(path, segment_size=SEGMENT_SIZE)
    try:
        for step in plan:
            if step in ("reopen", "compact"):
                engine.wait_for_hints()  # a close drops the hints still queued
                checked.update(scanned_hints_agree(path))
            if step == "reopen":
                engine.close()
                engine = Engine.open(path, segment_size=SEGMENT_SIZE)
                inherited.extend(engine._unhinted)  # replayed by a scan: none here
                if engine._writer is not None and engine._writer.end > SEGMENT_HEADER_SIZE:
                    inherited.append(engine._writer.number)
            elif step == "compact":
                engine.compact()
            elif step == "fail":
                fail_next_append(monkeypatch)
                with pytest.raises(OSError):
                    engine.set("failed", b"f" * 500)
                continue  # a failed rotation leaves the new segment's file until the next one
            else:
                apply(engine, step, model)
            engine._check()
        engine.wait_for_hints()
        assert {k: engine.get(k) for k in list(engine.keys())} == model
    finally:
        engine.close()
    assert set(scans.numbers) <= set(inherited), (scans.numbers, inherited)
    checked.update(scanned_hints_agree(path))
    with Engine.open(path, readonly=True) as reopened:
        assert {k: reopened.get(k) for k in list(reopened.keys())} == model
    return len(checked)


@pytest.mark.slow
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=steps)
# A rotation whose header write failed leaves the next segment's file, then a step that
# appends nothing: the store's own check must accept the leftover file.
@example(plan=[("large", "k00", 0, None), "fail", ("delete", "k01", 0, None)])
def test_collected_hints_are_the_bytes_a_scan_writes(
    plan: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with tempfile.TemporaryDirectory() as folder, monkeypatch.context() as patch:
        run_steps(Path(folder) / "store", plan, patch)


def test_a_random_run_of_collected_hints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast loop's sample of the Hypothesis test above: every kind of step, seeded."""
    rng = random.Random(22)
    kinds = ["set"] * 16 + ["delete", "batch", "batch", "stream", "stream", "reopen", "compact"]
    kinds += ["fail"]
    plan: list[Any] = []
    for _ in range(300):
        kind = rng.choice(kinds)
        key = f"k{rng.randrange(24):02d}"
        if kind in ("reopen", "compact", "fail"):
            plan.append(kind)
        else:
            plan.append((kind, key, rng.randrange(-1 if kind == "set" else 1, 700), None))
    plan.insert(150, ("large", "k01", 10, "application/octet-stream"))
    assert run_steps(tmp_path / "store", plan, monkeypatch) >= 10


def test_an_append_that_rotated_and_then_failed_seals_the_segment_at_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer rotated to a new segment, then the frame's write failed: the next append
    seals the segment before, with the meta of its last record (not of the failed one), and
    the segments are counted."""
    path = tmp_path / "store"
    scans = Scans(monkeypatch)
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        while engine._writer is not None and engine._writer.end < SEGMENT_SIZE:
            engine.set(f"k{engine.last_seq % 7}", b"v" * 300)
        sealed = engine._writer.number if engine._writer is not None else 0
        fail_next_append(monkeypatch, offset=SEGMENT_HEADER_SIZE)
        with pytest.raises(OSError):
            engine.set("failed", b"f" * 300)
        assert engine._writer is not None and engine._writer.number == sealed + 1
        assert engine._collected.number == sealed  # sealed, counted and hinted at the next
        engine.set("after", b"a")
        engine.wait_for_hints()
        engine._check()
        assert engine.stats().segments == len(list_segments(path))
        assert "failed" not in engine
    assert scans.numbers == []
    assert sealed in scanned_hints_agree(path)


def test_the_segment_an_open_inherits_is_scanned_at_its_seal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records in the active segment before this open were not collected: its hint is a
    scan's; the segments sealed after it are collected again."""
    path = tmp_path / "store"
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        engine.set("a", b"1")
        engine.delete("a")
        engine.set("b", b"2")
    scans = Scans(monkeypatch)
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        inherited = engine._writer.number if engine._writer is not None else 0
        assert not engine._collected.whole
        for i in range(60):
            engine.set(f"k{i % 9}", b"x" * 200)
        engine.wait_for_hints()
    assert scans.numbers == [inherited]
    assert [n for n, _ in list_hints(path)] == [n for n, _ in list_segments(path)][:-1]
    scanned_hints_agree(path)


def test_a_collected_hint_that_disagrees_with_its_segment_falls_back_to_a_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A segment grown, cut or whose last frame is elsewhere than collected: the hint thread
    scans it (a damaged segment then gets no hint), never writes what it collected."""
    path = tmp_path / "store"
    with Engine.open(path, segment_size=SEGMENT_SIZE) as engine:
        for i in range(40):
            engine.set(f"k{i % 5}", b"y" * 250)
        engine.wait_for_hints()
    number, segment = list_segments(path)[0]
    (path / hint_name(number)).unlink()
    last = frame_offsets(segment, number)[-1]
    data = segment.read_bytes()
    names: list[str | None] = [None]

    def collected(last_offset: int, chain: bytes) -> CollectedHint:
        hint = CollectedHint(number, 1, names, whole=True)
        hint.last["k0"] = None
        hint.last_offset = last_offset
        hint.seal(1, 1, chain)
        return hint

    caplog.set_level(logging.INFO, logger="logkv.hints")
    assert hints_module.write_collected_hint(path, collected(last, b"\0" * 16))  # chain differs
    assert hints_module.write_collected_hint(path, collected(last - 1, b"\0" * 16))
    segment.write_bytes(data + b"\0")  # grown: the scan finds bad bytes, no hint
    assert not hints_module.write_collected_hint(path, collected(last, b"\0" * 16))
    assert not (path / hint_name(number)).exists()
    assert caplog.text.count("scanning it for its hint") == 3
    segment.write_bytes(data)
    empty = CollectedHint(number, 1, names, whole=True)
    assert not hints_module.write_collected_hint(path, empty)  # nothing collected: no hint


def frame_offsets(segment: Path, number: int) -> list[int]:
    """Where the frames of ``segment`` start (every frame checked)."""
    damaged: list[Damage] = []
    with SegmentReader(segment, number, is_last=False, synced=None, report=damaged.append) as r:
        offsets = [offset for offset, _, _ in r.frames(0, values=False)]
    assert not damaged
    return offsets


def test_queued_collected_hints_are_bounded(tmp_path: Path) -> None:
    """A hint thread that falls behind holds a few segments' collected keys, not more: past
    :data:`MAX_QUEUED_COLLECTED`, the oldest queued collected hint becomes a scan."""
    writer = HintWriter(tmp_path)
    limit = hints_module.MAX_QUEUED_COLLECTED
    with writer._wake:  # the thread cannot take a job meanwhile
        for number in range(1, limit + 3):
            writer.submit(CollectedHint(number, 1, [None], whole=True))
        queued = list(writer._queue)
        writer.skip_through(2)
        writer.submit(CollectedHint(1, 1, [None], whole=True))  # covered: dropped
        after_skip = list(writer._queue)
    assert queued[:2] == [1, 2]
    assert [type(job) for job in queued[2:]] == [CollectedHint] * limit
    assert [getattr(job, "number", job) for job in after_skip] == list(range(3, limit + 3))
    writer.wait()
    writer.close()


@pytest.mark.slow
def test_kill9_while_a_writer_collects_and_writes_hints(tmp_path: Path) -> None:
    """A child appends (sets, deletes, batches) to a store of small segments, its hint thread
    writing each sealed segment's hint from collected data, and is killed at random moments;
    every open afterwards builds the index a scan without any hint builds."""
    from test_hints import kill_child, scanned_state, state  # noqa: PLC0415 (a sibling module)

    path = tmp_path / "store"
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from logkv import Engine, hints\n"
        "hints.MIN_HINTED_SEGMENT = 0\n"
        "with Engine.open(Path(sys.argv[1]), segment_size=4096) as engine:\n"
        "    print('ready', flush=True)\n"
        "    i = int(sys.argv[2])\n"
        "    while True:\n"
        "        i += 1\n"
        "        engine.set(f'k{i % 97}', b'v' * (i % 400), 'text/plain' if i % 3 else None)\n"
        "        if i % 7 == 0:\n"
        "            engine.delete(f'k{(i * 5) % 97}')\n"
        "        if i % 11 == 0:\n"
        "            engine.set_many([(f'b{i % 13}', b'b' * 50, None)], deletes=[f'k{i % 89}'])\n"
    )
    rng = random.Random(14)
    for round_number in range(8):
        kill_child(script, [str(path), str(round_number * 100_000)], rng.uniform(0.2, 0.8))
        loaded = [load_segment_hint(path, n, path / segment_name(n)) for n, _ in list_hints(path)]
        assert loaded and all(hint is not None for hint in loaded)  # whole, and describing
        expected = scanned_state(path, tmp_path)
        with Engine.open(path, readonly=True) as engine:
            assert engine.report.clean or engine.report.torn_tail is not None
            assert state(engine) == expected


@given(
    keys=st.lists(st.text(max_size=6), unique=True, max_size=300),
    step=st.integers(1, 40),
)
def test_keys_sorted_in_pieces_and_merged_two_runs_at_a_time_are_in_order(
    keys: list[str], step: int
) -> None:
    """The hint thread's sort, with pieces small enough that every merge level runs (an odd
    run left over included): the keys in Python's order, each once."""
    assert hints_module._sorted_in_pieces(list(keys), step) == sorted(keys)


@given(
    a=st.lists(st.text(max_size=4), max_size=120),
    b=st.lists(st.text(max_size=4), max_size=120),
    step=st.integers(1, 30),
)
def test_two_sorted_runs_merged_in_pieces_are_their_sorted_union(
    a: list[str], b: list[str], step: int
) -> None:
    """The merge of two sorted runs in bounded pieces, repeats and all."""
    assert hints_module._merged(sorted(a), sorted(b), step) == sorted(a + b)
