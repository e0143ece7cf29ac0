"""``logkv migrate`` and ``logkv export-crawlee``: whole storage folders between Crawlee's
file-system layout and logkv, compared store by store with what Crawlee itself reads, killed
between steps, and given hostile folders."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_command
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storage_clients import FileSystemStorageClient, StorageClient

import logkv.migrate_stores
from logkv import Engine
from logkv.crawlee import LogKvStorageClient
from logkv.errors import NotALogKVStoreError
from logkv.migrate import (
    DamagedStoreError,
    MigrationError,
    journal_path,
    recover,
    staging_path,
    survey,
)
from logkv.migrate_run import migrate_storage
from logkv.migrate_sources import RQ_STATE_PREFIX
from logkv.storage_layout import item_key

pytestmark = pytest.mark.slow

#: Builds a Crawlee file-system storage folder through Crawlee's own storages: key-value
#: records of several content types (the default store and a named one), a dataset, and a
#: request queue with handled, reclaimed, in-progress, pending and forefront requests.
BUILD = textwrap.dedent(
    """
    import asyncio, sys
    from crawlee import Request, service_locator
    from crawlee.configuration import Configuration
    from crawlee.storage_clients import FileSystemStorageClient
    from crawlee.storages import Dataset, KeyValueStore, RequestQueue

    async def main(folder):
        conf = Configuration(storage_dir=folder, purge_on_start=False)
        service_locator.set_configuration(conf)
        fs = FileSystemStorageClient()
        async with service_locator.get_event_manager():
            kvs = await KeyValueStore.open(storage_client=fs, configuration=conf)
            await kvs.set_value("state", {"n": 1, "big": 2**70})
            await kvs.set_value("page.html", "<p>h\\u00e9</p>", content_type="text/html")
            await kvs.set_value("blob", b"\\x00\\x01\\xff", content_type="application/octet-stream")
            await kvs.set_value("nothing", None)
            shop = await KeyValueStore.open(name="shop", storage_client=fs, configuration=conf)
            await shop.set_value("a/b c", [1, 2, 3])
            ds = await Dataset.open(storage_client=fs, configuration=conf)
            await ds.push_data([{"i": i, "u": f"x{i}", "t": "\\u00fc"} for i in range(25)])
            other = await Dataset.open(name="other", storage_client=fs, configuration=conf)
            await other.push_data({"only": True})
            run = await Dataset.open(alias="run", storage_client=fs, configuration=conf)
            await run.push_data([{"alias": 1}, {"alias": 2}])
            rq = await RequestQueue.open(storage_client=fs, configuration=conf)
            await rq.add_requests([
                Request.from_url(f"https://e.invalid/{i}", user_data={"i": i}) for i in range(8)
            ])
            await rq.add_request(Request.from_url("https://e.invalid/ff1"), forefront=True)
            await rq.add_request(Request.from_url("https://e.invalid/ff2"), forefront=True)
            for _ in range(2):
                await rq.mark_request_as_handled(await rq.fetch_next_request())
            await rq.reclaim_request(await rq.fetch_next_request())
            await rq.fetch_next_request()  # in progress when the crawler stops
            await rq.add_request(Request.from_url("https://e.invalid/ff3"), forefront=True)
            await rq.add_request(Request.from_url("https://e.invalid/ff4"), forefront=True)

    asyncio.run(main(sys.argv[1]))
    """
)

#: Runs a migration and kills its own process (SIGKILL) when the named step is reached.
KILL_AT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from logkv.migrate_run import migrate_storage

    import logkv.migrate

    def checkpoint(step):
        if step == sys.argv[3]:
            os.kill(os.getpid(), signal.SIGKILL)

    if sys.argv[4] == "rename":  # as where the system cannot exchange two folders
        logkv.migrate.exchange = lambda first, second: False

    migrate_storage(Path(sys.argv[1]), to=sys.argv[2], bar=False, checkpoint=checkpoint)
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Crawlee file-system storage folder made by Crawlee (built once, copied per test)."""
    folder = tmp_path_factory.mktemp("pristine") / "storage"
    run_command(str(folder), program=(sys.executable, "-c", BUILD), env=_env(), timeout=600, code=0)
    return folder


