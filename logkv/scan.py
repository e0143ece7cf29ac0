"""Scanning the log: a segment's bytes in; its valid frames, and reports of bad bytes, out.

Every reader of segments goes through :class:`SegmentReader`: open and refresh
(:mod:`logkv.replay`), :mod:`logkv.verify`, :mod:`logkv.history`, ``logkv dump``
(:mod:`logkv.cli.dump`) and salvage's repair (:mod:`logkv.repair`). Like LevelDB's
``log::Reader``, the reader yields the frames it can decode and hands each stretch of bad bytes
to a reporter as a :class:`Damage`. The reporter decides what damage means: it raises (a strict
open, history) or takes note, and then the reader reads on from the next valid frame (salvage,
verify, dump, repair). A torn tail ends the scan.

Whether bad bytes are a torn tail, the end of the log a crash leaves, or damage is decided here
and only here (docs/FORMAT.md, section 6.1): :func:`is_torn_tail` is the rule,
:func:`next_valid_frame` says where valid data resumes after bad bytes, and
:func:`synced_shortfall` finds a log that ends before the synced mark.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from .errors import CorruptionError
from .files import WindowBuffer, source_of
from .format import (
    FRAME_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    BadFrame,
    SyncedMark,
    chain_of,
    check_segment_header,
    find_next_frame,
    iter_frames,
    next_chain,
    read_frame,
    stored_segment_number,
)
from .fsutil import open_for_reading
from .layout import segment_name

#: One valid frame: its offset, its length, and its body fields (see :mod:`logkv.format`).
Frame = tuple[int, int, tuple[Any, ...]]

_SYNCED_DAMAGE = (
    " (before the synced mark: the record was durable and acknowledged, so this is damage, "
    "not a torn write)"
)
_SYNCED_EMPTY = "the last segment is empty, but it was synced when the writer last closed cleanly"
#: A file that is not local (a :class:`~logkv.files.SourcePath`) is scanned this many bytes
#: at a time (more for a frame or batch that does not fit), and only that much is held.
SCAN_WINDOW = 8 << 20


@dataclass(frozen=True, slots=True)
class Damage:
    """Bad bytes a scan found: ``[start, end)`` of ``path`` and why. ``end`` is where the next
    valid frame starts, or the end of the scanned range when none does."""

    path: Path
    start: int
    end: int
    reason: str
    #: A torn tail (:func:`is_torn_tail`): what a crash mid-append leaves, not damage.
    torn: bool
    #: Only cut short by the end of the file (a frame, or the segment header); False when
    #: complete frames failed their checks.
    cut_short: bool

    def error(self) -> CorruptionError:
        """The :class:`~logkv.errors.CorruptionError` that reports this damage."""
        return CorruptionError(self.path, self.start, self.reason)


#: Told of every stretch of bad bytes; raises to stop the scan, or returns to read on.
Reporter = Callable[[Damage], None]


def fail_on_damage(damage: Damage) -> None:
    """The reporter of readers that accept no damage: raises unless it is a torn tail."""
    if not damage.torn:
        raise damage.error()


def is_torn_tail(
    synced: SyncedMark | None, number: int, at: int, is_last: bool, following: int | None
) -> bool:
    """The torn-tail rule: bad bytes at offset ``at`` of segment ``number`` are a torn tail when
    it is the last segment, no valid frame follows them (``following`` is None; a segment
    header cut short has none), and they lie past what the synced mark ``synced`` says was
    durable. Anything else is damage to records that were written whole."""
    return is_last and following is None and (synced is None or at >= synced.durable_bytes(number))


def next_valid_frame(buf: Any, at: int, end: int, cut_short: bool, is_last: bool) -> int | None:
    """Where the first valid frame after the bad frame at ``at`` starts, or None.

    In the last segment, a bad frame whose length runs past the end of the file (``cut_short``)
    is followed only by a frame that chains from it (see :func:`_successor`).
    """
    following = find_next_frame(buf, at, end)
    if following is not None and cut_short and is_last:
        following = _successor(buf, at, following, end)
    return following


def _successor(buf: Any, at: int, candidate: int | None, end: int) -> int | None:
    """For a frame at ``at`` whose length runs past the end of the file, the first valid frame
    after it that chains from it (``candidate`` is the first valid frame after it), or None.

    Everything after such a frame lies inside its claimed length: a valid frame there is either
    its real successor (the length field is damaged) or part of its value (a value holding a
    logkv record, cut short by a crash). Only the successor's chain is computed from it.
    """
    if end - at < FRAME_HEADER_SIZE:
        return None
    chain = chain_of(buf, at)
    while candidate is not None:
        length, _ = read_frame(buf, candidate, end)
        if chain_of(buf, candidate) == next_chain(chain, buf, candidate, length):
            return candidate
        candidate = find_next_frame(buf, candidate, end)
    return None


def synced_shortfall(
    mark: SyncedMark | None, folder: Path, last: int, valid_end: int | None, covers: int
) -> CorruptionError | None:
    """The damage when the log of the store in ``folder`` ends before the synced mark, else
    None: ``last`` is its last segment (0 for none), whose valid data ends at ``valid_end``
    (None: not scanned, so only a missing segment counts); a snapshot covers ``1..covers``."""
    if mark is None or mark.segment <= covers:
        return None
    if mark.segment > last:
        return CorruptionError(
            folder / segment_name(mark.segment),
            0,
            f"segment {mark.segment} is missing from the end of the log; it was synced when the "
            "writer last closed cleanly",
        )
    if mark.segment == last and valid_end is not None and valid_end < mark.offset:
        return CorruptionError(
            folder / segment_name(last),
            valid_end,
            f"the log ends at offset {valid_end}, but {mark.offset} bytes of this segment were "
            "synced when the writer last closed cleanly (acknowledged records are missing)",
        )
    return None


def out_of_order(seq: int, previous: int) -> str:
    """Why a record with sequence number ``seq`` may not follow one with ``previous``."""
    return f"sequence number {seq} follows {previous} (out of order)"


class ChainCheck:
    """Follows the hash chain from frame to frame (docs/FORMAT.md, section 10)."""

    __slots__ = ("expected",)

    def __init__(self, expected: bytes | None = None) -> None:
        #: The chain value the next frame must follow; None when it is unknown (the scan
        #: starts inside the log, or right after bad bytes): the next frame is taken on trust.
        self.expected = expected

    def follows(self, buf: Any, offset: int, length: int) -> bool | None:
        """Whether the frame at ``offset`` of ``buf`` chains on the frame before it (None: not
        known); the next frame must then follow this one."""
        stored = chain_of(buf, offset)
        expected, self.expected = self.expected, stored
        if expected is None:
            return None
        return next_chain(expected, buf, offset, length) == stored


class SegmentReader:
    """Reads the frames of one segment file and reports its bad bytes to ``report``.

    Use it as a context manager (it maps the file into memory: :attr:`buf`), and iterate
    :meth:`frames` inside. ``is_last`` says whether this is the last segment of the log (only
    there can bad bytes be a torn tail), ``synced`` is the store's synced mark. ``number`` None
    reads a lone file by the number its header claims. A bad segment header is reported, and
    the frames after it are read only with ``read_past_bad_header``. ``opener`` opens the file
    (by default never through a symbolic link).

    A file that is not local (:class:`~logkv.files.SourcePath`: a file set serves it, such as a
    store's bucket copy) is not mapped: :attr:`buf` is then a :class:`~logkv.files.WindowBuffer`
    of it, which :meth:`frames` reads :data:`SCAN_WINDOW` bytes at a time and gives back
    behind the scan (:attr:`windowed`; a search of the whole file must use :meth:`frames`).
    """

    def __init__(
        self,
        path: Path,
        number: int | None,
        *,
        is_last: bool,
        synced: SyncedMark | None,
        report: Reporter,
        read_past_bad_header: bool = False,
        opener: Callable[[Path], BinaryIO] = open_for_reading,
    ) -> None:
        self.path = path
        self.is_last = is_last
        self.synced = synced
        self.report = report
        self.read_past_bad_header = read_past_bad_header
        self._claimed = number
        self._opener = opener
        self._file: BinaryIO | None = None
        self._window: WindowBuffer | None = None
        self._frames: Generator[Frame, None, None] | None = None
        self._stop = 0
        #: The segment's number (the claimed one, or its header's).
        self.number = 0 if number is None else number
        #: The file's bytes (a read-only memory map; ``b""`` for an empty file).
        self.buf: Any = b""
        self.size = 0
        #: Where the segment's valid data ends: the end of the range scanned, or the start of
        #: the bad bytes that ended the scan (a torn tail, or damage with nothing valid after).
        self.end = 0

    def __enter__(self) -> SegmentReader:
        found = source_of(self.path)
        if found is not None:
            files, name = found
            self._window = window = WindowBuffer(files, name, files.size(name))
            self.size, self.buf = window.size, window.buf
            window.fill(0, max(SCAN_WINDOW, SEGMENT_HEADER_SIZE))  # the header, and a window
            if self._claimed is None:
                self.number = stored_segment_number(window.buf[:SEGMENT_HEADER_SIZE])
            return self
        file = self._opener(self.path)
        try:
            size = os.fstat(file.fileno()).st_size
            buf = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except BaseException:
            file.close()
            raise
        self._file, self.size, self.buf = file, size, buf
        if self._claimed is None:
            self.number = stored_segment_number(buf[:SEGMENT_HEADER_SIZE])
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._frames is not None:
            self._frames.close()  # let go of its view of the map, so that the map can close
        if self._window is not None:
            self._window.close()
        elif isinstance(self.buf, mmap.mmap):
            self.buf.close()
        if self._file is not None:
            self._file.close()

    def check_header(self) -> bool:
        """Whether the segment header is intact; when it is not, the damage is reported (a
        torn tail when the last segment is shorter than its header, past the synced mark)."""
        size = self.size
        if size:
            problem = check_segment_header(self.buf[:SEGMENT_HEADER_SIZE], self.number)
            if problem is None:
                return True
        short = size < SEGMENT_HEADER_SIZE
        torn = short and is_torn_tail(self.synced, self.number, 0, self.is_last, None)
        if size == 0:
            if torn:
                problem = "empty segment (no header)"
            elif self.is_last:
                problem = _SYNCED_EMPTY
            else:
                problem = "empty segment in the middle of the log"
        assert problem is not None
        self.end = 0
        self.report(Damage(self.path, 0, size, problem, torn, short))
        return False

    def frames(
        self,
        start: int = 0,
        end: int | None = None,
        *,
        batches: bool = True,
        values: bool = True,
    ) -> Iterator[Frame]:
        """The valid frames from offset ``start`` (0: check the segment header first) up to
        ``end`` (None: the end of the file). Bad bytes are reported as they are met; unless
        the reporter raises, reading goes on at the next valid frame, and stops at a torn tail
        or when no valid frame follows. Iterate it directly in a ``for`` statement.

        A batch's records are yielded once the whole batch has been read, and a broken batch
        is reported as bad bytes from its first record (docs/FORMAT.md, section 4.1);
        ``batches`` False reads every frame on its own, for the frames of a snapshot.
        ``values`` False leaves big values undecoded (their size stands for them, see
        :func:`~logkv.format.iter_frames`): for scans that need locations, not values."""
        stop = self.size if end is None else end
        self._stop = self.end = stop
        if start == 0:
            if not self.check_header() and not self.read_past_bad_header:
                return iter(())
            start = SEGMENT_HEADER_SIZE
        if self._window is not None:
            frames = self._windowed(start, stop, batches, values)
        else:
            frames = iter_frames(self.buf, start, stop, self._resync, batches, values)
        self._frames = frames
        return frames

    @property
    def windowed(self) -> bool:
        """Whether only a window of the file is present in :attr:`buf` (not a local file)."""
        return self._window is not None

    def _windowed(
        self, pos: int, stop: int, batches: bool, values: bool
    ) -> Generator[Frame, None, None]:
        """:meth:`frames` of a file that is not local: the same scan, a window at a time. A
        frame (or batch) cut short by a window's end is read again from its start in a
        larger window; the damage rules, which look past bad bytes, see the file to its end.
        The pages before the last frame yielded are given back."""
        window = self._window
        assert window is not None
        size, last = SCAN_WINDOW, pos
        while pos < stop:
            end = min(stop, pos + size)
            window.release(last)
            window.fill(pos, end)
            state: dict[str, int | None] = {"restart": None, "resumed": end, "stopped": 0}

            def resync(bad: BadFrame, end: int = end, state: dict[str, int | None] = state
                       ) -> int | None:  # fmt: skip
                if bad.cut_short and end < stop:
                    state["restart"] = bad.start
                    return None
                window.fill(end, stop)
                following = self._resync(bad)
                if following is None:
                    state["stopped"] = 1
                else:
                    state["resumed"] = max(end, following)
                return following

            for frame in iter_frames(window.buf, pos, end, resync, batches, values):
                last = frame[0]
                yield frame
            restart = state["restart"]
            if restart is not None:
                size = size * 2 if restart == pos else SCAN_WINDOW
                pos = restart
            elif state["stopped"]:
                return
            else:
                resumed = state["resumed"]
                assert resumed is not None
                pos, size = resumed, SCAN_WINDOW

    def _resync(self, bad: BadFrame) -> int | None:
        """Report the bad frame ``bad`` (with the batch it cut short, from ``bad.start``);
        return where the next valid frame starts, or None (a torn tail, or nothing valid after
        it: the scan ends)."""
        at = bad.start
        if bad.resume is not None:  # a valid frame that does not fit its batch
            following = bad.resume if bad.resume < self._stop else None
        else:
            following = next_valid_frame(
                self.buf, bad.offset, self._stop, bad.cut_short, self.is_last
            )
        torn = is_torn_tail(self.synced, self.number, at, self.is_last, following)
        reason = bad.reason
        if following is None:
            self.end = at
            if self.is_last and not torn:
                reason += _SYNCED_DAMAGE
        stop = self._stop if following is None else following
        self.report(Damage(self.path, at, stop, reason, torn, bad.cut_short))
        return following
