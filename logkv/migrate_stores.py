"""The stores of a storage folder converted between Crawlee's file-system layout and logkv (the
build step of :mod:`logkv.migrate`).

Both directions write through storage clients' own APIs: logkv stores are made by
:class:`~logkv.crawlee.LogKvStorageClient` (so each lands in the folder that client opens, the
default key-value store included), Crawlee's datasets and request queues by Crawlee's
``FileSystemStorageClient`` (so the layout is Crawlee's own). Key-value records go through
:mod:`logkv.cli.transfer` both ways, which keeps their bytes and content types exactly (the
storage clients' ``set_value`` would re-encode them).

Crawlee's file-system request queue is read from its files directly (it has no read-only
open, and opening it rewrites its metadata): the request files, and the queue's state
(``__RQ_STATE_<id>`` in Crawlee's default key-value store: the order numbers of pending regular
and forefront requests, and the handled ones). A queue is written by replaying what it holds
through the target's ``RequestQueueClient``: the handled requests are added, fetched and
marked handled (``handled_at`` kept), then the pending regular requests are added in their
order, then the pending forefront requests one by one, oldest first, so that the newest is
fetched first as in Crawlee. Requests that were in progress when the crawler stopped are
pending, as Crawlee's own reopen makes them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Final

from crawlee import Request, service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storage_clients import FileSystemStorageClient, StorageClient
from crawlee.storage_clients._file_system import FileSystemRequestQueueClient
from pydantic import ValidationError
from tqdm import tqdm

from .cli.transfer import crawlee_file_name, export_store, import_store
from .crawlee import LogKvStorageClient
from .crawlee._request_records import (
    MIDDLE,
    PENDING_PREFIX,
    REQUEST_PREFIX,
    hash_of_pending,
    order_of_pending,
    parse_record,
    request_key,
    request_of_record,
)
from .engine import Engine
from .fsutil import read_file
from .layout import CRAWLEE_FILE_SYSTEM_DEFAULT_DIR, CRAWLEE_METADATA_FILE
from .migrate import (
    CRAWLEE_BACKUP_SUFFIX,
    LOGKV_BACKUP_SUFFIX,
    STORAGE_DIRS,
    DamagedStoreError,
    MigrationError,
    StoreFolder,
    Survey,
    backup_path,
    copy_store,
    fsync_tree,
    locked,
    recover,
    staging_path,
    survey,
    swap_in,
)
from .storage_clients._meta import read_meta

#: The key prefix of Crawlee's file-system request queue state records.
RQ_STATE_PREFIX: Final = "__RQ_STATE_"
#: Items or requests written per call.
BATCH: Final = 1000

Step = Callable[[int], None]


@dataclass
class BuildResult:
    """What a build wrote: one line per store, for the report."""

    lines: list[str] = field(default_factory=list)
    stores: int = 0
    records: int = 0


@dataclass
class QueueContent:
    """What a request queue holds, in the order it hands requests out: each request as a
    thunk that reads it when its turn comes (a queue may be larger than memory)."""

    name: str | None
    #: Handled requests (``handled_at`` set).
    handled: list[Callable[[], Request]] = field(default_factory=list)
    #: Pending forefront requests, in fetch order (newest first).
    forefront: list[Callable[[], Request]] = field(default_factory=list)
    #: Pending regular requests, in fetch order.
    regular: list[Callable[[], Request]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Every request."""
        return len(self.handled) + len(self.forefront) + len(self.regular)


@contextmanager
def progress(label: str, total: int, enabled: bool | None) -> Iterator[Step]:
    """A tqdm bar on stderr for one store (``enabled`` None: only on a terminal)."""
    disable = None if enabled is None else not enabled
    with tqdm(
        desc=label, total=total, unit="item", file=sys.stderr, disable=disable, leave=False
    ) as bar:

        def step(count: int) -> None:
            bar.update(count)

        yield step


def _crawlee_configuration(storage_dir: Path) -> CrawleeConfiguration:
    return CrawleeConfiguration(storage_dir=str(storage_dir), purge_on_start=False)


