"""Slots: the create-only, contiguously numbered commits of a store's bucket copy.

A slot (docs/FORMAT.md, section 13.2) names the data objects it commits (each a byte range of
one local file), the files it seals, the snapshots it completes and the last sequence number
the committed bytes hold. :func:`encode_slot` and :func:`decode_slot` are its bytes;
:class:`Folded` folds slots in number order into the committed file set, refusing a gap, and
notes which data objects retention retired (the markers of section 13.7, which are not slots
and fence nobody: :func:`encode_marker`, :func:`fold_retired`). A checkpoint
(:func:`encode_checkpoint`) is a :class:`Folded` written down after slot ``N``, so that a reader
that starts from nothing folds only the slots after the newest one (section 13.7).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import msgpack

from ..errors import ReplicaError, ReplicaGapError
from ..fsutil import open_for_reading
from ..layout import META_FILE, snapshot_name
from .bucket import Bucket, ObjectExists

SLOT_VERSION = 1
SLOTS_DIR = "slots"
DATA_DIR = "data"
RETIRED_DIR = "retired"
CHECKPOINTS_DIR = "checkpoints"
#: A reader that keeps folding (a follower) lists ``retired/`` at most this often (seconds):
#: retired objects stay readable for the grace period, which is much longer.
RETIRED_LIST_EVERY_S = 60.0
#: Appended to a retirement marker's name: the object that says its objects are deleted.
DELETED_SUFFIX = ".deleted"

#: Slot kinds: a writer took the store over; new bytes; a clean close.
OPEN, SHIP, CLOSE = "open", "ship", "close"


def slot_name(number: int) -> str:
    """The object name of slot ``number`` (zero-padded so that names sort in number order)."""
    return f"{SLOTS_DIR}/{number:020d}"


def slot_number(name: str) -> int | None:
    """The number of a slot object name (relative to the store's path), or None."""
    folder, _, digits = name.rpartition("/")
    if folder != SLOTS_DIR or len(digits) != 20 or not digits.isdigit():
        return None
    return int(digits)


def data_name(writer: str, counter: int) -> str:
    """The object name of a writer's ``counter``-th data object."""
    return f"{DATA_DIR}/{writer}/{counter:012d}"


@dataclass(frozen=True)
class Piece:
    """Bytes ``[offset, offset + length)`` of local file ``file``, held by object ``name``."""

    name: str
    file: str
    offset: int
    length: int
    sha256: bytes

    @property
    def end(self) -> int:
        """Where the piece's bytes end in the file."""
        return self.offset + self.length


def digest(data: bytes | memoryview) -> bytes:
    """The SHA-256 a piece records for its bytes."""
    return hashlib.sha256(data).digest()


def local_digest(path: Path, piece: Piece) -> bytes:
    """The SHA-256 of ``piece``'s range of the local file ``path``, read never through a link
    (empty when the file is not there): equal to ``piece.sha256`` when the file holds the
    bucket's bytes there."""
    try:
        with open_for_reading(path) as file:
            file.seek(piece.offset)
            return digest(file.read(piece.length))
    except FileNotFoundError:
        return b""


@dataclass
class Slot:
    """One commit (see the module docstring)."""

    kind: str
    writer: str
    host: str
    pid: int
    at_us: int
    seq: int
    last_us: int
    pieces: list[Piece] = field(default_factory=list)
    sealed: list[tuple[str, int]] = field(default_factory=list)
    snapshots: list[tuple[int, int, int]] = field(default_factory=list)


def encode_slot(slot: Slot) -> bytes:
    """The slot's bytes (a msgpack map)."""
    body = {
        "v": SLOT_VERSION,
        "kind": slot.kind,
        "writer": slot.writer,
        "host": slot.host,
        "pid": slot.pid,
        "at": slot.at_us,
        "seq": slot.seq,
        "last_us": slot.last_us,
        "pieces": [[p.name, p.file, p.offset, p.length, p.sha256] for p in slot.pieces],
        "sealed": [list(s) for s in slot.sealed],
        "snapshots": [list(s) for s in slot.snapshots],
    }
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return data


def decode_slot(data: bytes, where: str) -> Slot:
    """Parse a slot's bytes; :class:`~logkv.errors.ReplicaGapError` naming ``where`` when
    they are not one."""
    try:
        body: Any = msgpack.unpackb(data, raw=False)
        if body["v"] != SLOT_VERSION:
            raise ValueError(f"slot version {body['v']} is not supported")
        return Slot(
            kind=str(body["kind"]),
            writer=str(body["writer"]),
            host=str(body["host"]),
            pid=int(body["pid"]),
            at_us=int(body["at"]),
            seq=int(body["seq"]),
            last_us=int(body["last_us"]),
            pieces=[
                Piece(str(n), str(f), int(o), int(ln), bytes(h))
                for n, f, o, ln, h in body["pieces"]
            ],
            sealed=[(str(f), int(ln)) for f, ln in body["sealed"]],
            snapshots=[(int(c), int(s), int(t)) for c, s, t in body["snapshots"]],
        )
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        raise ReplicaGapError(f"{where} is not a valid slot: {exc}") from None


@dataclass
class Folded:
    """The committed file set after slots ``1..number`` (see docs/FORMAT.md, section 13.3)."""

    where: str
    number: int = 0  # the last slot folded
    seq: int = 0
    last_us: int = 0
    files: dict[str, list[Piece]] = field(default_factory=dict)
    sealed: dict[str, int] = field(default_factory=dict)
    #: Complete snapshots: covers -> the last seq they hold and its timestamp (µs).
    snapshots: dict[int, tuple[int, int]] = field(default_factory=dict)
    meta: Piece | None = None
    #: Every piece of ``META.json`` ever committed (the newest last): older ones are garbage.
    metas: list[Piece] = field(default_factory=list)
    last: Slot | None = None  # the newest slot
    #: Retirement markers folded so far: name -> (when written, µs; the objects it retires).
    markers: dict[str, tuple[int, list[str]]] = field(default_factory=dict)
    #: Markers whose objects are deleted already.
    deleted: set[str] = field(default_factory=set)
    #: Every data object a marker retired (gone, or going once the grace period is over).
    retired: set[str] = field(default_factory=set)
    #: The slot of the newest checkpoint known (0: none).
    checkpoint: int = 0
    #: When ``retired/`` was last listed (``time.monotonic()``; 0: never).
    retired_listed: float = 0.0

    def add(self, number: int, slot: Slot) -> None:
        """Fold slot ``number`` in; :class:`~logkv.errors.ReplicaGapError` on a gap."""
        if number != self.number + 1:
            raise ReplicaGapError(
                f"{self.where}: slot {self.number + 1} is missing (the next slot is {number}); "
                "the bucket copy has a gap and cannot be used"
            )
        for piece in slot.pieces:
            if piece.file == META_FILE:
                self.meta = piece
                self.metas.append(piece)
                continue
            pieces = self.files.setdefault(piece.file, [])
            length = self.length(piece.file)
            if piece.file in self.sealed or piece.offset != length:
                raise ReplicaGapError(
                    f"{self.where}: slot {number} adds bytes at offset {piece.offset} of "
                    f"{piece.file}, whose committed bytes end at {length}"
                    + (" (sealed)" if piece.file in self.sealed else "")
                    + "; the bucket copy has a gap and cannot be used"
                )
            pieces.append(piece)
        for name, length in slot.sealed:
            if self.length(name) != length:
                raise ReplicaGapError(
                    f"{self.where}: slot {number} seals {name} at {length} bytes, but "
                    f"{self.length(name)} are committed; the bucket copy has a gap"
                )
            self.sealed[name] = length
        for covers, last_seq, last_us in slot.snapshots:
            self.snapshots[covers] = (last_seq, last_us)
        self.seq, self.last_us = slot.seq, slot.last_us
        self.number = number
        self.last = slot

    def length(self, file: str) -> int:
        """How many bytes of local file ``file`` are committed."""
        pieces = self.files.get(file)
        return pieces[-1].end if pieces else 0


def fold_slots(bucket: Bucket, folded: Folded | None = None) -> Folded:
    """Fold the slots in ``bucket`` after those ``folded`` already holds (all of them when
    None); listing with ``StartAfter``, so a reader that keeps its :class:`Folded` reads only
    the new slots."""
    if folded is None:
        folded = Folded(bucket.describe)
    if folded.number == 0:
        start_from_checkpoint(bucket, folded)
    after = slot_name(folded.number) if folded.number else None
    for name in bucket.list_after(SLOTS_DIR, after):
        number = slot_number(name)
        if number is None:
            continue  # not a slot: nothing of logkv's
        folded.add(number, decode_slot(bucket.get(name), f"{bucket.describe}/{name}"))
    if (
        time.monotonic() - folded.retired_listed >= RETIRED_LIST_EVERY_S
        or not folded.retired_listed
    ):
        fold_retired(bucket, folded)
    return folded


def marker_name(at_us: int, unique: str) -> str:
    """The name of a retirement marker written at ``at_us`` (unique by ``unique``)."""
    return f"{RETIRED_DIR}/{at_us:020d}-{unique}"


def encode_marker(at_us: int, objects: list[str]) -> bytes:
    """A retirement marker's bytes: a msgpack map of when, and the data objects it retires."""
    data: bytes = msgpack.packb({"v": SLOT_VERSION, "at": at_us, "objects": objects})
    return data


def fold_retired(bucket: Bucket, folded: Folded) -> None:
    """Fold the retirement markers not folded yet into ``folded`` (section 13.7). Markers are
    few (one per retention run that retired something) and listed whole: their names sort by
    the writer's clock, which another process's need not follow."""
    folded.retired_listed = time.monotonic()
    for name in bucket.list_after(RETIRED_DIR):
        if name.endswith(DELETED_SUFFIX):
            folded.deleted.add(name.removesuffix(DELETED_SUFFIX))
        elif name not in folded.markers:
            where = f"{bucket.describe}/{name}"
            try:
                body: Any = msgpack.unpackb(bucket.get(name), raw=False)
                at_us, objects = int(body["at"]), [str(o) for o in body["objects"]]
            except FileNotFoundError:
                continue
            except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
                raise ReplicaError(f"{where} is not a valid retirement marker: {exc}") from None
            folded.markers[name] = (at_us, objects)
            folded.retired.update(objects)


def checkpoint_name(number: int) -> str:
    """The name of the checkpoint of the folded state after slot ``number``."""
    return f"{CHECKPOINTS_DIR}/{number:020d}"


def encode_checkpoint(folded: Folded) -> bytes:
    """``folded`` as a checkpoint's bytes (a msgpack map). Files whose every piece is deleted
    by retention are left out, with their snapshots: no restore can use them any more."""
    gone = {o for name in folded.deleted for o in folded.markers.get(name, (0, []))[1]}

    def alive(pieces: list[Piece]) -> bool:
        return not all(p.name in gone for p in pieces)

    files = {f: pieces for f, pieces in folded.files.items() if alive(pieces)}
    body = {
        "v": SLOT_VERSION,
        "number": folded.number,
        "seq": folded.seq,
        "last_us": folded.last_us,
        "files": {
            f: [[p.name, p.offset, p.length, p.sha256] for p in ps] for f, ps in files.items()
        },
        "sealed": folded.sealed,
        "snapshots": [
            [c, s, us] for c, (s, us) in folded.snapshots.items() if snapshot_name(c) in files
        ],
        "metas": [[p.name, p.length, p.sha256] for p in folded.metas if p.name not in gone],
        "last": None if folded.last is None else encode_slot(folded.last),
        "markers": {
            name: [at, [] if name in folded.deleted else objects]
            for name, (at, objects) in folded.markers.items()
        },
        "deleted": sorted(folded.deleted),
    }
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return data


def decode_checkpoint(data: bytes, where: str) -> Folded:
    """Parse a checkpoint's bytes; :class:`ReplicaError` naming ``where`` when they are not
    one."""
    try:
        body: Any = msgpack.unpackb(data, raw=False)
        if body["v"] != SLOT_VERSION:
            raise ValueError(f"checkpoint version {body['v']} is not supported")
        folded = Folded(where, number=int(body["number"]), seq=int(body["seq"]),
                        last_us=int(body["last_us"]))  # fmt: skip
        for file, pieces in body["files"].items():
            folded.files[str(file)] = [
                Piece(str(n), str(file), int(o), int(ln), bytes(h)) for n, o, ln, h in pieces
            ]
        folded.sealed = {str(f): int(n) for f, n in body["sealed"].items()}
        folded.snapshots = {int(c): (int(s), int(us)) for c, s, us in body["snapshots"]}
        folded.metas = [
            Piece(str(n), META_FILE, 0, int(ln), bytes(h)) for n, ln, h in body["metas"]
        ]
        folded.meta = folded.metas[-1] if folded.metas else None
        if body["last"] is not None:
            folded.last = decode_slot(bytes(body["last"]), where)
        for name, (at, objects) in body["markers"].items():
            folded.markers[str(name)] = (int(at), [str(o) for o in objects])
            folded.retired.update(str(o) for o in objects)
        folded.deleted = {str(name) for name in body["deleted"]}
    except (ValueError, TypeError, KeyError, AttributeError, msgpack.UnpackException) as exc:
        raise ReplicaError(f"{where} is not a valid checkpoint: {exc}") from None
    return folded


def write_checkpoint(bucket: Bucket, folded: Folded) -> str:
    """Write the checkpoint of ``folded`` (create-only; one already there for that slot is
    the same state, and is kept). Returns its name."""
    name = checkpoint_name(folded.number)
    with contextlib.suppress(ObjectExists):  # the same state, written by another run
        bucket.put_new(name, encode_checkpoint(folded))
    folded.checkpoint = folded.number
    return name


def start_from_checkpoint(bucket: Bucket, folded: Folded) -> None:
    """Load the newest valid checkpoint into the empty ``folded`` (nothing when there is
    none; a damaged one is passed over for the one before it)."""
    names = [n for n in bucket.list_after(CHECKPOINTS_DIR) if n.rpartition("/")[2].isdigit()]
    for name in reversed(names):
        where = f"{bucket.describe}/{name}"
        try:
            loaded = decode_checkpoint(bucket.get(name), where)
        except (ReplicaError, FileNotFoundError):
            continue
        for item in fields(Folded):
            if item.name != "where":
                setattr(folded, item.name, getattr(loaded, item.name))
        folded.checkpoint = folded.number
        return
