"""``Configuration``: where stores live and how they behave, read from the environment.

Every field can be given to the constructor (by its name) or set through an environment variable;
a value given to the constructor wins. The Crawlee variables keep their Crawlee meaning, so a
crawler's environment configures logkv unchanged:

=========================================  ==============================  ==================
environment variable                       field                           default
=========================================  ==============================  ==================
``CRAWLEE_STORAGE_DIR``                    ``storage_dir``                 ``./storage``
``CRAWLEE_DEFAULT_KEY_VALUE_STORE_ID``     ``default_key_value_store_id``  ``default``
``CRAWLEE_PURGE_ON_START``                 ``purge_on_start``              ``True``
``CRAWLEE_PERSIST_STATE_INTERVAL_MILLIS``  ``persist_state_interval``      60 s
``LOGKV_DURABILITY``                       ``durability``                  ``process``
``LOGKV_SEGMENT_SIZE``                     ``segment_size``                64 MiB
``LOGKV_RECOVERY``                         ``recovery``                    ``strict``
``LOGKV_RETENTION``                        ``retention``                   ``delete``
``LOGKV_AUTO_COMPACT``                     ``auto_compact``                ``True``
``LOGKV_COMPACTION_MIN_DEAD_RATIO``        ``compaction_min_dead_ratio``   0.5
``LOGKV_COMPACTION_MIN_DEAD_BYTES``        ``compaction_min_dead_bytes``   64 MiB
``LOGKV_OFFLOAD_THRESHOLD``                ``offload_threshold``           256 KiB
=========================================  ==============================  ==================
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from .options import DEFAULT_SEGMENT_SIZE, Durability, Retention
from .replay import Recovery


def _milliseconds(value: Any) -> Any:
    """Numbers (and numeric strings) are milliseconds, as in Crawlee; timedeltas pass."""
    if isinstance(value, bool):
        return value  # let pydantic refuse it
    if isinstance(value, int | float):
        return timedelta(milliseconds=value)
    if isinstance(value, str):
        try:
            return timedelta(milliseconds=float(value))
        except ValueError:
            return value
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("the interval must be positive")
    return value


TimedeltaMs = Annotated[timedelta, BeforeValidator(_milliseconds), AfterValidator(_positive)]

#: The environment variable of each field (only these are read; an empty variable is unset).
ENVIRONMENT: Final = {
    "storage_dir": "CRAWLEE_STORAGE_DIR",
    "default_key_value_store_id": "CRAWLEE_DEFAULT_KEY_VALUE_STORE_ID",
    "purge_on_start": "CRAWLEE_PURGE_ON_START",
    "persist_state_interval": "CRAWLEE_PERSIST_STATE_INTERVAL_MILLIS",
    "durability": "LOGKV_DURABILITY",
    "segment_size": "LOGKV_SEGMENT_SIZE",
    "recovery": "LOGKV_RECOVERY",
    "retention": "LOGKV_RETENTION",
    "auto_compact": "LOGKV_AUTO_COMPACT",
    "compaction_min_dead_ratio": "LOGKV_COMPACTION_MIN_DEAD_RATIO",
    "compaction_min_dead_bytes": "LOGKV_COMPACTION_MIN_DEAD_BYTES",
    "offload_threshold": "LOGKV_OFFLOAD_THRESHOLD",
}


class Configuration(BaseModel):
    """Settings of logkv's key-value stores (see the module docstring for the variables).

    The environment is read when the object is built; fields given as arguments win over it.
    Unknown arguments raise (a typo never passes silently), and assignments are validated.

    >>> Configuration(storage_dir="/data/crawl").storage_dir
    '/data/crawl'
    """

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _read_environment(cls, data: Any) -> Any:
        """Fill every field not given from its environment variable, if that is set."""
        if not isinstance(data, dict):
            return data
        merged: dict[str, Any] = {}
        for field, variable in ENVIRONMENT.items():
            if field not in data:
                raw = os.environ.get(variable, "").strip()
                if raw:
                    merged[field] = raw
        merged.update(data)
        return merged

    storage_dir: str = Field(
        default="./storage",
        min_length=1,
        description="The folder under which stores live: {storage_dir}/key_value_stores/{name}/.",
    )
    default_key_value_store_id: str = Field(
        default="default",
        min_length=1,
        description="Id (and folder name) of the store opened when no id, name or alias is given.",
    )
    purge_on_start: bool = Field(
        default=True,
        description=(
            "Empty unnamed stores (the default store and aliases) the first time this process "
            "opens them; named stores are never purged."
        ),
    )
    persist_state_interval: TimedeltaMs = Field(
        default=timedelta(minutes=1),
        description="Interval of the PERSIST_STATE events that save autosaved values.",
    )
    durability: Durability = Field(
        default=Durability.PROCESS,
        description="'process' (survives a killed process) or 'fsync' (survives power loss).",
    )
    segment_size: int = Field(
        default=DEFAULT_SEGMENT_SIZE,
        ge=4096,
        description="Log segments rotate past this many bytes.",
    )
    recovery: Recovery = Field(
        default=Recovery.STRICT,
        description="'strict' refuses to open a damaged log; 'salvage' keeps every good record.",
    )
    retention: Retention = Field(
        default=Retention.DELETE,
        description="What compaction does with old segments: 'delete' or 'archive' (for audits).",
    )
    auto_compact: bool = Field(
        default=True,
        description=(
            "On every PERSIST_STATE event, compact the store (in a worker thread) when the "
            "compaction thresholds below are passed."
        ),
    )
    compaction_min_dead_ratio: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Compact once this share of the log's bytes is dead ...",
    )
    compaction_min_dead_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="... and at least this many bytes are dead.",
    )
    offload_threshold: int = Field(
        default=256 * 1024,
        ge=0,
        description=(
            "Values larger than this many bytes are written and read in a worker thread, so the "
            "event loop is never blocked for long; smaller ones run inline."
        ),
    )