def _selector(folder: str, name: object) -> dict[str, str]:
    """Crawlee's ``open`` arguments for the store in ``folder`` named ``name`` (None: unnamed)."""
    if isinstance(name, str) and name:
        return {"name": name}
    if folder == CRAWLEE_FILE_SYSTEM_DEFAULT_DIR:
        return {}
    return {"alias": folder}


# ---------------------------------------------------------------------------------- reading Crawlee


def _read_json(path: Path) -> Any:
    try:
        return json.loads(read_file(path))
    except ValueError as exc:
        raise DamagedStoreError(f"{path} is not valid JSON ({exc}); repair or remove it") from None


def _crawlee_identity(folder: Path) -> dict[str, Any]:
    body = _read_json(folder / CRAWLEE_METADATA_FILE)
    if not isinstance(body, dict):
        raise DamagedStoreError(f"{folder / CRAWLEE_METADATA_FILE} is not a store's metadata")
    return body


def _entry_files(folder: Path) -> list[Path]:
    """The ``*.json`` files of a Crawlee dataset or queue folder but its metadata, by name."""
    return sorted(
        Path(entry.path)
        for entry in os.scandir(folder)
        if entry.is_file() and entry.name.endswith(".json") and entry.name != CRAWLEE_METADATA_FILE
    )


def crawlee_items(folder: Path) -> list[Path]:
    """The item files of a Crawlee dataset, in item order (as Crawlee sorts them)."""
    files = _entry_files(folder)
    files.sort(key=lambda f: int(f.stem) if f.stem.isdigit() else 0)
    return files


def _crawlee_item(path: Path) -> dict[str, Any]:
    item = _read_json(path)
    if not isinstance(item, dict):
        raise DamagedStoreError(f"{path} is not a dataset item (a JSON object)")
    return item


def _queue_state(storage_dir: Path, queue_id: str) -> dict[str, Any]:
    """The persisted state of the Crawlee queue ``queue_id`` ({} when none was persisted)."""
    default = storage_dir / STORAGE_DIRS["key_value_store"] / CRAWLEE_FILE_SYSTEM_DEFAULT_DIR
    path = default / crawlee_file_name(RQ_STATE_PREFIX + queue_id)
    if not path.is_file():
        return {}
    state = _read_json(path)
    return state if isinstance(state, dict) else {}


def _crawlee_request(path: Path) -> Request:
    try:
        return Request.model_validate(_read_json(path))
    except ValidationError as exc:
        raise DamagedStoreError(
            f"{path} is not a Crawlee request ({exc.error_count()} problem(s)); repair or remove it"
        ) from None


def _reader(path: Path) -> Callable[[], Request]:
    return lambda: _crawlee_request(path)


def read_crawlee_queue(storage_dir: Path, folder: Path) -> QueueContent:
    """What the Crawlee file-system queue in ``folder`` holds, as Crawlee's reopen sees it.

    Every request file is read once here (to sort it and to find a damaged one before
    anything is written); only file names and unique keys are kept.
    """
    identity = _crawlee_identity(folder)
    queue_id = identity.get("id")
    state = _queue_state(storage_dir, queue_id) if isinstance(queue_id, str) else {}
    forefront_seq: dict[str, int] = dict(state.get("forefront_requests") or {})
    regular_seq: dict[str, int] = dict(state.get("regular_requests") or {})
    handled_keys = set(state.get("handled_requests") or ())
    content = QueueContent(identity.get("name"))
    pending: dict[str, Path] = {}
    orphans: list[Callable[[], Request]] = []
    for path in _entry_files(folder):
        request = _crawlee_request(path)
        key = request.unique_key
        if request.handled_at is not None or key in handled_keys:
            content.handled.append(_reader(path))
        elif key in forefront_seq or key in regular_seq:
            pending[key] = path
        else:  # not in the persisted state: Crawlee's reopen appends it to the regular ones
            orphans.append(_reader(path))
    content.forefront = [
        _reader(pending[k])
        for k in sorted(forefront_seq, key=forefront_seq.__getitem__, reverse=True)
        if k in pending
    ]
    content.regular = [
        _reader(pending[k])
        for k in sorted(regular_seq, key=regular_seq.__getitem__)
        if k in pending and k not in forefront_seq
    ]
    content.regular.extend(orphans)
    return content


