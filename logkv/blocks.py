"""Blocks: the checksummed msgpack pieces of logkv's derived files, and the tail that finds them.

A block is ``u32 crc32(body) || u32 length || body``, the body one msgpack value
(docs/FORMAT.md, section 7.1). A snapshot holds two (its hint and meta), so does a checkpoint
(section 7.5) and a segment's hint file (section 15: meta and columns). A snapshot and a
checkpoint end the same way, and this module writes and reads that ending::

    hint    block      starts at hint_offset (the meta block names it)
    meta    block      msgpack map
    tail    16 bytes   u64 offset of the meta block, b"\\x89LKVEND\\n"

Each file's header and what its blocks hold are its own module's (``snapshot``,
``checkpoints``, ``hints``). Every read here raises :class:`~logkv.errors.CorruptionError`
naming the file, the offset of the bad bytes and which block they belong to.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any, Final

import msgpack

from .errors import CorruptionError
from .files import ByteSource

#: A block's header: the CRC-32 and the length of its body.
BLOCK_HEADER: Final = struct.Struct("<II")
#: The tail of a snapshot or checkpoint: where its meta block starts, and the end magic.
TAIL: Final = struct.Struct("<Q8s")
TAIL_MAGIC: Final = b"\x89LKVEND\n"


def encode_block(body: bytes) -> bytes:
    """``body`` framed as a block (its CRC-32 and length in front)."""
    return BLOCK_HEADER.pack(zlib.crc32(body), len(body)) + body


def encode_ending(hint_offset: int, hint: bytes, meta: bytes) -> list[bytes]:
    """The pieces, in order, that end a snapshot or checkpoint whose hint block starts at
    ``hint_offset``: the hint block (its header, then ``hint`` itself, so that a large hint
    is not copied), the meta block and the tail."""
    meta_offset = hint_offset + BLOCK_HEADER.size + len(hint)
    return [
        BLOCK_HEADER.pack(zlib.crc32(hint), len(hint)),
        hint,
        encode_block(meta),
        TAIL.pack(meta_offset, TAIL_MAGIC),
    ]


def read_block(path: Path, data: Any, offset: int, what: str, *, at: int = 0) -> tuple[Any, int]:
    """The msgpack value of the block at ``offset`` of ``data`` (bytes of file ``path`` from
    its offset ``at`` on), and the offset in ``data`` where the block ends.
    :class:`CorruptionError` naming ``what`` and the file's offset of the block when it lies
    outside ``data``, fails its CRC or does not decode."""
    if offset < 0 or offset + BLOCK_HEADER.size > len(data):
        raise CorruptionError(path, at + offset, f"{what} block lies outside the file")
    crc, length = BLOCK_HEADER.unpack_from(data, offset)
    end = offset + BLOCK_HEADER.size + length
    body = memoryview(data)[offset + BLOCK_HEADER.size : end]  # a view: no copy of the body
    if len(body) != length or zlib.crc32(body) != crc:
        raise CorruptionError(path, at + offset, f"{what} block fails its checksum")
    try:
        return msgpack.unpackb(body), end
    except Exception as exc:
        raise CorruptionError(path, at + offset, f"{what} block is undecodable: {exc}") from None


def read_meta(path: Path, file: ByteSource, header_size: int, what: str) -> tuple[Any, int]:
    """The meta block of the snapshot or checkpoint ``path`` (``what``: which, as its errors
    name it), found from its tail, and the offset where it starts. ``file``'s size is at
    least ``header_size`` plus a tail (the caller checked); the meta block lies between the
    header and the tail."""
    size = file.size
    meta_offset, tail_magic = TAIL.unpack(file.read(size - TAIL.size, TAIL.size))
    if tail_magic != TAIL_MAGIC or not header_size <= meta_offset < size - TAIL.size:
        raise CorruptionError(path, size - TAIL.size, f"bad {what} tail (unfinished write?)")
    data = file.read(meta_offset, size - TAIL.size - meta_offset)
    meta, _ = read_block(path, data, 0, f"{what} meta", at=meta_offset)
    return meta, meta_offset


def read_hint(path: Path, file: ByteSource, hint_offset: int, meta_offset: int, what: str) -> Any:
    """The hint block of the snapshot or checkpoint ``path`` (``what``: which) that its meta
    block, at ``meta_offset``, says starts at ``hint_offset``: it lies before the meta block."""
    if not 0 <= hint_offset <= meta_offset:
        raise CorruptionError(path, meta_offset, f"{what} hint block lies outside the file")
    data = file.read(hint_offset, meta_offset - hint_offset)
    return read_block(path, data, 0, f"{what} hint", at=hint_offset)[0]
