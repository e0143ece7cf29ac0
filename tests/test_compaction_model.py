"""Model-based test of compaction: Hypothesis drives an Engine and a dict side by side.

Rules write (set, set None, delete), read (get, ordered paging with ``exclusive_start_key`` and
``limit``), reopen, open read-only, and compact with retention delete or archive, sometimes
while writes land in the middle of the compaction. Segments are tiny (4096 bytes), so the log
rotates often and every compaction covers several segments. After each compaction a fresh
open must equal an open from just before it, and the snapshot must hold exactly the state as
of its sequence number. History is checked against the model as of every sequence number:
``state_at`` and ``key_history`` are exact where the log is kept, and ``HistoryGap`` where a
compaction with retention delete removed it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_machine import SEGMENT_SIZE, EngineMachine, machine_settings, run_a_few_examples
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule
from store_model import Model, Value, dump

from logkv import MISSING, Engine, KeyInfo, SetRecord
from logkv.history import HistoryGap, iter_snapshot_records, key_history, state_at
from logkv.layout import list_snapshots
from logkv.replay import Entry
from logkv.snapshot import SnapshotWriter, load_snapshot

Op = tuple[str, str, bytes | None]  # ("set" | "delete", key, value)

FIXED_KEYS = ["a", "a/b", "b", "é", "🔑", "k1", "k2", "k10", "z" * 200]
keys = st.one_of(
    st.sampled_from(FIXED_KEYS),
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=8),
)
values = st.one_of(
    st.none(),
    st.binary(max_size=30),
    st.binary(min_size=400, max_size=1500),  # a few of these fill a segment
)
content_types = st.sampled_from([None, "application/json", "text/plain"])
limits = st.one_of(st.none(), st.integers(min_value=0, max_value=6))
ops = st.lists(st.tuples(st.sampled_from(["set", "delete"]), keys, values), min_size=1, max_size=6)
retentions = st.sampled_from(["delete", "archive"])


class CompactionVersusDict(EngineMachine):
    """The engine, reopened, read-only or compacted, always agrees with the model."""

    folder_prefix = "logkv-compaction-model-"

    def __init__(self) -> None:
        super().__init__()
        self.states: list[Model] = [{}]  # the model as of each sequence number
        self.events: dict[str, list[tuple[int, Value | None]]] = {}
        self.state_from = 0  # state_at is exact from here on (HistoryGap before)
        self.history_from = 0  # key_history lists the records after this sequence number
        self.compactions = 0

    # ------------------------------------------------------------------ helpers

    def do_set(self, key: str, value: bytes | None, content_type: str | None) -> None:
        seq = self.engine.set(key, value, content_type)
        assert seq == len(self.states)
        self.model[key] = (value, content_type)
        self.states.append(dict(self.model))
        self.events.setdefault(key, []).append((seq, (value, content_type)))

    def do_delete(self, key: str) -> None:
        existed = key in self.model
        assert self.engine.delete(key) == existed
        if existed:
            del self.model[key]
            self.states.append(dict(self.model))
            self.events.setdefault(key, []).append((len(self.states) - 1, None))
        assert self.engine.last_seq == len(self.states) - 1

    def apply(self, batch: list[Op]) -> None:
        for op, key, value in batch:
            if op == "set":
                self.do_set(key, value, "text/plain")
            else:
                self.do_delete(key)

    def readonly_contents(self) -> tuple[Model, tuple[int, ...]]:
        """What a fresh read-only open finds, and its figures (which must match the writer's
        running figures exactly, compaction or not)."""
        with Engine.open(self.path, readonly=True) as reader:
            return dump(reader), figures(reader)

    # ------------------------------------------------------------------ writes

    @rule(key=keys, value=values, content_type=content_types)
    def set(self, key: str, value: bytes | None, content_type: str | None) -> None:
        self.do_set(key, value, content_type)

    @rule(key=keys, content_type=content_types)
    def set_none(self, key: str, content_type: str | None) -> None:
        self.do_set(key, None, content_type)

    @rule(batch=st.lists(st.tuples(keys, values), min_size=1, max_size=10))
    def set_many(self, batch: list[tuple[str, bytes | None]]) -> None:
        for key, value in batch:
            self.do_set(key, value, None)

    @rule(key=keys)
    def delete(self, key: str) -> None:
        self.do_delete(key)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def delete_existing(self, data: st.DataObject) -> None:
        self.do_delete(data.draw(st.sampled_from(sorted(self.model))))

    # ------------------------------------------------------------------ reads

    @rule(key=keys)
    def get(self, key: str) -> None:
        expected = self.model.get(key)
        if expected is None:
            assert self.engine.get(key) is MISSING
            assert key not in self.engine
        else:
            assert self.engine.get_with_type(key) == expected

    @rule(start=st.one_of(st.none(), keys), limit=limits)
    def page(self, start: str | None, limit: int | None) -> None:
        ordered = [k for k in sorted(self.model) if start is None or k > start]
        expected = ordered if limit is None else ordered[:limit]
        assert list(self.engine.keys(start, limit)) == expected
        assert list(self.engine.infos(start, limit)) == [
            KeyInfo(k, self.model[k][1], len(self.model[k][0] or b"")) for k in expected
        ]

    @rule(size=st.integers(min_value=1, max_value=5))
    def page_through(self, size: int) -> None:
        self.check_pages_through(size)

    # ------------------------------------------------------------------ reopen, read-only

    @rule()
    def reopen(self) -> None:
        stats = self.engine.stats()
        self.engine.close()
        self.engine = Engine.open(self.path, segment_size=SEGMENT_SIZE)
        assert self.engine.report.clean
        after = self.engine.stats()
        assert (after.keys, after.live_bytes, after.dead_bytes, after.last_seq) == (
            stats.keys,
            stats.live_bytes,
            stats.dead_bytes,
            stats.last_seq,
        )
        assert dump(self.engine) == self.model

    @rule()
    def readonly_open(self) -> None:
        state, fresh = self.readonly_contents()
        assert state == self.model
        assert fresh == figures_of_writer(self.engine)

    @precondition(lambda self: self.follower is None)
    @rule()
    def start_follower(self) -> None:
        self.follower = Engine.open(self.path, readonly=True)
        assert dump(self.follower) == self.model

    @precondition(lambda self: self.follower is not None)
    @rule()
    def refresh_follower(self) -> None:
        """A read-only follower beside the writer sees every write and compaction."""
        assert self.follower is not None
        self.follower.refresh()
        assert dump(self.follower) == self.model
        assert figures(self.follower) == figures_of_writer(self.engine)

    # ------------------------------------------------------------------ compaction

    def compacted(
        self, rotation_seq: int, snapshot: Path | None, covers: int, retention: str
    ) -> None:
        """Bookkeeping and checks after a compaction that wrote ``snapshot``."""
        if snapshot is None:
            return
        self.compactions += 1
        event(f"compaction covering {'several segments' if covers > 2 else 'one or two'}")
        info, entries = load_snapshot(snapshot, covers)
        assert info.last_seq == rotation_seq
        held = {r.key: (r.value, r.content_type) for r in iter_snapshot_records(snapshot)}
        assert held == self.states[rotation_seq]  # the state as of its sequence number
        assert list(entries) == sorted(entries)
        assert [c for c, _ in list_snapshots(self.path)] == [covers]
        if retention == "delete":
            self.history_from = rotation_seq
            self.state_from = rotation_seq
        elif self.state_from:
            self.state_from = rotation_seq  # the newest snapshot is where state_at starts

    @rule(retention=retentions)
    def compact(self, retention: str) -> None:
        before, figures = self.readonly_contents()
        rotation_seq = self.engine.last_seq
        result = self.engine.compact(retention=retention)
        assert isinstance(result.longest_lock_hold_s, float)
        assert result.longest_lock_hold_s >= 0
        after, figures_after = self.readonly_contents()
        assert after == before == self.model  # open after compaction == open before
        assert figures_after[:3] == figures[:3]  # keys, live bytes, last seq
        assert figures_after == figures_of_writer(self.engine)
        assert dump(self.engine) == self.model
        self.compacted(rotation_seq, result.snapshot, result.covers, retention)

    @rule(retention=retentions, batch=ops)
    def compact_while_writing(self, retention: str, batch: list[Op]) -> None:
        """Writes land after the rotation, while the first records are being copied."""
        rotation_seq = self.engine.last_seq
        real_add = SnapshotWriter.add
        pending = [batch]

        def add(writer: SnapshotWriter, frame: bytes, key: str, entry: Entry) -> int:
            if pending:
                self.apply(pending.pop())
            return real_add(writer, frame, key, entry)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(SnapshotWriter, "add", add)
            result = self.engine.compact(retention=retention)
        if pending:  # nothing was copied (no live records): write now
            self.apply(pending.pop())
        assert dump(self.engine) == self.model
        state, fresh = self.readonly_contents()
        assert state == self.model
        assert fresh == figures_of_writer(self.engine)
        if result.snapshot is not None:
            self.compacted(rotation_seq, result.snapshot, result.covers, retention)

    # ------------------------------------------------------------------ history

    @rule(data=st.data())
    def history_state_at(self, data: st.DataObject) -> None:
        seq = data.draw(st.integers(min_value=0, max_value=len(self.states) - 1))
        if seq < self.state_from:
            with pytest.raises(HistoryGap):
                state_at(self.path, until_seq=seq)
            return
        got = state_at(self.path, until_seq=seq)
        assert {k: (r.value, r.content_type) for k, r in got.items()} == self.states[seq]

    @rule(key=st.one_of(keys, st.sampled_from(FIXED_KEYS)))
    def history_of_key(self, key: str) -> None:
        expected = [e for e in self.events.get(key, []) if e[0] > self.history_from]
        found = [
            (r.record.seq, (r.record.value, r.record.content_type))
            if isinstance(r.record, SetRecord)
            else (r.record.seq, None)
            for r in key_history(self.path, key)
        ]
        assert found == expected

    @invariant()
    def same_size(self) -> None:
        assert len(self.engine) == len(self.model)
        assert self.engine.last_seq == len(self.states) - 1


def figures(engine: Engine) -> tuple[int, ...]:
    """The figures of ``stats()`` that the writer, a follower and a fresh open share."""
    stats = engine.stats()
    return (
        stats.keys,
        stats.live_bytes,
        stats.last_seq,
        stats.dead_bytes,
        stats.segments,
        stats.snapshot_covers,
        stats.disk_bytes,
    )


def figures_of_writer(engine: Engine) -> tuple[int, ...]:
    return figures(engine)


CompactionVersusDict.TestCase.settings = machine_settings(max_examples=800, stateful_step_count=60)
TestCompactionVersusDict = pytest.mark.slow(CompactionVersusDict.TestCase)


def test_compaction_versus_dict_a_few_examples() -> None:
    """The same machine at a few examples, so that the fast loop runs every rule too."""
    run_a_few_examples(CompactionVersusDict)
