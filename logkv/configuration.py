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
``LOGKV_OFFLOAD_THRESHOLD``                ``offload_threshold``           1 MiB
=========================================  ==============================  ==================
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .errors import ConfigurationError
from .modes import DEFAULT_SEGMENT_SIZE, Durability, Recovery, Retention


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


class _Environment(EnvSettingsSource):
    """The process environment, with blank variables treated as unset and values stripped."""

    def __call__(self) -> dict[str, Any]:
        return {
            name: value.strip() if isinstance(value, str) else value
            for name, value in super().__call__().items()
            if not (isinstance(value, str) and not value.strip())
        }


class Configuration(BaseSettings):
    """Settings of logkv's key-value stores (see the module docstring for the variables).

    The environment is read when the object is built; fields given as arguments win over it.
    Unknown arguments raise (a typo never passes silently), and assignments are validated. A
    bad value in the environment raises :class:`ConfigurationError` naming the variable.

    >>> Configuration(storage_dir="/data/crawl").storage_dir
    '/data/crawl'
    """

    model_config = SettingsConfigDict(
        validate_assignment=True,
        extra="forbid",
        validate_by_name=True,  # arguments by field name; the environment by variable name
        case_sensitive=True,
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _environment_error(exc, values) or exc from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments first, then the environment: no ``.env`` files, no secrets folder."""
        return init_settings, _Environment(settings_cls, case_sensitive=True)

    storage_dir: str = Field(
        validation_alias="CRAWLEE_STORAGE_DIR",
        default="./storage",
        min_length=1,
        description="The folder under which stores live: {storage_dir}/key_value_stores/{name}/.",
    )
    default_key_value_store_id: str = Field(
        validation_alias="CRAWLEE_DEFAULT_KEY_VALUE_STORE_ID",
        default="default",
        min_length=1,
        description="Id (and folder name) of the store opened when no id, name or alias is given.",
    )
    purge_on_start: bool = Field(
        validation_alias="CRAWLEE_PURGE_ON_START",
        default=True,
        description=(
            "Empty unnamed stores (the default store and aliases) the first time this process "
            "opens them; named stores are never purged."
        ),
    )
    persist_state_interval: TimedeltaMs = Field(
        validation_alias="CRAWLEE_PERSIST_STATE_INTERVAL_MILLIS",
        default=timedelta(minutes=1),
        description="Interval of the PERSIST_STATE events that save autosaved values.",
    )
    durability: Durability = Field(
        validation_alias="LOGKV_DURABILITY",
        default=Durability.PROCESS,
        description="'process' (survives a killed process) or 'fsync' (survives power loss).",
    )
    segment_size: int = Field(
        validation_alias="LOGKV_SEGMENT_SIZE",
        default=DEFAULT_SEGMENT_SIZE,
        ge=4096,
        description="Log segments rotate past this many bytes.",
    )
    recovery: Recovery = Field(
        validation_alias="LOGKV_RECOVERY",
        default=Recovery.STRICT,
        description="'strict' refuses to open a damaged log; 'salvage' keeps every good record.",
    )
    retention: Retention = Field(
        validation_alias="LOGKV_RETENTION",
        default=Retention.DELETE,
        description="What compaction does with old segments: 'delete' or 'archive' (for audits).",
    )
    auto_compact: bool = Field(
        validation_alias="LOGKV_AUTO_COMPACT",
        default=True,
        description=(
            "On every PERSIST_STATE event, compact the store (in a worker thread) when the "
            "compaction thresholds below are passed."
        ),
    )
    compaction_min_dead_ratio: float = Field(
        validation_alias="LOGKV_COMPACTION_MIN_DEAD_RATIO",
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Compact once this share of the log's bytes is dead ...",
    )
    compaction_min_dead_bytes: int = Field(
        validation_alias="LOGKV_COMPACTION_MIN_DEAD_BYTES",
        default=64 * 1024 * 1024,
        ge=0,
        description="... and at least this many bytes are dead.",
    )
    offload_threshold: int = Field(
        validation_alias="LOGKV_OFFLOAD_THRESHOLD",
        default=1024 * 1024,
        ge=0,
        description=(
            "Values larger than this many bytes are written and read in a worker thread, so the "
            "event loop is never blocked for long; smaller ones run inline (a 1 MiB value "
            "blocks the loop for about 0.2 ms to read and 0.7 ms to write: a hop to a thread "
            "and back costs more than the read)."
        ),
    )
    replica_url: str | None = Field(
        validation_alias="LOGKV_REPLICA_URL",
        default=None,
        description=(
            "s3://BUCKET/PREFIX: replicate every writable store to object storage, under its "
            "own path within it (key_value_stores/{name}/), and restore a missing store folder "
            "from there. Endpoint and credentials come from the AWS_* variables."
        ),
    )
    replica_interval: float = Field(
        validation_alias="LOGKV_REPLICA_INTERVAL",
        default=1.0,
        gt=0.0,
        description="Seconds between shipments of new records to the replica.",
    )
    replica_allow_http: bool = Field(
        validation_alias="LOGKV_REPLICA_ALLOW_HTTP",
        default=False,
        description="Allow a plain http:// S3 endpoint (unencrypted: for local test servers).",
    )
    replica_sync: bool = Field(
        validation_alias="LOGKV_REPLICA_SYNC",
        default=False,
        description=(
            "A durability level past the local disk: every acknowledged write waits until it is "
            "committed in the replica (one slot commits every write waiting for it)."
        ),
    )
    replica_keep_snapshots: int = Field(
        validation_alias="LOGKV_REPLICA_KEEP_SNAPSHOTS",
        default=3,
        ge=1,
        description="Restore points (snapshots) the replica keeps at least, by count.",
    )
    replica_keep_for: float = Field(
        validation_alias="LOGKV_REPLICA_KEEP_FOR",
        default=24 * 3600.0,
        ge=0.0,
        description="Seconds for which the replica keeps every restore point (snapshot) too.",
    )
    replica_grace: float = Field(
        validation_alias="LOGKV_REPLICA_GRACE",
        default=3600.0,
        ge=0.0,
        description=(
            "Seconds between retiring an object no kept restore point needs and deleting it "
            "from the replica (readers in the middle of a read finish meanwhile)."
        ),
    )


#: The environment variable of each field (only these are read; a blank variable is unset).
ENVIRONMENT: Final[dict[str, str]] = {
    name: str(field.validation_alias) for name, field in Configuration.model_fields.items()
}


def _environment_error(error: ValidationError, given: dict[str, Any]) -> ConfigurationError | None:
    """A :class:`ConfigurationError` naming each environment variable whose value ``error``
    refused; None when every refused value was an argument."""
    variables = set(ENVIRONMENT.values())
    problems, from_environment = [], False
    for problem in error.errors():
        where = problem["loc"][0] if problem["loc"] else ""
        if where in variables and where not in given:
            from_environment = True
            problems.append(f"environment variable {where}={problem['input']!r}: {problem['msg']}")
        else:
            problems.append(f"{where}={problem['input']!r}: {problem['msg']}")
    if not from_environment:
        return None
    return ConfigurationError("invalid logkv configuration: " + "; ".join(problems))