# ---------------------------------------------------------------------------------- writing queues


async def write_queue(client: Any, content: QueueContent, step: Step) -> None:
    """Replay ``content`` into the empty request queue ``client`` (see the module docstring)."""
    direct = not isinstance(client, FileSystemRequestQueueClient)
    for start in range(0, len(content.handled), BATCH):
        batch = [read() for read in content.handled[start : start + BATCH]]
        if direct:  # logkv's queue stores a request added with handled_at as handled
            await client.add_batch_of_requests(batch)
        else:  # Crawlee's counts a request as handled only once it was fetched and marked
            await _add_handled(client, batch)
        step(len(batch))
    for start in range(0, len(content.regular), BATCH):
        batch = [read() for read in content.regular[start : start + BATCH]]
        await client.add_batch_of_requests(batch)
        step(len(batch))
    for read in reversed(content.forefront):
        await client.add_batch_of_requests([read()], forefront=True)
        step(1)


async def _add_handled(client: Any, batch: list[Request]) -> None:
    """Add ``batch`` (handled requests) to an empty queue, fetch each and mark it handled
    (its own ``handled_at`` kept)."""
    handled = {r.unique_key: r for r in batch}
    await client.add_batch_of_requests([r.model_copy(update={"handled_at": None}) for r in batch])
    while (fetched := await client.fetch_next_request()) is not None:
        original = handled.get(fetched.unique_key)
        if original is None:
            raise MigrationError(f"the new queue handed out an unknown request {fetched.url}")
        await client.mark_request_as_handled(original)


# ---------------------------------------------------------------------------------- to logkv


@asynccontextmanager
async def _events() -> AsyncIterator[None]:
    """Crawlee's event manager, active: a file-system queue persists its state when it ends."""
    async with service_locator.get_event_manager():
        yield


async def logkv_default_folder() -> str:
    """The folder :class:`LogKvStorageClient` opens for the default key-value store (asked by
    opening it in a scratch storage folder)."""
    with tempfile.TemporaryDirectory(prefix="logkv-default-") as scratch:
        client = LogKvStorageClient()
        kvs = await client.create_kvs_client(configuration=_crawlee_configuration(Path(scratch)))
        name = kvs.path.name
        await client.close()
    return name


class _Build:
    """Shared state of one build: the target storage folder, the clients, the report."""

    def __init__(
        self, source: Path, staging: Path, bar: bool | None, steps: Callable[[str], None]
    ) -> None:
        self.source = source
        self.steps = steps
        self.staging = staging
        self.bar = bar
        self.configuration = _crawlee_configuration(staging)
        self.result = BuildResult()

    def checkpoint(self, step: str) -> None:
        """Report that ``step`` (a store) is written."""
        self.steps(step)

    def note(self, line: str, records: int) -> None:
        self.result.lines.append(line)
        self.result.stores += 1
        self.result.records += records


async def build_logkv(
    survey: Survey, staging: Path, bar: bool | None, steps: Callable[[str], None]
) -> BuildResult:
    """Write the logkv form of every store of ``survey`` into the new storage folder
    ``staging``: Crawlee stores converted, logkv stores copied as they are; ``steps`` is
    called after each store."""
    build = _Build(survey.root, staging, bar, steps)
    default = await logkv_default_folder()
    kvs_dir = staging / STORAGE_DIRS["key_value_store"]
    _carry_logkv_stores(survey, build, default)
    for store in survey.of("crawlee", "key_value_store"):
        _import_kvs(store, build, kvs_dir, default)
    client = LogKvStorageClient()
    try:
        async with _events():
            for store in survey.of("crawlee", "dataset"):
                await _import_dataset(store, build, client)
            for store in survey.of("crawlee", "request_queue"):
                await _import_queue(store, build, client)
    finally:
        await client.close()
    return build.result


