"""Checkpoint files on disk: every cut and every flipped byte is caught (or harmless), and
point-in-time history never changes its answer because of a damaged or missing checkpoint."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from logkv import Engine
from logkv.checkpoints import (
    CheckpointPolicy,
    checkpoints_of,
    load_checkpoint,
    update_checkpoints,
)
from logkv.errors import CorruptionError
from logkv.history import state_at


@pytest.fixture
def store(tmp_path: Path) -> Path:
    folder = tmp_path / "store"
    os.environ["LOGKV_CHECKPOINT_EVERY"] = "8"
    try:
        with Engine.open(folder, segment_size=4096) as engine:
            for i in range(40):
                engine.set(f"k{i % 3}", bytes([i]) * 3, "text/plain" if i % 2 else None)
            engine.delete("k1")
            engine.set_many([("k3", b"x", None), ("k4", None, None)], ["k0"])
            engine.compact(retention="archive")
    finally:
        del os.environ["LOGKV_CHECKPOINT_EVERY"]
    return folder


def full_replay(store: Path, scratch: Path, seq: int) -> object:
    shutil.copytree(store, scratch, ignore=shutil.ignore_patterns("*.ckpt"))
    try:
        return state_at(scratch, until_seq=seq)
    finally:
        shutil.rmtree(scratch)


@pytest.mark.slow
def test_every_cut_of_a_checkpoint_is_caught(store: Path, tmp_path: Path) -> None:
    path = checkpoints_of(store)[1].path
    whole = path.read_bytes()
    expected = load_checkpoint(path)
    for size in range(len(whole)):
        path.write_bytes(whole[:size])
        with pytest.raises(CorruptionError):
            load_checkpoint(path)
    path.write_bytes(whole)
    assert load_checkpoint(path) == expected


@pytest.mark.slow
def test_every_flipped_byte_is_caught_or_harmless(store: Path, tmp_path: Path) -> None:
    path = checkpoints_of(store)[1].path
    whole = path.read_bytes()
    expected = load_checkpoint(path)
    want = full_replay(store, tmp_path / "plain", 30)
    for at in range(len(whole)):
        damaged = bytearray(whole)
        damaged[at] ^= 0x41
        path.write_bytes(bytes(damaged))
        try:
            found = load_checkpoint(path)
        except CorruptionError:
            found = None
        assert found is None or found == expected, at  # only the unused zero field is free
        assert state_at(store, until_seq=30) == want, at
    path.write_bytes(whole)


def test_a_compaction_killed_while_writing_checkpoints_is_finished_by_the_next(
    store: Path, tmp_path: Path
) -> None:
    found = checkpoints_of(store)
    assert [c.seq for c in found] == [8, 16, 24, 32, 40]
    # killed halfway: a temp file left, the newer checkpoints missing, one cut short
    (store / "archive" / (found[-1].path.name + ".tmp")).write_bytes(b"partial")
    for checkpoint in found[3:]:
        checkpoint.path.unlink()
    found[2].path.write_bytes(found[2].path.read_bytes()[:-5])
    written = update_checkpoints(store, CheckpointPolicy(every=8))
    assert [p.name for p in written] == [c.path.name for c in found[2:]]
    assert [c.seq for c in checkpoints_of(store)] == [8, 16, 24, 32, 40]
    assert not list((store / "archive").glob("*.tmp"))
    for seq in range(45):
        assert state_at(store, until_seq=seq) == full_replay(store, tmp_path / "plain", seq)


def test_bad_checkpoint_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGKV_CHECKPOINT_EVERY", "often")
    with pytest.raises(ValueError, match="LOGKV_CHECKPOINT"):
        CheckpointPolicy.from_env()
    monkeypatch.setenv("LOGKV_CHECKPOINT_EVERY", "10")
    monkeypatch.setenv("LOGKV_CHECKPOINT_KEEP", "-1")
    with pytest.raises(ValueError, match="negative"):
        CheckpointPolicy.from_env()
    monkeypatch.setenv("LOGKV_CHECKPOINT_KEEP", "3")
    monkeypatch.setenv("LOGKV_CHECKPOINT_KEEP_FOR", "86400")
    assert CheckpointPolicy.from_env() == CheckpointPolicy(10, 3, 86400.0)
