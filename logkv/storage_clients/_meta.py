"""``META.json``: a logkv store folder's identity (id, name, kind, storage type) and its
timestamps.

The file is small JSON, replaced atomically (temp file, fsync, rename). It is written when the
store is created and afterwards only when its timestamps changed, on ``PERSIST_STATE`` events and
on close: ``accessed_at`` and ``modified_at`` are kept in memory in between, so after a crash they
may be up to one persist interval old. The records themselves never depend on this file.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from ..errors import NotALogKVStoreError
from ..files import read_whole
from ..fsutil import atomic_write
from ..layout import META_FILE
from ..names import STORAGE_TYPES, StorageType, StoreKind

FORMAT_TAG: Final = "logkv-key-value-store"
META_VERSION: Final = 1
_ID_ALPHABET: Final = string.ascii_letters + string.digits


def new_store_id() -> str:
    """A random store id: 17 letters and digits (about 100 bits)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(17))


@dataclass(slots=True)
class StoreMeta:
    """The content of ``META.json``. Timestamps are ``time.time()`` seconds."""

    id: str
    name: str | None
    alias: str | None
    kind: StoreKind
    created_at: float
    accessed_at: float
    modified_at: float
    #: What the store holds; stores written before datasets and queues existed have no
    #: ``storage`` field and are key-value stores.
    storage: StorageType = "key_value_store"

    def to_bytes(self) -> bytes:
        """The file's bytes (indented JSON, for people who look)."""
        body = {"format": FORMAT_TAG, "version": META_VERSION, **asdict(self)}
        return json.dumps(body, indent=2, sort_keys=True).encode("utf-8") + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, path: Path) -> StoreMeta:
        """Parse the file at ``path``; :class:`NotALogKVStoreError` when it is not one."""
        try:
            body: Any = json.loads(data)
            if body.get("format") != FORMAT_TAG:
                raise ValueError("not a logkv store's metadata")
            if body.get("version") != META_VERSION:
                raise ValueError(f"metadata version {body.get('version')!r} is not supported")
            kind = body["kind"]
            if kind not in ("default", "named", "alias"):
                raise ValueError(f"unknown store kind {kind!r}")
            storage = body.get("storage", "key_value_store")
            if storage not in STORAGE_TYPES:
                raise ValueError(f"unknown storage type {storage!r}")
            meta = cls(
                id=str(body["id"]),
                name=body.get("name"),
                alias=body.get("alias"),
                kind=kind,
                created_at=float(body["created_at"]),
                accessed_at=float(body["accessed_at"]),
                modified_at=float(body["modified_at"]),
                storage=storage,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise NotALogKVStoreError(
                f"{path} is not a valid logkv store metadata file ({exc}); restore it from a "
                "backup or move the folder away"
            ) from None
        return meta


def read_meta(folder: Path) -> StoreMeta | None:
    """The metadata of the store in ``folder``, or None when it has no ``META.json``."""
    path = folder / META_FILE
    try:
        data = read_whole(path)  # the folder's, or a file set's
    except FileNotFoundError:
        return None
    return StoreMeta.from_bytes(data, path)


def write_meta(folder: Path, meta: StoreMeta) -> None:
    """Replace the folder's ``META.json`` atomically."""
    atomic_write(folder / META_FILE, meta.to_bytes())
