"""The records the benchmarks write, and this machine's raw limits for writing them.

The raw limits are plain loops with nothing but the work any writer of logkv's records must do:
:func:`raw_write_loop` packs each record's msgpack body as logkv does, puts a length + CRC-32C
header in front of it and ``os.write``\\ s it; :func:`raw_sync_rate` writes a frame and syncs it,
again and again. A store's figures are read against them, measured in the same process run.
"""

from __future__ import annotations

import os
import random
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgpack

from logkv.format import CHAIN_SIZE, FRAME_HEADER_SIZE, GENESIS_CHAIN, Op, checksum, encode_record

from .harness import rate

#: The content type of records whose values are plain bytes.
BINARY_TYPE = "application/octet-stream"
#: Values are drawn round-robin from a pool of this many distinct values (a power of two).
VALUE_POOL = 1024
#: ``ordinal & POOL_MASK`` picks a record's value from the pool.
POOL_MASK = VALUE_POOL - 1
#: The raw loops' frame header: the body's length and its CRC-32C (logkv's frame checksum).
RAW_HEADER = struct.Struct("<II")
#: Where a logkv frame holds its chain value.
_CHAIN = slice(FRAME_HEADER_SIZE - CHAIN_SIZE, FRAME_HEADER_SIZE)


def make_keys(prefix: str, count: int, seed: int | None) -> list[str]:
    """``{prefix}0000001`` ... ``{prefix}{count}``; shuffled (seeded) when ``seed`` is given."""
    width = max(7, len(str(count)))
    keys = [f"{prefix}{i:0{width}d}" for i in range(1, count + 1)]
    if seed is not None:
        random.Random(seed).shuffle(keys)
    return keys


def make_values(size: int, seed: int) -> list[bytes]:
    """A pool of :data:`VALUE_POOL` distinct random (incompressible) values of ``size`` bytes."""
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(VALUE_POOL)]


def raw_write_loop(
    path: Path,
    keys: Sequence[str],
    values: Sequence[Any],
    content_type: str,
    encode: Callable[[Any], bytes] | None = None,
) -> float:
    """Seconds for a plain loop to frame and ``os.write`` one record per key (then ``path`` is
    removed).

    Record ``i`` is ``keys[i]`` with ``values[i]``, which are bytes, or objects that ``encode``
    turns into bytes inside the loop. The body is the one logkv writes (seq, timestamp, op, key,
    content type, value), packed by one reused msgpack packer as logkv packs it; the frame is an
    8-byte header (length, CRC-32C of the body) in front of it, appended to an ``O_APPEND`` file.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pack, crc32, header, write, now = (
        msgpack.Packer(use_bin_type=True).pack,
        checksum,
        RAW_HEADER.pack,
        os.write,
        time.time_ns,
    )
    records = enumerate(zip(keys, values, strict=True), 1)
    try:
        start = time.perf_counter()
        if encode is None:
            for seq, (key, value) in records:
                body = pack((seq, now() // 1000, 1, key, content_type, value))
                write(fd, header(len(body), crc32(body)) + body)
        else:
            for seq, (key, value) in records:
                body = pack((seq, now() // 1000, 1, key, content_type, encode(value)))
                write(fd, header(len(body), crc32(body)) + body)
        return time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()


def floor_write_loop(
    path: Path,
    keys: Sequence[str],
    values: Sequence[Any],
    content_type: str,
    encode: Callable[[Any], bytes],
) -> float:
    """Seconds for the floor of a durable set (then ``path`` is removed): a loop that encodes
    ``values[i]`` with ``encode``, frames it under ``keys[i]`` exactly as logkv does (its record
    format, checksum and chain: :func:`logkv.format.encode_record`), chains it on the record
    before and ``os.write``\\ s the frame to an ``O_APPEND`` file. No index, no checks, no
    layers: what any writer of logkv's records must do at least."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    frame_of, write, now, op = encode_record, os.write, time.time_ns, int(Op.SET)
    chain = GENESIS_CHAIN
    try:
        start = time.perf_counter()
        for seq, (key, value) in enumerate(zip(keys, values, strict=True), 1):
            frame = frame_of(seq, now() // 1000, op, key, content_type, encode(value), chain)
            chain = frame[_CHAIN]
            write(fd, frame)
        return time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()


def raw_sync_rate(folder: Path, sync: Callable[[int], None], seconds: float, body: int) -> float:
    """Writes per second of a loop that appends a frame of a ``body``-byte body to a file in
    ``folder`` and calls ``sync`` (``os.fdatasync`` or ``os.fsync``) after each, for
    ``seconds``."""
    path = folder / "raw-sync.log"
    frame = RAW_HEADER.pack(body, 0) + bytes(body)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            os.write(fd, frame)
            sync(fd)
            count += 1
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return rate(count, elapsed)
