"""What each page and each JSON API call of the console shows, as plain JSON-ready data.

The pages render these dictionaries with templates and the API returns them as they are, so
the two always agree. Every function only reads: stores through the shared read-only opens
(:mod:`logkv.web.opened`), history through :mod:`logkv.history` (via the commands' audit
helpers). Bad input raises :class:`BadInputError`; a key or version that is not there,
:class:`NotFoundError`; a damaged store, the :class:`~logkv.errors.LogKVError` that says so.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..cli.audit import verify_store
from ..cli.common import CommandError, parse_until
from ..cli.contents import store_contents
from ..cli.render import iso_timestamp
from ..configuration import Configuration
from ..content import public_content_type
from ..engine import validate_key
from ..errors import CorruptionError, LogKVError, NotALogKVStoreError
from ..format import DeleteRecord, SetRecord
from ..history import StoreChangedError, log_segments, retrying, state_at
from ..layout import ARCHIVE_DIR
from ..lock import writer_pid
from ..storage_layout import count_prefix
from ..values import ValueFileReader, ValueStream, iter_inline, value_path
from .catalog import KIND_WORDS, StoreRef, list_stores
from .diffs import diff_values
from .opened import OpenedStores, record_stamp
from .timelines import Timeline, Timelines, Version, records_at
from .values import json_tree, pretty_json, value_text, view_kind

#: Keys per page of a store's key list (at most :data:`MAX_PAGE` when asked).
KEYS_PAGE: Final = 100
#: Changes per page of a key's timeline.
HISTORY_PAGE: Final = 200
#: The most rows any page or API call returns.
MAX_PAGE: Final = 1000


class BadInputError(ValueError):
    """A request's parameter is not what the call takes."""


class NotFoundError(LookupError):
    """The key, or the version of it, is not in the store."""


@dataclass
class Console:
    """What every view reads: the storage folder, the shared opens, and the outcome of the
    last verification of each store (by folder)."""

    storage_dir: Path
    opened: OpenedStores = field(default_factory=OpenedStores)
    verified: dict[Path, dict[str, Any]] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)
    #: Whether ``LOGKV_REPLICA_URL`` is set (read once: the environment does not change).
    replicated: bool = field(default_factory=lambda: Configuration().replica_url is not None)
    #: The key timelines read last, kept fresh as the writer appends (:mod:`.timelines`).
    timelines: Timelines = field(default_factory=Timelines)

    def __post_init__(self) -> None:
        # Any use of a store starts (or, after a compaction, renews) its history index.
        self.opened.on_use = self.timelines.indexes.ensure


def key_timeline(console: Console, ref: StoreRef, key: str) -> Timeline:
    """``key``'s timeline (:class:`~logkv.web.timelines.Timeline`): read whole on its first
    view, then only what the writer appended since."""
    return console.timelines.get(console.opened, ref.path, key)


def key_records(
    console: Console, ref: StoreRef, key: str, seqs: list[int]
) -> list[tuple[Version, SetRecord | DeleteRecord] | None]:
    """The changes of ``key`` at ``seqs`` with their records (values read from the log);
    None for a seq at which ``key`` did not change."""

    def read() -> list[tuple[Version, SetRecord | DeleteRecord] | None]:
        return records_at(console.timelines, console.opened, ref.path, key, seqs)

    return retrying(read)


def _time(timestamp_us: int | None) -> str | None:
    return None if not timestamp_us else iso_timestamp(timestamp_us)


def page_size(text: str | None, default: int) -> int:
    """A ``limit`` parameter: 1 to :data:`MAX_PAGE` (``default`` when absent)."""
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PAGE:
        raise BadInputError(f"limit must be a whole number from 1 to {MAX_PAGE}, got {text!r}")
    return int(text)


def whole_number(text: str | None, what: str) -> int | None:
    """A non-negative integer parameter (None when absent)."""
    if text is None or text == "":
        return None
    if not (text.isascii() and text.isdigit()):
        raise BadInputError(f"{what} must be a whole number, got {text!r}")
    return int(text)


def checked_key(key: str | None) -> str:
    """The ``key`` parameter, which every record view needs, as a valid key."""
    if key is None:
        raise BadInputError("the key parameter is missing")
    return validate_key(key)


# ---------------------------------------------------------------------------------- stores