def _carry_logkv_stores(survey: Survey, build: _Build, default: str) -> None:
    """Copy the stores that are logkv already; the old default store (kept beside Crawlee's
    file-system default) moves to the folder the client now opens for it."""
    for store in survey.of("logkv"):
        target = store.name
        meta = read_meta(store.path)
        if store.storage == "key_value_store" and meta is not None and meta.kind == "default":
            target = default
        path = build.staging / STORAGE_DIRS[store.storage] / target
        if path.exists():
            raise MigrationError(
                f"two logkv stores would be {path.relative_to(build.staging)}: {store.path} "
                "and another default store; keep one (logkv export/import) and run migrate again"
            )
        copy_store(store.path, path)
        build.note(f"copied the logkv {store.storage} {store.name} as {target}", 0)
        build.checkpoint(f"{store.storage} {store.name}")


def _user_records(folder: Path) -> list[str]:
    """The record keys of a Crawlee key-value store that are not request queue state."""
    suffix = "." + CRAWLEE_METADATA_FILE
    return [
        n for n in os.listdir(folder)
        if n.endswith(suffix) and not n.startswith(crawlee_file_name(RQ_STATE_PREFIX))
    ]  # fmt: skip


def _import_kvs(store: StoreFolder, build: _Build, kvs_dir: Path, default: str) -> None:
    is_default = store.name == CRAWLEE_FILE_SYSTEM_DEFAULT_DIR
    target = kvs_dir / (default if is_default else store.name)
    if is_default and target.exists():  # the logkv default store was carried over
        if _user_records(store.path):
            raise MigrationError(
                f"two default key-value stores: the Crawlee store {store.path}, which holds "
                f"records of its own beside the queues' state, and the logkv store "
                f"{target.name}; move one store's records into the other (logkv "
                "import/export) and run migrate again"
            )
        return  # it holds only the queues' state, which moves with the queues
    result = import_store(
        store.path,
        target,
        build.bar,
        as_default=is_default,
        skip=lambda key: key.startswith(RQ_STATE_PREFIX),
        label=f"key-value store {store.name}",
    )
    if result.skipped:
        raise DamagedStoreError(f"unreadable records in {store.path}: {result.skipped[0]}")
    build.note(f"key-value store {store.name} -> {target.name}: {result.records:,} records",
               result.records)  # fmt: skip
    build.checkpoint(f"{store.storage} {store.name}")


async def _import_dataset(store: StoreFolder, build: _Build, client: LogKvStorageClient) -> None:
    identity = _crawlee_identity(store.path)
    files = crawlee_items(store.path)
    dataset = await client.create_dataset_client(
        **_selector(store.name, identity.get("name")), configuration=build.configuration
    )
    with progress(f"dataset {store.name}", len(files), build.bar) as step:
        for start in range(0, len(files), BATCH):
            chunk = files[start : start + BATCH]
            await dataset.push_data([_crawlee_item(path) for path in chunk])
            step(len(chunk))
    build.note(f"dataset {store.name}: {len(files):,} items", len(files))
    build.checkpoint(f"{store.storage} {store.name}")


async def _import_queue(store: StoreFolder, build: _Build, client: LogKvStorageClient) -> None:
    content = read_crawlee_queue(build.source, store.path)
    queue = await client.create_rq_client(
        **_selector(store.name, content.name), configuration=build.configuration
    )
    with progress(f"request queue {store.name}", content.total, build.bar) as step:
        await write_queue(queue, content, step)
    build.note(
        f"request queue {store.name}: {len(content.handled):,} handled, "
        f"{len(content.forefront) + len(content.regular):,} pending", content.total
    )  # fmt: skip
    build.checkpoint(f"{store.storage} {store.name}")


# ---------------------------------------------------------------------------------- to Crawlee


