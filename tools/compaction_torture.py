"""Compaction torture: SIGKILL a process in the middle of compactions while another thread writes.

Usage::

    python -m tools.compaction_torture --rounds 8 --records 20000 [--store DIR] [--seed 1]

The parent first fills the store with ``--records`` keys (so that each compaction has real
work to do), then runs rounds. Each round starts a child process (this module in ``child``
mode) that opens the store and runs two threads:

* a writer, which overwrites, deletes and creates keys and reports each operation as an
  *intent* line before the call and an *ack* line after it returned (one JSON line each,
  flushed), exactly as :mod:`tools.crash_torture` does;
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
import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from logkv import Engine
from logkv.layout import TEMP_SUFFIX, list_snapshots
from tools.crash_torture import Summary as CheckCounters
from tools.crash_torture import Value, check_store, parse_messages, read_state

#: Segment size of the torture's store: small enough that a compaction covers many segments.
DEFAULT_SEGMENT_SIZE = 256 * 1024
#: Keys the parent writes before the first round.
DEFAULT_RECORDS = 20_000
_REPO_ROOT = Path(__file__).resolve().parent.parent
_CONTENT_TYPES = (None, "application/json", "text/plain")


def _key(index: int) -> str:
    return f"rec/{index:06d}"


# ---------------------------------------------------------------------------------- child side


def run_child(store: Path, seed: int, segment_size: int, records: int) -> int:
    """Open ``store``; write from one thread and compact from another until killed."""
    lock = threading.Lock()
    out = sys.stdout

    def say(message: dict[str, Any]) -> None:
        line = json.dumps(message) + "\n"
        with lock:
            out.write(line)
            out.flush()

    engine = Engine.open(store, segment_size=segment_size)
    say({"t": "ready", "pid": os.getpid()})

    def write() -> None:
        rng = random.Random(seed + 1)
        try:
            while True:
                key = _key(rng.randrange(records + records // 10))  # some keys are new
                if rng.random() < 0.2:
                    say({"t": "intent", "op": "del", "key": key})
                    engine.delete(key)
                else:
                    value = rng.randbytes(rng.randint(0, 300))
                    content_type = rng.choice(_CONTENT_TYPES)
                    digest = hashlib.sha256(value).hexdigest()
                    say(
                        {
                            "t": "intent",
                            "op": "set",
                            "key": key,
                            "size": len(value),
                            "sha": digest,
                            "ct": content_type,
                        }
                    )
                    engine.set(key, value, content_type)
                say({"t": "ack"})
        except BaseException as exc:  # a writer that stops is a failure the parent must see
            say({"t": "error", "error": repr(exc)})
            os._exit(3)

    threading.Thread(target=write, daemon=True).start()
    rng = random.Random(seed)
    number = 0
    while True:
        number += 1
        retention = "archive" if rng.random() < 0.3 else "delete"
        say({"t": "compacting", "n": number, "retention": retention})
        started = time.perf_counter()
        result = engine.compact(retention=retention)
        say(
            {
                "t": "compacted",
                "n": number,
                "seconds": time.perf_counter() - started,
                "lock_s": result.longest_lock_hold_s,
            }
        )


# ---------------------------------------------------------------------------------- parent side


@dataclass
class TortureSummary:
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

    @property
    def ok(self) -> bool:
        """True when nothing acknowledged was lost or wrong and every check passed."""
        return not self.problems


class _Pump(threading.Thread):
    """Collects the child's lines; counts compactions started and learns their duration."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[bytes] = []
        self.ready = threading.Event()
        self.started = 0
        self.durations: list[float] = []
        self.lock_holds: list[float] = []
        self.changed = threading.Condition()

    def run(self) -> None:
        for raw in self.stream:
            self.lines.append(raw)
            if raw.startswith(b'{"t": "ready"'):
                self.ready.set()
            elif raw.startswith(b'{"t": "compact'):
                message = json.loads(raw)
                with self.changed:
                    if message["t"] == "compacting":
                        self.started += 1
                    else:
                        self.durations.append(float(message["seconds"]))
                        self.lock_holds.append(float(message["lock_s"]))
                    self.changed.notify_all()
        self.ready.set()
        with self.changed:
            self.started = 1 << 30  # end of output: nobody may wait any longer
            self.changed.notify_all()

    def wait_started(self, count: int, timeout: float) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.started >= count, timeout)


def _child_command(store: Path, seed: int, segment_size: int, records: int) -> list[str]:
    return [
        sys.executable, "-m", "tools.compaction_torture", "child",
        "--store", str(store), "--seed", str(seed),
        "--segment-size", str(segment_size), "--records", str(records),
    ]  # fmt: skip