def overview(console: Console) -> dict[str, Any]:
    """Every store of the storage folder, each with :func:`store_summary`."""
    stores = [store_summary(console, ref) for ref in list_stores(console.storage_dir)]
    return {"storage_dir": str(console.storage_dir), "kinds": KIND_WORDS, "stores": stores}


def store_summary(console: Console, ref: StoreRef) -> dict[str, Any]:
    """A store's figures and state. A store that does not open is described, never raised:
    ``status`` is ``ok``, ``damaged``, ``not a logkv store``, ``changing`` (a compaction
    raced the read: reload) or ``unreadable``; ``error`` says why."""
    summary: dict[str, Any] = {
        "kind": ref.kind,
        "name": ref.name,
        "status": "ok",
        "error": None,
        "writer_pid": writer_pid(ref.path),
        "verify": console.verified.get(ref.path),
    }
    try:
        with console.opened.use(ref.path) as opened:
            engine = opened.engine
            stats = engine.stats()
            contents = store_contents(ref.path, engine)
            last_write = engine.last_timestamp
    except CorruptionError as exc:
        return {**summary, "status": "damaged", "error": str(exc)}
    except NotALogKVStoreError as exc:
        return {**summary, "status": "not a logkv store", "error": str(exc)}
    except (StoreChangedError, FileNotFoundError) as exc:
        return {**summary, "status": "changing", "error": str(exc)}
    except (LogKVError, OSError) as exc:
        return {**summary, "status": "unreadable", "error": str(exc)}
    records = stats.live_bytes + stats.dead_bytes
    archive = ref.path / ARCHIVE_DIR
    archived = [p.stat().st_size for p in archive.iterdir()] if archive.is_dir() else []
    return {
        **summary,
        "holds": contents.describe(),
        **contents.as_json(),
        "keys": stats.keys,
        "live_bytes": stats.live_bytes,
        "dead_bytes": stats.dead_bytes,
        "dead_ratio": round(stats.dead_bytes / records, 4) if records else 0.0,
        "disk_bytes": stats.disk_bytes,
        "segments": stats.segments,
        "snapshot_covers": stats.snapshot_covers,
        "archive_segments": len(archived),
        "archive_bytes": sum(archived),
        "last_seq": stats.last_seq,
        "last_write": _time(int(last_write * 1_000_000)),
    }


def store_detail(console: Console, ref: StoreRef) -> dict[str, Any]:
    """:func:`store_summary` plus where the retained history starts and the replication
    state (the bucket is asked how far behind it is when ``LOGKV_REPLICA_URL`` is set)."""
    summary = store_summary(console, ref)
    segments = log_segments(ref.path)
    first = segments[0][0] if segments else None
    summary["history_from_segment"] = first
    summary["history_complete"] = first in (None, 1)
    summary["replication"] = _replication(console.replicated, ref.path, summary.get("last_seq"))
    summary["history_index"] = console.timelines.indexes.status(ref.path)
    return summary


def _replication(replicated: bool, path: Path, last_seq: int | None) -> dict[str, Any]:
    if not replicated:
        return {"configured": False}
    if last_seq is None:
        return {"configured": True}
    from ..cli.replica import replication_lag  # noqa: PLC0415 (asks the bucket)

    return {"configured": True, **(replication_lag(path, last_seq) or {})}


def key_page(
    console: Console, ref: StoreRef, prefix: str, after: str | None, limit: int
) -> dict[str, Any]:
    """Up to ``limit`` keys that start with ``prefix``, after ``after``, in key order, each
    with its content type, size and last change; ``next`` is the ``after`` of the next page
    (None: this is the last), ``matching`` how many keys start with the prefix. Read from the
    sorted index as a range (O(log n + limit)), whatever the store's size."""
    with console.opened.use(ref.path) as opened:
        engine = opened.engine
        keys = list(engine.keys(after, limit + 1, prefix))
        matching = count_prefix(engine, prefix)
        rows = []
        for key in keys[:limit]:
            entry = engine.entry(key)
            if entry is None:
                continue  # deleted since it was listed
            stamp = record_stamp(opened.readers, entry)
            rows.append(
                {
                    "key": key,
                    "content_type": public_content_type(entry.content_type),
                    "size": entry.value_size,
                    "is_none": entry.size < 0,
                    "seq": None if stamp is None else stamp[0],
                    "modified": None if stamp is None else _time(stamp[1]),
                }
            )
    more = len(keys) > limit
    return {
        "store": ref_json(ref),
        "prefix": prefix,
        "after": after,
        "limit": limit,
        "matching": matching,
        "keys": rows,
        "next": keys[limit - 1] if more else None,
    }


