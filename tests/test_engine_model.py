"""Model-based test: Hypothesis drives an Engine and a plain dict side by side.

Every rule applies one operation to both and compares what they say. Reopening (close + open,
with either durability) is a rule too, and segments are tiny so that rotation happens often; a
read-only follower refreshes alongside and must see exactly what the writer sees. Streamed
values (value files) are written, read back a chunk at a time, cut off by a failing source, and
carried through compactions, which remove the value files no record needs any more.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from engine_machine import SEGMENT_SIZE, EngineMachine, machine_settings, run_a_few_examples
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, consumes, invariant, precondition, rule

from logkv import MISSING, Durability, Engine, EngineStats, KeyInfo
from logkv import engine as engine_module
from logkv import hints as hints_module
from logkv.format import value_ref_of_frame
from logkv.layout import list_snapshots, list_value_files
from logkv.snapshot import load_snapshot
from logkv.values import CHUNK_SIZE

# A few fixed keys make overwrites and deletes of existing keys common; the text strategy adds
# arbitrary unicode (no lone surrogates: those are not valid keys).
# Keys ending in the greatest character test the upper bound of a prefix listing.
MAX_CHAR = chr(0x10FFFF)
FIXED_KEYS = ["a", "a.", "a/b", "..", "a\x00b", "b", "é", "e\u0301", "🔑", "z" * 1024]
FIXED_KEYS += ["a" + MAX_CHAR, "a" + MAX_CHAR * 2, MAX_CHAR, "b" + MAX_CHAR + "c"]
keys = st.one_of(
    st.sampled_from(FIXED_KEYS),
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12),
)
values = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.binary(min_size=300, max_size=1500),  # a few of these fill a segment
)
content_types = st.sampled_from([None, "application/json", "text/plain; charset=utf-8", ""])
# Streamed values: empty, a few bytes, or just over a chunk (so a value file has two chunks);
# the pieces a source yields are cut at arbitrary places.
streamed_values = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=64),
    st.binary(max_size=64),
    st.integers(min_value=0, max_value=255).map(lambda b: bytes([b]) * (CHUNK_SIZE + 17)),
)
cuts = st.lists(st.integers(min_value=0, max_value=CHUNK_SIZE + 17), max_size=4)


def _pieces(value: bytes, cut: list[int]) -> Iterator[bytes]:
    """``value`` as the pieces between the offsets of ``cut``."""
    start = 0
    for at in sorted(set(cut)):
        if start < at <= len(value):
            yield value[start:at]
            start = at
    yield value[start:]


class SourceFailed(Exception):
    """Raised by a source of a streamed value in the middle of the value."""


limits = st.one_of(st.none(), st.integers(min_value=0, max_value=8))


class EngineVersusDict(EngineMachine):
    """The engine must always agree with a dict of key -> (value, content type)."""

    stored = Bundle("stored")

    def __init__(self) -> None:
        # Set before the engine opens (in the base class), put back at teardown.
        self._min_hinted = hints_module.MIN_HINTED_SEGMENT
        hints_module.MIN_HINTED_SEGMENT = 0  # these tiny segments get hint files too
        self._large_value = engine_module.LARGE_VALUE
        engine_module.LARGE_VALUE = 1000  # values over 1000 bytes take the large-value paths
        super().__init__()

    def teardown(self) -> None:
        hints_module.MIN_HINTED_SEGMENT = self._min_hinted
        engine_module.LARGE_VALUE = self._large_value
        super().teardown()

    def expected_keys(self, start: str | None, limit: int | None, prefix: str = "") -> list[str]:
        ordered = [
            k for k in sorted(self.model) if (start is None or k > start) and k.startswith(prefix)
        ]
        return ordered if limit is None else ordered[:limit]

    # ------------------------------------------------------------------ writes

    @rule(target=stored, key=keys, value=values, content_type=content_types)
    def set(self, key: str, value: bytes | None, content_type: str | None) -> str:
        seq_before = self.engine.last_seq
        assert self.engine.set(key, value, content_type) == seq_before + 1
        self.model[key] = (value, content_type)
        return key

    @rule(
        batch=st.lists(st.tuples(keys, values, content_types), max_size=12),
        deletes=st.lists(st.one_of(keys, stored), max_size=4),
    )
    def set_many(
        self, batch: list[tuple[str, bytes | None, str | None]], deletes: list[str]
    ) -> None:
        seq_before = self.engine.last_seq
        for key, value, content_type in batch:
            self.model[key] = (value, content_type)
        written = len(batch)
        for key in deletes:
            if key in self.model:
                del self.model[key]
                written += 1
        assert self.engine.set_many(batch, deletes) == seq_before + written

    @rule(
        target=stored,
        key=keys,
        value=streamed_values,
        cut=cuts,
        as_file=st.booleans(),
        content_type=content_types,
    )
    def set_stream(
        self, key: str, value: bytes, cut: list[int], as_file: bool, content_type: str | None
    ) -> str:
        seq_before = self.engine.last_seq
        source = io.BytesIO(value) if as_file else _pieces(value, cut)
        assert self.engine.set_stream(key, source, content_type) == seq_before + 1
        self.model[key] = (value, content_type)
        return key

    @rule(key=keys, value=streamed_values, cut=cuts)
    def set_stream_cut_off(self, key: str, value: bytes, cut: list[int]) -> None:
        def failing() -> Iterator[bytes]:
            yield from _pieces(value[: len(value) // 2], cut)
            raise SourceFailed

        seq_before = self.engine.last_seq
        with pytest.raises(SourceFailed):
            self.engine.set_stream(key, failing())
        assert self.engine.last_seq == seq_before  # nothing written, nothing visible
        assert not list((self.path / "values").glob("*.tmp"))

    @rule(key=st.one_of(keys, stored))
    def read_chunks(self, key: str) -> None:
        expected = self.model.get(key)
        stream = self.engine.open_value(key)
        if expected is None:
            assert stream is None
            return
        assert stream is not None
        with stream:
            chunks = list(stream)
        assert all(0 < len(c) <= CHUNK_SIZE for c in chunks)
        assert stream.content_type == expected[1]
        if expected[0] is None:
            assert chunks == [] and stream.size is None
        else:
            assert b"".join(chunks) == expected[0] and stream.size == len(expected[0])

    @rule()
    def compact(self) -> None:
        self.engine.compact()
        self.check_value_files(compacted=True)

    def check_value_files(self, compacted: bool = False) -> None:
        """Every live streamed value has its file; no file is named past the last record; and
        after a compaction (retention delete) no file of a record the snapshot covers is left
        unless the snapshot holds it."""
        files = {seq for seq, _ in list_value_files(self.path)}
        live = set()
        for key in self.model:
            entry = self.engine.entry(key)
            assert entry is not None
            if entry.streamed:
                frame = self.engine.read_frame(entry)
                live.add(value_ref_of_frame(frame, 0, len(frame)).seq)
        assert live <= files, (live, files)
        assert all(seq <= self.engine.last_seq for seq in files)
        snapshots = list_snapshots(self.path)
        if compacted and snapshots:
            info, _ = load_snapshot(snapshots[-1][1], snapshots[-1][0])
            assert not {seq for seq in files - live if seq <= info.last_seq}, (files, live)

    @rule(key=stored)
    def overwrite_stored(self, key: str) -> None:
        self.set(key, b"overwritten " + key.encode(), "text/plain")

    @rule(key=consumes(stored))
    def delete_stored(self, key: str) -> None:
        assert self.engine.delete(key) == (key in self.model)
        self.model.pop(key, None)

    @rule(key=keys)
    def delete_any(self, key: str) -> None:
        seq_before = self.engine.last_seq
        existed = key in self.model
        assert self.engine.delete(key) == existed
        assert self.engine.last_seq == seq_before + (1 if existed else 0)
        self.model.pop(key, None)

    # ------------------------------------------------------------------ reads

    @rule(key=st.one_of(keys, stored))
    def get(self, key: str) -> None:
        expected = self.model.get(key)
        if expected is None:
            assert self.engine.get(key) is MISSING
            assert self.engine.get_with_type(key) is None
            assert key not in self.engine
        else:
            assert self.engine.get(key) == expected[0]
            assert self.engine.get_with_type(key) == expected
            assert key in self.engine

    @rule(start=st.one_of(st.none(), keys, stored), limit=limits)
    def list_keys(self, start: str | None, limit: int | None) -> None:
        expected = self.expected_keys(start, limit)
        assert list(self.engine.keys(start, limit)) == expected
        assert list(self.engine.infos(start, limit)) == [
            KeyInfo(k, self.model[k][1], len(self.model[k][0] or b"")) for k in expected
        ]

    @rule(
        key=st.one_of(keys, stored),
        cut=st.integers(min_value=0, max_value=3),
        tail=st.sampled_from(["", MAX_CHAR, "\x00", "."]),
        start=st.one_of(st.none(), keys, stored),
        limit=limits,
    )
    def list_prefix(
        self, key: str, cut: int, tail: str, start: str | None, limit: int | None
    ) -> None:
        """A prefix listing (a stored key's first characters, perhaps extended) agrees with
        filtering the model, from any start."""
        prefix = key[:cut] + tail
        expected = self.expected_keys(start, limit, prefix)
        assert list(self.engine.keys(start, limit, prefix)) == expected
        assert [info.key for info in self.engine.infos(start, limit, prefix)] == expected

    @rule(page=st.integers(min_value=1, max_value=7))
    def page_through_everything(self, page: int) -> None:
        self.check_pages_through(page)

    @rule()
    def stats(self) -> None:
        stats = self.engine.stats()
        assert stats.keys == len(self.model)
        assert stats.live_bytes >= 0
        assert stats.dead_bytes >= 0
        assert stats.last_seq == self.engine.last_seq
        assert stats.disk_bytes == sum(
            p.stat().st_size for p in self.path.iterdir() if p.suffix in (".seg", ".snap")
        ) + sum(p.stat().st_size for _, p in list_value_files(self.path))

    @invariant()
    def same_length(self) -> None:
        assert len(self.engine) == len(self.model)
        self.check_value_files()

    # ------------------------------------------------------------------ reopen and follow

    @rule(durability=st.sampled_from(Durability), hints=st.booleans())
    def reopen(self, durability: Durability, hints: bool) -> None:
        """Close and open again; with ``hints``, once every sealed segment's hint is written
        (the open reads those instead of scanning), else with whatever the hint thread did."""
        before = self.engine.stats()
        if hints and self.engine._hints is not None:
            self.engine._hints.wait()
        self.engine.close()
        self.engine = Engine.open(self.path, segment_size=SEGMENT_SIZE, durability=durability)
        assert self.engine.report.clean
        after = self.engine.stats()
        assert _figures(after) == _figures(before)
        assert list(self.engine.keys()) == sorted(self.model)
        for key, (value, content_type) in self.model.items():
            assert self.engine.get_with_type(key) == (value, content_type)

    @precondition(lambda self: self.follower is None)
    @rule()
    def start_follower(self) -> None:
        self.follower = Engine.open(self.path, readonly=True)
        self.check_follower()

    @precondition(lambda self: self.follower is not None)
    @rule()
    def refresh_follower(self) -> None:
        assert self.follower is not None
        seq_before = self.follower.last_seq
        read = self.follower.refresh()
        assert read == self.engine.last_seq - seq_before
        self.check_follower()

    def check_follower(self) -> None:
        assert self.follower is not None
        assert _figures(self.follower.stats()) == _figures(self.engine.stats())
        assert list(self.follower.keys()) == sorted(self.model)
        for key, (value, content_type) in self.model.items():
            assert self.follower.get_with_type(key) == (value, content_type)


def _figures(stats: EngineStats) -> tuple[int, ...]:
    return (
        stats.keys,
        stats.live_bytes,
        stats.dead_bytes,
        stats.disk_bytes,
        stats.segments,
        stats.last_seq,
    )


EngineVersusDict.TestCase.settings = machine_settings(max_examples=1000, stateful_step_count=50)
TestEngineVersusDict = pytest.mark.slow(EngineVersusDict.TestCase)


def test_engine_versus_dict_a_few_examples() -> None:
    """The same machine at a few examples, so that the fast loop runs every rule too."""
    run_a_few_examples(EngineVersusDict)
