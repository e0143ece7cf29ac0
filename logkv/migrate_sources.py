"""Reading the stores a migration converts (see :mod:`logkv.migrate`), without changing them.

Crawlee's file-system stores are read from their files: a dataset's items in file-name order
(as Crawlee sorts them); a request queue's request files and its state (``__RQ_STATE_<id>`` in
Crawlee's default key-value store: the order numbers of pending regular and forefront
requests, and the handled ones), sorted into fetch order as Crawlee's own reopen would (it has
no read-only open, and opening it rewrites its metadata). logkv's datasets and request queues
are read from their records (:mod:`logkv.crawlee._dataset`, :mod:`logkv.crawlee._request_records`)
by an engine opened read-only, under the folder's lock.

A queue's requests are kept as thunks that read each request when it is written, so a queue
larger than memory moves; a damaged file or record is a :class:`~logkv.migrate.DamagedStoreError`
naming it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from crawlee import Request
from pydantic import ValidationError

from .cli.transfer import crawlee_file_name
from .crawlee._request_records import (
    MIDDLE,
    hash_of_pending,
    order_of_pending,
    request_of_record,
)
from .engine import Engine
from .fsutil import read_file
from .layout import CRAWLEE_FILE_SYSTEM_DEFAULT_DIR, CRAWLEE_METADATA_FILE
from .migrate import DamagedStoreError, StoreFolder
from .storage_layout import PENDING_PREFIX, REQUEST_PREFIX, STORAGE_DIRS, request_key

#: The key prefix of Crawlee's file-system request queue state records.
RQ_STATE_PREFIX: Final = "__RQ_STATE_"


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


# ---------------------------------------------------------------------------------- Crawlee's files


def _read_json(path: Path) -> Any:
    try:
        return json.loads(read_file(path))
    except ValueError as exc:
        raise DamagedStoreError(f"{path} is not valid JSON ({exc}); repair or remove it") from None


def crawlee_identity(folder: Path) -> dict[str, Any]:
    body = _read_json(folder / CRAWLEE_METADATA_FILE)
    if not isinstance(body, dict):
        raise DamagedStoreError(f"{folder / CRAWLEE_METADATA_FILE} is not a store's metadata")
    return body


def record_files(folder: Path) -> list[str]:
    """The record metadata files of a Crawlee key-value store (one per record)."""
    suffix = "." + CRAWLEE_METADATA_FILE
    return [n for n in os.listdir(folder) if n.endswith(suffix)]


def user_records(folder: Path) -> list[str]:
    """:func:`record_files` but those of request queue state."""
    state = crawlee_file_name(RQ_STATE_PREFIX)
    return [n for n in record_files(folder) if not n.startswith(state)]


def entry_files(folder: Path) -> list[Path]:
    """The ``*.json`` files of a Crawlee dataset or queue folder but its metadata, by name."""
    return sorted(
        Path(entry.path)
        for entry in os.scandir(folder)
        if entry.is_file() and entry.name.endswith(".json") and entry.name != CRAWLEE_METADATA_FILE
    )


def crawlee_items(folder: Path) -> list[Path]:
    """The item files of a Crawlee dataset, in item order (as Crawlee sorts them)."""
    files = entry_files(folder)
    files.sort(key=lambda f: int(f.stem) if f.stem.isdigit() else 0)
    return files


def crawlee_item(path: Path) -> dict[str, Any]:
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
    identity = crawlee_identity(folder)
    queue_id = identity.get("id")
    state = _queue_state(storage_dir, queue_id) if isinstance(queue_id, str) else {}
    forefront_seq: dict[str, int] = dict(state.get("forefront_requests") or {})
    regular_seq: dict[str, int] = dict(state.get("regular_requests") or {})
    handled_keys = set(state.get("handled_requests") or ())
    content = QueueContent(identity.get("name"))
    pending: dict[str, Path] = {}
    orphans: list[Callable[[], Request]] = []
    for path in entry_files(folder):
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


# ---------------------------------------------------------------------------------- logkv's records


def logkv_item(engine: Engine, store: StoreFolder, key: str) -> dict[str, Any]:
    found = engine.get_with_type(key)
    try:
        item = json.loads(found[0] or b"") if found is not None else None
    except ValueError:
        item = None
    if not isinstance(item, dict):
        raise DamagedStoreError(f"{store.path}: the item {key!r} is not a JSON object")
    return item


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
            try:
                return request_of_record(found[0], key)
            except ValueError as exc:
                raise DamagedStoreError(f"{engine.path}: {exc}") from None

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
