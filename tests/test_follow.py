"""A read-only store's follower (``logkv.storage_clients._follow``) against a model: whatever
the writer does (sets, deletes, new segments, compactions) and however old the folder's time
looks, a read after a follower refresh sees exactly the writer's records; and a folder that did
not change costs no engine refresh.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from logkv import Engine
from logkv.storage_clients._follow import SETTLE_NS, Follower

KEYS = st.sampled_from([f"k{i}" for i in range(8)])


def age(folder: Path) -> None:
    """Make the folder's time look older than the settling time (as after a quiet while)."""
    past = time.time_ns() - 10 * SETTLE_NS
    os.utime(folder, ns=(past, past))


class FollowerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp())
        self.path = self.root / "store"
        self.writer = Engine.open(self.path, segment_size=4096)
        self.reader = Engine.open(self.path, readonly=True)
        self.follower = Follower(self.reader)
        self.model: dict[str, bytes] = {}

    @rule(key=KEYS, size=st.integers(0, 700))
    def set(self, key: str, size: int) -> None:
        value = key.encode() * (size // 2 + 1)
        self.writer.set(key, value)
        self.model[key] = value

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        self.writer.delete(key)
        self.model.pop(key, None)

    @precondition(lambda self: bool(self.model))
    @rule()
    def compact(self) -> None:
        self.writer.compact()

    @rule()
    def quiet_while(self) -> None:
        age(self.path)

    @invariant()
    def reader_sees_the_writer(self) -> None:
        self.follower.refresh()
        seen = {key: self.reader.get(key) for key in self.reader.keys(None)}
        assert seen == self.model

    def teardown(self) -> None:
        self.reader.close()
        self.writer.close()
        shutil.rmtree(self.root, ignore_errors=True)


TestFollower = pytest.mark.slow(FollowerMachine.TestCase)
TestFollower.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_an_unchanged_quiet_folder_costs_no_engine_refresh(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with Engine.open(path) as writer, Engine.open(path, readonly=True) as reader:
        writer.set("k", b"1")
        follower = Follower(reader)
        refreshes = 0
        refresh = reader.refresh

        def counted() -> int:
            nonlocal refreshes
            refreshes += 1
            return refresh()

        reader.refresh = counted  # type: ignore[method-assign]
        follower.refresh()  # the first always refreshes
        assert refreshes == 1
        follower.refresh()  # the folder changed less than SETTLE_NS ago: again
        assert refreshes == 2
        age(path)
        follower.refresh()  # the fingerprint now holds the aged time
        before = refreshes
        for _ in range(100):
            follower.refresh()
        assert refreshes == before
        writer.set("k", b"2")  # an append: the newest segment grew
        follower.refresh()
        assert refreshes == before + 1
        assert reader.get("k") == b"2"
