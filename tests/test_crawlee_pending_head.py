"""The in-memory head of a request queue's pending keys always gives what listing the engine's
pending keys gives: a state machine of writes, deletes, fetches and resets against the engine
itself, with a head small enough to be reloaded, trimmed and completed often."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from logkv import Engine
from logkv.crawlee import _pending_head
from logkv.crawlee._pending_head import PendingHead
from logkv.crawlee._request_records import hash_of_pending
from logkv.storage_layout import pending_key, request_key

ORDERS = st.integers(min_value=0, max_value=40)
HASHES = st.sampled_from([f"{n:032x}" for n in range(12)])


class HeadMachine(RuleBasedStateMachine):
    """Pending keys written and deleted in batches, as the queue writes them (one pending key
    per request hash at a time)."""

    def __init__(self) -> None:
        super().__init__()
        self._folder = tempfile.TemporaryDirectory()
        self.engine = Engine.open(Path(self._folder.name))
        self.head = PendingHead()
        self.in_progress: set[str] = set()
        self.size = _pending_head.HEAD_SIZE
        _pending_head.HEAD_SIZE = 3  # type: ignore[misc]

    def teardown(self) -> None:
        _pending_head.HEAD_SIZE = self.size  # type: ignore[misc]
        self.engine.close()
        self._folder.cleanup()

    def pending(self) -> list[str]:
        return [key for key in self.engine.keys("p/") if key.startswith("p/")]

    @rule(orders=st.lists(st.tuples(ORDERS, HASHES), max_size=3), data=st.data())
    def batch(self, orders: list[tuple[int, str]], data: st.DataObject) -> None:
        present = self.pending()
        taken = {hash_of_pending(key) for key in present}
        new = {hashed: order for order, hashed in orders if hashed not in taken}  # one key each
        items: list[tuple[str, bytes | None, str | None]] = [
            (pending_key(order, hashed), b"", None) for hashed, order in new.items()
        ]
        items += [(request_key(hashed), b"{}", None) for hashed in new]
        deletes = data.draw(st.lists(st.sampled_from(present), max_size=2)) if present else []
        self.engine.set_many(items, deletes)
        self.head.written(items, deletes)
        self.in_progress -= {hash_of_pending(key) for key in deletes}

    @rule()
    def fetch(self) -> None:
        expected = next(
            (key for key in self.pending() if hash_of_pending(key) not in self.in_progress), None
        )
        key = self.head.first_free(self.engine, self.in_progress, len(self.in_progress))
        assert key == expected
        if key is not None:
            self.in_progress.add(hash_of_pending(key))

    @precondition(lambda self: self.in_progress)
    @rule(data=st.data())
    def give_back(self, data: st.DataObject) -> None:
        self.in_progress.discard(data.draw(st.sampled_from(sorted(self.in_progress))))

    @rule()
    def reset(self) -> None:
        self.head.reset()

    @invariant()
    def bounded(self) -> None:
        assert len(self.head._keys) <= self.head._limit


HeadMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_the_head_gives_what_the_engine_lists = pytest.mark.slow(HeadMachine.TestCase)
