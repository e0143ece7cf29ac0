"""Replication under ``kill -9``: a writer's machine lost after a completed flush_replica (the
restore elsewhere holds every write acknowledged before it, and nothing never written), and a
restore killed halfway (nothing half-restored; the next restore succeeds)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, run_command

from logkv import Engine
from logkv.verify import verify

pytest.importorskip("obstore")

from logkv.replica import Replica, open_replica_bucket, restore, store_bucket
from logkv.replica.restore import staging_folder
from logkv.replica.url import parse_replica_url

pytestmark = pytest.mark.slow


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from logkv import Configuration, KeyValueStore

    async def main():
        configuration = Configuration(
            storage_dir=sys.argv[1], purge_on_start=False, replica_interval=0.05
        )
        kvs = await KeyValueStore.open(name="crawl", configuration=configuration,
                                       replica_url=sys.argv[2])
        i = 0
        while True:
            await kvs.set_value(f"k{i:06d}", i)
            i += 1
            if i % 40 == 0:
                await kvs.flush_replica(timeout=30)
                print(f"flushed {i}", flush=True)

    asyncio.run(main())
    """
)

RESTORER = textwrap.dedent(
    """
    import importlib, os, signal, sys
    from pathlib import Path
    from logkv.replica import open_replica_bucket

    module = importlib.import_module("logkv.replica.restore")  # the package names a function so
    download, done = module._download, []

    def killed_after_two(*args):
        written = download(*args)
        done.append(written)
        if len(done) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return written

    module._download = killed_after_two
    module.restore(open_replica_bucket(sys.argv[1], allow_http=True), Path(sys.argv[2]))
    """
)


def child_env(s3) -> dict[str, str]:
    return {**os.environ, **s3.env, "PYTHONPATH": str(ROOT)}


def lose_machine(script: str, storage: Path, s3, children, until: int) -> int:
    """Run the writer ``script`` (arguments: its storage folder and the replica root), read
    the numbers it prints (``word N``) until one reaches ``until``, ``kill -9`` it and delete
    its folder (the machine is gone); the last number read."""
    writer = subprocess.Popen(
        [sys.executable, "-c", script, str(storage), s3.root],
        stdout=subprocess.PIPE, text=True, env=child_env(s3),
    )  # fmt: skip
    children.append(writer)
    assert writer.stdout is not None
    last = -1
    for line in writer.stdout:
        last = int(line.split()[1])
        if last >= until:
            break
    writer.send_signal(signal.SIGKILL)
    writer.wait(60)
    assert last >= until
    shutil.rmtree(storage)
    return last


def test_machine_loss_keeps_every_flushed_write(s3, tmp_path: Path, children) -> None:
    flushed = lose_machine(WRITER, tmp_path / "machine", s3, children, 400)

    target = tmp_path / "elsewhere"
    url = f"{s3.root}/key_value_stores/crawl"
    restore(open_replica_bucket(url, allow_http=True), target)
    with Engine.open(target, readonly=True) as engine:
        keys = list(engine.keys())
        assert len(keys) >= flushed  # every acknowledged write ...
        assert keys == [f"k{i:06d}" for i in range(len(keys))]  # ... and nothing never written
        assert engine.get(keys[-1]) == str(len(keys) - 1).encode()


def test_restore_killed_halfway_leaves_nothing(s3, tmp_path: Path) -> None:
    bucket = store_bucket(parse_replica_url(s3.root), "key_value_stores/big", allow_http=True)
    replica = Replica.claim(bucket, tmp_path / "big", 0.05)
    with Engine.open(tmp_path / "big", segment_size=4096) as engine:
        replica.start(engine)
        for i in range(600):
            engine.set(f"k{i:04d}", b"v" * 40)
        replica.flush(30)
        expected = len(engine)
    replica.close(10)

    url = f"{s3.root}/key_value_stores/big"
    target = tmp_path / "restored" / "big"
    killed = run_command(
        url, target, program=[sys.executable, "-c", RESTORER], env=child_env(s3), timeout=120
    )
    assert killed.returncode == -signal.SIGKILL
    assert not target.exists()  # nothing half-restored in place
    assert staging_folder(target).exists()

    restore(open_replica_bucket(url, allow_http=True), target)
    assert not staging_folder(target).exists()
    assert verify(target).ok
    with Engine.open(target) as engine:
        assert len(engine) == expected