def run_round(
    store: Path,
    rng: random.Random,
    segment_size: int,
    records: int,
    estimate: float,
    summary: TortureSummary,
    where: str,
) -> tuple[list[bytes], list[float], list[float]]:
    """Start a child, kill it part-way through a compaction; return its lines, the durations
    of the compactions it finished and their longest lock holds."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    command = _child_command(store, rng.getrandbits(32), segment_size, records)
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, env=env)
        assert child.stdout is not None
        pump = _Pump(child.stdout)
        pump.start()
        pump.ready.wait(timeout=120)
        pump.wait_started(rng.randint(1, 3), timeout=120)
        time.sleep(rng.uniform(0.0, estimate))  # somewhere inside this compaction (or next)
        exited_by_itself = child.poll() is not None
        if not exited_by_itself:
            child.send_signal(signal.SIGKILL)
        code = child.wait()
        pump.join()
        child.stdout.close()
        if exited_by_itself or code != -signal.SIGKILL:
            errors.seek(0)
            tail = errors.read().decode("utf-8", "replace")[-2000:]
            summary.problems.append(f"{where}: the child exited with code {code}:\n{tail}")
        else:
            summary.kills += 1
    return pump.lines, pump.durations, pump.lock_holds


def check_open_store(
    engine: Engine, model: dict[str, Value], where: str, summary: TortureSummary
) -> dict[str, Value]:
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
    return read_state(engine)


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
    counters = CheckCounters()
    began = time.monotonic()
    if not store.exists():
        fill(store, records, segment_size, seed)
    with Engine.open(store, segment_size=segment_size) as engine:
        model = read_state(engine)
    estimate = 0.3
    for number in range(1, rounds + 1):
        where = f"round {number}"
        lines, durations, holds = run_round(
            store, rng, segment_size, records, estimate, summary, where
        )
        if durations:
            estimate = max(durations)
            summary.longest_compaction_s = max(summary.longest_compaction_s, *durations)
            summary.longest_lock_hold_s = max(summary.longest_lock_hold_s, *holds)
        outcome = parse_messages(lines)
        summary.rounds += 1
        summary.child_compactions += outcome.compactions
        summary.kills_during_compaction += outcome.killed_compacting
        summary.acked_ops += len(outcome.acked)
        for key, state in outcome.acked:
            if state is None:
                model.pop(key, None)
            else:
                model[key] = state
        with Engine.open(store, segment_size=segment_size) as engine:
            actual = check_open_store(engine, model, where, summary)
            check_store(actual, model, outcome.inflight, counters, where)
            if number % 2 == 0:  # and a compaction after the crash works
                engine.compact(retention=rng.choice(["delete", "archive"]))
                summary.parent_compactions += 1
                check_store(read_state(engine), model, None, counters, f"{where} (compacted)")
        with Engine.open(store, segment_size=segment_size, readonly=True) as reader:
            check_store(read_state(reader), model, None, counters, f"{where} (reopened)")
        summary.problems.extend(counters.problems)
        counters.problems.clear()
        if progress is not None:
            print(
                f"{where}: {len(outcome.acked)} acknowledged, {outcome.compactions} compactions "
                f"finished, killed {'inside' if outcome.killed_compacting else 'outside'} a "
                f"compaction, problems so far: {len(summary.problems)}",
                file=progress,
                flush=True,
            )
    summary.keys = len(model)
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
    if summary.ok:
        lines.append("  OK: no acknowledged write was lost")
    else:
        lines.append(f"  FAILED: {len(summary.problems)} problem(s):")
        lines.extend(f"    {problem}" for problem in summary.problems[:50])
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.compaction_torture",
        description="SIGKILL a logkv process in the middle of compactions while it writes, "
        "and check that no acknowledged write was lost.",
    )
    parser.add_argument("--rounds", type=int, default=8, help="kills to perform (default 8)")
    parser.add_argument(
        "--store", type=Path, help="store folder (default: a temporary folder, removed after)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--records",
        type=int,
        default=DEFAULT_RECORDS,
        help=f"keys written before the first round (default {DEFAULT_RECORDS})",
    )
    parser.add_argument(
        "--segment-size", type=int, default=DEFAULT_SEGMENT_SIZE, help="bytes per segment"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--verbose", action="store_true", help="print a line per round")
    return parser


def _child_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.compaction_torture child")
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--segment-size", type=int, required=True)
    parser.add_argument("--records", type=int, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (1 when a write was lost)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["child"]:
        child = _child_parser().parse_args(args_list[1:])
        return run_child(child.store, child.seed, child.segment_size, child.records)
    args = _parser().parse_args(args_list)
    if args.rounds < 0 or args.records < 1:
        raise SystemExit("--rounds must be >= 0 and --records >= 1")
    temporary = args.store is None
    folder = Path(tempfile.mkdtemp(prefix="logkv-compaction-torture-")) if temporary else None
    store = folder / "store" if folder is not None else args.store
    try:
        summary = torture(
            store.resolve(),
            args.rounds,
            args.seed,
            records=args.records,
            segment_size=args.segment_size,
            progress=sys.stderr if args.verbose else None,
        )
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps({**asdict(summary), "ok": summary.ok}))
    else:
        print(format_summary(summary))
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
