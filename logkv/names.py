"""Store selectors: validation of ids, names and aliases, and the folder each one maps to.

A store is selected by at most one of ``id``, ``name`` or ``alias``; with none, the default store
is meant. Names and aliases become folder names under ``{storage_dir}/key_value_stores/``, so they
are validated before any path is built from them: nothing a caller passes can reach a folder
outside that directory.

* **name** (global scope, survives runs): letters, digits and inner hyphens, as in Crawlee
  (``my-store-1``), at most :data:`MAX_NAME_LENGTH` characters.
* **alias** (run scope, an unnamed store): any non-empty text without path separators, NUL or
  control characters, not ``.`` or ``..``, at most 255 bytes in UTF-8.
* **id**: the random id of a store (or the default store's id); never used as a path itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from .layout import KVS_DIR

#: Longest store name, in characters (also a safe folder-name length everywhere).
MAX_NAME_LENGTH: Final = 200
#: Longest alias or id, in UTF-8 bytes (the usual file-name limit).
MAX_ALIAS_BYTES: Final = 255

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")

StoreKind = Literal["default", "named", "alias"]
#: What a store folder holds: a key-value store, a Crawlee dataset or a Crawlee request queue
#: (all three are logkv stores; the type says how their keys are laid out).
StorageType = Literal["key_value_store", "dataset", "request_queue"]
#: Every storage type, in the order operators see them.
STORAGE_TYPES: Final[tuple[StorageType, ...]] = ("key_value_store", "dataset", "request_queue")


@dataclass(frozen=True, slots=True)
class Selector:
    """What a caller asked to open: ``kind`` and the folder name it maps to (``id`` if by id).

    ``folder_name`` is None when the store was selected by an ``id`` that is not the default
    store's: the folder is then found by reading the stores' metadata.
    """

    kind: StoreKind | Literal["id"]
    folder_name: str | None
    id: str | None = None
    name: str | None = None
    alias: str | None = None


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid store name, else raise ``ValueError`` (``TypeError``)."""
    if not isinstance(name, str):
        raise TypeError(f"a store name is a str, got {type(name).__name__}")
    if not name or len(name) > MAX_NAME_LENGTH or not _NAME_RE.match(name):
        raise ValueError(
            f"invalid store name {name!r}: a name has 1 to {MAX_NAME_LENGTH} characters, letters "
            "a-z/A-Z, digits 0-9 and hyphens, and neither starts nor ends with a hyphen "
            "(for example 'my-store-1')"
        )
    return name


def validate_alias(alias: object, what: str = "alias") -> str:
    """Return ``alias`` if it can name a folder safely, else raise ``ValueError`` (``TypeError``).

    ``what`` names the value in the error message (``"alias"``, ``"id"``).
    """
    if not isinstance(alias, str):
        raise TypeError(f"a store {what} is a str, got {type(alias).__name__}")
    problem = None
    if not alias:
        problem = "it is empty"
    elif alias in {".", ".."}:
        problem = "it is a directory reference"
    elif "/" in alias or "\\" in alias or os.sep in alias:
        problem = "it contains a path separator"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in alias):
        problem = "it contains a NUL or control character"
    else:
        try:
            if len(alias.encode("utf-8")) > MAX_ALIAS_BYTES:
                problem = f"it is longer than {MAX_ALIAS_BYTES} bytes in UTF-8"
        except UnicodeEncodeError:
            problem = "it cannot be encoded as UTF-8"
    if problem is not None:
        raise ValueError(
            f"invalid store {what} {alias!r}: {problem}. A store {what} must map to exactly one "
            "folder inside the storage directory."
        )
    return alias


def select(
    *,
    id: str | None,
    name: str | None,
    alias: str | None,
    default_id: str,
) -> Selector:
    """Check the arguments of ``open`` and say which store they select.

    Raises ``ValueError`` when more than one of ``id``/``name``/``alias`` is given, when one of
    them is invalid, or when a name or alias would take the default store's folder.
    """
    given = [
        label
        for label, value in (("id", id), ("name", name), ("alias", alias))
        if value is not None
    ]
    if len(given) > 1:
        raise ValueError(f"give at most one of id, name and alias (got {', '.join(given)})")
    validate_alias(default_id, "default store id")
    if name is not None:
        _check_not_default(validate_name(name), "store name", "name", default_id)
        return Selector("named", name, name=name)
    if alias is not None:
        _check_not_default(validate_alias(alias), "alias", "alias", default_id)
        return Selector("alias", alias, alias=alias)
    if id is not None:
        validate_alias(id, "id")
        if id == default_id:
            return Selector("default", default_id, id=id)
        return Selector("id", None, id=id)
    return Selector("default", default_id, id=default_id)


def kvs_root(storage_dir: str | os.PathLike[str]) -> Path:
    """The folder that holds every key-value store of ``storage_dir``, as an absolute path."""
    return Path(os.path.abspath(storage_dir)) / KVS_DIR


def store_folder(storage_dir: str | os.PathLike[str], folder_name: str) -> Path:
    """The folder of store ``folder_name``; checked to be a direct child of :func:`kvs_root`.

    ``folder_name`` must already be validated; the check here is a second line of defence.
    """
    root = kvs_root(storage_dir)
    folder = Path(os.path.normpath(root / folder_name))
    if folder.parent != root:
        raise ValueError(f"{folder_name!r} does not map to a folder directly inside {root}")
    return folder


def _check_not_default(value: str, what: str, label: str, default_id: str) -> None:
    """A name or alias may not take the default store's folder."""
    if value == default_id:
        raise ValueError(
            f"the {what} {value!r} is reserved for the default store; open the default store "
            f"with no argument, or choose another {label}"
        )