async def build_crawlee(
    survey: Survey, staging: Path, bar: bool | None, steps: Callable[[str], None]
) -> BuildResult:
    """Write the Crawlee file-system form of every store of ``survey`` into ``staging``:
    logkv stores converted, Crawlee stores copied as they are; ``steps`` is called after each
    store."""
    build = _Build(survey.root, staging, bar, steps)
    kvs_dir = staging / STORAGE_DIRS["key_value_store"]
    for store in survey.of("logkv", "key_value_store"):
        meta = read_meta(store.path)
        is_default = meta is not None and meta.kind == "default"
        target = kvs_dir / (CRAWLEE_FILE_SYSTEM_DEFAULT_DIR if is_default else store.name)
        result = export_store(store.path, target, bar, f"key-value store {store.name}")
        build.note(f"key-value store {store.name} -> {target.name}: {result.records:,} records",
                   result.records)  # fmt: skip
        build.checkpoint(f"{store.storage} {store.name}")
    for store in survey.of("crawlee"):
        target = staging / STORAGE_DIRS[store.storage] / store.name
        if target.exists():  # Crawlee's default store beside logkv's: merge the record files
            _merge_records(store.path, target)
        else:
            copy_store(store.path, target)
        build.note(f"copied the Crawlee {store.storage} {store.name}", 0)
    target = FileSystemStorageClient()
    async with _events():
        for store in survey.of("logkv", "dataset"):
            await _export_dataset(store, build, target)
        for store in survey.of("logkv", "request_queue"):
            await _export_queue(store, build, target)
    return build.result


async def _export_dataset(store: StoreFolder, build: _Build, target: StorageClient) -> None:
    """Push the items of the logkv dataset ``store`` (read from its records: each is the item
    as Crawlee's file-system client writes it) into a new Crawlee dataset, in order."""
    with Engine.open(store.path, readonly=True) as engine:
        total = len(engine)
        written = await target.create_dataset_client(
            **_logkv_selector(store, read_meta(store.path)), configuration=build.configuration
        )
        with progress(f"dataset {store.name}", total, build.bar) as step:
            keys = iter(engine.keys())
            while chunk := list(islice(keys, BATCH)):
                await written.push_data([_logkv_item(engine, store, key) for key in chunk])
                step(len(chunk))
    build.note(f"dataset {store.name}: {total:,} items", total)
    build.checkpoint(f"{store.storage} {store.name}")


def _logkv_item(engine: Engine, store: StoreFolder, key: str) -> dict[str, Any]:
    found = engine.get_with_type(key)
    try:
        item = json.loads(found[0] or b"") if found is not None else None
    except ValueError:
        item = None
    if not isinstance(item, dict):
        raise DamagedStoreError(f"{store.path}: the item {key!r} is not a JSON object")
    return item


async def _export_queue(store: StoreFolder, build: _Build, target: StorageClient) -> None:
    with Engine.open(store.path, readonly=True) as engine:
        content = read_logkv_queue(engine)
        queue = await target.create_rq_client(
            **_logkv_selector(store, read_meta(store.path)), configuration=build.configuration
        )
        with progress(f"request queue {store.name}", content.total, build.bar) as step:
            await write_queue(queue, content, step)
    build.note(
        f"request queue {store.name}: {len(content.handled):,} handled, "
        f"{len(content.forefront) + len(content.regular):,} pending",
        content.total,
    )
    build.checkpoint(f"{store.storage} {store.name}")


def read_logkv_queue(engine: Engine) -> QueueContent:
    """What the logkv request queue ``engine`` holds, in fetch order, from its records (see
    :mod:`logkv.crawlee._request_records`): the pending keys in key order (forefront ones,
    below the middle order, come first), and every request record that no pending key names
    is a handled request. Only keys are kept; each request is read when it is written."""

    def reader(hashed: str) -> Callable[[], Request]:
        def read() -> Request:
            key = request_key(hashed)
            found = engine.get_with_type(key)
            if found is None:
                raise DamagedStoreError(f"{engine.path}: the pending request {key!r} has no record")
            return request_of_record(parse_record(found[0], None, key))

        return read

    content = QueueContent(None)
    pending: set[str] = set()
    for key in engine.keys(PENDING_PREFIX):
        if key.startswith(PENDING_PREFIX):
            hashed = hash_of_pending(key)
            pending.add(hashed)
            forefront = order_of_pending(key) < MIDDLE
            (content.forefront if forefront else content.regular).append(reader(hashed))
        elif key.startswith(REQUEST_PREFIX):
            hashed = key[len(REQUEST_PREFIX) :]
            if hashed not in pending:
                content.handled.append(reader(hashed))
    return content


