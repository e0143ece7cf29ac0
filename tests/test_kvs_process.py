"""KeyValueStore across processes: the writer lock, and what survives a killed process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from logkv import Configuration, Engine, KeyValueStore, StoreLockedError
from logkv.key_value_store import close_all
from logkv.layout import KVS_DIR

PATIENCE = 30.0

CHILD_PRELUDE = """
import asyncio, os, sys
from datetime import timedelta
from logkv import Configuration, KeyValueStore

def say(line):
    print(line, flush=True)

config = Configuration(
    storage_dir=sys.argv[1], purge_on_start=False,
    persist_state_interval=timedelta(milliseconds=int(sys.argv[2])),
)
"""


pytestmark = pytest.mark.usefixtures("clean_environment")


@pytest.fixture
def child(children: list[subprocess.Popen[str]]) -> list[subprocess.Popen[str]]:
    """The children this test starts (killed at the end: the shared ``children`` fixture)."""
    return children


def start(
    started: list[subprocess.Popen[str]], storage_dir: Path, body: str, interval_ms: int = 60_000
) -> subprocess.Popen[str]:
    code = CHILD_PRELUDE + textwrap.dedent(body)
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(storage_dir), str(interval_ms)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started.append(process)
    return process


def start_holder(
    started: list[subprocess.Popen[str]],
    storage_dir: Path,
    name: str,
    work: str,
    interval_ms: int = 60_000,
) -> subprocess.Popen[str]:
    """Start a child that opens the store ``name``, does ``work`` (statements on ``kvs``),
    and then, never closing it, waits to be killed; return once it has done its work."""
    body = f"""
async def main():
    kvs = await KeyValueStore.open(name={name!r}, configuration=config)
{textwrap.indent(textwrap.dedent(work), "    ")}
    say("HOLDING")
    await asyncio.sleep(3600)  # killed here: never closed
asyncio.run(main())
"""
    process = start(started, storage_dir, body, interval_ms)
    expect_line(process, "HOLDING")
    return process


def expect_line(process: subprocess.Popen[str], wanted: str) -> str:
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith(wanted):
        _, err = process.communicate(timeout=PATIENCE)
        raise AssertionError(f"child said {line!r}, expected {wanted!r}; stderr:\n{err}")
    return line


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL the child (no cleanup of any kind runs) and reap it."""
    process.send_signal(signal.SIGKILL)
    process.wait(PATIENCE)


def configuration(storage_dir: Path) -> Configuration:
    return Configuration(storage_dir=str(storage_dir), purge_on_start=False)


async def open_store(storage_dir: Path, name: str) -> KeyValueStore:
    """The store ``name`` opened in this process."""
    return await KeyValueStore.open(name=name, configuration=configuration(storage_dir))


async def test_second_process_gets_a_clear_lock_error(
    storage_dir: Path, child: list[subprocess.Popen[str]]
) -> None:
    kvs = await open_store(storage_dir, "shared")
    await kvs.set_value("owner", os.getpid())
    try:
        process = start(
            child,
            storage_dir,
            """
            from logkv import StoreLockedError
            async def main():
                try:
                    await KeyValueStore.open(name="shared", configuration=config)
                except StoreLockedError as exc:
                    say(f"LOCKED {exc.holder_pid} {exc}")
                else:
                    say("OPENED")
            asyncio.run(main())
            """,
        )
        line = expect_line(process, "LOCKED")
        assert process.wait(PATIENCE) == 0
        _, pid, message = line.split(" ", 2)
        assert int(pid) == os.getpid()
        assert "locked for writing by process" in message
        assert str(storage_dir / KVS_DIR / "shared") in message
        assert await kvs.get_value("owner") == os.getpid()  # the holder is unaffected
    finally:
        await kvs.close()


async def test_lock_is_released_on_close_and_when_the_holder_dies(
    storage_dir: Path, child: list[subprocess.Popen[str]]
) -> None:
    process = start_holder(child, storage_dir, "handover", 'await kvs.set_value("writer", "child")')
    with pytest.raises(StoreLockedError):
        await open_store(storage_dir, "handover")
    kill(process)
    async with await open_store(storage_dir, "handover") as kvs:
        assert await kvs.get_value("writer") == "child"


async def test_writes_of_a_killed_process_survive(
    storage_dir: Path, child: list[subprocess.Popen[str]]
) -> None:
    process = start_holder(
        child,
        storage_dir,
        "crawl",
        """
        async def task(t):
            for i in range(100):
                await kvs.set_value(f"t{t:02d}-{i:03d}", {"t": t, "i": i, "pad": "x" * 200})
        await asyncio.gather(*(task(t) for t in range(30)))
        await kvs.set_value("big", b"b" * 400_000, "application/octet-stream")
        """,
    )
    kill(process)
    async with await open_store(storage_dir, "crawl") as kvs:
        entries = {key: value async for key, value in kvs.iterate_entries()}
        assert len(entries) == 3001
        assert entries["big"] == b"b" * 400_000
        for t in range(30):
            for i in range(100):
                assert entries[f"t{t:02d}-{i:03d}"] == {"t": t, "i": i, "pad": "x" * 200}


async def test_autosave_timer_persists_before_a_kill(
    storage_dir: Path, child: list[subprocess.Popen[str]]
) -> None:
    process = start_holder(  # once it holds, only the PERSIST_STATE timer can save the state
        child,
        storage_dir,
        "stateful",
        """
        state = await kvs.get_auto_saved_value("STATE", {"pages": 0})
        state["pages"] = 17
        """,
        interval_ms=50,
    )
    folder = storage_dir / KVS_DIR / "stateful"
    deadline = time.monotonic() + PATIENCE
    saved = None
    with Engine.open(folder, readonly=True) as reader:  # beside the live writer
        while time.monotonic() < deadline:
            reader.refresh()
            raw = reader.get("STATE", None)
            if isinstance(raw, bytes) and json.loads(raw) == {"pages": 17}:
                saved = raw
                break
            time.sleep(0.02)
    assert saved is not None, "the timer never saved the autosaved value"
    kill(process)
    kvs = await open_store(storage_dir, "stateful")
    try:
        state = await kvs.get_auto_saved_value("STATE")
        assert state == {"pages": 17}
        state["pages"] += 1
    finally:
        await kvs.close()
    kvs = await open_store(storage_dir, "stateful")
    assert await kvs.get_value("STATE") == {"pages": 18}
    await close_all()


@pytest.mark.slow
async def test_purge_on_start_acts_once_per_process(
    storage_dir: Path, child: list[subprocess.Popen[str]]
) -> None:
    body = """
    async def main():
        purging = config.model_copy(update={"purge_on_start": True})
        kvs = await KeyValueStore.open(configuration=purging)
        say(f"FOUND {await kvs.get_value('runs', 0)}")
        await kvs.set_value("runs", 1)
        await kvs.close()
        kvs = await KeyValueStore.open(configuration=purging)
        say(f"AGAIN {await kvs.get_value('runs', 0)}")
        await kvs.close()
    asyncio.run(main())
    """
    for _ in range(2):
        process = start(child, storage_dir, body)
        assert expect_line(process, "FOUND") == "FOUND 0"  # each process starts empty
        assert expect_line(process, "AGAIN") == "AGAIN 1"  # but keeps its own writes
        assert process.wait(PATIENCE) == 0
