"""Output for the command-line tools: aligned tables for people, JSON for scripts.

Everything here is pure formatting (no file access), so commands build rows of plain values and
choose a form at the end: :func:`table` and :func:`pairs` for the default human-readable output,
:func:`json_document` / :func:`json_line` for ``--json``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_UNITS: Final = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")

#: A cell of a table: text as is, numbers right-aligned, None shown as ``-``.
Cell = str | int | float | None


def iso_timestamp(timestamp_us: int) -> str:
    """``timestamp_us`` (microseconds since the Unix epoch) as ISO 8601 in UTC."""
    try:
        return (_EPOCH + timedelta(microseconds=timestamp_us)).isoformat()
    except OverflowError:
        return f"out of range ({timestamp_us} us)"


def parse_time(text: str) -> int:
    """An ISO 8601 date or time (``2026-01-31``, ``2026-01-31T12:00:00+01:00``, ``...Z``) as
    microseconds since the Unix epoch. A time without a UTC offset is taken as UTC, the zone
    every logkv tool prints times in. Raises ``ValueError`` for anything else."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def encode_value(value: bytes) -> tuple[str, str]:
    """``(text, encoding)``: the value as UTF-8 text when it decodes, else as base64."""
    try:
        return value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii"), "base64"


def value_fields(value: bytes | None) -> dict[str, str | None]:
    """``{"value", "value_encoding"}`` for JSON output (both None for a stored None)."""
    if value is None:
        return {"value": None, "value_encoding": None}
    text, encoding = encode_value(value)
    return {"value": text, "value_encoding": encoding}


def value_cell(value: bytes | None, limit: int) -> str:
    """A value for a table cell: one line, control characters escaped, at most ``limit``
    characters (longer values end in ``…``). Base64 text is prefixed ``base64:``."""
    if value is None:
        return "(None)"
    text, encoding = encode_value(value)
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    if encoding == "base64":
        text = "base64:" + text
    if len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    return text


def human_bytes(size: int) -> str:
    """``size`` in binary units for people: ``512 bytes``, ``1.5 KiB``, ``3.2 GiB``."""
    amount = float(size)
    for unit in _UNITS:
        if abs(amount) < 1024 or unit == _UNITS[-1]:
            return f"{size} bytes" if unit == "bytes" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_seconds(seconds: float) -> str:
    """A duration for people: ``0.004 s``, ``12.3 s``, ``4 min 05 s``."""
    if seconds < 10:
        return f"{seconds:.3f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _text(cell: Cell) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, bool):
        return "yes" if cell else "no"
    if isinstance(cell, int):
        return f"{cell:,}"
    if isinstance(cell, float):
        return f"{cell:,.3f}"
    return cell


def table(headers: Sequence[str], rows: Iterable[Sequence[Cell]], right: Iterable[int] = ()) -> str:
    """Rows under headers, columns aligned, no trailing spaces. Columns of numbers, and the
    columns listed in ``right`` (say, sizes already formatted as text), align to the right."""
    lines, _ = table_lines(headers, rows, right)
    return "\n".join(lines)


def table_lines(
    headers: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    right: Iterable[int] = (),
    min_widths: Sequence[int] = (),
) -> tuple[list[str], list[int]]:
    """:func:`table` as lines (header, rule, rows) and the column widths used; columns are at
    least ``min_widths`` wide (to line up pages of a long listing)."""
    materialised = list(rows)
    forced = set(right)
    texts = [[_text(c) for c in row] for row in materialised]
    widths = [len(h) for h in headers]
    for i, width in enumerate(min_widths):
        widths[i] = max(widths[i], width)
    for row in texts:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    numeric = [
        i in forced
        or (
            any(isinstance(r[i], int | float) for r in materialised)
            and all(isinstance(r[i], int | float) or r[i] is None for r in materialised)
        )
        for i in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(row) for row in texts)
    return out, widths


def pairs(items: Iterable[tuple[str, Cell]]) -> str:
    """Two aligned columns, ``name  value``, for one object's figures."""
    listed = [(name, _text(value)) for name, value in items]
    width = max((len(name) for name, _ in listed), default=0)
    return "\n".join(f"{name.ljust(width)}  {value}".rstrip() for name, value in listed)


def json_document(data: Any) -> str:
    """One pretty-printed JSON document (non-ASCII kept as is)."""
    return json.dumps(data, ensure_ascii=False, indent=2, default=str)


def json_line(data: Any) -> str:
    """One JSON object on one line, for JSON-lines output."""
    return json.dumps(data, ensure_ascii=False, default=str)
