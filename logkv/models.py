"""Pydantic models of the async API: store metadata and record metadata.

Field names follow Crawlee's models (snake_case in Python, camelCase aliases in JSON), so code
written against Crawlee's ``KeyValueStoreMetadata`` and ``KeyValueStoreRecordMetadata`` reads
logkv's models unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

ValueT = TypeVar("ValueT")

_CONFIG = ConfigDict(populate_by_name=True, from_attributes=True)


class StorageMetadata(BaseModel):
    """What every storage has: its id, its name (None for unnamed stores) and timestamps.

    This is the classic ``storage_object`` of a store.
    """

    model_config = _CONFIG

    id: Annotated[str, Field(alias="id")]
    name: Annotated[str | None, Field(alias="name")] = None
    created_at: Annotated[datetime, Field(alias="createdAt")]
    accessed_at: Annotated[datetime, Field(alias="accessedAt")]
    modified_at: Annotated[datetime, Field(alias="modifiedAt")]


class KeyValueStoreMetadata(StorageMetadata):
    """A key-value store's metadata, with logkv's own figures.

    ``record_count`` live records holding ``live_bytes`` of values; ``log_bytes`` on disk for
    the whole log (live and dead records, 0 for the in-memory client); ``last_seq`` the sequence
    number of the newest record.
    """

    model_config = _CONFIG

    record_count: Annotated[int, Field(alias="recordCount")] = 0
    live_bytes: Annotated[int, Field(alias="liveBytes")] = 0
    log_bytes: Annotated[int, Field(alias="logBytes")] = 0
    last_seq: Annotated[int, Field(alias="lastSeq")] = 0
    replication_lag_records: Annotated[int | None, Field(alias="replicationLagRecords")] = None
    replication_lag_s: Annotated[float | None, Field(alias="replicationLagSeconds")] = None


class KeyValueStoreRecordMetadata(BaseModel):
    """A record's key, content type and size in bytes (as stored)."""

    model_config = _CONFIG

    key: Annotated[str, Field(alias="key")]
    content_type: Annotated[str, Field(alias="contentType")]
    size: Annotated[int | None, Field(alias="size")] = None


class KeyValueStoreRecord(KeyValueStoreRecordMetadata, Generic[ValueT]):
    """A record with its value."""

    value: Annotated[ValueT, Field(alias="value")]


_new = object.__new__
_setattr = object.__setattr__
_META_FIELDS = frozenset({"key", "content_type", "size"})


def _fast_record_metadata(key: str, content_type: str, size: int) -> KeyValueStoreRecordMetadata:
    instance = _new(KeyValueStoreRecordMetadata)
    _setattr(instance, "__dict__", {"key": key, "content_type": content_type, "size": size})
    _setattr(instance, "__pydantic_fields_set__", _META_FIELDS)
    _setattr(instance, "__pydantic_extra__", None)
    _setattr(instance, "__pydantic_private__", None)
    return instance


def _validated_record_metadata(
    key: str, content_type: str, size: int
) -> KeyValueStoreRecordMetadata:
    return KeyValueStoreRecordMetadata(key=key, content_type=content_type, size=size)


def _pick_record_metadata() -> Any:
    """The fast constructor if it builds exactly what validation builds, else validation."""
    try:
        fast = _fast_record_metadata("k", "text/plain", 1)
        slow = _validated_record_metadata("k", "text/plain", 1)
        if fast == slow and fast.model_dump(by_alias=True) == slow.model_dump(by_alias=True):
            return _fast_record_metadata
    except Exception:  # pragma: no cover - a pydantic whose internals changed
        pass
    return _validated_record_metadata  # pragma: no cover


#: Build a :class:`KeyValueStoreRecordMetadata` from known-good fields. Iterating keys builds
#: one per key, so this skips validation (half the cost) when pydantic allows it.
record_metadata: Callable[[str, str, int], KeyValueStoreRecordMetadata] = _pick_record_metadata()
