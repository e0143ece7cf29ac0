"""Columns of integers as stored: little-endian bytes on every machine, and the checks of them
done in C (a hint's, a checkpoint's and a snapshot's key table)."""

from __future__ import annotations

import sys
from array import array


def le_bytes(column: array[int]) -> bytes:
    """A column's bytes in little-endian order, whatever this machine's order is."""
    if sys.byteorder == "big":
        column = array(column.typecode, column)
        column.byteswap()
    return column.tobytes()


def le_column(typecode: str, raw: bytes) -> array[int]:
    """A column read back from little-endian bytes (item sizes: Q/q 8 bytes, I 4 bytes);
    ``TypeError`` when ``raw`` is not ``bytes`` (msgpack's bin)."""
    if type(raw) is not bytes:
        raise TypeError("a packed column is not bin")
    column = array(typecode, raw)
    if sys.byteorder == "big":
        column.byteswap()
    return column


def all_zero(data: bytes) -> bool:
    """Whether every byte of ``data`` is zero (a compare with a fresh zeroed buffer: many
    times faster here than ``strip``, which tests a byte at a time)."""
    return data == bytes(len(data))
