"""Value files: values streamed in and out without ever being held whole in memory.

A streamed value lives outside the log, in its own immutable file ``values/NNNNNNNN.val``
(docs/FORMAT.md, section 14), named after the sequence number of the one log record that
commits it (a streamed set, :attr:`~logkv.format.Op.SET_STREAMED`). The record carries the
value's size and BLAKE3 digest, so the hash chain of the log covers the value's bytes too. The
file is::

    header  20 bytes  b"\\x89LKVVAL\\n", u32 LE format version, u32 LE chunk size,
                      u32 LE checksum of the 16 bytes before it
    chunks            u32 LE length, u32 LE checksum, then ``length`` bytes of the value

Every chunk but the last holds exactly the chunk size; the checksum is the log's frame
checksum over the chunk's position in the value (u64 LE), its length (u32 LE) and its bytes,
so a chunk read back from another place or another file fails it.

:class:`ValueFileWriter` writes a value a chunk at a time into a temp file (the engine renames
it to its final name and appends the record under its lock: see
:meth:`Engine.set_stream <logkv.engine.Engine.set_stream>`); :class:`ValueFileReader` yields it
a chunk at a time, each chunk checked before it is handed out, and the size and digest checked
at the end. :func:`check_value_file` reads a whole file the same way (verify). This module knows
the bytes of value files and nothing of the engine.
"""

from __future__ import annotations

import io
import os
import secrets
import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any, Final

import blake3

from .errors import CorruptionError, MissingValueFileError
from .files import ByteSource
from .format import FORMAT_VERSION, READABLE_VERSIONS, ValueRef
from .format import checksum as _checksum
from .fsutil import fsync_dir, make_dir, open_file, remove_quietly, write_all
from .layout import (
    ARCHIVE_DIR,
    TEMP_SUFFIX,
    VALUES_DIR,
    list_segments,
    list_value_files,
    value_file_name,
    value_file_number,
)

VALUE_MAGIC: Final = b"\x89LKVVAL\n"
VALUE_HEADER: Final = struct.Struct("<8sIII")  # magic, format version, chunk size, checksum
#: Value files exist from format version 3 on.
VALUE_FILE_VERSIONS: Final = frozenset(v for v in READABLE_VERSIONS if v >= 3)
CHUNK_HEADER: Final = struct.Struct("<II")  # length, checksum
_CHUNK_PLACE: Final = struct.Struct("<QI")  # what the checksum covers ahead of the bytes
#: The chunk size value files are written with: the most a reader holds of a value at once.
CHUNK_SIZE: Final = 1 << 20
#: A value held in memory that is larger than this is stored as a streamed value all the same
#: (:meth:`Engine.set <logkv.engine.Engine.set>`): no compaction copies it, and no log
#: segment is made of a single record.
INLINE_LIMIT: Final = 64 << 20
#: The largest chunk size a reader accepts in a header (a damaged header must not make it
#: allocate gigabytes).
MAX_CHUNK_SIZE: Final = 64 << 20
_SYNC_EVERY: Final = 64 << 20  # bytes written between fdatasyncs of a durable value file
DIGEST_SIZE: Final = 32

#: What :meth:`Engine.set_stream <logkv.engine.Engine.set_stream>` reads a value from: a binary
#: file object (anything with ``read(n)``), or an iterable of byte strings.
ValueSource = Any
#: A piece of a value as a source yields it.
Piece = bytes | bytearray | memoryview


def new_digest() -> Any:
    """The hash of a value's bytes (BLAKE3, 32 bytes): ``update`` it, then ``digest()``."""
    return blake3.blake3()


def iter_source(source: ValueSource, chunk_size: int = CHUNK_SIZE) -> Iterator[Piece]:
    """The bytes of ``source``, a piece at a time: ``read(chunk_size)`` of a file object until
    it returns nothing, or the items of an iterable of bytes (``bytes``, ``bytearray`` or
    ``memoryview``). Anything else raises ``TypeError``."""
    if isinstance(source, bytes | bytearray | memoryview | str):
        raise TypeError(
            "a streamed value comes from a binary file object or an iterable of bytes, not "
            f"{type(source).__name__} (store a value held in memory with set)"
        )
    read = getattr(source, "read", None)
    if callable(read):
        while True:
            piece = read(chunk_size)
            if not piece:
                return
            yield _checked_piece(piece)
        return
    if not isinstance(source, Iterable):
        raise TypeError(
            "a streamed value comes from a binary file object or an iterable of bytes, not "
            f"{type(source).__name__}"
        )
    for piece in source:
        yield _checked_piece(piece)


