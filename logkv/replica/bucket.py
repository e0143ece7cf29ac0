"""The narrow object-store interface replication needs, over obstore.

A :class:`Bucket` is one store's path in object storage: create-only puts, whole and ranged
gets, listings after a name (``StartAfter``), and deletes (of retired objects only). Any
obstore store works: ``S3Store`` for real endpoints, ``MemoryStore`` in tests (its create-only
put is atomic, so fencing races can be proved on it). Errors come out in three kinds:
:class:`ObjectExists` (a create-only put met an object: HTTP 412), ``FileNotFoundError``, and
:class:`BucketUnavailable` (anything that may pass: the endpoint down, throttling, 5xx) — while
refused credentials or permissions are a :class:`~logkv.errors.ReplicaError`, which retrying
does not cure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import obstore
from obstore import exceptions
from obstore.store import ObjectStore

from ..errors import ReplicaError


class ObjectExists(Exception):  # noqa: N818 - an outcome of a create-only put, not a failure
    """A create-only put found an object under its name."""


class BucketUnavailable(Exception):  # noqa: N818 - transient by definition; retried
    """A request failed in a way that may pass (unreachable endpoint, throttling, 5xx)."""


class Bucket:
    """One store's objects under ``root`` (no trailing slash) in ``store``."""

    def __init__(self, store: ObjectStore, root: str, describe: str) -> None:
        self.store = store
        self.root = root.strip("/")
        #: How messages name this place (``s3://bucket/prefix/key_value_stores/name``).
        self.describe = describe

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}" if self.root else name

    def put_new(self, name: str, data: bytes) -> None:
        """Write ``data`` under ``name`` only if nothing is there (``If-None-Match: *``);
        :class:`ObjectExists` otherwise."""
        with self._errors(name, found=False):
            obstore.put(self.store, self._path(name), data, mode="create", use_multipart=False)

    def get(self, name: str) -> bytes:
        """The whole object ``name`` (``FileNotFoundError`` when there is none)."""
        with self._errors(name):
            return bytes(obstore.get(self.store, self._path(name)).bytes())

    def get_range(self, name: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of object ``name``."""
        with self._errors(name):
            return bytes(obstore.get_range(self.store, self._path(name), start=start, end=end))

    def size(self, name: str) -> int:
        """The size of object ``name`` (a HEAD request; ``FileNotFoundError`` when none)."""
        with self._errors(name):
            return int(obstore.head(self.store, self._path(name))["size"])

    def delete(self, names: list[str]) -> None:
        """Delete the objects ``names`` (in batches: S3's DeleteObjects); a name already gone
        is no error."""
        for start in range(0, len(names), 1000):
            chunk = names[start : start + 1000]
            with self._errors(chunk[0], found=False):
                obstore.delete(self.store, [self._path(name) for name in chunk])

    def list_after(self, folder: str, after: str | None = None) -> list[str]:
        """The names (relative to this bucket path) of the objects in ``folder/``, in name
        order, after ``after`` when given (S3's ``StartAfter``)."""
        prefix = self._path(folder.strip("/")) + "/"
        offset = None if after is None else self._path(after)
        skip = len(self.root) + 1 if self.root else 0
        names: list[str] = []
        with self._errors(folder, found=False):
            for chunk in obstore.list(self.store, prefix, offset=offset, chunk_size=1000):
                names.extend(meta["path"][skip:] for meta in chunk)
        names.sort()
        return names

    @contextmanager
    def _errors(self, name: str, *, found: bool = True) -> Iterator[None]:
        """Sort obstore's errors into the three kinds of the module docstring; ``found``
        False: a request that names no object that must exist, whose 404 means no bucket."""
        try:
            yield
        except (exceptions.AlreadyExistsError, exceptions.PreconditionError) as exc:
            raise ObjectExists(name) from exc
        except FileNotFoundError as exc:
            if found:
                raise
            raise ReplicaError(
                f"{self.describe}: the bucket does not exist ({_first_line(exc)})"
            ) from exc
        except (exceptions.PermissionDeniedError, exceptions.UnauthenticatedError) as exc:
            raise ReplicaError(
                f"{self.describe}: the endpoint refused the credentials or the permission "
                f"for {name!r} ({_first_line(exc)}); check AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY and the bucket policy"
            ) from exc
        except exceptions.NotSupportedError as exc:
            raise ReplicaError(
                f"{self.describe}: the endpoint does not support a request replication needs "
                f"({_first_line(exc)})"
            ) from exc
        except Exception as exc:
            raise BucketUnavailable(f"{self.describe}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