def ref_json(ref: StoreRef) -> dict[str, str]:
    return {"kind": ref.kind, "name": ref.name}


# ---------------------------------------------------------------------------------- records


def record_value(
    console: Console, ref: StoreRef, key: str, seq: int | None
) -> tuple[bytes | None, str | None, int | None, int | None]:
    """``(value, content_type, seq, timestamp_us)`` of ``key`` now (``seq`` None; seq and
    time of the current record, None when not known) or of its version ``seq`` from the
    history. :class:`NotFoundError` when there is no such key or version (a delete's seq
    included)."""
    if seq is None:
        with console.opened.use(ref.path) as opened:
            found = opened.engine.get_record(key)
            if found is None:
                raise NotFoundError(f"no key {key!r} in {ref.kind}/{ref.name}")
            entry, value = found
            stamp = record_stamp(opened.readers, entry)
        return (value, entry.content_type, *(stamp or (None, None)))
    version = key_records(console, ref, key, [seq])[0]
    if version is not None and isinstance(version[1], SetRecord):
        record = version[1]
        return record.value, record.content_type, record.seq, record.timestamp_us
    raise NotFoundError(f"key {key!r} has no value written at seq {seq}")


def value_stream(console: Console, ref: StoreRef, key: str, seq: int | None) -> ValueStream:
    """The value of ``key`` now (``seq`` None) or of its version ``seq``, as a stream of
    checked chunks (at most 1 MiB each): a streamed value is read from its value file a chunk
    at a time, never whole. Close the stream when done. :class:`NotFoundError` when there is
    no such key or version, or when the value file of an old version was removed."""
    if seq is None:
        with console.opened.use(ref.path) as opened:
            stream = opened.engine.open_value(key)
        if stream is None:
            raise NotFoundError(f"no key {key!r} in {ref.kind}/{ref.name}")
        return stream
    version = key_records(console, ref, key, [seq])[0]
    if version is None or not isinstance(version[1], SetRecord):
        raise NotFoundError(f"key {key!r} has no value written at seq {seq}")
    record = version[1]
    if record.streamed is None:
        value = record.value
        size = None if value is None else len(value)
        return ValueStream(record.content_type, size, iter_inline(value or b""))
    try:
        reader = ValueFileReader(value_path(ref.path, record.streamed.seq), record.streamed)
    except FileNotFoundError:
        raise NotFoundError(
            f"the value file of key {key!r} at seq {seq} was removed by a compaction"
        ) from None
    return ValueStream(record.content_type, reader.size, iter(reader), reader.close,
                       record.streamed.digest)  # fmt: skip


def record_view(console: Console, ref: StoreRef, key: str, seq: int | None) -> dict[str, Any]:
    """A record: its content type, size and version, and its value as the page shows it
    (``view``: json, text, image, page, binary or none; ``text`` capped, JSON indented)."""
    value, content_type, at_seq, at_us = record_value(console, ref, key, seq)
    kind = view_kind(content_type, value)
    text, truncated = (
        (None, False) if kind in ("image", "binary") else value_text(value, content_type)
    )
    if kind == "json" and value is not None and not truncated:
        text = pretty_json(value) or text
    return {
        "store": ref_json(ref),
        "key": key,
        "seq": at_seq,
        "modified": _time(at_us),
        "current": seq is None,
        "content_type": public_content_type(content_type),
        "size": 0 if value is None else len(value),
        "view": kind,
        "text": text,
        "truncated": truncated,
    }


def record_tree(console: Console, ref: StoreRef, key: str, seq: int | None) -> Any:
    """A JSON record's value as a capped tree of nodes for the page (None: not JSON)."""
    value, content_type, _, _ = record_value(console, ref, key, seq)
    if value is None or view_kind(content_type, value) != "json":
        return None
    return json_tree(value)


# ---------------------------------------------------------------------------------- history


def _change_json(change: Version) -> dict[str, Any]:
    return {
        "seq": change.seq,
        "time": _time(change.timestamp_us),
        "op": change.op,
        "content_type": None if change.op == "delete" else public_content_type(change.content_type),
        "size": change.size,
        "source": change.source,
    }


