"""``kill -9`` of a process pushing items into a logkv dataset through Crawlee's ``Dataset``:
every acknowledged ``push_data`` is in the dataset exactly once, and the one in flight at the
kill is there whole or not at all. The dataset's ``modified_at`` after the restart is no older
than the last acknowledged push, though ``META.json`` was last saved long before it.

The child (this module run with ``python -m``) pushes batches of 1 to 9 items, announcing each
before the call and acknowledging it after (:mod:`logkv.killcheck`).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storages import Dataset

from logkv import Configuration
from logkv.crawlee import LogKvStorageClient
from logkv.killcheck import ACK, INTENT, READY, Pump, Reporter, read_transcript, run_and_kill
from logkv.storage_clients._meta import read_meta
from logkv.verify import verify

DATASET = "crash"


def _client() -> LogKvStorageClient:
    return LogKvStorageClient(settings=Configuration(auto_compact=False, segment_size=8192))


async def _items(storage_dir: Path) -> tuple[list[dict[str, Any]], float]:
    """The dataset's items and its ``modified_at`` (seconds) as a reopen sees them."""
    client = _client()
    configuration = CrawleeConfiguration(storage_dir=str(storage_dir), purge_on_start=False)
    try:
        dataset = await Dataset.open(
            name=DATASET, configuration=configuration, storage_client=client
        )
        items = [dict(item) for item in (await dataset.get_data()).items]
        return items, (await dataset.get_metadata()).modified_at.timestamp()
    finally:
        await client.close()


async def _child(storage_dir: Path, seed: int) -> None:
    rng = random.Random(seed)
    reporter = Reporter(sys.stdout)
    configuration = CrawleeConfiguration(storage_dir=str(storage_dir), purge_on_start=False)
    dataset = await Dataset.open(
        name=DATASET, configuration=configuration, storage_client=_client()
    )
    last = (await dataset.get_data(desc=True, limit=1)).items
    number = last[0]["batch"] + 1 if last else 0
    reporter.say(READY)
    while True:
        size = rng.randint(1, 9)
        items = [{"batch": number, "j": j, "body": "x" * rng.randint(0, 900)} for j in range(size)]
        reporter.say(INTENT, batch=number, size=size, at=time.time())
        await dataset.push_data(items)
        reporter.say(ACK, batch=number)
        number += 1


@pytest.mark.slow
def test_every_acknowledged_push_is_there_once_and_none_is_partial(tmp_path: Path) -> None:
    storage_dir = tmp_path / "storage"
    rng = random.Random(12)
    acked: dict[int, int] = {}
    for round_ in range(10):
        target = rng.randint(1, 150)

        def wait(pump: Pump, target: int = target) -> None:
            assert pump.wait_for(ACK, target, 60)

        run = run_and_kill(
            "test_crawlee_dataset_kill9", [str(storage_dir), str(rng.randrange(1 << 30))], wait
        )
        assert run.killed, run.failure()
        transcript = read_transcript(run.lines)
        for intent, _ in transcript.acked:
            acked[intent["batch"]] = intent["size"]
        saved = read_meta(storage_dir / "datasets" / DATASET)
        items, modified_at = asyncio.run(_items(storage_dir))
        if transcript.acked:
            last_push = transcript.acked[-1][0]["at"]
            assert saved is not None and saved.modified_at < last_push  # the save was lost
            assert modified_at >= last_push, round_
        sizes: dict[int, list[int]] = {}
        for item in items:
            sizes.setdefault(item["batch"], []).append(item["j"])
        in_flight = transcript.in_flight
        if in_flight is not None and in_flight["batch"] in sizes:
            acked[in_flight["batch"]] = in_flight["size"]  # it landed: whole, checked below
        assert set(sizes) == set(acked), round_
        for number, size in acked.items():
            assert sizes[number] == list(range(size)), (round_, number)  # once, whole, in order
        assert [item["batch"] for item in items] == sorted(item["batch"] for item in items)
        assert verify(storage_dir / "datasets" / DATASET).ok


if __name__ == "__main__":
    asyncio.run(_child(Path(sys.argv[1]), int(sys.argv[2])))
