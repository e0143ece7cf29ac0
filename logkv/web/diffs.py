"""A diff between two versions of a value, computed on the server with :mod:`difflib`.

JSON values are compared as indented JSON with sorted keys (so a reordered object is no
change), other text line by line. Both sides and the diff itself are capped: a diff of two
big values must not stall the server or the browser.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Final

from .values import pretty_json, value_text, view_kind

#: Bytes of each side compared (a larger value is compared on its first bytes, and says so).
DIFF_BYTES: Final = 256 * 1024
#: Lines of a diff shown.
DIFF_LINES: Final = 2000


@dataclass(frozen=True)
class Diff:
    """A unified diff (``lines``), or why there is none (``note``)."""

    lines: list[str] = field(default_factory=list)
    truncated: bool = False
    note: str | None = None


def _side(value: bytes | None, content_type: str | None) -> tuple[list[str] | None, bool]:
    """A version's lines to compare (None: not text), and whether it was cut to the cap."""
    if value is None:
        return [], False
    if view_kind(content_type, value) == "json" and len(value) <= DIFF_BYTES:
        text = pretty_json(value)
        if text is not None:
            return text.splitlines(), False
    text, cut = value_text(value, content_type, DIFF_BYTES)
    return (None, False) if text is None else (text.splitlines(), cut)


def diff_values(
    old: bytes | None,
    old_type: str | None,
    new: bytes | None,
    new_type: str | None,
    old_label: str,
    new_label: str,
) -> Diff:
    """The diff from ``old`` to ``new`` (None on either side: a stored None or a delete)."""
    before, cut_before = _side(old, old_type)
    after, cut_after = _side(new, new_type)
    if before is None or after is None:
        same = old == new
        return Diff(
            note="identical binary values"
            if same
            else "binary values differ "
            f"({len(old or b''):,} and {len(new or b''):,} bytes): download them"
        )
    lines = difflib.unified_diff(before, after, old_label, new_label, lineterm="", n=3)
    shown: list[str] = []
    for line in lines:
        if len(shown) == DIFF_LINES:
            return Diff(shown, truncated=True)
        shown.append(line)
    note = None if shown else "no difference"
    if cut_before or cut_after:
        note = f"compared on the first {DIFF_BYTES // 1024} KiB of each version"
    return Diff(shown, truncated=cut_before or cut_after, note=note)
