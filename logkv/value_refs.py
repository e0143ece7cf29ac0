"""Which value files a store's records name: the one rule for what a copy keeps of
``values/``.

A streamed set's value lives in ``values/{seq}.val``; its record (in a segment, or as an
entry of a snapshot) holds only a reference. A copy of a store made of some of its data files
(a replay cut at a target, a restore from a bucket copy, to a point or to its newest state)
keeps exactly the value files its own records name, never one more: a file no record names is
a value nobody can read back, and one named but absent is damage that verify reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Final

from .files import open_bytes
from .format import Op, value_ref_of_frame
from .layout import segment_number, snapshot_number
from .scan import SegmentReader, fail_on_damage
from .snapshot import load_snapshot

_STREAMED: Final = int(Op.SET_STREAMED)


def named_value_seqs(folder: Path, names: Iterable[str]) -> set[int]:
    """The seqs of the value files named by the records of the data files ``names`` (segment
    and snapshot file names) in ``folder``: a snapshot's streamed entries and the streamed sets
    of the segments, read whole (a damaged frame raises
    :class:`~logkv.errors.CorruptionError`). Other names are ignored."""
    seqs: set[int] = set()
    for name in names:
        path = folder / name
        covers = snapshot_number(name)
        if covers is not None:
            _, entries = load_snapshot(path, covers)
            with open_bytes(path) as snapshot:
                for entry in entries.values():
                    if entry[3] < -1:  # a streamed set: its frame holds the reference
                        frame = snapshot.read(entry[1], entry[2])
                        seqs.add(value_ref_of_frame(frame, 0, entry[2]).seq)
            continue
        number = segment_number(name)
        if number is None:
            continue
        with SegmentReader(
            path, number, is_last=False, synced=None, report=fail_on_damage
        ) as reader:
            seqs.update(fields[0] for _, _, fields in reader.frames() if fields[2] == _STREAMED)
    return seqs
