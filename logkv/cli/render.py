"""Output for the command-line tools: aligned tables for people, JSON for scripts.

Everything here is pure formatting (no file access), so commands build rows of plain values and
choose a form at the end: :func:`table` and :func:`pairs` for the default human-readable output
(rendered by rich: fitted to a terminal, full width in a pipe), :func:`json_document` /
:func:`json_line` for ``--json``. Progress on stderr is :mod:`logkv.cli.progress`.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from rich import box
from rich.console import Console, RenderableType
from rich.filesize import pick_unit_and_suffix
from rich.table import Table
from rich.text import Text

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_UNITS: Final = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
#: The width of text rendered for a pipe or a file: lines as long as their content.
_UNBOUNDED_WIDTH: Final = 1 << 20

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


def printable(text: str) -> str:
    """``text`` on one line for people: control characters (a newline, an escape) escaped."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def value_cell(value: bytes | None, limit: int) -> str:
    """A value for a table cell: one line, control characters escaped, at most ``limit``
    characters (longer values end in ``…``). Base64 text is prefixed ``base64:``."""
    if value is None:
        return "(None)"
    text, encoding = encode_value(value)
    text = printable(text)
    if encoding == "base64":
        text = "base64:" + text
    if len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    return text


def human_bytes(size: int) -> str:
    """``size`` in binary units for people: ``512 bytes``, ``1.5 KiB``, ``3.2 GiB`` (rich picks
    the unit)."""
    unit, suffix = pick_unit_and_suffix(abs(size), list(_UNITS), 1024)
    if unit == 1:
        return f"{size} bytes"
    return f"{size / unit:.1f} {suffix}"


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


def stdout_is_terminal() -> bool:
    """Whether standard output is a terminal (tables then fit its width and use its colours)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def render(renderable: RenderableType, fit: bool = True) -> str:
    """``renderable`` as text for standard output, without trailing spaces.

    On a terminal it fits the terminal's width (long cells wrap; ``fit`` False: lines as long
    as their content there too) and may use colour; elsewhere (a pipe, a file) lines are as
    long as their content, so that nothing is cut or wrapped. Text is never read as rich
    markup or emoji codes: a key like ``[b]`` stays ``[b]``.
    """
    terminal = stdout_is_terminal()
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=shutil.get_terminal_size().columns if terminal and fit else _UNBOUNDED_WIDTH,
        force_terminal=terminal,
        color_system="standard" if terminal else None,
        markup=False,
        highlight=False,
        emoji=False,
    )
    console.print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").split("\n"))


def _numeric(rows: list[Sequence[Cell]], column: int) -> bool:
    return any(isinstance(r[column], int | float) for r in rows) and all(
        isinstance(r[column], int | float) or r[column] is None for r in rows
    )


def rich_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    right: Iterable[int] = (),
    min_widths: Sequence[int] = (),
    show_header: bool = True,
) -> Table:
    """A rich table of ``rows`` under ``headers``: columns of numbers, and the columns listed
    in ``right`` (say, sizes already formatted as text), align to the right; columns are at
    least ``min_widths`` wide (to line up pages of a long listing)."""
    materialised = list(rows)
    forced = set(right)
    grid = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        show_header=show_header,
        header_style="bold",
        padding=(0, 1, 0, 0),
    )
    for i, header in enumerate(headers):
        grid.add_column(
            header,
            justify="right" if i in forced or _numeric(materialised, i) else "left",
            min_width=min_widths[i] if i < len(min_widths) else None,
            overflow="fold",
        )
    for row in materialised:
        grid.add_row(*(Text(_text(cell)) for cell in row))
    return grid


def table(headers: Sequence[str], rows: Iterable[Sequence[Cell]], right: Iterable[int] = ()) -> str:
    """Rows under headers as aligned text (see :func:`rich_table`)."""
    return render(rich_table(headers, rows, right))


class Listing:
    """A table printed a page at a time, for listings too long to hold (a dump of millions of
    records): rich draws the header once; the rows, which rich would lay out a thousand times
    slower, are aligned here to the same columns (two spaces apart, numbers to the right).
    Columns widen as wider cells come; a page is aligned to the widths seen so far."""

    def __init__(self, headers: Sequence[str], right: Iterable[int]) -> None:
        self.headers = list(headers)
        self.right = frozenset(right)
        self.widths = [len(h) for h in headers]
        self._header_done = False

    def page(self, rows: Sequence[Sequence[Cell]]) -> str:
        """The lines of ``rows`` (the header before the first page)."""
        texts = [[_text(cell) for cell in row] for row in rows]
        for row in texts:
            for i, cell in enumerate(row):
                self.widths[i] = max(self.widths[i], len(cell))
        lines = []
        if not self._header_done:
            head = rich_table(self.headers, [], self.right, self.widths)
            lines.append(render(head, fit=False))
            self._header_done = True
        right, widths = self.right, self.widths
        for row in texts:
            cells = [
                cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                for i, cell in enumerate(row)
            ]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)


def pairs(items: Iterable[tuple[str, Cell]]) -> str:
    """Two aligned columns, ``name  value``, for one object's figures."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name, value in items:
        grid.add_row(Text(name), Text(_text(value)))
    return render(grid)


def json_document(data: Any) -> str:
    """One pretty-printed JSON document (non-ASCII kept as is)."""
    return json.dumps(data, ensure_ascii=False, indent=2, default=str)


def json_line(data: Any) -> str:
    """One JSON object on one line, for JSON-lines output."""
    return json.dumps(data, ensure_ascii=False, default=str)
