"""Continuous replication of one writable store to its bucket copy (docs/FORMAT.md, section 13).

:meth:`Replica.claim` takes the store over in the bucket: it checks that the endpoint honours
create-only puts, folds the slots and writes slot ``open``, the fence that makes a previous
writer's next commit fail. :meth:`Replica.start` checks the local log against the bucket copy
and starts the shipper thread, which every ``interval`` seconds takes the log's end from the
engine (under its lock, briefly), reads the bytes appended since its last commit and any new
snapshot (without the lock), uploads them as new objects and commits one slot. The writer is
never slowed: an upload never holds the engine's lock, and a bucket that is down only makes the
shipper retry with backoff while the lag grows (:meth:`Replica.lag`). A fenced shipper stops and
makes the engine refuse writes with :class:`~logkv.errors.FencedError`.

A writer that waits for a record to be committed (:meth:`Replica.when_committed`, the
``replica_sync`` durability level) wakes the shipper at once instead of at the next interval:
every waiter whose record one slot commits is released by it (group commit). After a slot that
commits a snapshot, and now and then, the shipper runs retention in the bucket
(:mod:`logkv.replica.retention`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..engine import Engine, LogEnd
from ..errors import FencedError, ReplicaDivergedError, ReplicaError
from ..fsutil import open_for_reading, read_file
from ..layout import (
    META_FILE,
    VALUES_DIR,
    list_value_files,
    segment_name,
    segment_number,
    snapshot_name,
)
from ..snapshot import load_snapshot
from .bucket import Bucket, BucketUnavailable, ObjectExists
from .retention import RetentionPolicy, retire
from .slots import (
    CLOSE,
    OPEN,
    SHIP,
    Folded,
    Piece,
    Slot,
    data_name,
    decode_slot,
    digest,
    encode_slot,
    fold_slots,
    local_digest,
    slot_name,
)

log = logging.getLogger(__name__)

#: The largest data object: a bigger file range goes up as several objects.
PART_SIZE = 16 * 1024 * 1024
#: Another writer's commit younger than this, with no close after it, is warned about at open.
RECENT_WRITER_S = 60.0
#: The longest wait between attempts while the bucket is unavailable.
MAX_BACKOFF_S = 30.0
#: How many times a claim re-reads the slots when another writer commits meanwhile.
CLAIM_ATTEMPTS = 5
#: Retention runs after every slot that commits a snapshot, and at least this often (seconds)
#: so that retired objects are deleted once their grace period is over.
RETENTION_EVERY_S = 300.0

#: Called once a record is committed in the bucket (None), or cannot be (the error).
Committed = Callable[[BaseException | None], None]


@dataclass(frozen=True)
class _NewBytes:
    """Bytes of one local file not committed yet: from ``offset``; ``sealed`` when the file is
    complete with them; ``snapshot`` ``(covers, last_seq, last_us)`` for a snapshot."""

    file: str
    offset: int
    data: bytes
    sealed: bool
    snapshot: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class Lag:
    """How far the bucket copy is behind the local log: records, and an upper bound in
    seconds on the age of the oldest record not yet committed (0 when none is behind)."""

    records: int
    seconds: float


class Replica:
    """One writable store's replication (see the module docstring)."""

    def __init__(
        self,
        bucket: Bucket,
        folder: Path,
        interval: float,
        retention: RetentionPolicy | None = None,
    ) -> None:
        self.bucket = bucket
        self.folder = folder
        self.interval = interval
        #: What the bucket copy keeps (None: retention off, nothing is ever deleted).
        self.retention = retention
        self._retained_at = time.monotonic()
        self.writer = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.folded = Folded(bucket.describe)
        self.describe = bucket.describe
        self._counter = 0
        self._engine: Engine | None = None
        self._segment = 1  # the segment the shipper reads next
        self._files: dict[int, BinaryIO] = {}  # segments open for reading, by number
        self._meta_sha = b""
        # Guarded by _state: what is committed, and the thread's outcome.
        self._state = threading.Condition()
        self._committed_seq = 0
        self._confirmed_at = time.monotonic()  # every record before this time is committed
        self._fenced: FencedError | None = None
        self._problem: BaseException | None = None  # the last failed round's error
        self._closing_until: float | None = None  # close(): ship what is left until then
        self._waiters: list[tuple[int, Committed]] = []  # (seq, callback), for when_committed
        self._stopped: BaseException | None = None  # why the thread ended, once it did
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ taking the store over

    @classmethod
    def claim(
        cls,
        bucket: Bucket,
        folder: Path,
        interval: float,
        retention: RetentionPolicy | None = None,
    ) -> Replica:
        """Take the store over in ``bucket``: check create-only puts, fold the slots, warn
        about a writer that may still be running, and write slot ``open``. Every failure is a
        :class:`~logkv.errors.ReplicaError` that says what to fix."""
        replica = cls(bucket, folder, interval, retention)
        try:
            replica._check_create_only()
            for _ in range(CLAIM_ATTEMPTS):
                fold_slots(bucket, replica.folded)
                replica._warn_about_previous_writer()
                try:
                    replica._commit(replica._slot(OPEN, replica.folded.seq, replica.folded.last_us))
                except ObjectExists:
                    continue  # another writer committed meanwhile: read on and try again
                break
            else:
                raise ReplicaError(
                    f"{bucket.describe}: another writer kept committing while this one tried to "
                    f"take the store over ({CLAIM_ATTEMPTS} attempts)"
                )
        except BucketUnavailable as exc:
            raise ReplicaError(f"the replica is unreachable at open: {exc}") from exc
        replica._committed_seq = replica.folded.seq
        return replica

    def _check_create_only(self) -> None:
        """Put one empty object twice, create-only: the second put must be refused."""
        name = self._next_data_name()  # counter 0: no slot ever names it
        self.bucket.put_new(name, b"")
        try:
            self.bucket.put_new(name, b"")
        except ObjectExists:
            return
        raise ReplicaError(
            f"{self.bucket.describe}: the endpoint ignores create-only puts (If-None-Match: *), "
            "which replication needs to keep two writers from overwriting each other; use an "
            "endpoint that supports conditional writes"
        )

    def _warn_about_previous_writer(self) -> None:
        last = self.folded.last
        if last is None or last.kind == CLOSE or last.writer == self.writer:
            return
        age = time.time() - last.at_us / 1e6
        if age < RECENT_WRITER_S:
            log.warning(
                "%s: writer %s (host %s, pid %d) updated this store's bucket copy %.0f s ago and "
                "did not close it; this open takes the store over, and that writer's next upload "
                "will fail (FencedError). Two crawlers must use different replica roots.",
                self.bucket.describe, last.writer, last.host, last.pid, age,
            )  # fmt: skip

    # ------------------------------------------------------------------ starting

    def start(self, engine: Engine) -> None:
        """Check the local log against the bucket copy, then ship in a background thread.

        :class:`~logkv.errors.ReplicaDivergedError` when the bucket holds records this folder
        lacks or other bytes than it (nothing is written then)."""
        end = engine.log_end()
        self._check_prefix(end)
        start = max(end.covers, max(self.folded.snapshots, default=0)) + 1
        while segment_name(start) in self.folded.sealed:
            start += 1
        self._segment = start
        self._engine = engine
        self._thread = threading.Thread(
            target=self._run, name=f"logkv-replica {self.folder.name}", daemon=True
        )
        self._thread.start()

    def _check_prefix(self, end: LogEnd) -> None:
        folded, describe = self.folded, self.bucket.describe
        if folded.seq > end.seq:
            raise ReplicaDivergedError(
                f"{describe} holds records up to seq {folded.seq}, but {self.folder} ends at seq "
                f"{end.seq}: the folder is behind its bucket copy. Restore it (logkv restore), "
                "or move it aside and open again to restore it automatically"
            )
        for name, pieces in folded.files.items():
            number = segment_number(name)
            if number is None or number <= end.covers:
                continue  # a snapshot, or a segment the local snapshot covers
            local = self.folder / name
            last = pieces[-1]
            size = end.end if number == end.segment else _size(local)
            if number > end.segment or size < last.end or local_digest(local, last) != last.sha256:
                raise ReplicaDivergedError(
                    f"{describe} holds other bytes of {name} than {self.folder} (the two "
                    "histories differ). Restore the folder from the bucket (logkv restore) into "
                    "an empty place, or use another replica root for this folder"
                )

    # ------------------------------------------------------------------ what callers see

    @property
    def committed_seq(self) -> int:
        """The last sequence number committed in the bucket."""
        with self._state:
            return self._committed_seq

    def lag(self) -> Lag:
        """How far the bucket copy is behind the local log now."""
        engine = self._engine
        local = engine.log_end().seq if engine is not None else 0
        with self._state:
            behind = max(0, local - self._committed_seq)
            seconds = time.monotonic() - self._confirmed_at if behind else 0.0
        return Lag(behind, max(0.0, seconds))

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every record written so far is committed in the bucket; return the last
        committed seq. Raises :class:`~logkv.errors.FencedError` when another writer took the
        store over, ``TimeoutError`` after ``timeout`` seconds (the bucket unavailable)."""
        engine = self._engine
        assert engine is not None, "start() the replica first"
        target = engine.log_end().seq
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wake.set()
        with self._state:
            while self._committed_seq < target:
                if self._fenced is not None:
                    raise FencedError(str(self._fenced))
                if self._thread is None or not self._thread.is_alive():
                    raise ReplicaError(f"{self.bucket.describe}: replication has stopped")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(
                        f"{self.bucket.describe}: records up to seq {target} are not all "
                        f"committed after {timeout} s (committed up to seq "
                        f"{self._committed_seq}; last problem: {self._problem})"
                    )
                self._state.wait(left if left is not None else 1.0)
            return self._committed_seq

    def when_committed(self, seq: int, callback: Committed) -> None:
        """Call ``callback(None)`` (in the shipper thread, or now) once record ``seq`` is
        committed in the bucket, or ``callback(error)`` when it cannot be (fenced, replication
        stopped); wakes the shipper so that it ships at once."""
        with self._state:
            error = self._stopped_error()
            if error is None and self._committed_seq < seq:
                self._waiters.append((seq, callback))
                self._wake.set()
                return
        callback(error)

    def _stopped_error(self) -> BaseException | None:
        """Why nothing more will be committed (call with ``_state`` held), or None."""
        if self._fenced is not None:
            return FencedError(str(self._fenced))
        return self._stopped

    def _release(self, error: BaseException | None = None) -> None:
        """Call back the waiters whose records are committed now (all of them, with
        ``error``, when nothing more will be)."""
        with self._state:
            done: list[tuple[int, Committed]] = []
            waiting: list[tuple[int, Committed]] = []
            for waiter in self._waiters:
                ready = error is not None or waiter[0] <= self._committed_seq
                (done if ready else waiting).append(waiter)
            self._waiters = waiting
        for _, callback in done:
            callback(error)

    def close(self, timeout: float = 10.0) -> None:
        """After the engine closed: ship what is left and commit slot ``close`` (for at most
        ``timeout`` seconds while the bucket is unavailable), then stop."""
        thread = self._thread
        if thread is None:
            return
        with self._state:
            self._closing_until = time.monotonic() + timeout
        self._wake.set()
        thread.join(timeout + 5)

    # ------------------------------------------------------------------ the shipper thread

    def _run(self) -> None:
        try:
            self._ship_until_closed()
        finally:
            for file in self._files.values():
                file.close()
            self._files.clear()
            with self._state:
                self._stopped = self._fenced or ReplicaError(
                    f"{self.bucket.describe}: replication has stopped (the store was closed)"
                )
            self._release(self._stopped)

    def _ship_until_closed(self) -> None:
        failures = 0
        while True:
            backoff = min(MAX_BACKOFF_S, self.interval * 2**failures)
            self._wake.wait(backoff if failures else self.interval)
            self._wake.clear()
            with self._state:
                closing = self._closing_until
            try:
                shipped_snapshot = self._ship_once()
                self._release()
                if shipped_snapshot or time.monotonic() - self._retained_at >= RETENTION_EVERY_S:
                    self._retain()
                if closing is not None:
                    self._commit(self._slot(CLOSE, self.folded.seq, self.folded.last_us))
                    return
            except ObjectExists:
                self._fence()
                return
            except Exception as exc:  # the bucket unavailable, or anything else: retry later
                failures += 1
                with self._state:
                    self._problem = exc
                if failures == 1:
                    log.warning(
                        "%s: replication is behind, retrying: %s", self.describe, exc,
                        exc_info=not isinstance(exc, BucketUnavailable | ReplicaError),
                    )  # fmt: skip
                if closing is not None and time.monotonic() >= closing:
                    log.warning(
                        "%s: closed with records not replicated (%s)", self.bucket.describe, exc
                    )
                    return
                continue
            if failures:
                log.warning("%s: replication caught up", self.bucket.describe)
            failures = 0

    def _retain(self) -> None:
        """Run retention in the bucket (when configured); a failure is logged, and retried at
        the next run."""
        self._retained_at = time.monotonic()
        if self.retention is None:
            return
        try:
            result = retire(self.bucket, self.folded, self.retention)
        except Exception as exc:  # retention never stops shipping (nor is taken for a fence)
            log.warning(
                "%s: retention in the bucket failed, retried later: %s", self.describe, exc,
                exc_info=not isinstance(exc, BucketUnavailable | ReplicaError),
            )  # fmt: skip
            return
        if result.retired or result.deleted:
            log.info(
                "%s: retention retired %d object(s) and deleted %d",
                self.describe, len(result.retired), len(result.deleted),
            )  # fmt: skip

    def _ship_once(self) -> bool:
        """One round: upload what is new, commit it in one slot; whether the slot committed a
        snapshot."""
        engine = self._engine
        assert engine is not None
        cut_at = time.monotonic()
        end = engine.log_end()
        files = self._new_bytes(end)
        values = self._new_value_files(end)
        meta = _read_whole(self.folder / META_FILE)
        if meta is not None and digest(meta) == self._meta_sha:
            meta = None
        if not files and meta is None and end.seq == self._committed_seq:
            with self._state:
                self._confirmed_at = cut_at
            return False
        slot = self._slot(SHIP, end.seq, end.last_us)
        for new in files:
            slot.pieces.extend(self._upload(new.file, new.offset, new.data))
            if new.sealed:
                slot.sealed.append((new.file, new.offset + len(new.data)))
            if new.snapshot is not None:
                slot.snapshots.append(new.snapshot)
        for name, path in values:
            self._ship_value_file(slot, name, path)
        if meta is not None:
            slot.pieces.extend(self._upload(META_FILE, 0, meta))
        self._commit(slot)
        if meta is not None:
            self._meta_sha = digest(meta)
        self._segment = end.segment
        for number in [n for n in self._files if n < end.segment]:
            self._files.pop(number).close()
        with self._state:
            self._committed_seq = end.seq
            self._confirmed_at = cut_at
            self._problem = None
            self._state.notify_all()
        return bool(slot.snapshots)

    def _new_bytes(self, end: LogEnd) -> list[_NewBytes]:
        """What is not committed yet: the bytes of each segment from the one the shipper reads
        next up to the log's end (whole, and sealed, for segments the writer left), then the
        snapshot ``end.covers`` when it is new.

        A segment stays open from the first time it is read until its end is committed, so
        that a compaction that retires it meanwhile does not take its last bytes away; one
        retired before the shipper ever opened it is covered by the snapshot."""
        found: list[_NewBytes] = []
        for number in range(self._segment, end.segment + 1):
            name = segment_name(number)
            file = self._segment_file(number)
            if file is None:
                if number <= end.covers:
                    continue
                raise FileNotFoundError(f"segment {name} is missing from {self.folder}")
            last = number == end.segment
            offset = self.folded.length(name)
            stop = end.end if last else os.fstat(file.fileno()).st_size
            data = os.pread(file.fileno(), stop - offset, offset) if stop > offset else b""
            if data or not last:
                found.append(_NewBytes(name, offset, data, sealed=not last))
        if end.covers > max(self.folded.snapshots, default=0):
            name = snapshot_name(end.covers)
            info, _ = load_snapshot(self.folder / name, end.covers)
            data = (self.folder / name).read_bytes()
            found.append(
                _NewBytes(name, 0, data, sealed=True, snapshot=(end.covers, info.last_seq,
                                                                 info.last_us))
            )  # fmt: skip
        return found

    def _new_value_files(self, end: LogEnd) -> list[tuple[str, Path]]:
        """The value files (streamed values, docs/FORMAT.md section 14) not in the bucket yet
        whose records the log holds up to ``end``: ``(name in the slots, path)``. A value file
        is immutable, so it is shipped whole, once, and sealed."""
        found = []
        for seq, path in list_value_files(self.folder):
            name = f"{VALUES_DIR}/{path.name}"
            if seq <= end.seq and name not in self.folded.sealed:
                found.append((name, path))
        return found

    def _ship_value_file(self, slot: Slot, name: str, path: Path) -> None:
        """Upload value file ``path`` into ``slot`` as ``name``, :data:`PART_SIZE` bytes at a
        time (a value file may be bigger than memory), and seal it. A file a compaction
        removed meanwhile (its record is dead) is skipped."""
        try:
            file = open_for_reading(path)
        except FileNotFoundError:
            return
        with file:
            offset = 0
            while part := file.read(PART_SIZE):
                slot.pieces.extend(self._upload(name, offset, part))
                offset += len(part)
        slot.sealed.append((name, offset))

    def _segment_file(self, number: int) -> BinaryIO | None:
        """Segment ``number`` opened for reading (kept open until its end is committed), or
        None when it is gone."""
        file = self._files.get(number)
        if file is None:
            try:
                file = open_for_reading(self.folder / segment_name(number))
            except FileNotFoundError:
                return None
            self._files[number] = file
        return file

    def _upload(self, file: str, offset: int, data: bytes) -> list[Piece]:
        """Upload ``data`` (bytes from ``offset`` of local file ``file``) as new objects of at
        most :data:`PART_SIZE` bytes."""
        pieces = []
        view = memoryview(data)
        for start in range(0, len(data), PART_SIZE):
            part = bytes(view[start : start + PART_SIZE])
            name = self._next_data_name()
            self.bucket.put_new(name, part)
            pieces.append(Piece(name, file, offset + start, len(part), digest(part)))
        return pieces

    def _next_data_name(self) -> str:
        name = data_name(self.writer, self._counter)
        self._counter += 1
        return name

    def _slot(self, kind: str, seq: int, last_us: int) -> Slot:
        return Slot(kind, self.writer, self.host, self.pid, time.time_ns() // 1000, seq, last_us)

    def _commit(self, slot: Slot) -> None:
        """Write ``slot`` as the next slot, create-only, and fold it in. A put whose answer was
        lost and that is retried finds its own slot there: that counts as done. Another
        writer's slot raises :class:`ObjectExists`."""
        number = self.folded.number + 1
        data = encode_slot(slot)
        try:
            self.bucket.put_new(slot_name(number), data)
        except ObjectExists:
            there = self.bucket.get(slot_name(number))
            if there != data:
                raise
        self.folded.add(number, decode_slot(data, slot_name(number)))

    def _fence(self) -> None:
        last = self.folded.number + 1
        try:
            other = decode_slot(self.bucket.get(slot_name(last)), slot_name(last))
            who = f"writer {other.writer} (host {other.host}, pid {other.pid})"
        except (BucketUnavailable, ReplicaError, FileNotFoundError):
            who = "another writer"
        error = FencedError(
            f"{self.bucket.describe}: {who} took this store over (it wrote slot {last}); this "
            f"writer's uploads are refused, and so are its writes. Records up to seq "
            f"{self._committed_seq} are in the bucket; later ones only in {self.folder}"
        )
        log.error("%s", error)
        if self._engine is not None:
            self._engine.refuse_writes(error)
        with self._state:
            self._fenced = error
            self._state.notify_all()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def _read_whole(path: Path) -> bytes | None:
    try:
        return read_file(path)
    except FileNotFoundError:
        return None