def history_view(
    console: Console, ref: StoreRef, key: str, offset: int, limit: int
) -> dict[str, Any]:
    """Every retained change of ``key``, oldest first, ``limit`` of them from ``offset``;
    ``total`` counts them all, ``starts_at`` is the first seq the log still holds. Only the
    page's changes are rendered; no value is read."""
    timeline = key_timeline(console, ref, key)
    changes = timeline.versions
    return {
        "store": ref_json(ref),
        "key": key,
        "starts_at": timeline.starts_at,
        "total": len(changes),
        "offset": offset,
        "limit": limit,
        "changes": [_change_json(c) for c in changes[offset : offset + limit]],
    }


def diff_view(console: Console, ref: StoreRef, key: str, a: int, b: int) -> dict[str, Any]:
    """The diff of ``key`` between its versions at seqs ``a`` and ``b`` (a delete counts as
    an empty version); capped (:mod:`logkv.web.diffs`)."""
    found = key_records(console, ref, key, [a, b])
    for seq, pair in zip((a, b), found, strict=True):
        if pair is None:
            raise NotFoundError(f"key {key!r} has no change at seq {seq}")
    (old, old_record), (new, new_record) = found  # type: ignore[misc]
    diff = diff_values(
        _value_of(old_record), old.content_type, _value_of(new_record), new.content_type,
        f"seq {a} ({_time(old.timestamp_us)})", f"seq {b} ({_time(new.timestamp_us)})",
    )  # fmt: skip
    return {
        "store": ref_json(ref),
        "key": key,
        "a": _change_json(old),
        "b": _change_json(new),
        "lines": diff.lines,
        "truncated": diff.truncated,
        "note": diff.note,
    }


def _value_of(record: SetRecord | DeleteRecord) -> bytes | None:
    return record.value if isinstance(record, SetRecord) else None


def parse_point(text: str | None) -> tuple[int | None, int | None]:
    """``at``: a sequence number, or an ISO 8601 time (no offset: UTC), as (seq, us); read
    as ``logkv replay --until`` reads its point."""
    if text is None or not text.strip():
        raise BadInputError("the at parameter is missing: a seq or an ISO 8601 time")
    try:
        return parse_until(text)
    except CommandError as exc:
        raise BadInputError(str(exc).replace("--until ", "at=", 1)) from None


def state_view(
    console: Console, ref: StoreRef, at: str | None, after: str | None, limit: int
) -> dict[str, Any]:
    """The store as it was at ``at`` (a seq or a time; records at or before it count): how
    many keys it held, and ``limit`` of them after ``after`` with the version each held.
    Rebuilt from the log (:func:`logkv.history.state_at`), so it takes a replay's time."""
    until_seq, until_us = parse_point(at)
    state = state_at(ref.path, until_seq=until_seq, until_us=until_us)
    keys = sorted(state)
    start = 0 if after is None else bisect_right(keys, after)
    page = keys[start : start + limit]
    rows = []
    for key in page:
        record = state[key]
        rows.append(
            {
                "key": key,
                "seq": record.seq,
                "time": _time(record.timestamp_us),
                "content_type": public_content_type(record.content_type),
                "size": 0 if record.value is None else len(record.value),
            }
        )
    more = start + limit < len(keys)
    return {
        "store": ref_json(ref),
        "at": at,
        "until_seq": until_seq,
        "until": _time(until_us),
        "keys_then": len(keys),
        "after": after,
        "limit": limit,
        "keys": rows,
        "next": page[-1] if more and page else None,
    }


def verify_view(console: Console, ref: StoreRef) -> dict[str, Any]:
    """Check the store (every checksum, the hash chain, every key read back: ``logkv
    verify``) and remember the outcome for the overview."""
    started = time.time()
    try:
        outcome = verify_store(ref.path)
    except StoreChangedError as exc:
        result: dict[str, Any] = {"ok": None, "problems": [str(exc)]}
    else:
        result = {
            "ok": outcome.ok,
            "records": outcome.records,
            "chain_checked": outcome.chain_checked,
            "keys_read": outcome.keys_read,
            "problems": outcome.problems,
            "torn_tail": outcome.torn_tail,
        }
    result["checked_at"] = _time(int(started * 1_000_000))
    with console.guard:
        console.verified[ref.path] = result
    return {"store": ref_json(ref), **result}