def _checked_piece(piece: object) -> Piece:
    if not isinstance(piece, bytes | bytearray | memoryview):
        raise TypeError(f"a streamed value's pieces are bytes, got {type(piece).__name__}")
    return piece


def _header(chunk_size: int) -> bytes:
    """The header of a value file of ``chunk_size``-byte chunks."""
    head = VALUE_HEADER.pack(VALUE_MAGIC, FORMAT_VERSION, chunk_size, 0)[:-4]
    return head + struct.pack("<I", _checksum(head))


class ValueFileWriter:
    """Writes one value file: :meth:`write` the value's bytes in pieces of any size, then
    :meth:`finish`; the engine then installs the temp file under its record's seq
    (:meth:`install`). :meth:`abort` removes the temp file (a failed or abandoned stream).

    Holds at most one chunk of the value in memory. With ``durable`` the file is synced as it
    grows and at :meth:`finish`, so that it is on disk before the record that commits it.
    """

    def __init__(self, store: Path, *, durable: bool, chunk_size: int = CHUNK_SIZE) -> None:
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be 1..{MAX_CHUNK_SIZE}, got {chunk_size}")
        self.folder = store / VALUES_DIR
        self.durable = durable
        self.chunk_size = chunk_size
        created = not self.folder.is_dir()
        make_dir(self.folder)
        if created and durable:
            fsync_dir(store)
        self.temp = self.folder / f"stream-{secrets.token_hex(8)}{TEMP_SUFFIX}"
        self._fd: int | None = open_file(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        self._pending = bytearray()
        self._digest = new_digest()
        self.size = 0  # bytes of the value written so far
        self._end = 0  # bytes of the file written so far
        self._next_sync = _SYNC_EVERY
        self._put(_header(chunk_size))

    def write(self, data: Piece) -> None:
        """Add ``data`` to the value (whole chunks of it are written straight from it; only
        the part of a chunk it leaves unfinished is kept)."""
        pending = self._pending
        size = self.chunk_size
        with memoryview(data) as whole, whole.cast("B") as view:
            start = 0
            if pending:
                start = min(size - len(pending), len(view))
                pending += view[:start]
                if len(pending) < size:
                    return
                self._chunk(pending)
                pending.clear()
            while len(view) - start >= size:
                self._chunk(view[start : start + size])
                start += size
            pending += view[start:]

    def write_from(self, source: ValueSource) -> None:
        """:meth:`write` every piece of ``source`` (see :func:`iter_source`)."""
        for piece in iter_source(source, self.chunk_size):
            self.write(piece)

    def finish(self) -> tuple[int, bytes]:
        """Write the last chunk and (``durable``) sync the file; the value's size and digest."""
        if self._pending:
            self._chunk(self._pending)
            self._pending.clear()
        fd = self._descriptor()
        if self.durable:
            os.fsync(fd)
        os.close(fd)
        self._fd = None
        return self.size, self._digest.digest()

    def install(self, seq: int) -> Path:
        """Give the finished file its final name, that of record ``seq`` (the engine's lock
        held: the record is appended next); with ``durable``, the rename is synced."""
        final = self.folder / value_file_name(seq)
        os.rename(self.temp, final)
        if self.durable:
            fsync_dir(self.folder)
        return final

    def abort(self) -> None:
        """Drop the file being written (on any failure, or a stream given up)."""
        if self._fd is not None:
            with suppress(OSError):
                os.close(self._fd)
            self._fd = None
        remove_quietly(self.temp)

    def _chunk(self, data: bytes | bytearray | memoryview) -> None:
        length = len(data)
        crc = _checksum(data, _checksum(_CHUNK_PLACE.pack(self.size, length)))
        self._put(CHUNK_HEADER.pack(length, crc))
        self._put(data)
        self._digest.update(data)
        self.size += length

    def _put(self, data: Piece) -> None:
        fd = self._descriptor()
        write_all(fd, memoryview(data), self._end)
        self._end += len(data)
        if self.durable and self._end >= self._next_sync:
            os.fdatasync(fd)  # never gigabytes of dirty pages ahead of the final sync
            self._next_sync = self._end + _SYNC_EVERY

    def _descriptor(self) -> int:
        if self._fd is None:
            raise ValueError("the value file is already finished or aborted")
        return self._fd


class ValueFileReader:
    """The value of one value file, a chunk at a time: iterate it for the chunks (each checked
    by its checksum before it is yielded; the size and digest once the last is read: any
    mismatch raises :class:`~logkv.errors.CorruptionError`). Close it (or use it as a context
    manager) when stopping early.

    The file is opened at once (a local file through a read-only map, a bucket copy's through
    its file set, :mod:`logkv.files`): a compaction that deletes it afterwards does not take
    it away.
    """

    def __init__(self, path: Path, ref: ValueRef) -> None:
        self.path = path
        self.ref = ref
        self.size = ref.size
        try:
            self._source: ByteSource | None = ByteSource(path)
        except FileNotFoundError:
            raise MissingValueFileError(path, ref.seq) from None
        try:
            self.chunk_size = self._check_header(self._source.read(0, VALUE_HEADER.size))
        except BaseException:
            self.close()
            raise

    def read_all(self) -> bytes:
        """The whole value in one piece, every chunk checked (about the value's size in
        memory, not twice it)."""
        return _gather(self)

    def _check_header(self, header: bytes) -> int:
        if len(header) < VALUE_HEADER.size:
            raise CorruptionError(self.path, 0, "value file header is cut short")
        magic, version, chunk_size, crc = VALUE_HEADER.unpack(header)
        if magic != VALUE_MAGIC:
            raise CorruptionError(self.path, 0, "not a logkv value file (bad magic)")
        if crc != _checksum(header[: VALUE_HEADER.size - 4]):
            raise CorruptionError(self.path, 0, "value file header checksum mismatch")
        if version not in VALUE_FILE_VERSIONS:
            raise CorruptionError(self.path, 0, f"value file format version {version} unknown")
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise CorruptionError(self.path, 0, f"bad chunk size {chunk_size}")
        return int(chunk_size)

    def __iter__(self) -> Iterator[bytes]:
        source = self._source
        if source is None:
            raise ValueError("the value file reader is closed")
        try:
            yield from self._chunks(source)
        finally:
            self.close()

    def _chunks(self, source: ByteSource) -> Iterator[bytes]:
        digest = new_digest()
        done = 0
        offset = VALUE_HEADER.size
        while done < self.size:
            header = source.read(offset, CHUNK_HEADER.size)
            if len(header) < CHUNK_HEADER.size:
                raise self._damage(offset, f"value file ends after {done} of {self.size} bytes")
            length, crc = CHUNK_HEADER.unpack(header)
            expected = min(self.chunk_size, self.size - done)
            if length != expected:
                raise self._damage(offset, f"chunk of {length} bytes where {expected} belong")
            data = source.read(offset + CHUNK_HEADER.size, length)
            if len(data) < length:
                raise self._damage(offset, f"value file ends after {done} of {self.size} bytes")
            if _checksum(data, _checksum(_CHUNK_PLACE.pack(done, length))) != crc:
                raise self._damage(offset, "chunk checksum mismatch")
            digest.update(data)
            done += length
            offset += CHUNK_HEADER.size + length
            yield data
        if source.size > offset:
            raise self._damage(offset, "bytes follow the value's last chunk")
        if digest.digest() != self.ref.digest:
            raise self._damage(offset, "the value's digest does not match its record")

    def _damage(self, offset: int, reason: str) -> CorruptionError:
        return CorruptionError(self.path, offset, reason)

    def close(self) -> None:
        """Let go of the file."""
        if self._source is not None:
            self._source.close()
            self._source = None

    def __enter__(self) -> ValueFileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ValueStream:
    """A value being read (:meth:`Engine.open_value <logkv.engine.Engine.open_value>`): its
    ``content_type``, ``size`` (None for a stored None) and ``digest``, and its bytes as an
    iterator of chunks. Close it, or use it as a context manager, when stopping before the end."""

    def __init__(
        self,
        content_type: str | None,
        size: int | None,
        chunks: Iterator[bytes],
        close: Callable[[], None] | None = None,
        digest: bytes | None = None,
    ) -> None:
        self.content_type = content_type
        self.size = size
        #: A streamed value's BLAKE3 digest, as its record holds it (None for a value held in
        #: the log); the stream raises before its end if the bytes do not match it.
        self.digest = digest
        self._chunks = chunks
        self._close = close

    def __iter__(self) -> ValueStream:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def read_all(self) -> bytes | None:
        """The rest of the value in one piece (None for a stored None)."""
        with self:
            data = _gather(self._chunks)
        return None if self.size is None else data

    def close(self) -> None:
        """Let go of the value's file (if it has one)."""
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> ValueStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _gather(chunks: Iterable[bytes]) -> bytes:
    """``chunks`` in one piece, gathered in a buffer that grows as they come (about the
    value's size in memory at the end, where a join would hold twice it)."""
    out = io.BytesIO()
    for chunk in chunks:
        out.write(chunk)
    return out.getvalue()


def value_path(store: Path, seq: int) -> Path:
    """Where the value file of record ``seq`` of the store in ``store`` is."""
    return store / VALUES_DIR / value_file_name(seq)


def check_value_file(store: Path, ref: ValueRef) -> str | None:
    """Why the value file of ``ref`` is not intact (missing, damaged, not the value its record
    names), or None when every chunk, the size and the digest check."""
    path = value_path(store, ref.seq)
    try:
        with ValueFileReader(path, ref) as reader:
            for _ in reader:
                pass
    except CorruptionError as exc:
        return f"{exc.path} offset {exc.offset}: {exc.reason}"
    return None


def remove_leftovers(store: Path, last_seq: int) -> list[Path]:
    """A writable open: remove the value files no record can name (after a crash), and the
    temp files of streams that were cut off. A file named after a seq past ``last_seq`` was
    installed for a record that never made it into the log. Returns what was removed."""
    folder = store / VALUES_DIR
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        seq = value_file_number(entry.name)
        if entry.name.endswith(TEMP_SUFFIX) or (seq is not None and seq > last_seq):
            remove_quietly(entry)
            removed.append(entry)
    return removed


def remove_dead_values(store: Path, last_seq: int, live: set[int]) -> int:
    """After a compaction under retention "delete" installed a snapshot as of record
    ``last_seq`` and retired the log it covers: remove the value files of records up to
    ``last_seq`` that the snapshot does not hold (``live``: the seqs of its streamed sets).
    Records after ``last_seq`` are still in the log, so their files stay. Nothing is removed
    while the store has archived segments: their records may name any file (history reads
    them). Returns how many files were removed."""
    archive = store / ARCHIVE_DIR
    if archive.is_dir() and list_segments(archive):
        return 0
    removed = 0
    for seq, path in list_value_files(store):
        if seq <= last_seq and seq not in live:
            remove_quietly(path)
            removed += 1
    return removed


def iter_inline(value: bytes, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """A value held in the log (already checked), in chunks of ``chunk_size`` bytes."""
    if len(value) <= chunk_size:
        if value:
            yield value
        return
    with memoryview(value) as view:
        for start in range(0, len(value), chunk_size):
            yield bytes(view[start : start + chunk_size])


__all__ = [
    "CHUNK_SIZE",
    "DIGEST_SIZE",
    "ValueFileReader",
    "ValueFileWriter",
    "ValueSource",
    "ValueStream",
    "check_value_file",
    "iter_inline",
    "iter_source",
    "new_digest",
    "remove_dead_values",
    "remove_leftovers",
    "value_path",
]
