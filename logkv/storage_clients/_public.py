"""Public files: records materialised as ``public/{KEY}.{EXT}`` for ``get_public_url``.

The file holds the record's stored bytes (JSON text, text, or the raw bytes) and is named after
the key, percent-encoded so that any key is one safe file name (``a/b`` → ``a%2Fb``), with the
extension of the record's content type. Keys too long for a file name are cut (between two
characters) and completed with the SHA-256 of the whole key: ``{prefix}+{sha256}.{EXT}`` (``+``
never occurs in an encoded key); on open, such a file is matched to the key that starts with the
prefix and has that hash, whatever the record's content type.

Once a key is published, its file follows the record: it is rewritten when the value changes
(renamed when the extension changes) and removed when the record is deleted or purged. Files are
derived copies, written with a temp file and a rename but without fsync; on open they are checked
against the store and rewritten or removed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final
from urllib.parse import quote, unquote

from ..content import extension_for
from ..fsutil import make_dir, refuse_link, temp_file, write_all
from ..layout import PUBLIC_DIR, TEMP_SUFFIX

#: Longest file name written (bytes); file systems allow 255.
_MAX_NAME: Final = 240
_HASH_MARK: Final = "+"


def public_file_name(key: str, content_type: str | None) -> str:
    """The file name of ``key`` in the public folder.

    >>> public_file_name("page/1", "text/html")
    'page%2F1.html'
    """
    encoded = quote(key, safe="")
    extension = extension_for(content_type)
    if len(encoded) + len(extension) + 1 > _MAX_NAME:
        digest = _digest(key)
        keep = _MAX_NAME - len(extension) - len(digest) - 2
        encoded = f"{_encoded_prefix(key, keep)}{_HASH_MARK}{digest}"
    return f"{encoded}.{extension}"


def _digest(key: str) -> str:
    """The hash that completes a cut file name: of the whole key, whatever its content type."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _encoded_prefix(key: str, budget: int) -> str:
    """The longest beginning of ``key``, cut between characters (never inside a multi-byte
    character or an escape), whose percent-encoding has at most ``budget`` characters."""
    parts: list[str] = []
    used = 0
    for character in key:
        part = quote(character, safe="")
        used += len(part)
        if used > budget:
            break
        parts.append(part)
    return "".join(parts)


def key_hint(file_name: str) -> tuple[str, bool]:
    """``(key, exact)`` from a public file name: the key itself, or (for a hashed name) the
    beginning every matching key starts with."""
    stem = file_name.rsplit(".", 1)[0]
    if _HASH_MARK in stem:
        return unquote(stem.split(_HASH_MARK, 1)[0], errors="strict"), False
    return unquote(stem, errors="strict"), True


class PublicFiles:
    """The public folder of one store and the keys published in it."""

    def __init__(self, store_folder: Path) -> None:
        self.folder = store_folder / PUBLIC_DIR
        self.published: dict[str, str] = {}  # key -> file name

    def path_of(self, key: str, content_type: str | None) -> Path:
        """Where the file of ``key`` is (or would be)."""
        return self.folder / public_file_name(key, content_type)

    def publish(self, key: str, data: bytes, content_type: str | None) -> Path:
        """Write the file of ``key`` (replacing an older one) and remember it as published."""
        return self.publish_chunks(key, (data,), content_type)

    def publish_chunks(self, key: str, chunks: Iterable[bytes], content_type: str | None) -> Path:
        """:meth:`publish` of a value given a chunk at a time (a streamed value, never whole
        in memory); the file replaces the older one all at once."""
        name = public_file_name(key, content_type)
        old = self.published.get(key)
        make_dir(self.folder)
        target = self.folder / name
        with temp_file(target) as (fd, temp):
            offset = 0
            for chunk in chunks:
                write_all(fd, chunk, offset)
                offset += len(chunk)
            os.replace(temp, target)
        self.published[key] = name
        if old is not None and old != name:
            (self.folder / old).unlink(missing_ok=True)
        return target

    def remove(self, key: str) -> None:
        """Remove the file of ``key`` if it was published."""
        name = self.published.pop(key, None)
        if name is not None:
            (self.folder / name).unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove every public file."""
        self.published.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def reload(
        self,
        keys_from: Callable[[str], Iterable[str]],
        record: Callable[[str], tuple[bytes | None, str | None] | None],
    ) -> None:
        """Rebuild the published set from the folder after an open.

        ``keys_from(prefix)`` lists the store's keys from ``prefix`` on (in order);
        ``record(key)`` gives ``(value, content type)`` or None. Every file is rewritten from
        its record (it may be stale after a crash), or removed when its record is gone.
        """
        self.published.clear()
        refuse_link(self.folder)  # its entries are removed: never those of another folder
        if not self.folder.is_dir():
            return
        for entry in sorted(self.folder.iterdir()):
            name = entry.name
            if not entry.is_file():
                continue
            if name.endswith(TEMP_SUFFIX):
                entry.unlink(missing_ok=True)
                continue
            key = self.find_key(name, keys_from)
            found = record(key) if key is not None else None
            value = None if found is None else found[0]
            if key is None or found is None or value is None:
                entry.unlink(missing_ok=True)
                continue
            content_type = found[1]
            if public_file_name(key, content_type) != name:
                entry.unlink(missing_ok=True)  # the content type changed: a new name
            self.publish(key, value, content_type)

    @staticmethod
    def find_key(name: str, keys_from: Callable[[str], Iterable[str]]) -> str | None:
        """The key whose public file is called ``name``, or None when no key of the store has
        that file name (whatever its content type: the extension is not compared)."""
        try:
            hint, exact = key_hint(name)
        except UnicodeDecodeError:  # not a name logkv made
            return None
        if exact:
            return hint
        digest = name.rsplit(".", 1)[0].split(_HASH_MARK, 1)[1]
        for key in keys_from(hint):
            if not key.startswith(hint):
                break
            if _digest(key) == digest:
                return key
        return None
