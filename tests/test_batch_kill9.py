"""Real SIGKILLs of a child writing batches: no acknowledged batch is lost, none is partial.

The child (this module run with ``python -m``) writes batch after batch with
``Engine.set_many``: batch ``n`` sets ``batch/n/0 .. batch/n/k-1`` and the key ``last`` to
``n``, so a partly applied batch shows at once. Each batch is announced, written and
acknowledged (:mod:`logkv.killcheck`); the parent kills the child at a random moment, then
checks the store and starts the next child on it.

Where a kill lands depends on the machine's load, so every third child is told to stop after
writing one batch and before acknowledging it: the parent kills it there, and a written but
unacknowledged batch is met whatever the timing, cut short by the parent in one such round and
left whole in the next.
"""

from __future__ import annotations

import random
import sys
import threading
from pathlib import Path

import pytest

from logkv import Engine
from logkv.history import iter_log
from logkv.killcheck import ACK, INTENT, READY, Pump, Reporter, read_transcript, run_and_kill
from logkv.verify import verify

SEGMENT_SIZE = 8192  # small, so that batches meet rotations
#: The child's message once it wrote the batch it stops at (see :func:`child`).
WRITTEN = "written"


def _batch_keys(store: Engine) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for key in list(store.keys()):
        if key.startswith("batch/"):
            _, number, _ = key.split("/")
            found.setdefault(int(number), []).append(key)
    return found


def child(store: Path, seed: int, stop_after: int) -> int:
    """Write batches until killed, announcing each one before and acknowledging it after.
    With ``stop_after`` > 0, the child writes that many batches, the last one unacknowledged:
    it says :data:`WRITTEN` instead and waits to be killed."""
    rng = random.Random(seed)
    reporter = Reporter(sys.stdout)
    engine = Engine.open(store, segment_size=SEGMENT_SIZE)
    value = engine.get_with_type("last")
    number = 0 if value is None or value[0] is None else int(value[0]) + 1
    reporter.say(READY)
    while True:
        size = rng.randint(1, 9)
        items: list[tuple[str, bytes | None, str | None]] = [
            (f"batch/{number}/{i}", rng.randbytes(rng.randint(0, 900)), None) for i in range(size)
        ]
        items.append(("last", str(number).encode(), "text/plain"))
        reporter.say(INTENT, batch=number, size=size)
        engine.set_many(items)
        stop_after -= 1
        if stop_after == 0:
            reporter.say(WRITTEN, batch=number)
            threading.Event().wait()  # until the kill
        reporter.say(ACK, batch=number, seq=engine.last_seq)
        number += 1


@pytest.mark.slow
def test_no_acknowledged_batch_is_lost_and_none_is_partial(tmp_path: Path) -> None:
    store = tmp_path / "store"
    rng = random.Random(7)
    acked: dict[int, int] = {}
    for round_ in range(12):
        target = rng.randint(1, 200)
        tear = rng.random() < 0.7
        stops = round_ % 3 == 2  # rounds 2 and 8 cut the written batch, 5 and 11 keep it
        if stops:
            tear = round_ % 6 == 2

        def wait(pump: Pump, target: int = target, stops: bool = stops) -> None:
            assert pump.wait_for(WRITTEN, 1, 30) if stops else pump.wait_for(ACK, target, 30)

        seed = str(rng.randrange(1 << 30))
        run = run_and_kill("test_batch_kill9", [str(store), seed, str(target * stops)], wait)
        assert run.killed, run.failure()
        transcript = read_transcript(run.lines)
        for intent, _ in transcript.acked:
            acked[intent["batch"]] = intent["size"]
        in_flight = transcript.in_flight
        acked_seq = transcript.acked[-1][1]["seq"] if transcript.acked else 0
        torn = in_flight is not None and tear and _tear_batch(store, acked_seq, rng)
        if stops:
            assert in_flight is not None  # written, never acknowledged
            assert torn == tear, round_  # one write, in one segment: it can always be cut
        with Engine.open(store, segment_size=SEGMENT_SIZE) as engine:
            found = _batch_keys(engine)
            for number, size in acked.items():
                assert len(found.get(number, [])) == size, (round_, number)
            extra = set(found) - set(acked)
            if stops:
                assert (in_flight["batch"] in extra) != torn, round_  # whole, or gone when cut
            if in_flight is not None and in_flight["batch"] in extra:
                number = in_flight["batch"]
                assert len(found[number]) == in_flight["size"]  # all of it, or none
                acked[number] = in_flight["size"]
                extra.discard(number)
            assert not extra, extra
            assert engine.get("last") == str(max(acked)).encode()
        assert verify(store).ok


def _tear_batch(store: Path, acked_seq: int, rng: random.Random) -> bool:
    """Cut the unacknowledged batch at the end of the log short at a random byte, as a crash
    half-way through its one write would (a ``SIGKILL`` rarely lands inside the write)."""
    unacked = [logged for logged in iter_log(store) if logged.record.seq > acked_seq]
    if unacked and unacked[0].path == unacked[-1].path:
        start = unacked[0].offset
        end = unacked[-1].offset + unacked[-1].length
        with open(unacked[0].path, "r+b") as file:
            file.truncate(rng.randint(start + 1, end - 1))
        return True
    return False


if __name__ == "__main__":
    sys.exit(child(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
