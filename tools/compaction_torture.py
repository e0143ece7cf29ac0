"""Compaction torture: SIGKILL a process in the middle of compactions while another thread writes.

Usage::

    python -m tools.compaction_torture --rounds 8 --records 20000 [--store DIR] [--seed 1]

The parent first fills the store with ``--records`` keys (so that each compaction has real
work to do), then runs rounds. Each round starts a child process (this module in ``child``
mode) that opens the store and runs two threads:

* a writer, which overwrites, deletes and creates keys and reports each operation as an
  *intent* line before the call and an *ack* line after it returned (one JSON line each,
  flushed), exactly as :mod:`tools.crash_torture` does (:mod:`logkv.killcheck`);
* a compactor, which compacts the store again and again (retention delete or archive at
  random) between ``compacting`` and ``compacted`` lines.

The parent kills the child with ``SIGKILL`` at a random moment of a compaction (it learns how
long a compaction takes from the ``compacted`` lines), reopens the store and checks that every
acknowledged write is there (deleted keys stay deleted, the one write in flight is old or new),
that no key is listed twice, that no ``*.tmp`` file survived the open and that at most one
snapshot is left; every other round it compacts the store itself and checks again. The run
prints a summary and exits 1 if anything was lost or wrong, 0 otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from logkv import Engine
from logkv.killcheck import ACK, READY, Pump, Reporter
from logkv.layout import TEMP_SUFFIX, list_snapshots
from tools import common

PROG = "python -m tools.compaction_torture"
#: Segment size of the torture's store: small enough that a compaction covers many segments.
DEFAULT_SEGMENT_SIZE = 256 * 1024
#: Keys the parent writes before the first round.
DEFAULT_RECORDS = 20_000
_CONTENT_TYPES = (None, "application/json", "text/plain")


def _key(index: int) -> str:
    return f"rec/{index:06d}"


# ---------------------------------------------------------------------------------- child side


def run_child(store: Path, seed: int, segment_size: int, records: int) -> int:
    """Open ``store``; write from one thread and compact from another until killed."""
    reporter = Reporter(sys.stdout)
    engine = Engine.open(store, segment_size=segment_size)
    reporter.say(READY, pid=os.getpid())

    def write() -> None:
        rng = random.Random(seed + 1)
        try:
            while True:
                key = _key(rng.randrange(records + records // 10))  # some keys are new
                if rng.random() < 0.2:
                    common.announce_delete(reporter, key)
                    engine.delete(key)
                else:
                    value = rng.randbytes(rng.randint(0, 300))
                    content_type = rng.choice(_CONTENT_TYPES)
                    common.announce_set(reporter, key, value, content_type)
                    engine.set(key, value, content_type)
                reporter.say(ACK)
        except BaseException as exc:  # a writer that stops is a failure the parent must see
            reporter.say("error", error=repr(exc))
            os._exit(3)

    threading.Thread(target=write, daemon=True).start()
    rng = random.Random(seed)
    number = 0
    while True:
        number += 1
        retention = "archive" if rng.random() < 0.3 else "delete"
        reporter.say(common.COMPACTING, n=number, retention=retention)
        started = time.perf_counter()
        result = engine.compact(retention=retention)
        seconds = time.perf_counter() - started
        reporter.say(common.COMPACTED, n=number, seconds=seconds, lock_s=result.longest_lock_hold_s)


def _run_child(arguments: Sequence[str]) -> int:
    parser = common.child_parser(PROG)
    parser.add_argument("--records", type=int, required=True)
    args = parser.parse_args(arguments)
    return run_child(args.store, args.seed, args.segment_size, args.records)


# ---------------------------------------------------------------------------------- parent side


@dataclass
class TortureSummary(common.Tally):
    """What a compaction torture run did and found."""

    rounds: int = 0
    kills: int = 0
    kills_during_compaction: int = 0
    child_compactions: int = 0
    parent_compactions: int = 0
    acked_ops: int = 0
    records: int = 0
    keys: int = 0
    longest_compaction_s: float = 0.0
    longest_lock_hold_s: float = 0.0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def run_round(
    store: Path,
    rng: random.Random,
    segment_size: int,
    records: int,
    estimate: float,
    summary: TortureSummary,
    where: str,
) -> common.Outcome:
    """Start a child, kill it part-way through a compaction; return what it reported."""
    args = [
        "child", "--store", str(store), "--seed", str(rng.getrandbits(32)),
        "--segment-size", str(segment_size), "--records", str(records),
    ]  # fmt: skip

    def until_the_kill(pump: Pump) -> None:
        pump.wait_for(READY, 1, timeout=120)
        pump.wait_for(common.COMPACTING, rng.randint(1, 3), timeout=120)
        time.sleep(rng.uniform(0.0, estimate))  # somewhere inside this compaction (or next)

    return common.kill_round("tools.compaction_torture", args, until_the_kill, summary, where)


def check_open_store(
    engine: Engine, where: str, summary: TortureSummary
) -> dict[str, common.Value]:
    """The checks beyond the model: no temp file left, one snapshot at most, no key twice."""
    leftovers = sorted(p.name for p in engine.path.glob("*" + TEMP_SUFFIX))
    if leftovers:
        summary.problems.append(f"{where}: temp files survived the open: {leftovers}")
    snapshots = list_snapshots(engine.path)
    if len(snapshots) > 1:
        summary.problems.append(f"{where}: {len(snapshots)} snapshots left after the open")
    if engine.report.damaged_snapshots:
        summary.problems.append(f"{where}: damaged snapshots {engine.report.damaged_snapshots}")
    keys = list(engine.keys())
    if any(a >= b for a, b in itertools.pairwise(keys)) or len(keys) != len(engine):
        summary.problems.append(f"{where}: keys are not listed once each, in order")
    return common.read_state(engine)


def fill(store: Path, records: int, segment_size: int, seed: int) -> None:
    """Write ``records`` keys into a new store (a few overwritten, so there is dead data)."""
    rng = random.Random(seed)
    with Engine.open(store, segment_size=segment_size) as engine:
        for i in range(records):
            engine.set(_key(i), rng.randbytes(rng.randint(20, 200)), rng.choice(_CONTENT_TYPES))
        for i in range(0, records, 10):
            engine.set(_key(i), b"overwritten")


def torture(
    store: Path,
    rounds: int,
    seed: int,
    records: int = DEFAULT_RECORDS,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    progress: IO[str] | None = None,
) -> TortureSummary:
    """Run ``rounds`` kill-and-check rounds on ``store``; return the :class:`TortureSummary`."""
    rng = random.Random(seed)
    summary = TortureSummary(records=records)
    problems = summary.problems
    began = time.monotonic()
    if not store.exists():
        fill(store, records, segment_size, seed)
    with Engine.open(store, segment_size=segment_size) as engine:
        state = common.read_state(engine)
    estimate = 0.3
    for number in range(1, rounds + 1):
        where = f"round {number}"
        outcome = run_round(store, rng, segment_size, records, estimate, summary, where)
        durations = [float(m["seconds"]) for m in outcome.compacted]
        if durations:
            estimate = max(durations)
            summary.longest_compaction_s = max(summary.longest_compaction_s, *durations)
            holds = (float(m["lock_s"]) for m in outcome.compacted)
            summary.longest_lock_hold_s = max(summary.longest_lock_hold_s, *holds)
        summary.rounds += 1
        summary.child_compactions += outcome.compactions
        summary.kills_during_compaction += outcome.killed_compacting
        summary.acked_ops += len(outcome.acked)
        common.apply(state, outcome.acked)
        with Engine.open(store, segment_size=segment_size) as engine:
            actual = check_open_store(engine, where, summary)
            common.check_store(actual, state, outcome.inflight, problems, where)
            if number % 2 == 0:  # and a compaction after the crash works
                engine.compact(retention=rng.choice(["delete", "archive"]))
                summary.parent_compactions += 1
                common.check_store(
                    common.read_state(engine), state, None, problems, f"{where} (compacted)"
                )
        with Engine.open(store, segment_size=segment_size, readonly=True) as reader:
            common.check_store(
                common.read_state(reader), state, None, problems, f"{where} (reopened)"
            )
        if progress is not None:
            print(
                f"{where}: {len(outcome.acked)} acknowledged, {outcome.compactions} compactions "
                f"finished, killed {'inside' if outcome.killed_compacting else 'outside'} a "
                f"compaction, problems so far: {len(summary.problems)}",
                file=progress,
                flush=True,
            )
    summary.keys = len(state)
    summary.seconds = round(time.monotonic() - began, 2)
    return summary


def format_summary(summary: TortureSummary) -> str:
    """The human-readable report of a run."""
    lines = [
        f"compaction torture: {summary.rounds} rounds, {summary.kills} SIGKILLs "
        f"({summary.kills_during_compaction} inside a compaction), {summary.seconds} s",
        f"  store: {summary.records} records written first, {summary.keys} keys now",
        f"  acknowledged operations checked: {summary.acked_ops}",
        f"  compactions: {summary.child_compactions} finished by the children, "
        f"{summary.parent_compactions} after a crash by the checker",
        f"  longest compaction {summary.longest_compaction_s:.3f} s, longest lock hold "
        f"{summary.longest_lock_hold_s * 1000:.2f} ms",
    ]
    return "\n".join(lines + summary.verdict())


def _parser() -> argparse.ArgumentParser:
    parser = common.parser(
        PROG,
        "SIGKILL a logkv process in the middle of compactions while it writes, and check that "
        "no acknowledged write was lost.",
        rounds=8,
        segment_size=DEFAULT_SEGMENT_SIZE,
    )
    parser.add_argument(
        "--records",
        type=int,
        default=DEFAULT_RECORDS,
        help=f"keys written before the first round (default {DEFAULT_RECORDS})",
    )
    return parser


def _torture(args: argparse.Namespace, store: Path) -> TortureSummary:
    if args.rounds < 0 or args.records < 1:
        raise SystemExit("--rounds must be >= 0 and --records >= 1")
    return torture(
        store,
        args.rounds,
        args.seed,
        records=args.records,
        segment_size=args.segment_size,
        progress=sys.stderr if args.verbose else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (1 when a write was lost)."""
    return common.main(
        argv, _parser(), _run_child, _torture, lambda summary, _: format_summary(summary)
    )


if __name__ == "__main__":
    sys.exit(main())
