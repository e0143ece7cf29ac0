"""Audit-grade replay and point-in-time history against a model of the store's history.

Random programs of sets, streamed sets (values in value files), deletes, batches,
compactions (retention delete and archive, so checkpoints are written) and reopens run on a
store; then, for any target sequence number:
``replay_store`` gives a copy whose state is the model's at that point (before a batch the
target lies inside), whose chain value is the original's at the same record, which verifies,
records its origin and accepts new writes; ``state_at`` gives the same state with checkpoints
and without them (a full replay); a target after the end or before the retained history is a
clear error and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import run_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logkv import Engine
from logkv.checkpoints import (
    CheckpointPolicy,
    checkpoints_of,
    load_checkpoint,
    prune_checkpoints,
)
from logkv.cli.audit import store_figures
from logkv.errors import CorruptionError
from logkv.format import GENESIS_CHAIN, SetRecord
from logkv.history import HistoryGap, iter_log, newest_snapshot, state_at
from logkv.layout import PROVENANCE_FILE, REPLAY_DIR, list_segments
from logkv.rebuild import ReplayTargetError, read_provenance, replay_store
from logkv.values import ValueFileReader, value_path
from logkv.verify import verify

KEYS = ["a", "b", "c", "d"]
DELETED = object()

keys = st.sampled_from(KEYS)
values = st.one_of(st.none(), st.binary(max_size=300))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), keys, values),
        st.tuples(st.just("delete"), keys),
        st.tuples(st.just("stream"), keys, st.binary(max_size=3000)),
        st.tuples(
            st.just("batch"),
            st.lists(st.tuples(keys, values), min_size=1, max_size=4),
            st.lists(keys, max_size=2),
        ),
        st.tuples(st.just("compact"), st.sampled_from(["archive", "archive", "delete"])),
        st.tuples(st.just("reopen")),
    ),
    max_size=40,
)


@dataclass
class Model:
    """Every record written, in order (value ``DELETED`` for a delete), the batches (first,
    last seq), and the sequence number before which history is no longer retained."""

    records: list[tuple[int, str, object]] = field(default_factory=list)
    batches: list[tuple[int, int]] = field(default_factory=list)
    floor: int = 0

    @property
    def last_seq(self) -> int:
        return self.records[-1][0] if self.records else 0

    def effective(self, seq: int) -> int:
        """The last record kept for a target at ``seq``: before a batch it lies inside."""
        for first, last in self.batches:
            if first <= seq < last:
                return first - 1
        return seq

    def state(self, seq: int) -> dict[str, bytes | None]:
        state: dict[str, object] = {}
        for at, key, value in self.records:
            if at > seq:
                break
            if value is DELETED:
                state.pop(key, None)
            else:
                state[key] = value
        return {k: v for k, v in state.items() if isinstance(v, bytes | None)}


@contextmanager
def checkpoint_every(records: int) -> Iterator[None]:
    """Compactions write a checkpoint every ``records`` records meanwhile."""
    old = os.environ.get("LOGKV_CHECKPOINT_EVERY")
    os.environ["LOGKV_CHECKPOINT_EVERY"] = str(records)
    try:
        yield
    finally:
        if old is None:
            del os.environ["LOGKV_CHECKPOINT_EVERY"]
        else:
            os.environ["LOGKV_CHECKPOINT_EVERY"] = old


def run_program(store: Path, program: list[tuple[object, ...]]) -> Model:
    """Apply ``program`` to a new store at ``store`` and to a model."""
    model = Model()
    current: dict[str, object] = {}
    engine = Engine.open(store, segment_size=4096)
    try:
        for op in program:
            before = engine.last_seq
            if op[0] == "set":
                _, key, value = op
                seq = engine.set(str(key), value)  # type: ignore[arg-type]
                model.records.append((seq, str(key), value))
                current[str(key)] = value
            elif op[0] == "stream":  # a streamed set: its value in a value file
                _, key, value = op
                seq = engine.set_stream(str(key), [value])
                model.records.append((seq, str(key), value))
                current[str(key)] = value
            elif op[0] == "delete":
                if engine.delete(str(op[1])):
                    model.records.append((engine.last_seq, str(op[1]), DELETED))
                    current.pop(str(op[1]), None)
            elif op[0] == "batch":
                items = [(k, v, None) for k, v in op[1]]  # type: ignore[attr-defined]
                engine.set_many(items, op[2])  # type: ignore[arg-type]
                seq = before
                for key, value, _ in items:
                    seq += 1
                    model.records.append((seq, key, value))
                    current[key] = value
                for key in op[2]:  # type: ignore[attr-defined]
                    if key in current:
                        seq += 1
                        model.records.append((seq, key, DELETED))
                        del current[key]
                assert seq == engine.last_seq
                if seq - before >= 2:
                    model.batches.append((before + 1, seq))
            elif op[0] == "compact":
                result = engine.compact(retention=str(op[1]))
                if result.snapshot is not None and op[1] == "delete":
                    model.floor = engine.last_seq
            else:
                engine.close()
                engine = Engine.open(store, segment_size=4096)
    finally:
        engine.close()
    return model


def read_store(folder: Path) -> dict[str, bytes | None]:
    with Engine.open(folder, readonly=True) as engine:
        return {key: engine.get(key) for key in engine.keys(None)}  # type: ignore[misc]


def chain_at(store: Path, seq: int) -> bytes:
    """The original's chain value at record ``seq``."""
    if seq == 0:
        return GENESIS_CHAIN
    for logged in iter_log(store):
        if logged.record.seq == seq:
            return logged.chain
    snap = newest_snapshot(store)
    assert snap is not None and snap[0].last_seq == seq, seq
    return snap[0].chain


