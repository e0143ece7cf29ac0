"""Crash torture: SIGKILL a writing process many times; check that no acknowledged write is lost.

Usage::

    python -m tools.crash_torture --rounds 50 --store DIR --seed 1 [--durability process|fsync]

Each round starts a child process (this module in ``child`` mode) that opens the store with
:class:`logkv.Engine` and writes random sets, overwrites and deletes of a small key space, with
values of 0 bytes to 192 KiB and sometimes a stored ``None``. Around every call the child prints
one JSON line to stdout, flushed: an *intent* line (what it is about to write) before the call
and an *ack* line after the call returned. The parent kills the child with ``SIGKILL`` at a
random moment (sometimes before it has even finished opening the store), then reopens the store
itself, which is the real recovery path (a torn tail is cut off), and checks:

* every key whose last operation was acknowledged holds exactly that value (content type,
  size and SHA-256 of the bytes), or is absent after an acknowledged delete;
* the key of the one operation in flight at the kill (intent seen, ack not seen) holds either
  its old state or its new state, nothing else; the state found becomes the known state;
* no key exists that was never written.

A small segment size makes the log rotate often, so kills also land around rotations. The run
prints a summary and exits 1 if anything acknowledged was lost or wrong, 0 otherwise.
``--inject-loss`` tests the checker itself: it deletes one acknowledged key behind the child's
back before the last check, so that run must fail.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from logkv import CorruptionError, Durability, Engine
from logkv.format import Op, encode_record
from logkv.history import iter_log
from logkv.killcheck import ACK, READY, Pump, Reporter
from logkv.layout import list_segments
from tools import common

PROG = "python -m tools.crash_torture"
#: The torture's default segment size: small, so that the log rotates every few hundred writes.
DEFAULT_SEGMENT_SIZE = 256 * 1024
#: How many distinct keys the child writes; small, so most sets overwrite a key.
KEY_SPACE = 120
#: Largest value the child writes: past the engine's LARGE_VALUE (64 KiB), so that kills also
#: land in the writes of large values (one ``pwritev`` of the frame's start and the value).
MAX_VALUE_SIZE = 192 * 1024
_CONTENT_TYPES = (None, "application/json", "text/html; charset=utf-8", "application/octet-stream")


# ---------------------------------------------------------------------------------- child side


def _key(index: int) -> str:
    # Mostly ASCII keys, some non-ASCII ones so that UTF-8 keys are exercised too.
    return f"page/{index:04d}" if index % 7 else f"страница/{index:04d}/🕷"


def _value_size(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.05:
        return 0
    if roll < 0.72:
        return rng.randint(1, 256)
    if roll < 0.96:
        return rng.randint(257, 4096)
    return rng.randint(4097, MAX_VALUE_SIZE)


def _value(rng: random.Random) -> bytes | None:
    """A random value: sometimes None, sometimes bytes that hold whole logkv frames.

    A value that embeds valid frames is the hard case for the torn-tail rule: when its own
    frame is cut short by a crash, valid-looking frames follow the cut inside its bytes.
    """
    roll = rng.random()
    if roll < 0.03:
        return None
    if roll < 0.08:  # say, a crawler that stores a copy of a logkv segment
        inner = [
            encode_record(i + 1, 0, Op.SET, f"inner/{i}", None, rng.randbytes(rng.randint(0, 2000)))
            for i in range(rng.randint(1, 8))
        ]
        return rng.randbytes(rng.randint(0, 64)) + b"".join(inner)
    return rng.randbytes(_value_size(rng))


def run_child(
    store: Path, seed: int, durability: str, segment_size: int, compact_rate: float
) -> int:
    """Open ``store`` and write random operations forever, reporting each one on stdout.

    Reports an ``intent`` before each call and an ``ack`` (with the log's last sequence
    number) after it returned (:mod:`logkv.killcheck`). Now and then (``compact_rate`` per
    operation) it compacts the store between ``compacting`` and ``compacted`` messages,
    deleting or archiving the covered segments. Runs until it is killed.
    """
    rng = random.Random(seed)
    reporter = Reporter(sys.stdout)
    engine = Engine.open(store, durability=durability, segment_size=segment_size)
    reporter.say(READY, pid=os.getpid())
    while True:
        if rng.random() < compact_rate:
            reporter.say(common.COMPACTING)
            engine.compact(retention="archive" if rng.random() < 0.2 else "delete")
            reporter.say(common.COMPACTED)
        key = _key(rng.randrange(KEY_SPACE))
        if rng.random() < 0.15:
            common.announce_delete(reporter, key)
            engine.delete(key)
        else:
            content_type = rng.choice(_CONTENT_TYPES)
            value = _value(rng)
            common.announce_set(reporter, key, value, content_type)
            engine.set(key, value, content_type)
        if rng.random() < 0.01:
            # Written but not yet acknowledged: a kill here leaves a whole record nobody was
            # told about, which the parent may then cut short (see tear_unacknowledged_tail).
            time.sleep(rng.uniform(0.0, 0.01))
        reporter.say(ACK, seq=engine.last_seq)


def _run_child(arguments: Sequence[str]) -> int:
    parser = common.child_parser(PROG)
    parser.add_argument("--durability", choices=[d.value for d in Durability], required=True)
    parser.add_argument("--compact-rate", type=float, required=True)
    args = parser.parse_args(arguments)
    return run_child(args.store, args.seed, args.durability, args.segment_size, args.compact_rate)


# ---------------------------------------------------------------------------------- parent side


@dataclass
class Summary(common.Tally):
    """What a torture run did and found."""

    rounds: int = 0
    kills: int = 0
    early_kills: int = 0
    compactions: int = 0
    kills_during_compaction: int = 0
    most_segments: int = 0
    tears: int = 0
    acked_ops: int = 0
    inflight_new: int = 0
    inflight_old: int = 0
    inflight_same: int = 0
    torn_tails: int = 0
    keys: int = 0
    segments: int = 0
    log_bytes: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def count(self, found: common.InFlight | None) -> None:
        """Count what the key of the write in flight at a kill was found to hold."""
        if found is common.InFlight.NEW:
            self.inflight_new += 1
        elif found is common.InFlight.OLD:
            self.inflight_old += 1
        elif found is common.InFlight.SAME:
            self.inflight_same += 1


def run_round(
    store: Path,
    rng: random.Random,
    durability: str,
    segment_size: int,
    run_window: float,
    max_acks: int,
    compact_rate: float,
    summary: Summary,
    where: str,
) -> common.Outcome:
    """Start a child, kill it with SIGKILL at a random moment, return what it acknowledged.

    Usually the kill comes once the child has acknowledged a random number of writes (up to
    ``max_acks``, at least one) or has written for ``run_window`` seconds, whichever is first;
    the child keeps writing while the signal is on its way, so the kill lands anywhere in a
    later write. One round in ten kills the child at a random moment of its start instead
    (import, replay, torn-tail truncation).
    """
    args = [
        "child", "--store", str(store), "--seed", str(rng.getrandbits(32)),
        "--durability", durability, "--segment-size", str(segment_size),
        "--compact-rate", str(compact_rate),
    ]  # fmt: skip
    early = rng.random() < 0.1
    early_delay = rng.uniform(0.0, 0.3)
    kill_after_acks = max(rng.randint(0, max_acks), 1)
    jitter = rng.uniform(0.0, 0.005)

    def until_the_kill(pump: Pump) -> None:
        if early:
            time.sleep(early_delay)
        else:
            pump.wait_for(READY, 1, timeout=120)
            pump.wait_for(ACK, kill_after_acks, timeout=run_window)
            time.sleep(jitter)  # so the kill does not always land right after an ack

    summary.early_kills += early
    return common.kill_round("tools.crash_torture", args, until_the_kill, summary, where)


def _inject_loss(store: Path, state: dict[str, common.Value], inflight_key: str | None) -> str:
    """Test the checker: make the store disagree with an acknowledged write."""
    with Engine.open(store) as engine:
        for key in sorted(state):
            if key != inflight_key:
                engine.delete(key)
                return f"deleted acknowledged key {key!r}"
        engine.set("never-written", b"phantom")
        return "wrote a key the child never wrote"


def tear_unacknowledged_tail(store: Path, acked_seq: int, rng: random.Random) -> int:
    """Cut the newest record short, as a crash half-way through its write would, if it was
    never acknowledged (its seq is above ``acked_seq``); return the bytes cut (0: none).

    A ``SIGKILL`` rarely lands inside the ``pwrite`` itself, so this makes torn tails of every
    shape common: cut anywhere from the frame's second byte to its last. The log is read as
    every other logkv reader reads it: a tail the kill already tore ends it, and the record
    before such a tail was acknowledged, so nothing is cut then.
    """
    segments = list_segments(store)
    try:
        last = deque(iter_log(store), maxlen=1) if segments else ()
    except CorruptionError:
        return 0  # not for the torture to judge: the reopen that follows reports it
    newest = last[0] if last else None
    if newest is None or newest.path != segments[-1][1] or newest.record.seq <= acked_seq:
        return 0
    cut = rng.randint(newest.offset + 1, newest.offset + newest.length - 1)
    os.truncate(newest.path, cut)
    return newest.offset + newest.length - cut


def torture(
    store: Path,
    rounds: int,
    seed: int,
    durability: str = Durability.PROCESS.value,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    run_window: float = 0.25,
    max_acks: int = 1000,
    compact_rate: float = 0.002,
    tear_rate: float = 0.5,
    inject_loss: bool = False,
    progress: IO[str] | None = None,
) -> Summary:
    """Run ``rounds`` kill-and-check rounds on ``store``; return the :class:`Summary`.

    After a kill, with probability ``tear_rate``, the newest record is cut short if it was not
    acknowledged (see :func:`tear_unacknowledged_tail`).
    """
    rng = random.Random(seed)
    summary = Summary()
    started = time.monotonic()
    with Engine.open(store, segment_size=segment_size) as engine:
        state = common.read_state(engine)  # a store that already holds data is fine
        acked_seq = engine.last_seq
    for number in range(1, rounds + 1):
        where = f"round {number}"
        outcome = run_round(
            store, rng, durability, segment_size, run_window, max_acks, compact_rate, summary, where
        )
        summary.rounds += 1
        summary.compactions += outcome.compactions
        summary.kills_during_compaction += outcome.killed_compacting
        summary.acked_ops += len(outcome.acked)
        acked_seq = max(acked_seq, outcome.last_acked_seq)
        if outcome.inflight is not None and rng.random() < tear_rate:
            summary.tears += tear_unacknowledged_tail(store, acked_seq, rng) > 0
        common.apply(state, outcome.acked)
        inflight_key = outcome.inflight[0] if outcome.inflight else None
        if inject_loss and number == rounds:
            note = _inject_loss(store, state, inflight_key)
            if progress is not None:
                print(f"{where}: injected a loss: {note}", file=progress)
        try:
            engine = Engine.open(store, segment_size=segment_size)
        except CorruptionError as exc:
            summary.problems.append(f"{where}: the store no longer opens: {exc}")
            break
        with engine:
            torn = engine.report.torn_tail
            found = common.check_store(
                common.read_state(engine), state, outcome.inflight, summary.problems, where
            )
            summary.count(found)
            summary.most_segments = max(summary.most_segments, engine.stats().segments)
            acked_seq = max(acked_seq, engine.last_seq)
        if torn is not None:
            summary.torn_tails += 1
        if progress is not None:
            print(
                f"{where}: {len(outcome.acked)} acknowledged, in flight: "
                f"{'yes' if outcome.inflight else 'no'}, torn tail: "
                f"{'no' if torn is None else f'{torn.end - torn.start} bytes'}, problems so "
                f"far: {len(summary.problems)}",
                file=progress,
                flush=True,
            )
    try:
        with Engine.open(store, segment_size=segment_size) as engine:
            stats = engine.stats()
    except CorruptionError:
        return summary
    summary.keys, summary.segments, summary.log_bytes = stats.keys, stats.segments, stats.disk_bytes
    summary.seconds = round(time.monotonic() - started, 2)
    return summary


def format_summary(summary: Summary, durability: str) -> str:
    """The human-readable report of a run."""
    lines = [
        f"crash torture ({durability} durability): {summary.rounds} rounds, "
        f"{summary.kills} SIGKILLs ({summary.early_kills} before the child was ready), "
        f"{summary.seconds} s",
        f"  acknowledged operations checked: {summary.acked_ops}",
        f"  write in flight at the kill: found new {summary.inflight_new}, found old "
        f"{summary.inflight_old}, old == new {summary.inflight_same}",
        f"  torn tails cut off on reopen: {summary.torn_tails} ({summary.tears} of them made by "
        "cutting an unacknowledged record short)",
        f"  compactions: {summary.compactions} finished, {summary.kills_during_compaction} "
        "killed part-way",
        f"  store now: {summary.keys} keys, {summary.segments} segments, "
        f"{summary.log_bytes} log bytes (at most {summary.most_segments} segments)",
    ]
    return "\n".join(lines + summary.verdict())


def _parser() -> argparse.ArgumentParser:
    parser = common.parser(
        PROG,
        "SIGKILL a logkv writer many times and check that no acknowledged write was lost.",
        rounds=20,
        segment_size=DEFAULT_SEGMENT_SIZE,
    )
    parser.add_argument(
        "--durability", choices=[d.value for d in Durability], default=Durability.PROCESS.value
    )
    parser.add_argument(
        "--run-window",
        type=float,
        default=0.25,
        help="longest time in seconds a child writes before it is killed (default 0.25)",
    )
    parser.add_argument(
        "--max-acks",
        type=int,
        default=1000,
        help="most acknowledged writes a child makes before it is killed (default 1000)",
    )
    parser.add_argument(
        "--compact-rate",
        type=float,
        default=0.002,
        help="chance per operation that the child compacts the store (default 0.002)",
    )
    parser.add_argument(
        "--tear-rate",
        type=float,
        default=0.5,
        help="chance per kill of also cutting the unacknowledged newest record short, as a "
        "crash inside its write would (default 0.5)",
    )
    parser.add_argument(
        "--inject-loss",
        action="store_true",
        help="test the checker: delete one acknowledged key before the last check (must fail)",
    )
    return parser


def _torture(args: argparse.Namespace, store: Path) -> Summary:
    if args.rounds < 0:
        raise SystemExit("--rounds must be >= 0")
    return torture(
        store,
        args.rounds,
        args.seed,
        durability=args.durability,
        segment_size=args.segment_size,
        run_window=args.run_window,
        max_acks=args.max_acks,
        compact_rate=args.compact_rate,
        tear_rate=args.tear_rate,
        inject_loss=args.inject_loss,
        progress=sys.stderr if args.verbose else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (1 when a write was lost)."""
    return common.main(
        argv,
        _parser(),
        _run_child,
        _torture,
        lambda summary, args: format_summary(summary, args.durability),
        lambda args: {"durability": args.durability},
    )


if __name__ == "__main__":
    sys.exit(main())
