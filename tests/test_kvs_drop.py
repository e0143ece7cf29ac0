"""Dropping a store is all-or-nothing: after a crash or a failure mid-drop, the store is either
whole or gone, and its name opens again (as a new, empty store)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from logkv import Configuration, KeyValueStore
from logkv.layout import KVS_DIR, TRASH_DIR, list_segments

PATIENCE = 60.0
#: Segments of the dropped store: enough that deleting them takes many steps.
SEGMENTS = 40


pytestmark = pytest.mark.usefixtures("clean_environment")


def config(storage_dir: Path) -> Configuration:
    return Configuration(storage_dir=str(storage_dir), segment_size=4096, auto_compact=False)


async def fill(storage_dir: Path, name: str) -> Path:
    """A store ``name`` with :data:`SEGMENTS` segments; returns its folder (closed)."""
    kvs = await KeyValueStore.open(name=name, configuration=config(storage_dir))
    folder = kvs.path
    assert folder is not None
    number = 0
    while len(list_segments(folder)) < SEGMENTS:
        await kvs.set_value(f"k{number:05d}", "x" * 1000)
        number += 1
    await kvs.close()
    return folder


async def assert_opens_empty(storage_dir: Path, name: str) -> None:
    kvs = await KeyValueStore.open(name=name, configuration=config(storage_dir))
    try:
        assert [key async for key in kvs] == []
    finally:
        await kvs.close()


def failing_unlink_after(count: int) -> Any:
    """An ``os.unlink`` that deletes ``count`` files, then fails."""
    real = os.unlink
    calls = [0]

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] > count:
            raise PermissionError(13, "injected failure", str(path))
        real(path, *args, **kwargs)

    return unlink


async def test_a_drop_that_fails_mid_delete_leaves_no_half_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = await fill(tmp_path, "pages")
    kvs = await KeyValueStore.open(name="pages", configuration=config(tmp_path))
    with monkeypatch.context() as patch:
        patch.setattr(os, "unlink", failing_unlink_after(SEGMENTS // 2))
        await kvs.drop()  # the store is gone in one step; leftovers are swept on the next open
    assert not folder.exists()
    await assert_opens_empty(tmp_path, "pages")
    trash = tmp_path / TRASH_DIR
    assert not trash.exists() or list(trash.iterdir()) == []
    assert [p.name for p in (tmp_path / KVS_DIR).iterdir()] == ["pages"]


# ---------------------------------------------------------------- a real process, killed mid-drop

CHILD = """
import asyncio, os, sys, time
from logkv import Configuration, KeyValueStore

real_unlink = os.unlink
deleted = [0]

def unlink(path, *args, **kwargs):
    real_unlink(path, *args, **kwargs)
    deleted[0] += 1
    if deleted[0] == int(sys.argv[2]):
        print("paused", flush=True)
        time.sleep(3600)

os.unlink = unlink

async def main():
    config = Configuration(storage_dir=sys.argv[1], segment_size=4096, auto_compact=False)
    kvs = await KeyValueStore.open(name="pages", configuration=config)
    await kvs.drop()
    print("dropped", flush=True)

asyncio.run(main())
"""


async def test_kill_9_mid_drop_leaves_the_name_usable(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    folder = await fill(tmp_path, "pages")
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(tmp_path), str(SEGMENTS // 2)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    children.append(process)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != "paused":
        _, err = process.communicate(timeout=PATIENCE)
        raise AssertionError(f"child said {line!r}; stderr:\n{err}")
    process.send_signal(signal.SIGKILL)
    process.wait(PATIENCE)
    assert not folder.exists()  # gone in one step, although its files were half deleted
    await assert_opens_empty(tmp_path, "pages")
    trash = tmp_path / TRASH_DIR
    assert not trash.exists() or list(trash.iterdir()) == []


@pytest.mark.parametrize("durability", ["process", "fsync"])
async def test_drop_at_every_durability_is_clean_and_the_name_reopens(
    tmp_path: Path, durability: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A drop closes the store after its folder left ``key_value_stores/``: the close must not
    try to record a synced mark in the folder that is gone (under fsync that used to raise and
    leave the dropped store cached under its name)."""
    configuration = Configuration(storage_dir=str(tmp_path), durability=durability)
    kvs = await KeyValueStore.open(name="shop", configuration=configuration)
    await kvs.set_value("a", 1)
    with caplog.at_level("WARNING", logger="logkv"):
        await kvs.drop()
    assert caplog.records == []
    assert not (tmp_path / KVS_DIR / "shop").exists()
    assert list((tmp_path / TRASH_DIR).iterdir()) == []
    again = await KeyValueStore.open(name="shop", configuration=configuration)
    assert await again.get_value("a") is None
    await again.set_value("b", 2)
    assert await again.get_value("b") == 2
    await again.close()
