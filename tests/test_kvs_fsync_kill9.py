"""Real SIGKILLs of a child writing through ``KeyValueStore`` under ``durability="fsync"``:
every write acknowledged by ``await set_value`` is in the store after the kill.

The child (this module run with ``python -m``) runs 16 tasks that write distinct keys: their
batches are led by the first task waiting for each (on the event loop), the others join. Each
write is announced and acknowledged (:mod:`logkv.killcheck`); the parent kills the child at a
random moment, then checks the store. A power loss is not simulated here: what is checked is
that an acknowledged write had reached the disk's page cache through one shared fdatasync and
the index only after it (durable before visible); the fdatasync calls themselves are counted by
the group-commit tests.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path

import pytest
from conftest import fsync_configuration

from logkv import KeyValueStore
from logkv.killcheck import ACK, INTENT, READY, Pump, Reporter, run_and_kill

TASKS = 16


async def _child(folder: Path, round_: int) -> None:
    reporter = Reporter(sys.stdout)
    kvs = await KeyValueStore.open(name="kill", configuration=fsync_configuration(folder))
    reporter.say(READY)

    async def writer(task: int) -> None:
        for i in range(1_000_000):
            key = f"r{round_}-t{task:02d}-{i:06d}"
            reporter.say(INTENT, key=key)
            await kvs.set_value(key, {"i": i})
            reporter.say(ACK, key=key)

    await asyncio.gather(*(writer(task) for task in range(TASKS)))


@pytest.mark.slow
def test_no_acknowledged_fsync_write_is_lost_across_kills(tmp_path: Path) -> None:
    rng = random.Random(5)
    acked: list[str] = []
    for round_ in range(4):
        target = rng.randint(20, 300)

        def wait(pump: Pump, target: int = target) -> None:
            assert pump.wait_for(ACK, target, 60)

        run = run_and_kill("test_kvs_fsync_kill9", [str(tmp_path), str(round_)], wait)
        assert run.killed, run.failure()
        keys = acknowledged_keys(run.lines)
        assert len(keys) >= target
        acked += keys

        missing = asyncio.run(_missing(tmp_path, acked))
        assert not missing, (round_, missing[:5], len(missing))


async def _missing(folder: Path, keys: list[str]) -> list[str]:
    """The keys of ``keys`` the store (reopened) does not hold."""
    kvs = await KeyValueStore.open(name="kill", configuration=fsync_configuration(folder))
    try:
        return [key for key in keys if await kvs.get_value(key) is None]
    finally:
        await kvs.close()


def acknowledged_keys(lines: list[bytes]) -> list[str]:
    """The keys whose write the child acknowledged (its tasks interleave: an ack names its key;
    a line cut short by the kill is no ack)."""
    keys = []
    for line in lines:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("t") == ACK:
            keys.append(message["key"])
    return keys


if __name__ == "__main__":
    asyncio.run(_child(Path(sys.argv[1]), int(sys.argv[2])))