def _logkv_selector(store: StoreFolder, meta: Any) -> dict[str, str]:
    if meta is None or meta.kind == "default":
        return {}
    if meta.kind == "named":
        return {"name": meta.name}
    return {"alias": meta.alias}


def _merge_records(source: Path, target: Path) -> None:
    """Copy the record files of Crawlee store ``source`` that ``target`` lacks."""
    for name in os.listdir(source):
        if name != CRAWLEE_METADATA_FILE and not (target / name).exists():
            shutil.copy2(source / name, target / name)


# ---------------------------------------------------------------------------------- the command


@dataclass
class MigrationReport:
    """What a migration did (or, dry, would do)."""

    storage_dir: str
    backup: str | None
    direction: str
    dry_run: bool
    recovered: str | None
    lines: list[str]
    stores: int = 0
    records: int = 0


def _nothing(step: str) -> None:
    del step


def _plan(survey: Survey, source_format: str) -> list[str]:
    """One line per store that would be converted or copied."""
    lines = []
    for store in survey.stores:
        verb = "convert" if store.format == source_format else "copy as it is"
        count = ""
        if store.format == "crawlee":
            files = [n for n in os.listdir(store.path) if n != CRAWLEE_METADATA_FILE]
            unit = "records" if store.storage == "key_value_store" else "files"
            n = len(files) // 2 if store.storage == "key_value_store" else len(files)
            count = f" ({n:,} {unit})"
        lines.append(f"{verb}: {store.storage} {store.name} ({store.format}){count}")
    return lines


def migrate_storage(
    storage_dir: Path,
    *,
    to: str,
    dry_run: bool = False,
    bar: bool | None = None,
    checkpoint: Callable[[str], None] = _nothing,
) -> MigrationReport:
    """Convert every store of the storage folder ``storage_dir`` to ``to`` (``"logkv"`` or
    ``"crawlee"``), all or nothing (see :mod:`logkv.migrate`); ``checkpoint`` is called with
    the name of each step reached (tests stop the process there)."""
    storage_dir = Path(os.path.abspath(storage_dir))
    source_format = "crawlee" if to == "logkv" else "logkv"
    target_words = {"logkv": "logkv", "crawlee": "Crawlee file-system"}[to]
    recovered = None if dry_run else recover(storage_dir)
    found = survey(storage_dir)
    if not found.stores:
        raise MigrationError(f"{storage_dir} holds no stores: there is nothing to migrate")
    if not found.of(source_format):  # type: ignore[arg-type]
        raise MigrationError(f"{storage_dir} holds {target_words} stores only: nothing to do")
    suffix = CRAWLEE_BACKUP_SUFFIX if to == "logkv" else LOGKV_BACKUP_SUFFIX
    backup = backup_path(storage_dir, suffix)
    if backup.exists():
        raise MigrationError(
            f"{backup} exists (the originals of an earlier migration?); remove or rename it first"
        )
    report = MigrationReport(
        str(storage_dir), str(backup), f"to {to}", dry_run, recovered, _plan(found, source_format)
    )
    if dry_run:
        return report
    staging = staging_path(storage_dir)
    build = build_logkv if to == "logkv" else build_crawlee
    # logkv stores are copied or read by their records, never opened: they are locked here.
    to_lock = found.of("logkv")
    with locked(to_lock):
        staging.mkdir()
        try:
            result = asyncio.run(build(found, staging, bar, checkpoint))
            checkpoint("built")
            fsync_tree(staging)
            checkpoint("synced")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        swap_in(storage_dir, staging, backup, checkpoint)
    report.lines = result.lines
    report.stores, report.records = result.stores, result.records
    return report
