"""Prefix listing: the keys that start with a prefix, as a half-open range of sorted keys.

Keys are ordered as Python orders strings (by code point), so the keys that start with a
non-empty prefix ``p`` are exactly those in ``[p, prefix_end(p))``: a listing reads them with
two bisections and then only the keys it returns (O(log n + matches)), never the rest.

Used by the engine's sorted index, the in-memory client and the storage layout's counts alike.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from itertools import islice
from typing import Protocol

#: The greatest character: a prefix ending in it has no successor at that position.
_MAX_CHAR = chr(sys.maxunicode)


class SortedKeys(Protocol):
    """What a range is read from: a ``SortedList`` or a ``SortedDict`` of str keys."""

    def irange(
        self,
        minimum: str | None = None,
        maximum: str | None = None,
        inclusive: tuple[bool, bool] = (True, True),
        reverse: bool = False,
    ) -> Iterator[str]: ...  # pragma: no cover - a protocol


def check_prefix(prefix: object) -> None:
    """A prefix is a str (``""``: every key); anything else is a TypeError."""
    if type(prefix) is not str:
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")


def prefix_end(prefix: str) -> str | None:
    """The least string greater than every string that starts with ``prefix`` (None: there
    is none, as for ``""`` or a prefix made only of the greatest character).

    Appending the greatest character to ``prefix`` would not do: ``prefix + max + max`` starts
    with ``prefix`` and sorts after it. The successor drops trailing greatest characters and
    raises the last other one by one code point.

    >>> prefix_end("page-")
    'page.'
    >>> prefix_end("a" + chr(0x10FFFF))
    'b'
    >>> prefix_end(chr(0x10FFFF)) is None
    True
    """
    stem = prefix.rstrip(_MAX_CHAR)
    if not stem:
        return None
    return stem[:-1] + chr(ord(stem[-1]) + 1)


def keys_after(
    sorted_keys: SortedKeys, after: str | None, limit: int, prefix: str = ""
) -> list[str]:
    """Up to ``limit`` keys of ``sorted_keys`` in order that start with ``prefix`` and lie
    strictly after ``after`` (None: from the first), which may be before, inside or after the
    prefix's range."""
    low, include_low = after, False
    if prefix and (after is None or after < prefix):
        low, include_low = prefix, True
    high = prefix_end(prefix) if prefix else None
    return list(islice(sorted_keys.irange(low, high, inclusive=(include_low, False)), limit))
