"""``kill -9`` of a process working a logkv request queue: after each kill and a reopen, no
acknowledged add is lost, no acknowledged handled request is pending, every request that was in
progress is pending again at once, the counts agree with the records, and ``logkv verify``
passes.

The child adds, fetches, handles and reclaims at random, announcing each change before the call
and acknowledging it after (:mod:`logkv.killcheck`). It is forked from the test process rather
than started afresh: importing Crawlee takes longer than a round.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path
from typing import IO

import pytest
from crawlee import Request

from logkv import Configuration
from logkv.crawlee import LogKvRequestQueueClient
from logkv.killcheck import ACK, INTENT, READY, Pump, Reporter, read_transcript
from logkv.verify import verify

QUEUE = "crash"


async def _open(storage_dir: Path) -> LogKvRequestQueueClient:
    settings = Configuration(auto_compact=False, segment_size=16384)
    return await LogKvRequestQueueClient.open(
        id=None, name=QUEUE, alias=None, storage_dir=str(storage_dir), settings=settings
    )


def _request(unique_key: str) -> Request:
    return Request.from_url(f"https://a.invalid/{unique_key}", unique_key=unique_key)


async def _child(storage_dir: Path, seed: int, out: IO[str]) -> None:
    rng = random.Random(seed)
    reporter = Reporter(out)
    queue = await _open(storage_dir)
    reporter.say(READY)
    in_progress: dict[str, Request] = {}
    made = 0
    while True:
        roll = rng.random()
        if roll < 0.3 or (not in_progress and await queue.is_empty()):
            keys = [f"{seed}-{made + n}" for n in range(rng.randint(1, 5))]
            made += len(keys)
            forefront = rng.random() < 0.3
            reporter.say(INTENT, op="add", keys=keys)
            await queue.add_batch_of_requests([_request(k) for k in keys], forefront=forefront)
            reporter.say(ACK)
        elif roll < 0.65 or not in_progress:
            reporter.say(INTENT, op="fetch")
            request = await queue.fetch_next_request()
            key = None if request is None else request.unique_key
            if request is not None:
                in_progress[request.unique_key] = request
            reporter.say(ACK, key=key)
        else:
            key = rng.choice(sorted(in_progress))
            request = in_progress.pop(key)
            if roll < 0.85:
                reporter.say(INTENT, op="handle", key=key)
                await queue.mark_request_as_handled(request)
            else:
                request.retry_count += 1
                reporter.say(INTENT, op="reclaim", key=key)
                await queue.reclaim_request(request, forefront=rng.random() < 0.5)
            reporter.say(ACK)


async def _state(storage_dir: Path) -> tuple[dict[str, bool], list[str], tuple[int, int, int]]:
    """Every request (handled or not), what fetching everything now returns (nothing is
    written), and the counts."""
    queue = await _open(storage_dir)
    try:
        handled = {r.unique_key: r.handled_at is not None async for r in queue.iter_requests()}
        fetched = []
        while (request := await queue.fetch_next_request()) is not None:
            fetched.append(request.unique_key)
        meta = await queue.get_metadata()
        counts = (
            meta.pending_request_count,
            meta.handled_request_count,
            meta.total_request_count,
        )
        return handled, fetched, counts
    finally:
        await queue.close()


def _fork_and_kill(storage_dir: Path, seed: int, acks: int) -> list[bytes]:
    """Fork a child running :func:`_child`, kill it once it acknowledged ``acks`` changes;
    the lines it reported."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the test
        try:
            os.close(read_end)
            asyncio.run(_child(storage_dir, seed, os.fdopen(write_end, "w")))
        finally:
            os._exit(1)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stream:
        pump = Pump(stream)
        pump.start()
        try:
            assert pump.wait_for(ACK, acks, 60)
        finally:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            pump.join()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    return pump.lines


@pytest.mark.slow
def test_a_killed_queue_loses_no_acknowledged_change(tmp_path: Path) -> None:
    storage_dir = tmp_path / "storage"
    rng = random.Random(7)
    added: set[str] = set()
    handled: set[str] = set()
    for round_ in range(20):
        lines = _fork_and_kill(storage_dir, round_ * 1000 + rng.randrange(1000), rng.randint(1, 80))
        transcript = read_transcript(lines)
        in_progress: set[str] = set()
        for intent, ack in transcript.acked:
            if intent["op"] == "add":
                added.update(intent["keys"])
            elif intent["op"] == "fetch":
                if ack["key"] is not None:
                    in_progress.add(ack["key"])
            elif intent["op"] == "handle":
                handled.add(intent["key"])
                in_progress.discard(intent["key"])
            else:
                in_progress.discard(intent["key"])
        records, fetched, counts = asyncio.run(_state(storage_dir))
        flight = transcript.in_flight or {}
        if flight.get("op") == "add" and flight["keys"][0] in records:
            added.update(flight["keys"])  # it landed: all of it, checked below
        if flight.get("op") == "handle" and records.get(flight["key"]):
            handled.add(flight["key"])  # it landed
        assert set(records) == added, round_
        assert {key for key, done in records.items() if done} == handled, round_
        assert sorted(fetched) == sorted(added - handled), round_
        assert in_progress - handled <= set(fetched), round_  # pending again at once
        assert counts == (len(fetched), len(handled), len(added)), round_
        assert verify(storage_dir / "request_queues" / QUEUE).ok, round_