def full_replay_state(store: Path, scratch: Path, seq: int) -> dict[str, SetRecord]:
    """``state_at`` on a copy of the store without its checkpoints: a replay from the start
    of the retained history."""
    shutil.copytree(store, scratch, ignore=shutil.ignore_patterns("*.ckpt"))
    try:
        return state_at(scratch, until_seq=seq)
    finally:
        shutil.rmtree(scratch)


def values_of(store: Path, state: dict[str, SetRecord]) -> dict[str, bytes | None]:
    """The values ``state`` names: a streamed set's read (and checked) from its value file."""
    return {key: value_of(store, record) for key, record in state.items()}


def value_of(store: Path, record: SetRecord) -> bytes | None:
    if record.streamed is None:
        return record.value
    with ValueFileReader(value_path(store, record.seq), record.streamed) as reader:
        return reader.read_all()


@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(program=operations, pick=st.integers(min_value=0, max_value=1_000), data=st.data())
def test_replay_and_state_at_follow_the_model(
    program: list[tuple[object, ...]], pick: int, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp, checkpoint_every(3):
        root = Path(tmp)
        store = root / "store"
        model = run_program(store, program)
        target = pick % (model.last_seq + 3)  # now and then past the end
        copy = root / "out" / "copy"
        if target > model.last_seq:
            with pytest.raises(ReplayTargetError, match="after the end"):
                replay_store(store, copy, until_seq=target)
            assert not copy.exists() and not (root / "out" / REPLAY_DIR).exists()
            return
        if target < model.floor:
            with pytest.raises(HistoryGap):
                replay_store(store, copy, until_seq=target)
            with pytest.raises(HistoryGap):
                state_at(store, until_seq=target)
            assert not copy.exists()
            return
        kept = model.effective(target)
        expected = model.state(kept)

        result = replay_store(store, copy, until_seq=target)
        assert result.last_seq == kept
        assert read_store(copy) == expected
        assert result.chain == chain_at(store, kept)
        report = verify(copy)
        assert report.ok, report.problems
        provenance = read_provenance(copy)
        assert provenance is not None
        assert provenance["last_seq"] == kept
        assert provenance["last_chain"] == result.chain.hex()
        assert provenance["source"]["path"] == str(store.resolve())
        # The copy's records are the original's, byte for byte, up to the target.
        original = {r.record.seq: r for r in iter_log(store)}
        for logged in iter_log(copy):
            twin = original.get(logged.record.seq)
            if twin is not None:
                assert (logged.record, logged.chain) == (twin.record, twin.chain)

        state = state_at(store, until_seq=target)
        assert values_of(store, state) == expected
        assert state == full_replay_state(store, root / "plain", target)

        # The copy is a normal store: new writes continue its chain.
        with Engine.open(copy) as engine:
            assert engine.last_seq == kept
            seq = engine.set("after", b"replay")
        assert seq == kept + 1
        report = verify(copy)
        assert report.ok, report.problems
        assert json.loads((copy / PROVENANCE_FILE).read_text())["last_seq"] == kept

        if model.floor == 0 and model.records:  # a time target, from a record's time
            records = list(iter_log(store))
            moment = data.draw(st.sampled_from([r.record.timestamp_us for r in records]))
            prefix = 0
            for logged in records:
                if logged.record.timestamp_us > moment:
                    break
                prefix = logged.record.seq
            at_time = root / "at-time"
            done = replay_store(store, at_time, until_us=moment)
            assert done.last_seq == model.effective(prefix)
            assert read_store(at_time) == model.state(model.effective(prefix))
            assert values_of(store, state_at(store, until_us=moment)) == model.state(
                model.effective(prefix)
            )


@pytest.mark.slow
def test_checkpoints_are_written_by_archiving_compactions(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with checkpoint_every(10), Engine.open(store, segment_size=4096) as engine:
        for i in range(95):
            engine.set(f"k{i % 7}", str(i).encode())
        result = engine.compact(retention="archive")
        assert any("checkpoint" in note for note in result.notes)
        found = [c.seq for c in checkpoints_of(store)]
        assert found == list(range(10, 95, 10))
        for i in range(95, 130):
            engine.set(f"k{i % 7}", str(i).encode())
        engine.compact(retention="archive")
        assert [c.seq for c in checkpoints_of(store)] == list(range(10, 131, 10))
    for seq in range(0, 131):
        assert state_at(store, until_seq=seq) == full_replay_state(store, tmp_path / "p", seq)


def archived_store(store: Path, records: int, keys: int) -> Path:
    """A store of ``records`` writes to ``keys`` keys, archived with a checkpoint every 10."""
    with checkpoint_every(10), Engine.open(store, segment_size=4096) as engine:
        for i in range(records):
            engine.set(f"k{i % keys}", str(i).encode())
        engine.compact(retention="archive")
    return store


def test_checkpoint_retention_keeps_the_newest_and_the_young(tmp_path: Path) -> None:
    store = archived_store(tmp_path / "store", 100, 7)
    assert len(checkpoints_of(store)) == 10
    assert prune_checkpoints(store, CheckpointPolicy(keep=None, keep_for_s=3600.0)) == 0
    assert prune_checkpoints(store, CheckpointPolicy(keep=3), now_us=2**62) == 7
    assert [c.seq for c in checkpoints_of(store)] == [80, 90, 100]
    assert values_of(store, state_at(store, until_seq=25)) == values_of(
        store, full_replay_state(store, tmp_path / "p", 25)
    )
    assert prune_checkpoints(store, CheckpointPolicy(keep=0, keep_for_s=1.0), now_us=2**62) == 2
    assert [c.seq for c in checkpoints_of(store)] == [100]  # the next compaction folds from it
    with pytest.raises(ValueError, match="negative"):
        CheckpointPolicy(every=-1)


def test_streamed_values_through_checkpoints_and_replayed_copies(tmp_path: Path) -> None:
    """A streamed set is a set in a checkpoint and in ``state_at``'s fold, and a replayed copy
    carries exactly the value files its records name: none before the streamed set, the
    overwritten one's and the live one's after, none committed after the target."""
    store = tmp_path / "store"
    big = bytes(range(256)) * 12
    with checkpoint_every(5), Engine.open(store, segment_size=4096) as engine:
        for i in range(6):
            engine.set(f"k{i}", b"small")  # 1..6
        first = engine.set_stream("s", [big[:1000], big[1000:]], "application/octet-stream")
        engine.set("k0", b"after")  # 8
        second = engine.set_stream("t", [big[::-1]])  # 9
        engine.set_stream("s", [b"again"])  # 10: the first stream is dead from here
        for i in range(6):
            engine.set(f"m{i}", b"x")  # 11..16
        engine.compact(retention="archive")
        late = engine.set_stream("u", [b"late"])  # 17, after the checkpoints
    checkpoints = [c.seq for c in checkpoints_of(store)]
    assert checkpoints and first < checkpoints[-1]  # the streamed sets went through one

    state = state_at(store, until_seq=9)
    assert state["s"].streamed is not None and state["s"].seq == first
    assert values_of(store, state) == values_of(store, full_replay_state(store, tmp_path / "p", 9))
    assert value_of(store, state["s"]) == big and value_of(store, state["t"]) == big[::-1]
    through = state_at(store, until_seq=16)  # from the checkpoint at 15, which holds them
    assert value_of(store, through["s"]) == b"again"
    assert value_of(store, through["t"]) == big[::-1]

    before = replay_store(store, tmp_path / "before", until_seq=first - 1)
    assert not (before.target / "values").exists()
    assert read_store(before.target) == {f"k{i}": b"small" for i in range(6)}

    after = replay_store(store, tmp_path / "after", until_seq=second)
    assert sorted(p.name for p in (after.target / "values").iterdir()) == [
        f"{first:08d}.val",
        f"{second:08d}.val",
    ]
    assert read_store(after.target)["s"] == big
    assert verify(after.target).value_files == 2

    whole = replay_store(store, tmp_path / "whole", until_seq=late)
    assert f"values/{late:08d}.val" in whole.files
    report = verify(whole.target)
    assert report.ok and report.value_files == 4, report.problems


def test_a_damaged_checkpoint_is_not_used(tmp_path: Path) -> None:
    store = archived_store(tmp_path / "store", 60, 5)
    path = checkpoints_of(store)[-1].path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    for seq in (45, 55, 60):
        assert state_at(store, until_seq=seq) == full_replay_state(store, tmp_path / "p", seq)


@pytest.mark.slow
def test_the_replay_command_keeps_the_chain_and_refuses_the_end(tmp_path: Path) -> None:
    store = archived_store(tmp_path / "store", 30, 4)
    (store / "META.json").write_text(
        json.dumps({"format": "logkv-key-value-store", "version": 1, "id": "abcdefghijklmnopq",
                    "name": "store", "alias": None, "kind": "named", "created_at": 1.0,
                    "accessed_at": 1.0, "modified_at": 1.0, "storage": "key_value_store"})
    )  # fmt: skip
    assert store_figures(store).archive_segments == len(list_segments(store / "archive"))

    def logkv(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return run_command(*args, text=True, timeout=300)

    done = logkv("replay", store, "--until", "17", "--to", tmp_path / "copy", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["last_seq"] == 17
    assert answer["last_chain"] == chain_at(store, 17).hex()
    meta = json.loads((tmp_path / "copy" / "META.json").read_text())
    assert meta["id"] != "abcdefghijklmnopq" and meta["name"] == "copy"
    provenance = read_provenance(tmp_path / "copy")
    assert provenance is not None and provenance["source"]["store_id"] == "abcdefghijklmnopq"

    past = logkv("replay", store, "--until", "31", "--to", tmp_path / "past")
    assert past.returncode == 2
    assert "after the end" in past.stderr and "last sequence number is 30" in past.stderr
    assert "Traceback" not in past.stderr
    assert not (tmp_path / "past").exists()


def test_state_at_checks_every_record_a_checkpoint_points_to(tmp_path: Path) -> None:
    """The records a checkpoint names are read a run at a time; a flipped byte in any of them
    (header, key or value) is damage, never a wrong answer."""
    store = archived_store(tmp_path / "store", 100, 7)
    [checkpoint] = [c for c in checkpoints_of(store) if c.seq == 50]
    _, entries = load_checkpoint(checkpoint.path)
    expected = values_of(store, full_replay_state(store, tmp_path / "p", 50))
    assert values_of(store, state_at(store, until_seq=50)) == expected
    ordered = sorted(entries.values(), key=lambda e: (e[0], e[1]))
    for n, entry in enumerate([ordered[0], ordered[len(ordered) // 2], ordered[-1]]):
        length = entry[2] + max(entry[3], 0)
        for where in (3, entry[2] - 1, length - 1):  # the header, the key's end, the value
            copy = tmp_path / f"copy-{n}-{where}"
            shutil.copytree(store, copy)
            [segment] = copy.rglob(f"{entry[0]:08d}.seg")
            data = bytearray(segment.read_bytes())
            data[entry[1] + where] ^= 0x01
            segment.write_bytes(bytes(data))
            with pytest.raises(CorruptionError):
                state_at(copy, until_seq=50)
            shutil.rmtree(copy)
