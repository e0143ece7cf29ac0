"""``logkv stats|verify|dump`` and ``logkv-compact`` on the stores of a crawler's storage
folder: a dataset made through Crawlee's ``Dataset`` over ``LogKvStorageClient``, a request
queue laid out by :mod:`logkv.storage_layout` (written here with the engine), and a key-value
store. The commands say what each store holds and count a dataset's items and a queue's
requests from keys alone; compaction skips a dataset that has nothing to reclaim.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import run_command
from crawlee import service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storages import Dataset, KeyValueStore
from test_cli import assert_one_clean_error, compact, logkv

from logkv import Configuration, Engine
from logkv.cli.contents import store_contents
from logkv.crawlee import LogKvStorageClient
from logkv.storage_clients._meta import StoreMeta, write_meta
from logkv.storage_layout import (
    PENDING_PREFIX,
    REQUEST_PREFIX,
    QueueCounts,
    item_key,
    pending_key,
    queue_counts,
    request_key,
)

ITEMS = 25
#: The queue built below: 7 requests handled, 5 pending.
HANDLED, PENDING = 7, 5


async def _crawler_stores(storage: Path) -> None:
    """A dataset of ITEMS items and a key-value store, as a crawler on logkv leaves them."""
    service_locator.storage_instance_manager.clear_cache()
    client = LogKvStorageClient(settings=Configuration(auto_compact=False))
    configuration = CrawleeConfiguration(storage_dir=str(storage), purge_on_start=False)
    try:
        dataset = await Dataset.open(configuration=configuration, storage_client=client)
        await dataset.push_data([{"url": f"https://a.invalid/{i}", "i": i} for i in range(ITEMS)])
        kvs = await KeyValueStore.open(
            name="state", configuration=configuration, storage_client=client
        )
        await kvs.set_value("STATE", {"pages": ITEMS})
    finally:
        await client.close()
        service_locator.storage_instance_manager.clear_cache()


def build_queue(folder: Path, handled: int, pending: int) -> None:
    """A request queue folder in the layout of :mod:`logkv.storage_layout`, written with the
    engine: every request has an ``r/`` record, the pending ones also a ``p/`` mark."""
    now = time.time()
    folder.mkdir(parents=True)
    write_meta(
        folder,
        StoreMeta(
            id="queue0000000000000",
            name="q",
            alias=None,
            kind="named",
            created_at=now,
            accessed_at=now,
            modified_at=now,
            storage="request_queue",
        ),
    )
    with Engine.open(folder) as engine:
        for n in range(handled + pending):
            request: dict[str, Any] = {"url": f"https://a.invalid/{n}", "uniqueKey": str(n)}
            if n < handled:
                request["handledAt"] = "2026-01-01T00:00:00Z"
            engine.set(request_key(f"h{n:04d}"), json.dumps(request).encode(), "application/json")
            if n >= handled:
                engine.set(pending_key(n, f"h{n:04d}"), b"")
        # a handled request's record rewritten (as a queue does): still one request
        engine.set(request_key("h0000"), b'{"uniqueKey": "0", "handledAt": "x"}')


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    root = tmp_path / "storage"
    asyncio.run(_crawler_stores(root))
    build_queue(root / "request_queues" / "q", HANDLED, PENDING)
    return root


def _json(*args: Any) -> Any:
    done = logkv(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_layout_keys_sort_as_the_counts_need() -> None:
    assert item_key(0) == "000000000000" and item_key(123) == "000000000123"
    assert pending_key(255, "abc") == "p/00000000000000ff/abc"
    assert pending_key(0, "x") < pending_key(1, "a") < pending_key(16, "a")
    assert request_key("abc") == "r/abc"
    assert pending_key(0, "x").startswith(PENDING_PREFIX) and PENDING_PREFIX < REQUEST_PREFIX


def test_queue_counts_come_from_keys_and_ignore_neighbours(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    build_queue(folder, handled=3, pending=2)
    with Engine.open(folder) as engine:
        engine.set("p", b"")  # keys beside the prefixes are not counted
        engine.set("q/x", b"")
        engine.set("s", b"")
        assert queue_counts(engine) == QueueCounts(pending=2, handled=3, total=5)
    empty = tmp_path / "empty"
    with Engine.open(empty) as engine:
        assert queue_counts(engine) == QueueCounts(0, 0, 0)
        assert store_contents(empty, engine).describe() == "key-value store (no META.json)"


@pytest.mark.slow
def test_stats_says_what_each_store_holds(storage: Path) -> None:
    dataset = _json("stats", storage / "datasets" / "default")
    assert dataset["storage"] == "dataset" and dataset["items"] == ITEMS == dataset["keys"]
    queue = _json("stats", storage / "request_queues" / "q")
    assert queue["storage"] == "request_queue"
    assert queue["requests"] == {"pending": PENDING, "handled": HANDLED, "total": 12}
    kvs = _json("stats", storage / "key_value_stores" / "state")
    assert kvs["storage"] == "key_value_store" and "items" not in kvs and "requests" not in kvs
    table = logkv("stats", storage / "request_queues" / "q")
    assert table.returncode == 0, table.stderr
    rows = dict(line.split("  ", 1) for line in table.stdout.splitlines())
    assert rows["holds"].strip() == "request queue, 5 pending, 7 handled, 12 total"
    table = logkv("stats", storage / "datasets" / "default")
    assert "dataset, 25 items" in table.stdout


@pytest.mark.slow
def test_verify_and_dump_work_on_datasets_and_queues(storage: Path) -> None:
    for folder, kind in (
        (storage / "datasets" / "default", "dataset"),
        (storage / "request_queues" / "q", "request_queue"),
    ):
        report = _json("verify", folder)
        assert report["ok"] is True and report["storage"] == kind
        lines = [json.loads(line) for line in logkv("dump", folder, "--json").stdout.splitlines()]
        assert all("error" not in line for line in lines)
        table = logkv("dump", folder)
        assert table.returncode == 0, table.stderr
        assert table.stdout.splitlines()[0] == f"{folder}: a logkv {kind.replace('_', ' ')}"
    lines = logkv("dump", storage / "datasets" / "default", "--json").stdout.splitlines()
    assert [json.loads(line)["key"] for line in lines] == [item_key(i) for i in range(ITEMS)]


@pytest.mark.slow
def test_a_storage_folder_names_its_datasets_and_queues(storage: Path) -> None:
    for command in ("stats", "verify", "dump"):
        done = logkv(command, storage)
        assert_one_clean_error(done, 2, "datasets/default")
        assert "request_queues/q" in done.stderr


@pytest.mark.slow
def test_compact_finds_every_store_and_skips_a_dataset_with_nothing_dead(storage: Path) -> None:
    dataset = storage / "datasets" / "default"
    before = sorted(p.name for p in dataset.iterdir())
    dry = json.loads(compact(storage, "--dry-run", "--json").stdout)
    statuses = {s["path"]: s["status"] for s in dry["stores"]}
    assert set(statuses) == {"datasets/default", "key_value_stores/state", "request_queues/q"}
    assert statuses["datasets/default"].startswith("would skip (an append-only dataset")
    done = compact(storage, "--json")
    assert done.returncode == 0, done.stderr
    outcomes = {s["path"]: s for s in json.loads(done.stdout)["stores"]}
    assert outcomes["datasets/default"]["status"].startswith("skipped (an append-only dataset")
    assert outcomes["request_queues/q"]["status"] == "compacted"
    assert sorted(p.name for p in dataset.iterdir()) == before  # not rewritten
    queue = _json("stats", storage / "request_queues" / "q")
    assert queue["requests"] == {"pending": PENDING, "handled": HANDLED, "total": 12}
    assert queue["dead_bytes"] == 0
    forced = compact(dataset, "--snapshot-datasets", "--json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["stores"][0]["status"] == "compacted"
    assert _json("stats", dataset)["snapshot_covers"] > 0


@pytest.mark.slow
def test_a_purged_dataset_is_compacted(storage: Path) -> None:
    dataset = storage / "datasets" / "default"
    with Engine.open(dataset) as engine:
        for index in range(ITEMS):
            engine.delete(item_key(index))  # what a purge writes
    done = compact(dataset, "--json")
    assert done.returncode == 0, done.stderr
    (outcome,) = json.loads(done.stdout)["stores"]
    assert outcome["status"] == "compacted" and outcome["reclaimed"] > 0
    assert _json("stats", dataset)["items"] == 0


def test_the_commands_import_no_crawlee() -> None:
    code = (
        "import sys, logkv.cli.main, logkv.cli.compact, logkv.storage_layout;"
        "sys.exit(any(m == 'crawlee' or m.startswith('crawlee.') for m in sys.modules))"
    )
    run_command(program=[sys.executable, "-c", code], timeout=60, code=0)


def test_a_meta_json_that_does_not_parse_makes_the_type_unknown(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    build_queue(folder, handled=1, pending=1)
    for hostile in (b"{not json", b'{"format": "logkv-key-value-store", "storage": "tape"}'):
        (folder / "META.json").write_bytes(hostile)
        with Engine.open(folder, readonly=True) as engine:
            contents = store_contents(folder, engine)
        assert contents.kind.storage == "unknown"
        assert contents.describe().startswith("unknown (META.json unreadable: ")
        assert contents.requests is None and contents.items is None
