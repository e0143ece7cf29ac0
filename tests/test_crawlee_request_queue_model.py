"""The request queue against a model: a list of pending unique keys in fetch order, the set in
progress and the set handled. After every step the counts, is_empty/is_finished and
get_request agree with the model; every fetch returns the model's next request. Reopening (close
and open) puts every request in progress back at its place."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from crawlee import Request
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from logkv import Configuration
from logkv.crawlee import LogKvRequestQueueClient
from logkv.crawlee._request_records import (
    HashCollisionError,
    handled_record,
    pending_record,
    record_order,
    request_of_record,
    with_order,
)

UNIQUE_KEYS = st.sampled_from([f"k{n}" for n in range(8)])


def url(unique_key: str) -> str:
    return f"https://a.invalid/{unique_key}"


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="logkv-rq-model-"))
        self.loop = asyncio.new_event_loop()
        self.settings = Configuration(auto_compact=False)
        self.queue = self.run(self.open())
        self.pending: list[str] = []  # fetch order, in progress included
        self.fetched: dict[str, Request] = {}  # in progress
        self.handled: set[str] = set()
        self.retries: dict[str, int] = {}

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    async def open(self) -> LogKvRequestQueueClient:
        return await LogKvRequestQueueClient.open(
            id=None, name="q", alias=None, storage_dir=str(self.root), settings=self.settings
        )

    def teardown(self) -> None:
        self.run(self.queue.close())
        self.loop.close()
        shutil.rmtree(self.root, ignore_errors=True)

    @rule(unique_key=UNIQUE_KEYS, forefront=st.booleans())
    def add(self, unique_key: str, forefront: bool) -> None:
        request = Request.from_url(url(unique_key), unique_key=unique_key)
        response = self.run(self.queue.add_batch_of_requests([request], forefront=forefront))
        (processed,) = response.processed_requests
        present = unique_key in self.handled or unique_key in self.pending
        assert processed.was_already_present == present
        assert processed.was_already_handled == (unique_key in self.handled)
        if not present:
            self.pending.insert(0, unique_key) if forefront else self.pending.append(unique_key)
        elif forefront and unique_key in self.pending and unique_key not in self.fetched:
            self.pending.remove(unique_key)
            self.pending.insert(0, unique_key)

    @rule()
    def fetch(self) -> None:
        request = self.run(self.queue.fetch_next_request())
        waiting = [key for key in self.pending if key not in self.fetched]
        if not waiting:
            assert request is None
            return
        assert request is not None and request.unique_key == waiting[0]
        assert request.retry_count == self.retries.get(request.unique_key, 0)
        self.fetched[request.unique_key] = request

    @precondition(lambda self: self.fetched)
    @rule(data=st.data(), forefront=st.booleans())
    def reclaim(self, data: st.DataObject, forefront: bool) -> None:
        unique_key = data.draw(st.sampled_from(sorted(self.fetched)))
        request = self.fetched.pop(unique_key)
        request.retry_count += 1
        self.retries[unique_key] = request.retry_count
        assert self.run(self.queue.reclaim_request(request, forefront=forefront)) is not None
        self.pending.remove(unique_key)
        self.pending.insert(0, unique_key) if forefront else self.pending.append(unique_key)

    @precondition(lambda self: self.fetched)
    @rule(data=st.data())
    def handle(self, data: st.DataObject) -> None:
        unique_key = data.draw(st.sampled_from(sorted(self.fetched)))
        request = self.fetched.pop(unique_key)
        assert self.run(self.queue.mark_request_as_handled(request)) is not None
        self.pending.remove(unique_key)
        self.handled.add(unique_key)

    @rule(unique_key=UNIQUE_KEYS)
    def handle_what_is_not_in_progress(self, unique_key: str) -> None:
        if unique_key not in self.fetched:
            request = Request.from_url(url(unique_key), unique_key=unique_key)
            assert self.run(self.queue.mark_request_as_handled(request)) is None
            assert self.run(self.queue.reclaim_request(request)) is None

    @rule()
    def reopen(self) -> None:
        self.run(self.queue.close())
        self.queue = self.run(self.open())
        self.fetched.clear()

    @rule()
    def purge(self) -> None:
        self.run(self.queue.purge())
        self.pending.clear()
        self.fetched.clear()
        self.handled.clear()
        self.retries.clear()

    @invariant()
    def counts_and_requests_agree(self) -> None:
        meta = self.run(self.queue.get_metadata())
        total = len(self.pending) + len(self.handled)
        assert (meta.pending_request_count, meta.total_request_count) == (len(self.pending), total)
        assert meta.handled_request_count == len(self.handled)
        assert self.run(self.queue.is_empty()) == (len(self.pending) == len(self.fetched))
        assert self.run(self.queue.is_finished()) == (not self.pending)
        for number in range(8):
            unique_key = f"k{number}"
            found = self.run(self.queue.get_request(unique_key))
            if unique_key in self.handled:
                assert found is not None and found.handled_at is not None
            elif unique_key in self.pending:
                assert found is not None and found.handled_at is None
                assert found.retry_count == self.retries.get(unique_key, 0)
            else:
                assert found is None


QueueMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_the_queue_follows_the_model = pytest.mark.slow(QueueMachine.TestCase)


@settings(max_examples=200, deadline=None)
@given(
    unique_key=st.text(min_size=1, max_size=40),
    other=st.text(min_size=1, max_size=40),
    order=st.integers(0, 2**64 - 1),
)
def test_a_record_is_read_back_the_same_by_its_first_bytes_or_by_parsing(
    unique_key: str, other: str, order: int
) -> None:
    request = Request.from_url("https://a.invalid/x", unique_key=unique_key)
    pending, handled = pending_record(request, order), handled_record(request)
    assert record_order(pending, unique_key, "k") == order
    assert record_order(handled, unique_key, "k") is None
    # The same records written otherwise (keys reordered) are parsed instead.
    assert record_order(json.dumps(json.loads(pending)).encode(), unique_key, "k") == order
    assert request_of_record(with_order(pending, 7), "k").unique_key == unique_key
    assert record_order(with_order(pending, 7), unique_key, "k") == 7
    if other != unique_key:
        for record in (pending, handled):
            with pytest.raises(HashCollisionError):
                record_order(record, other, "k")