@pytest.fixture
def crawlee_dir(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the Crawlee folder."""
    folder = tmp_path / "storage"
    shutil.copytree(pristine, folder)
    return folder


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _configuration(folder: Path) -> CrawleeConfiguration:
    return CrawleeConfiguration(storage_dir=str(folder), purge_on_start=False)


async def _read_all(folder: Path, client: StorageClient) -> dict[str, Any]:
    """What a crawler sees in ``folder`` through ``client``: key-value records (value and
    content type), dataset items, queue counts and the order the queue hands requests out
    (each fetched request is marked handled, as a crawler would)."""
    conf = _configuration(folder)
    seen: dict[str, Any] = {}
    for selector in ({}, {"name": "shop"}):
        kvs = await client.create_kvs_client(**selector, configuration=conf)
        records = {}
        async for meta in kvs.iterate_keys():
            if meta.key.startswith(RQ_STATE_PREFIX):
                continue
            record = await kvs.get_value(key=meta.key)
            records[meta.key] = (record.value, record.content_type)
        seen[f"kvs {selector}"] = records
    for selector in ({}, {"name": "other"}, {"alias": "run"}):
        dataset = await client.create_dataset_client(**selector, configuration=conf)
        seen[f"dataset {selector}"] = (await dataset.get_data(limit=10_000)).items
    queue = await client.create_rq_client(configuration=conf)
    meta = await queue.get_metadata()
    seen["queue counts"] = (
        meta.handled_request_count,
        meta.pending_request_count,
        meta.total_request_count,
    )
    fetched = []
    while (request := await queue.fetch_next_request()) is not None:
        fetched.append((request.url, request.user_data.get("i")))
        await queue.mark_request_as_handled(request)
    seen["fetch order"] = fetched
    seen["finished"] = await queue.is_finished()
    close = getattr(client, "close", None)
    if close is not None:
        await close()
    return seen


def _read(folder: Path, make: type[StorageClient]) -> dict[str, Any]:
    """:func:`_read_all` on a copy of ``folder`` (reading a queue changes it)."""
    copy = folder.parent / (folder.name + ".reading")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("LOCK"))
    try:
        return _in_thread(_read_all(copy, make()))
    finally:
        shutil.rmtree(copy)


def _in_thread(coroutine: Any) -> Any:
    """Run ``coroutine`` in a fresh event loop (tests here are synchronous)."""
    return asyncio.run(coroutine)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_command(*args, module="logkv.cli.main", text=True, env=_env(), timeout=300)


# ---------------------------------------------------------------------------------- round trips


def test_migrate_and_back_keeps_everything_a_crawler_sees(crawlee_dir: Path) -> None:
    expected = _read(crawlee_dir, FileSystemStorageClient)
    assert expected["queue counts"] == (2, 10, 12)
    urls = [url.rsplit("/", 1)[1] for url, _ in expected["fetch order"]]
    assert urls == ["ff4", "ff3", "1", "2", "3", "4", "5", "6", "7", "0"]
    original = _tree(crawlee_dir)

    done = _cli("migrate", "--quiet", str(crawlee_dir))
    assert done.returncode == 0, done.stderr
    backup = crawlee_dir.parent / "storage.crawlee-backup"
    assert f"The originals are in {backup}" in done.stdout
    assert _tree(backup) == original
    assert not staging_path(crawlee_dir).exists()
    formats = {(s.storage, s.format) for s in survey(crawlee_dir).stores}
    assert ("key_value_store", "logkv") in formats
    assert ("dataset", "logkv") in formats
    assert ("dataset", "crawlee") not in formats
    assert _read(crawlee_dir, LogKvStorageClient) == expected

    back = _cli("export-crawlee", "--quiet", str(crawlee_dir))
    assert back.returncode == 0, back.stderr
    assert not [s for s in survey(crawlee_dir).stores if s.format == "logkv"]
    assert _read(crawlee_dir, FileSystemStorageClient) == expected
    assert (crawlee_dir.parent / "storage.logkv-backup").is_dir()


def test_dry_run_lists_the_stores_and_changes_nothing(crawlee_dir: Path) -> None:
    before = _tree(crawlee_dir)
    shown = _cli("migrate", "--dry-run", str(crawlee_dir))
    assert shown.returncode == 0, shown.stderr
    assert "convert: dataset default (crawlee) (25 files)" in shown.stdout
    assert "convert: key_value_store shop (crawlee) (1 records)" in shown.stdout
    assert (
        "convert: key_value_store default (crawlee) (4 records, 1 of queue state)" in shown.stdout
    )
    assert _tree(crawlee_dir) == before
    assert sorted(p.name for p in crawlee_dir.parent.iterdir()) == ["storage"]


def test_json_summary(crawlee_dir: Path) -> None:
    done = _cli("migrate", "--json", str(crawlee_dir))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["backup"].endswith("storage.crawlee-backup")
    assert summary["records"] >= 25


# ---------------------------------------------------------------------------------- crashes

STEPS = [
    ("key_value_store default", "exchange"),
    ("dataset default", "exchange"),
    ("request_queue default", "exchange"),
    ("built", "exchange"),
    ("synced", "exchange"),
    ("journal", "exchange"),
    ("exchanged", "exchange"),
    ("swapped", "exchange"),
    ("journal", "rename"),
    ("moved-away", "rename"),
    ("swapped", "rename"),
]


@pytest.mark.parametrize(("step", "swap"), STEPS)
def test_a_kill_at_any_step_leaves_one_whole_folder(
    crawlee_dir: Path, tmp_path: Path, step: str, swap: str
) -> None:
    expected = _read(crawlee_dir, FileSystemStorageClient)
    original = _tree(crawlee_dir)
    reference = tmp_path / "reference" / "storage"
    shutil.copytree(crawlee_dir, reference)
    assert migrate_storage(reference, to="logkv", bar=False).records > 0
    migrated_formats = sorted((s.storage, s.name, s.format) for s in survey(reference).stores)

    _kill_at(crawlee_dir, "logkv", step, swap)
    if crawlee_dir.exists():
        now = sorted((s.storage, s.name, s.format) for s in survey(crawlee_dir).stores)
        if _tree(crawlee_dir) != original:  # not the old folder: then the whole new one
            assert now == migrated_formats
            assert _read(crawlee_dir, LogKvStorageClient) == expected
    else:  # only between the two renames where the system cannot exchange folders
        assert (step, swap) == ("moved-away", "rename")
        assert journal_path(crawlee_dir).exists()

    _recover_and_finish(crawlee_dir, "logkv", original, _tree)
    assert _read(crawlee_dir, LogKvStorageClient) == expected


def _kill_at(folder: Path, to: str, step: str, swap: str) -> None:
    """Run a migration of ``folder`` to ``to`` in a process that kills itself at ``step``."""
    run_command(
        str(folder),
        to,
        step,
        swap,
        program=(sys.executable, "-c", KILL_AT),
        env=_env(),
        timeout=600,
        code=-signal.SIGKILL,
    )


def _recover_and_finish(
    folder: Path, to: str, original: dict[str, bytes], tree: Callable[[Path], dict[str, bytes]]
) -> None:
    """Recover what a killed migration left (as the next one does first): the originals are
    whole in the backup, or the folder is still the original and a new migration completes."""
    recover(folder)
    assert not staging_path(folder).exists()
    assert not journal_path(folder).exists()
    suffix = "crawlee-backup" if to == "logkv" else "logkv-backup"
    backup = folder.parent / f"{folder.name}.{suffix}"
    if backup.exists():
        assert tree(backup) == original
    else:
        assert tree(folder) == original
        migrate_storage(folder, to=to, bar=False)


@pytest.mark.parametrize("delay", [1.4, 1.6, 1.7, 1.8, 1.9, 2.0, 2.2])
def test_a_kill_at_a_moment_in_time_leaves_one_whole_folder(
    crawlee_dir: Path, children: list[subprocess.Popen[str]], delay: float
) -> None:
    """Killed after ``delay`` seconds, whatever it was doing (the checkpoints above name the
    steps; this does not choose them). The command takes about 2 s here, 1.5 s of it imports."""
    expected = _read(crawlee_dir, FileSystemStorageClient)
    original = _tree(crawlee_dir)
    process = subprocess.Popen(
        [sys.executable, "-m", "logkv.cli.main", "migrate", "-q", str(crawlee_dir)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    children.append(process)
    try:
        process.wait(delay)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(60)
    if crawlee_dir.exists() and _tree(crawlee_dir) != original:
        assert not [s for s in survey(crawlee_dir).stores if s.format == "crawlee"]
        assert _read(crawlee_dir, LogKvStorageClient) == expected
    _recover_and_finish(crawlee_dir, "logkv", original, _tree)
    assert _read(crawlee_dir, LogKvStorageClient) == expected


EXPORT_STEPS = [
    ("key_value_store default", "exchange"),
    ("dataset default", "exchange"),
    ("request_queue default", "exchange"),
    ("synced", "exchange"),
    ("exchanged", "exchange"),
    ("moved-away", "rename"),
]


def _tree_without_locks(root: Path) -> dict[str, bytes]:
    """:func:`_tree` without the lock files (a lock holder writes its pid into them)."""
    return {k: v for k, v in _tree(root).items() if not k.endswith("LOCK")}


@pytest.mark.parametrize(("step", "swap"), EXPORT_STEPS)
def test_a_kill_of_export_at_any_step_leaves_one_whole_folder(
    crawlee_dir: Path, step: str, swap: str
) -> None:
    expected = _read(crawlee_dir, FileSystemStorageClient)
    migrate_storage(crawlee_dir, to="logkv", bar=False)
    shutil.rmtree(crawlee_dir.parent / "storage.crawlee-backup")
    original = _tree_without_locks(crawlee_dir)

    _kill_at(crawlee_dir, "crawlee", step, swap)
    if crawlee_dir.exists() and _tree_without_locks(crawlee_dir) != original:
        assert not [s for s in survey(crawlee_dir).stores if s.format == "logkv"]
    _recover_and_finish(crawlee_dir, "crawlee", original, _tree_without_locks)
    assert _read(crawlee_dir, FileSystemStorageClient) == expected


def test_a_failure_while_building_leaves_the_folder_untouched(
    crawlee_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = _tree(crawlee_dir)

    async def broken(*_: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(logkv.migrate_stores, "_import_queue", broken)
    with pytest.raises(OSError, match="No space"):
        migrate_storage(crawlee_dir, to="logkv", bar=False)
    assert _tree(crawlee_dir) == original
    assert sorted(p.name for p in crawlee_dir.parent.iterdir()) == ["storage"]


# ---------------------------------------------------------------------------------- hostile


def test_a_corrupt_item_is_named_and_nothing_changes(crawlee_dir: Path) -> None:
    item = crawlee_dir / "datasets" / "default" / "000000007.json"
    item.write_text('{"i": 6, "u": ')
    original = _tree(crawlee_dir)
    done = _cli("migrate", "-q", str(crawlee_dir))
    assert done.returncode == 1  # damaged
    assert str(item) in done.stderr and "not valid JSON" in done.stderr
    assert _tree(crawlee_dir) == original
    assert sorted(p.name for p in crawlee_dir.parent.iterdir()) == ["storage"]


def test_a_corrupt_request_is_named(crawlee_dir: Path) -> None:
    queue = crawlee_dir / "request_queues" / "default"
    victim = sorted(p for p in queue.iterdir() if p.name != "__metadata__.json")[0]
    victim.write_text("[1, 2")
    with pytest.raises(MigrationError, match=str(victim)):
        migrate_storage(crawlee_dir, to="logkv", bar=False)


def test_export_names_an_item_that_is_not_json(crawlee_dir: Path) -> None:
    migrate_storage(crawlee_dir, to="logkv", bar=False)
    shutil.rmtree(crawlee_dir.parent / "storage.crawlee-backup")
    with Engine.open(crawlee_dir / "datasets" / "default") as engine:
        engine.set(item_key(3), b"{not json", "application/json")
    original = _tree_without_locks(crawlee_dir)
    with pytest.raises(DamagedStoreError, match=f"the item '{item_key(3)}' is not a JSON object"):
        migrate_storage(crawlee_dir, to="crawlee", bar=False)
    assert _tree_without_locks(crawlee_dir) == original
    assert sorted(p.name for p in crawlee_dir.parent.iterdir()) == ["storage"]


def test_an_already_migrated_folder_is_refused(crawlee_dir: Path) -> None:
    migrate_storage(crawlee_dir, to="logkv", bar=False)
    assert not [s for s in survey(crawlee_dir).stores if s.format == "crawlee"]
    done = _cli("migrate", str(crawlee_dir))
    assert done.returncode == 2
    assert "logkv stores only: nothing to do" in done.stderr


def test_empty_and_foreign_folders_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MigrationError, match="not a Crawlee storage folder"):
        migrate_storage(empty, to="logkv")
    (empty / "datasets").mkdir()
    with pytest.raises(MigrationError, match="holds no stores"):
        migrate_storage(empty, to="logkv")
    (empty / "datasets" / "x").mkdir()
    (empty / "datasets" / "x" / "notes.txt").write_text("mine")
    with pytest.raises(MigrationError, match="neither a Crawlee"):
        migrate_storage(empty, to="logkv")
    with pytest.raises(MigrationError, match="is not a folder"):
        migrate_storage(tmp_path / "absent", to="logkv")
    (tmp_path / "link").symlink_to(empty)
    with pytest.raises(MigrationError, match="symbolic link"):
        migrate_storage(tmp_path / "link", to="logkv")


def test_a_store_in_use_is_refused(crawlee_dir: Path) -> None:
    in_use = crawlee_dir / "key_value_stores" / "mine"
    with Engine.open(in_use) as engine:
        engine.set("k", b"v")
        with pytest.raises(MigrationError, match="in use"):
            migrate_storage(crawlee_dir, to="logkv", bar=False)
        assert _cli("migrate", str(crawlee_dir)).returncode == 3  # locked
    assert not staging_path(crawlee_dir).exists()


def test_an_existing_backup_is_never_overwritten(crawlee_dir: Path) -> None:
    (crawlee_dir.parent / "storage.crawlee-backup").mkdir()
    with pytest.raises(MigrationError, match="remove or rename it"):
        migrate_storage(crawlee_dir, to="logkv", bar=False)


# ---------------------------------------------------------------------------------- the hint


@pytest.mark.parametrize(
    ("storage", "selector"),
    [("dataset", {}), ("rq", {}), ("kvs", {"name": "shop"})],
)
def test_a_crawlee_store_left_in_place_names_migrate(
    crawlee_dir: Path, storage: str, selector: dict[str, str]
) -> None:
    async def open_store() -> None:
        client = LogKvStorageClient()
        create = getattr(client, f"create_{storage}_client")
        try:
            await create(**selector, configuration=_configuration(crawlee_dir))
        finally:
            await client.close()

    with pytest.raises(NotALogKVStoreError, match=f"logkv migrate {crawlee_dir}"):
        _in_thread(open_store())


# ---------------------------------------------------------------------------------- mixed folders


def _todays_layout(crawlee_dir: Path, tmp_path: Path, keep_user_records: bool) -> None:
    """Turn the Crawlee folder into what a crawler on logkv's earlier client left: logkv
    key-value stores (the default one in ``default-logkv``) and datasets, Crawlee's
    file-system queue, and Crawlee's default store holding only the queue's state."""
    reference = tmp_path / "reference" / "storage"
    shutil.copytree(crawlee_dir, reference)
    migrate_storage(reference, to="logkv", bar=False)
    kvs = crawlee_dir / "key_value_stores"
    for store in survey(reference).stores:
        if store.format != "logkv" or store.storage == "request_queue":
            continue  # the queue stays on Crawlee's file system, its state in its default store
        meta = json.loads((store.path / "META.json").read_bytes())
        target = crawlee_dir / store.path.parent.name / store.name
        if store.storage == "key_value_store" and meta["kind"] == "default":
            target = kvs / "default-logkv"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(store.path, target)
    if not keep_user_records:
        for path in (kvs / "default").iterdir():
            if not path.name.startswith((RQ_STATE_PREFIX, "__metadata__")):
                path.unlink()


def test_a_folder_of_logkvs_earlier_client_moves_whole(crawlee_dir: Path, tmp_path: Path) -> None:
    expected = _read(crawlee_dir, FileSystemStorageClient)
    _todays_layout(crawlee_dir, tmp_path, keep_user_records=False)
    report = migrate_storage(crawlee_dir, to="logkv", bar=False)
    assert any("copied the logkv key_value_store default-logkv" in line for line in report.lines)
    assert _read(crawlee_dir, LogKvStorageClient) == expected


def test_two_default_stores_are_refused(crawlee_dir: Path, tmp_path: Path) -> None:
    _todays_layout(crawlee_dir, tmp_path, keep_user_records=True)
    original = _tree(crawlee_dir)
    with pytest.raises(MigrationError, match="two"):
        migrate_storage(crawlee_dir, to="logkv", bar=False)
    assert _tree(crawlee_dir) == original
    assert not staging_path(crawlee_dir).exists()
