"""The on-disk record format (see ``docs/FORMAT.md``); the only module that knows its bytes.

A segment is a 16-byte header followed by frames. A frame is::

    magic   4 bytes  b"\\x89LK3" (version 3; b"\\x89LKR" in versions 1 and 2)
    crc     u32 LE   CRC-32C of everything after it (length, chain, body); CRC-32 before 3
    length  u32 LE   length of the body in bytes
    chain   16 bytes BLAKE3(previous record's chain || body), first 16 bytes; SHA-256 before 3
    body    msgpack  [seq, timestamp_us, op, key, content_type, value]

The frame's magic says which checksum and hash it carries (:class:`FrameKind`): every check
of a frame looks its kind up by the magic, here and only here, so frames of versions 2 and 3
are told apart one by one (a snapshot of an older store holds both).

``value`` is always the last element of the body, so its bytes end exactly where the frame ends:
the index stores where a record starts and how long its value is, and a read fetches the whole
frame (in a memory map of the file; a large value with ``pread``, into the object returned)
and checks the CRC before returning the value.

A batch (format version 2) is a run of such frames whose ``op`` carries, besides the kind, how
many records of the batch follow and whether the record continues one; :func:`iter_frames`
yields a batch's records only once the whole batch has been read.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack
from blake3 import blake3 as _blake3
from crc32c import crc32c as _crc32c

#: The version new segments, snapshots and synced marks are written with.
FORMAT_VERSION = 3
#: Every version this logkv reads (version 1 has no batches: its ops are plain kinds; versions
#: 1 and 2 check frames with CRC-32 and chain them with SHA-256; version 3 adds the streamed
#: set, whose value is in a value file).
READABLE_VERSIONS = frozenset({1, 2, 3})

SEGMENT_MAGIC = b"\x89LKVSEG\n"
SEGMENT_HEADER = struct.Struct("<8sII")  # magic, format version, segment number
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size

#: The magic of the frames this logkv writes (version 3: CRC-32C, BLAKE3 chain).
RECORD_MAGIC = b"\x89LK3"
#: The magic of frames of versions 1 and 2 (CRC-32, SHA-256 chain), read but never written.
RECORD_MAGIC_V2 = b"\x89LKR"
#: What every frame magic starts with: where a search for the next frame looks.
FRAME_MAGIC_PREFIX = b"\x89LK"
FRAME_HEADER = struct.Struct("<4sII16s")  # magic, crc(length || chain || body), length, chain
FRAME_HEADER_SIZE = FRAME_HEADER.size
CHAIN_SIZE = 16
#: The chain value before a store's first record.
GENESIS_CHAIN = bytes(CHAIN_SIZE)
_CRC_START = 8  # the CRC covers a frame from this offset to its end
_CHAIN = slice(12, 12 + CHAIN_SIZE)
# The frame header in the two parts the encoder packs: magic and CRC, then what the CRC covers
# ahead of the body (length and chain).
_MAGIC_CRC = struct.Struct("<4sI")
_LENGTH_CHAIN = struct.Struct("<I16s")
_ONE_SHOT_HASH = 4096  # bodies up to this size are hashed as one concatenated buffer
_MAGIC_CRC_LENGTH = struct.Struct("<4sII")
_COPY_TO_CHECK = 4096  # frames up to this size are copied to be checksummed

#: Largest body a frame may carry (the length field is 32 bits; keep a margin).
MAX_BODY_SIZE = 0xFFFF_0000

# One reused packer: packing str/bytes/int/None runs no Python code, so a call holds the GIL
# from start to finish and the packer is safe to share between threads.
_pack = msgpack.Packer(use_bin_type=True).pack
_unpackb = msgpack.unpackb


#: ``checksum(data, start=0)``: the CRC-32C (Castagnoli) of ``data`` continued from ``start``,
#: the checksum of version 3 frames (hardware-accelerated; it lets go of the GIL for large
#: inputs, so threads reading or writing large values run side by side).
checksum: Callable[..., int] = _crc32c


class _Hashers(threading.local):
    """One BLAKE3 hasher per thread, reset before each use: for a small body, making a new
    hasher costs about as much as hashing a kilobyte (the binding's set-up), so every chain
    value of a small record is computed by the calling thread's own hasher."""

    def __init__(self) -> None:
        self.blake3 = _blake3()


_hashers = _Hashers()


def _small_chain(prev_chain: bytes, body: Any) -> bytes:
    """Version 3's chain value of a small ``body`` (at most :data:`_ONE_SHOT_HASH` bytes):
    BLAKE3(prev_chain || body), first 16 bytes, hashed as one concatenated buffer by this
    thread's hasher (reset first, so that nothing an earlier use left can mix in)."""
    hasher = _hashers.blake3
    hasher.reset()
    hasher.update(prev_chain + body)
    chain: bytes = hasher.digest(CHAIN_SIZE)
    return chain


def _blake3_chain(prev_chain: bytes, body: Any) -> bytes:
    """Version 3: BLAKE3(prev_chain || body), first 16 bytes."""
    if len(body) <= _ONE_SHOT_HASH:
        return _small_chain(prev_chain, body)
    hasher = _blake3(prev_chain)
    hasher.update(body)  # no copy of a large body
    return hasher.digest(CHAIN_SIZE)


def _sha256_chain(prev_chain: bytes, body: Any) -> bytes:
    """Versions 1 and 2: SHA-256(prev_chain || body), first 16 bytes."""
    hasher = hashlib.sha256(prev_chain)
    hasher.update(body)
    return hasher.digest()[:CHAIN_SIZE]


@dataclass(frozen=True, slots=True)
class FrameKind:
    """How the frames with one magic are checked and chained (docs/FORMAT.md, section 3).

    The one place that maps a frame to its checksum and its chain hash: every reader of frames
    looks the kind up by the frame's magic (:data:`FRAME_KINDS`), so a file may hold frames of
    several kinds (a version 3 snapshot of a store first written by version 2).
    """

    magic: bytes
    #: The format versions whose files hold frames of this kind.
    versions: frozenset[int]
    #: ``crc(data, start)``: the checksum of ``data`` continued from ``start``.
    crc: Callable[[Any, int], int]
    #: ``chain(prev_chain, body)``: the chain value of a frame holding ``body``.
    chain: Callable[[bytes, Any], bytes]


#: Every frame kind this logkv reads, by magic; the first is the one it writes.
FRAME_KINDS: dict[bytes, FrameKind] = {
    RECORD_MAGIC: FrameKind(RECORD_MAGIC, frozenset({3}), checksum, _blake3_chain),
    RECORD_MAGIC_V2: FrameKind(RECORD_MAGIC_V2, frozenset({1, 2}), zlib.crc32, _sha256_chain),
}
#: The checksum function of each frame magic (the hot loops' view of :data:`FRAME_KINDS`).
_CRC_OF: dict[bytes, Callable[[Any, int], int]] = {m: k.crc for m, k in FRAME_KINDS.items()}


class Op(IntEnum):
    """The operation a log record carries (the low three bits of the body's ``op``)."""

    SET = 1
    DELETE = 2
    #: A set whose value is in a value file (format version 3): see :data:`VALUE_REF`.
    SET_STREAMED = 3


#: ``op`` bits (format version 2, docs/FORMAT.md section 4.1): the kind (:class:`Op`) in bits
#: 0-2; bit 3 set on every record of a batch but its first; the records of the batch that follow
#: this one (``left``) in the bits from 4 up. A plain record is its kind alone.
OP_KIND_MASK = 0x07
OP_CONTINUES = 0x08
OP_LEFT_SHIFT = 4


def batch_op(kind: int, index: int, count: int) -> int:
    """The ``op`` of record ``index`` (from 0) of a batch of ``count`` records of kind ``kind``."""
    if count == 1:
        return kind
    return kind | (OP_CONTINUES if index else 0) | ((count - 1 - index) << OP_LEFT_SHIFT)


@dataclass(frozen=True, slots=True)
class ValueRef:
    """What a streamed set records of its value: the value file is the one named after the
    record's own ``seq``; ``size`` bytes whose BLAKE3 digest is ``digest``."""

    seq: int
    size: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class SetRecord:
    """A decoded set record: ``key`` now holds ``value`` (``None`` is a stored None).

    A streamed set (:attr:`Op.SET_STREAMED`) has ``value`` None and its value file in
    ``streamed``."""

    seq: int
    timestamp_us: int
    key: str
    content_type: str | None
    value: bytes | None
    streamed: ValueRef | None = None

    @property
    def value_size(self) -> int:
        """Bytes of the value (0 for a stored None), in the log or in its value file."""
        if self.streamed is not None:
            return self.streamed.size
        return 0 if self.value is None else len(self.value)


@dataclass(frozen=True, slots=True)
class DeleteRecord:
    """A decoded delete record: ``key`` no longer exists."""

    seq: int
    timestamp_us: int
    key: str


Record = SetRecord | DeleteRecord


class BadFrame(Exception):  # noqa: N818 - internal control-flow signal, never escapes logkv
    """The bytes at ``offset`` are not a valid frame: ``reason`` says why, and ``cut_short`` is
    True when the frame is merely cut short (it would be valid if more bytes followed).

    When the bad frame ends a batch before its last record, the batch is dropped with it:
    ``start`` is where the batch begins (else ``offset``). ``resume`` is set when the bytes at
    ``offset`` are a valid frame that merely does not fit the batch: reading resumes there.
    """

    def __init__(
        self,
        reason: str,
        cut_short: bool,
        offset: int,
        start: int | None = None,
        resume: int | None = None,
    ) -> None:
        super().__init__(reason, cut_short, offset)
        self.reason = reason
        self.cut_short = cut_short
        self.offset = offset
        self.start = offset if start is None else start
        self.resume = resume


def encode_segment_header(number: int, version: int = FORMAT_VERSION) -> bytes:
    """The 16 bytes that open segment ``number`` (of ``version``: an older one only for a
    segment rewritten with its own frames, which salvage does)."""
    return SEGMENT_HEADER.pack(SEGMENT_MAGIC, version, number)


def check_segment_header(data: bytes, number: int) -> str | None:
    """Why ``data`` is not a valid header for segment ``number``, or None when it is."""
    if len(data) < SEGMENT_HEADER_SIZE:
        return "segment header is cut short"
    magic, version, stored_number = SEGMENT_HEADER.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC:
        return "not a logkv segment (bad magic)"
    if version not in READABLE_VERSIONS:
        return (
            f"segment format version {version} is not supported (this logkv reads "
            f"{', '.join(map(str, sorted(READABLE_VERSIONS)))})"
        )
    if stored_number != number:
        return f"segment header says number {stored_number}, file name says {number}"
    return None


def stored_segment_number(data: bytes) -> int:
    """The segment number the header ``data`` claims, unchecked (0 when it is cut short)."""
    if len(data) < SEGMENT_HEADER_SIZE:
        return 0
    number: int = SEGMENT_HEADER.unpack_from(data, 0)[2]
    return number


def stored_segment_version(data: bytes) -> int:
    """The format version the header ``data`` claims, unchecked (0 when it is cut short)."""
    if len(data) < SEGMENT_HEADER_SIZE:
        return 0
    version: int = SEGMENT_HEADER.unpack_from(data, 0)[1]
    return version


def encode_record(
    seq: int,
    timestamp_us: int,
    op: int,
    key: str,
    content_type: str | None,
    value: bytes | None,
    prev_chain: bytes = GENESIS_CHAIN,
) -> bytes:
    """One complete frame, chained after ``prev_chain`` (its own chain: :func:`chain_of`).

    ``value`` must be the last body element (see module docstring).
    """
    if value is not None and len(value) > _ONE_SHOT_HASH:
        return _frame_of_large(
            _head(seq, timestamp_us, op, key, content_type, value), value, prev_chain
        )
    body = _pack((seq, timestamp_us, op, key, content_type, value))
    length = len(body)
    if length > _ONE_SHOT_HASH:  # a long key or content type
        return _frame(body, prev_chain)
    # Every small append comes here: _frame's bytes, with one Python call fewer.
    tail = _LENGTH_CHAIN.pack(length, _small_chain(prev_chain, body))
    frame: bytes = _MAGIC_CRC.pack(RECORD_MAGIC, _crc32c(body, _crc32c(tail))) + tail + body
    return frame


#: One record of a batch: ``(op kind, key, content_type, value)``.
BatchItem = tuple[int, str, "str | None", "bytes | None"]


def encode_batch(
    first_seq: int, timestamp_us: int, items: list[BatchItem], prev_chain: bytes
) -> list[bytes]:
    """The frames of a batch: one per item, sequence numbers from ``first_seq``, each chained
    on the one before (the first on ``prev_chain``), ``op`` marking the batch (:func:`batch_op`).

    The hot path of every write: a small body is framed here without a call per record (the
    same bytes as :func:`_frame`, which frames the large ones).
    """
    count = len(items)
    frames = []
    chain = prev_chain
    seq = first_seq
    left = count - 1
    for kind, key, content_type, value in items:
        if count == 1:
            op = kind
        else:
            op = kind | (OP_CONTINUES if seq != first_seq else 0) | (left << OP_LEFT_SHIFT)
            left -= 1
        if value is not None and len(value) > _ONE_SHOT_HASH:
            frame = _frame_of_large(
                _head(seq, timestamp_us, op, key, content_type, value), value, chain
            )
            seq += 1
            chain = frame[_CHAIN]
            frames.append(frame)
            continue
        body = _pack((seq, timestamp_us, op, key, content_type, value))
        seq += 1
        length = len(body)
        if length <= _ONE_SHOT_HASH:
            chain = _small_chain(chain, body)
            tail = _LENGTH_CHAIN.pack(length, chain)
            crc = _crc32c(body, _crc32c(tail))
            frames.append(_MAGIC_CRC.pack(RECORD_MAGIC, crc) + tail + body)
        else:
            frame = _frame(body, chain)
            chain = frame[_CHAIN]
            frames.append(frame)
    return frames


def _frame(body: bytes, prev_chain: bytes) -> bytes:
    """The frame holding ``body``, chained after ``prev_chain``."""
    length = len(body)
    if length > MAX_BODY_SIZE:
        raise ValueError(f"record of {length} bytes exceeds the {MAX_BODY_SIZE}-byte limit")
    tail = _LENGTH_CHAIN.pack(length, _blake3_chain(prev_chain, body))
    frame: bytes = _MAGIC_CRC.pack(RECORD_MAGIC, _crc32c(body, _crc32c(tail))) + tail + body
    return frame


def _head(
    seq: int, timestamp_us: int, op: int, key: str, content_type: str | None, value: bytes
) -> bytes:
    """The bytes of the body of a record holding ``value`` up to the value's own bytes: the
    msgpack of the six-element array up to and including the value's ``bin`` header, exactly
    as packing the whole array would write them (without copying the value)."""
    size = len(value)
    fields: bytes = _pack((seq, timestamp_us, op, key, content_type))  # fixarray 5: 0x95, ...
    if size <= 0xFF:
        header = b"\xc4" + size.to_bytes(1, "big")
    elif size <= 0xFFFF:
        header = b"\xc5" + size.to_bytes(2, "big")
    elif size <= 0xFFFF_FFFF:
        header = b"\xc6" + size.to_bytes(4, "big")
    else:
        raise ValueError(f"value of {size} bytes exceeds the {MAX_BODY_SIZE}-byte limit")
    return b"\x96" + fields[1:] + header


def encode_record_start(
    seq: int,
    timestamp_us: int,
    op: int,
    key: str,
    content_type: str | None,
    value: bytes,
    prev_chain: bytes,
) -> bytes:
    """The bytes of :func:`encode_record`'s frame that come before the value's own bytes
    (header, then the body up to the value): the frame is these bytes followed by ``value``.

    The write of a large value: the writer hands both to one ``pwritev``, so the value is never
    copied before it reaches the file (its chain value: :func:`chain_of` at offset 0)."""
    return _start_of_large(
        _head(seq, timestamp_us, op, key, content_type, value), value, prev_chain
    )


def _start_of_large(head: bytes, value: bytes, prev_chain: bytes) -> bytes:
    """The first bytes of the frame whose body is ``head`` followed by ``value`` (see
    :func:`_head`), up to the value's own bytes; the whole frame is these bytes then ``value``."""
    length = len(head) + len(value)
    if length > MAX_BODY_SIZE:
        raise ValueError(f"record of {length} bytes exceeds the {MAX_BODY_SIZE}-byte limit")
    # One thread: blake3's own threads (max_threads=AUTO) took 483 µs against 379 µs for 1 MiB
    # on an idle two-core machine; on a loaded one they win only by taking a larger share of
    # the contended cores from the rest of the process (benchmarks/results/large-values.md).
    hasher = _blake3(prev_chain)
    hasher.update(head)
    hasher.update(value)
    tail = _LENGTH_CHAIN.pack(length, hasher.digest(CHAIN_SIZE))
    crc = _crc32c(value, _crc32c(head, _crc32c(tail)))
    return _MAGIC_CRC.pack(RECORD_MAGIC, crc) + tail + head


def _frame_of_large(head: bytes, value: bytes, prev_chain: bytes) -> bytes:
    """The frame whose body is ``head`` followed by ``value`` (see :func:`_head`): the same
    bytes as :func:`_frame` of the packed body, with one copy of the value instead of two."""
    return _start_of_large(head, value, prev_chain) + value


def chain_of(buf: Any, pos: int) -> bytes:
    """The chain value stored in the frame at ``pos``."""
    return bytes(buf[pos + _CHAIN.start : pos + _CHAIN.stop])


def next_chain(prev_chain: bytes, buf: Any, pos: int, length: int) -> bytes:
    """The chain value the frame at ``pos`` (``length`` bytes, valid: its kind known by its
    magic) should carry after ``prev_chain``."""
    kind = FRAME_KINDS[bytes(buf[pos : pos + 4])]
    with memoryview(buf) as view:
        return kind.chain(prev_chain, view[pos + FRAME_HEADER_SIZE : pos + length])


_new = object.__new__
_SET_SEQ, _SET_TS, _SET_KEY, _SET_TYPE, _SET_VALUE, _SET_STREAMED = (
    SetRecord.__dict__[name].__set__
    for name in ("seq", "timestamp_us", "key", "content_type", "value", "streamed")
)


def _set_record(
    seq: int, ts: int, key: str, content_type: str | None, value: bytes | None,
    streamed: ValueRef | None,
) -> SetRecord:  # fmt: skip
    """``SetRecord(...)`` at half the cost: a frozen dataclass's ``__init__`` sets each field
    through ``object.__setattr__``; this fills the slots directly. Point-in-time folds build
    one per live key (100,000s), where the difference is a tenth of a second."""
    record = _new(SetRecord)
    _SET_SEQ(record, seq)
    _SET_TS(record, ts)
    _SET_KEY(record, key)
    _SET_TYPE(record, content_type)
    _SET_VALUE(record, value)
    _SET_STREAMED(record, streamed)
    return record


def decode_fields(fields: Any) -> Record:
    """A :data:`Record` from the body list of a frame that passed its checksum."""
    seq, ts, op, key = fields[0], fields[1], fields[2], fields[3]
    if op == Op.SET:
        return _set_record(seq, ts, key, fields[4], fields[5], None)
    if op == Op.SET_STREAMED:
        return _set_record(seq, ts, key, fields[4], None, decode_value_ref(seq, fields[5]))
    return DeleteRecord(seq, ts, key)


def read_frame(buf: Any, pos: int, end: int) -> tuple[int, tuple[Any, ...]]:
    """Decode the frame at ``pos``: its total length and its body fields.

    Raises :class:`BadFrame` when the bytes at ``pos`` (up to ``end``) are not a whole valid
    frame.
    """
    if end - pos < FRAME_HEADER_SIZE:
        raise BadFrame("frame header is cut short", True, pos)
    magic, crc, length, _ = FRAME_HEADER.unpack_from(buf, pos)
    crc_of = _CRC_OF.get(magic)
    if crc_of is None:
        raise BadFrame("no record magic", False, pos)
    stop = pos + FRAME_HEADER_SIZE + length
    if stop > end:
        raise BadFrame(f"record of {length} bytes runs past the end of the file", True, pos)
    view = memoryview(buf)[pos + _CRC_START : stop]
    try:
        if crc_of(view, 0) != crc:
            raise BadFrame("checksum mismatch", False, pos)
        fields = _unpackb(view[FRAME_HEADER_SIZE - _CRC_START :], use_list=False)
    except BadFrame:
        raise
    except Exception as exc:
        raise BadFrame(f"undecodable body ({exc})", False, pos) from None
    finally:
        view.release()
    member = _member(fields)
    if member is None:
        raise BadFrame("body is not a logkv record", False, pos)
    return stop - pos, member[0]


# ---------------------------------------------------------------- streamed sets (version 3)

#: The value of a streamed set's body: u64 LE size of the value, then its 32-byte BLAKE3 digest.
#: The value file is the one named after the record's seq (docs/FORMAT.md, section 14).
VALUE_REF = struct.Struct("<Q32s")


def encode_value_ref(size: int, digest: bytes) -> bytes:
    """The body value of a streamed set of a ``size``-byte value with BLAKE3 ``digest``."""
    return VALUE_REF.pack(size, digest)


_REF_SIZE = struct.Struct("<Q")  # the first field of a VALUE_REF
assert _REF_SIZE.size < VALUE_REF.size


def streamed_entry_size(ref: bytes) -> int:
    """The ``size`` field of the index entry of a streamed set whose body value (its
    :data:`VALUE_REF`) is ``ref``: ``-2 - the value's size``."""
    size: int = _REF_SIZE.unpack_from(ref)[0]
    return -2 - size


def is_value_ref(value: object) -> bool:
    """Whether ``value`` (a decoded body's last element) is the value of a streamed set."""
    return type(value) is bytes and len(value) == VALUE_REF.size


def decode_value_ref(seq: int, value: bytes) -> ValueRef:
    """The :class:`ValueRef` of record ``seq``, a streamed set whose body value is ``value``."""
    size, digest = VALUE_REF.unpack(value)
    return ValueRef(seq, size, digest)


def value_ref_of_frame(buf: Any, pos: int, length: int) -> ValueRef:
    """The :class:`ValueRef` of the checked ``length``-byte frame at ``pos``, a streamed set."""
    fields = _unpackb(buf[pos + FRAME_HEADER_SIZE : pos + length], use_list=False)
    return decode_value_ref(fields[0], fields[5])


# ---------------------------------------------------------------- frames copied in pieces


def checked_frame_pieces(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The pieces of the ``size``-byte frame read back (in order, from its first byte) by
    ``pieces``, each passed on as it comes: a copy of a frame too big to hold whole. The first
    piece must hold the frame header. The magic and length are checked first, the checksum
    after the last piece: a frame that is not intact raises :class:`BadFrame` (offset 0), once
    the pieces before the fault were passed on (the caller drops its copy)."""
    it = iter(pieces)
    first = next(it, b"")
    if len(first) < _MAGIC_CRC_LENGTH.size:
        raise BadFrame("record is cut short", True, 0)
    magic, crc, length = _MAGIC_CRC_LENGTH.unpack_from(first, 0)
    crc_of = _CRC_OF.get(magic)  # the frame's version's checksum, by its magic
    if crc_of is None or length != size - FRAME_HEADER_SIZE:
        raise BadFrame("record header does not match the index", False, 0)
    running = crc_of(memoryview(first)[_CRC_START:], 0)
    done = len(first)
    yield first
    for piece in it:
        running = crc_of(piece, running)
        done += len(piece)
        yield piece
    if done != size:
        raise BadFrame("record is cut short", True, 0)
    if running != crc:
        raise BadFrame("checksum mismatch", False, 0)


def in_batch(buf: Any, pos: int, length: int) -> bool:
    """Whether the valid ``length``-byte frame at ``pos`` is a record of a batch of several
    (section 4.1 of docs/FORMAT.md): only a scan of its segment can tell if the batch is whole."""
    op: int = _unpackb(buf[pos + FRAME_HEADER_SIZE : pos + length], use_list=False)[2]
    return op & ~OP_KIND_MASK != 0


# ---------------------------------------------------------------- bodies without their value

#: Bodies longer than this are decoded without their value by a scan that asks for sizes only
#: (:func:`iter_frames` with ``values`` False): the five fields before the value are decoded
#: and the value is given as its size, so a big value is never copied out of the file.
HEAD_ONLY_BODY = 64 << 10
_HEAD_PREFIX = 16 << 10  # bytes of a body fed to the decoder first (more if the head is longer)
_BIN_HEADERS = {0xC4: (2, ">B"), 0xC5: (3, ">H"), 0xC6: (5, ">I")}  # msgpack bin 8/16/32


class ValueSize(int):
    """The value of a record that a scan did not decode (``values`` False): its size in bytes.
    ``len()`` gives the size, as it would of the value's bytes."""

    __slots__ = ()

    def __len__(self) -> int:
        return int(self)


def decode_head(body: Any) -> tuple[Any, ...] | None:
    """The fields of a record ``body`` (a buffer) whose value is a msgpack ``bin`` or nil, with
    the value replaced by its :class:`ValueSize` (nil stays None), without copying the value;
    None when the body is not six elements ending with such a value exactly at its end (the
    caller then decodes it whole to find out what it is)."""
    size = len(body)
    prefix = _HEAD_PREFIX
    while True:
        unpacker = msgpack.Unpacker(use_list=False)
        unpacker.feed(body[:prefix])
        try:
            if unpacker.read_array_header() != 6:
                return None
            head = (unpacker.unpack(), unpacker.unpack(), unpacker.unpack(), unpacker.unpack(),
                    unpacker.unpack())  # fmt: skip
        except msgpack.OutOfData:
            if prefix >= size:
                return None
            prefix *= 4
            continue
        except Exception:
            return None
        at = unpacker.tell()
        break
    if at >= size:
        return None
    marker = body[at]
    if marker == 0xC0:
        return (*head, None) if at + 1 == size else None
    found = _BIN_HEADERS.get(marker)
    if found is None:
        return None
    header, layout = found
    if at + header > size:
        return None
    (length,) = struct.unpack_from(layout, body, at + 1)
    return (*head, ValueSize(length)) if at + header + length == size else None


def _member(fields: Any) -> tuple[tuple[Any, ...], int, int] | None:
    """For decoded body ``fields``: the fields with ``op`` reduced to its kind, whether the
    record continues a batch, and how many records of its batch follow it; None when the body
    is not a logkv record."""
    if not (
        type(fields) is tuple
        and len(fields) == 6
        and type(fields[0]) is int
        and type(fields[1]) is int
        and type(fields[2]) is int
        and type(fields[3]) is str
    ):
        return None
    op = fields[2]
    kind = op & OP_KIND_MASK
    if op < 0 or not (
        (
            kind == Op.SET
            and (fields[5] is None or type(fields[5]) is bytes or type(fields[5]) is ValueSize)
        )
        or kind == Op.DELETE
        or (kind == Op.SET_STREAMED and is_value_ref(fields[5]))
    ):
        return None
    if op != kind:
        fields = (fields[0], fields[1], kind, fields[3], fields[4], fields[5])
    return fields, op & OP_CONTINUES, op >> OP_LEFT_SHIFT


def iter_frames(
    buf: Any,
    pos: int,
    end: int,
    resync: Callable[[BadFrame], int | None] | None = None,
    batches: bool = True,
    values: bool = True,
) -> Generator[tuple[int, int, tuple[Any, ...]], None, None]:
    """Yield ``(offset, frame_length, fields)`` for consecutive valid frames from ``pos`` to
    ``end``, ``op`` reduced to its kind (:class:`Op`).

    The records of a batch are yielded only once its last record has been read: a batch cut
    short, by bad bytes, by a record outside it or by ``end``, is dropped whole and reported as
    one bad frame starting where the batch starts (:attr:`BadFrame.start`).
    With ``batches`` False every valid frame is yielded on its own: the frames of a snapshot,
    which are live records in key order, not a log (their batch bits mean nothing there).
    With ``values`` False a set's value longer than :data:`HEAD_ONLY_BODY` is not decoded: the
    fields hold its :class:`ValueSize` instead (the frame's CRC is still checked over every
    byte), for scans that need where records are, not what they hold.

    At a bad frame it raises :class:`BadFrame`, or, given ``resync``, calls ``resync(bad)``,
    which returns the offset to read on from (None: stop there). This is replay's inner loop,
    so it inlines :func:`read_frame`'s checks for the common case and defers to it to explain
    a bad frame; :mod:`logkv.scan` supplies ``resync`` (the torn-tail rule and the reports).
    """
    unpack_header = FRAME_HEADER.unpack_from
    crc_of = _CRC_OF.get
    unpackb = _unpackb
    header = FRAME_HEADER_SIZE
    batch: list[tuple[int, int, tuple[Any, ...]]] = []  # the batch being read
    left = 0  # how many records the batch still lacks
    with memoryview(buf) as view:
        while pos < end:
            bad: BadFrame | None = None
            member = None
            if end - pos >= header:
                magic, crc, length, _ = unpack_header(buf, pos)
                stop = pos + header + length
                crc32 = crc_of(magic)
                if crc32 is not None and stop <= end and crc32(view[pos + 8 : stop], 0) == crc:
                    fields = None
                    if not values and length > HEAD_ONLY_BODY:
                        fields = decode_head(view[pos + header : stop])
                    if fields is None:
                        try:
                            fields = unpackb(view[pos + header : stop], use_list=False)
                        except Exception:
                            fields = None
                    if (
                        type(fields) is tuple
                        and len(fields) == 6
                        and type(fields[0]) is int
                        and type(fields[1]) is int
                        and type(fields[3]) is str
                        and (
                            (
                                fields[2] == 1
                                and (
                                    fields[5] is None
                                    or type(fields[5]) is bytes
                                    or type(fields[5]) is ValueSize
                                )
                            )
                            or fields[2] == 2
                            or (fields[2] == 3 and is_value_ref(fields[5]))
                        )
                    ):
                        if not batch:
                            yield pos, stop - pos, fields
                            pos = stop
                            continue
                        member = (fields, 0, 0)
                    else:
                        member = _member(fields)
            if member is not None:
                fields, continues, member_left = member
                if not batches:
                    yield pos, stop - pos, fields
                    pos = stop
                    continue
                if batch:
                    if continues and member_left == left - 1:
                        batch.append((pos, stop - pos, fields))
                        pos, left = stop, member_left
                        if not left:
                            yield from batch
                            batch = []
                        continue
                    bad = BadFrame(
                        f"a batch ends {left} records short of its end (a record outside it "
                        "follows)",
                        False,
                        pos,
                        resume=pos,
                    )
                elif continues:
                    bad = BadFrame(
                        "record of a batch whose first record is missing", False, pos, resume=stop
                    )
                else:
                    batch.append((pos, stop - pos, fields))
                    pos, left = stop, member_left
                    continue
            if bad is None:
                bad = _explain(buf, pos, end)
            if batch:
                bad.start = batch[0][0]
                if bad.resume is None:
                    bad.reason += f" (its batch of {len(batch) + left} records is dropped whole)"
                batch = []
            if resync is None:
                raise bad
            following = resync(bad)
            if following is None:
                return
            pos = following
        if batch:
            bad = BadFrame(
                f"a batch of {len(batch) + left} records is cut short: its last {left} are missing",
                True,
                end,
                start=batch[0][0],
            )
            if resync is None:
                raise bad
            resync(bad)


def _explain(buf: Any, pos: int, end: int) -> BadFrame:
    """Why the frame at ``pos`` is bad (the fast path of :func:`iter_frames` rejected it)."""
    try:
        read_frame(buf, pos, end)
    except BadFrame as bad:
        return bad
    return BadFrame("body is not a logkv record", False, pos)  # pragma: no cover


def find_next_frame(buf: Any, pos: int, end: int) -> int | None:
    """The offset of the first valid frame strictly after ``pos``, or None if there is none."""
    while True:
        pos = buf.find(FRAME_MAGIC_PREFIX, pos + 1, end)
        if pos < 0:
            return None
        try:
            read_frame(buf, pos, end)
        except BadFrame:
            continue
        return pos


#: The synced mark (file ``SYNCED``): magic, format version, segment, offset, CRC-32 of the rest.
SYNCED_MAGIC = b"\x89LKVSYNC"
SYNCED_MARK = struct.Struct("<8sIQQ")
_SYNCED_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class SyncedMark:
    """How far the log was durable when its writer last closed cleanly: every byte of segment
    ``segment`` before ``offset`` (and every earlier segment) had been synced."""

    segment: int
    offset: int

    def durable_bytes(self, number: int) -> int:
        """How many leading bytes of segment ``number`` are known to have been synced: all of
        an earlier segment, ``offset`` of the marked one, none of a later one."""
        if number < self.segment:
            return 1 << 62
        return self.offset if number == self.segment else 0


def encode_synced_mark(mark: SyncedMark) -> bytes:
    """The bytes of the synced mark file."""
    body = SYNCED_MARK.pack(SYNCED_MAGIC, FORMAT_VERSION, mark.segment, mark.offset)
    return body + _SYNCED_CRC.pack(zlib.crc32(body))


def decode_synced_mark(data: bytes) -> SyncedMark | None:
    """The mark stored in ``data``, or None when it is not an intact mark (a write of the mark
    torn by a crash leaves it unreadable, which is read as "nothing known to be synced")."""
    if len(data) != SYNCED_MARK.size + _SYNCED_CRC.size:
        return None
    body = data[: SYNCED_MARK.size]
    (crc,) = _SYNCED_CRC.unpack_from(data, SYNCED_MARK.size)
    magic, version, segment, offset = SYNCED_MARK.unpack(body)
    if magic != SYNCED_MAGIC or version not in READABLE_VERSIONS or crc != zlib.crc32(body):
        return None
    return SyncedMark(segment, offset)


def check_frame(buf: Any, pos: int, size: int) -> str | None:
    """Why the ``size``-byte frame at ``pos`` of ``buf`` (read back by the index: a memory map
    or the bytes a read returned) is not intact, or None if it is.

    Checks the magic, the length and the checksum without decoding the body.
    """
    header = _indexed_header(buf, pos, size)
    if isinstance(header, str):
        return header
    crc_of, crc = header
    if size <= _COPY_TO_CHECK:
        actual = crc_of(buf[pos + _CRC_START : pos + size], 0)  # a small copy beats a view
    else:
        with memoryview(buf) as view:
            actual = crc_of(view[pos + _CRC_START : pos + size], 0)
    if actual != crc:
        return "checksum mismatch"
    return None


def checked_value(buf: Any, pos: int, head: int, size: int) -> bytes | None:
    """The value of the frame at ``pos`` of ``buf`` whose value of ``size`` bytes starts
    ``head`` bytes into it (``size`` -1: a stored None, the frame ``head`` bytes long), as the
    index describes it: copied out of ``buf`` and returned once the frame's checksum matches
    over the header and **the very bytes returned**.

    Raises :class:`BadFrame` (``reason`` as :func:`check_frame` gives it) when the frame is not
    intact. A point read's whole cost for a large value: one copy and one checksum pass (over
    the copy, which the copy has just brought into the cache).
    """
    total = head + size if size > 0 else head
    if total <= _COPY_TO_CHECK and FRAME_HEADER_SIZE <= total <= len(buf) - pos:
        # A small frame, in one pass with no further call (every point read comes here): the
        # header, then the CRC over the bytes after it, the returned value's own bytes last.
        magic, crc, length = _MAGIC_CRC_LENGTH.unpack_from(buf, pos)
        crc_of = _CRC_OF.get(magic)
        if crc_of is not None and length == total - FRAME_HEADER_SIZE:
            if size < 0:
                if crc_of(buf[pos + _CRC_START : pos + total], 0) == crc:
                    return None
            else:
                value: bytes = buf[pos + head : pos + total]
                if crc_of(value, crc_of(buf[pos + _CRC_START : pos + head], 0)) == crc:
                    return value
        raise BadFrame(check_frame(buf, pos, total) or "checksum mismatch", False, pos)
    header = _indexed_header(buf, pos, total)
    if isinstance(header, str):
        raise BadFrame(header, False, pos)
    crc_of, crc = header
    with memoryview(buf) as view:
        start = crc_of(view[pos + _CRC_START : pos + head], 0)
    value = buf[pos + head : pos + total]
    if crc_of(value, start) != crc:
        raise BadFrame("checksum mismatch", False, pos)
    return value


def check_value_read(start: bytes, value: bytes, size: int) -> None:
    """Check a frame read back in two parts, as the index describes it: ``start``, its bytes
    up to the value, and ``value``, the ``size`` bytes of the value (a fresh object of its
    own, which the caller returns). The frame's checksum must match over ``start`` and **the
    very bytes of** ``value``; raises :class:`BadFrame` (offset 0) when the frame is not
    intact or either part came back short (the end of the file)."""
    if len(value) != size or len(start) < FRAME_HEADER_SIZE:
        raise BadFrame("record is cut short", True, 0)
    header = _header_of(start, 0, len(start) + size)
    if isinstance(header, str):
        raise BadFrame(header, False, 0)
    crc_of, crc = header
    if crc_of(value, crc_of(start[_CRC_START:], 0)) != crc:
        raise BadFrame("checksum mismatch", False, 0)


def _indexed_header(buf: Any, pos: int, size: int) -> tuple[Callable[[Any, int], int], int] | str:
    """For the ``size``-byte frame the index expects at ``pos``: its checksum function (by its
    magic) and its stored CRC; or why the frame cannot be that one."""
    if size < FRAME_HEADER_SIZE or len(buf) - pos < size:
        return "record is cut short"
    return _header_of(buf, pos, size)


def _header_of(buf: Any, pos: int, size: int) -> tuple[Callable[[Any, int], int], int] | str:
    """:func:`_indexed_header` of a frame whose header (at least) is in ``buf`` at ``pos``."""
    magic, crc, length = _MAGIC_CRC_LENGTH.unpack_from(buf, pos)
    crc_of = _CRC_OF.get(magic)
    if crc_of is None or length != size - FRAME_HEADER_SIZE:
        return "record header does not match the index"
    return crc_of, crc
