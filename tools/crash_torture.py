"""Crash torture: SIGKILL a writing process many times; check that no acknowledged write is lost.

Usage::

    python -m tools.crash_torture --rounds 50 --store DIR --seed 1 [--durability process|fsync]

Each round starts a child process (this module in ``child`` mode) that opens the store with
:class:`logkv.Engine` and writes random sets, overwrites and deletes of a small key space, with
values of 0 bytes to 64 KiB and sometimes a stored ``None``. Around every call the child prints
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
import hashlib
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
from typing import IO, Any, NamedTuple

from logkv import CorruptionError, Durability, Engine
from logkv.format import (
    SEGMENT_HEADER_SIZE,
    BadFrame,
    Op,
    check_segment_header,
    encode_record,
    iter_frames,
)
from logkv.layout import list_segments

#: The torture's default segment size: small, so that the log rotates every few hundred writes.
DEFAULT_SEGMENT_SIZE = 256 * 1024
#: How many distinct keys the child writes; small, so most sets overwrite a key.
KEY_SPACE = 120
#: Largest value the child writes.
MAX_VALUE_SIZE = 64 * 1024
_CONTENT_TYPES = (None, "application/json", "text/html; charset=utf-8", "application/octet-stream")
_REPO_ROOT = Path(__file__).resolve().parent.parent


class Value(NamedTuple):
    """What a key holds, as the checker compares it: ``sha256`` is None for a stored None."""

    size: int
    sha256: str | None
    content_type: str | None


#: The state of one key: a :class:`Value`, or None when the key is absent.
State = Value | None


def describe(state: State) -> str:
    """A short human description of a key's state."""
    if state is None:
        return "absent"
    if state.sha256 is None:
        return f"None ({state.content_type})"
    return f"{state.size} bytes sha256={state.sha256[:12]} ({state.content_type})"


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

    Prints ``{"t": "intent", ...}`` before each call and ``{"t": "ack"}`` after it returned,
    each line flushed at once. Now and then (``compact_rate`` per operation) it compacts the
    store between ``{"t": "compacting"}`` and ``{"t": "compacted"}`` lines, deleting or
    archiving the covered segments. Runs until it is killed.
    """
    rng = random.Random(seed)
    out = sys.stdout

    def say(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    engine = Engine.open(store, durability=durability, segment_size=segment_size)
    say({"t": "ready", "pid": os.getpid()})
    while True:
        if rng.random() < compact_rate:
            say({"t": "compacting"})
            engine.compact(retention="archive" if rng.random() < 0.2 else "delete")
            say({"t": "compacted"})
        key = _key(rng.randrange(KEY_SPACE))
        if rng.random() < 0.15:
            say({"t": "intent", "op": "del", "key": key})
            engine.delete(key)
        else:
            content_type = rng.choice(_CONTENT_TYPES)
            value = _value(rng)
            digest = None if value is None else hashlib.sha256(value).hexdigest()
            size = 0 if value is None else len(value)
            say(
                {
                    "t": "intent",
                    "op": "set",
                    "key": key,
                    "size": size,
                    "sha": digest,
                    "ct": content_type,
                }
            )
            engine.set(key, value, content_type)
        if rng.random() < 0.01:
            # Written but not yet acknowledged: a kill here leaves a whole record nobody was
            # told about, which the parent may then cut short (see tear_unacknowledged_tail).
            time.sleep(rng.uniform(0.0, 0.01))
        say({"t": "ack", "seq": engine.last_seq})


# ---------------------------------------------------------------------------------- parent side


@dataclass
class Summary:
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

    @property
    def ok(self) -> bool:
        """True when nothing acknowledged was lost or wrong and every child behaved."""
        return not self.problems


@dataclass
class Outcome:
    """The messages one child sent before it died."""

    acked: list[tuple[str, State]]
    inflight: tuple[str, State] | None
    ready: bool
    compactions: int = 0
    killed_compacting: bool = False
    last_acked_seq: int = 0


def read_state(engine: Engine) -> dict[str, Value]:
    """Every key of an open store and the :class:`Value` it holds."""
    state: dict[str, Value] = {}
    for key in engine.keys(exclusive_start_key=None):
        found = engine.get_with_type(key)
        if found is None:
            continue
        value, content_type = found
        if value is None:
            state[key] = Value(0, None, content_type)
        else:
            state[key] = Value(len(value), hashlib.sha256(value).hexdigest(), content_type)
    return state


def parse_messages(lines: Sequence[bytes]) -> Outcome:
    """Pair intent and ack lines into acknowledged operations and the one left in flight.

    A final line without its newline was cut by the kill; it acknowledges nothing.
    """
    acked: list[tuple[str, State]] = []
    pending: tuple[str, State] | None = None
    ready = compacting = False
    compactions = last_acked_seq = 0
    for raw in lines:
        if not raw.endswith(b"\n"):
            break
        message = json.loads(raw)
        kind = message["t"]
        if kind == "ready":
            ready = True
        elif kind == "compacting":
            compacting = True
        elif kind == "compacted":
            compacting = False
            compactions += 1
        elif kind == "intent":
            if message["op"] == "del":
                pending = (message["key"], None)
            else:
                new = Value(message["size"], message["sha"], message["ct"])
                pending = (message["key"], new)
        elif kind == "ack":
            if pending is None:
                raise ValueError("the child acknowledged an operation it never announced")
            acked.append(pending)
            pending = None
            last_acked_seq = max(last_acked_seq, message.get("seq", 0))
    return Outcome(acked, pending, ready, compactions, compacting, last_acked_seq)


def check_store(
    actual: dict[str, Value],
    model: dict[str, Value],
    inflight: tuple[str, State] | None,
    summary: Summary,
    where: str,
) -> None:
    """Compare the store's state with the model, resolving the in-flight operation.

    Records every discrepancy in ``summary.problems``; afterwards ``model`` equals the state of
    the store for the in-flight key, so the next round starts from a known state.
    """
    inflight_key = inflight[0] if inflight is not None else None
    for key in sorted(set(actual) | set(model)):
        if key == inflight_key:
            continue
        have, want = actual.get(key), model.get(key)
        if have != want:
            summary.problems.append(
                f"{where}: key {key!r} should be {describe(want)}, found {describe(have)}"
            )
    if inflight is None:
        return
    key, new = inflight
    old, have = model.get(key), actual.get(key)
    if have == new and have == old:
        summary.inflight_same += 1
    elif have == new:
        summary.inflight_new += 1
    elif have == old:
        summary.inflight_old += 1
    else:
        summary.problems.append(
            f"{where}: key {key!r} (write in flight at the kill) should be {describe(old)} or "
            f"{describe(new)}, found {describe(have)}"
        )
    if have is None:
        model.pop(key, None)
    else:
        model[key] = have


class _Pump(threading.Thread):
    """Collects the child's lines; signals "ready" and "enough acks" as they arrive."""

    def __init__(self, stream: IO[bytes], kill_after_acks: int) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[bytes] = []
        self.ready = threading.Event()
        self.enough = threading.Event()
        self.kill_after_acks = kill_after_acks

    def run(self) -> None:
        acks = 0
        for raw in self.stream:
            self.lines.append(raw)
            if raw.startswith(b'{"t": "ack"'):
                acks += 1
                if acks >= self.kill_after_acks:
                    self.enough.set()
            elif raw.startswith(b'{"t": "ready"'):
                self.ready.set()
        # End of output: nobody may wait for these any longer.
        self.ready.set()
        self.enough.set()


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
) -> Outcome:
    """Start a child, kill it with SIGKILL at a random moment, return what it acknowledged.

    Usually the kill comes once the child has acknowledged a random number of writes (up to
    ``max_acks``) or has written for ``run_window`` seconds, whichever is first; the child keeps
    writing while the signal is on its way, so the kill lands anywhere in a later write. One
    round in ten kills the child at a random moment of its start instead (import, replay,
    torn-tail truncation).
    """
    command = [
        sys.executable, "-m", "tools.crash_torture", "child",
        "--store", str(store), "--seed", str(rng.getrandbits(32)),
        "--durability", durability, "--segment-size", str(segment_size),
        "--compact-rate", str(compact_rate),
    ]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    early = rng.random() < 0.1
    early_delay = rng.uniform(0.0, 0.3)
    kill_after_acks = rng.randint(0, max_acks)
    jitter = rng.uniform(0.0, 0.005)
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, env=env)
        assert child.stdout is not None
        reader = _Pump(child.stdout, kill_after_acks)
        reader.start()
        if early:
            summary.early_kills += 1
            time.sleep(early_delay)
        else:
            reader.ready.wait(timeout=120)
            reader.enough.wait(timeout=run_window)
            time.sleep(jitter)  # so the kill does not always land right after an ack
        exited_by_itself = child.poll() is not None
        if not exited_by_itself:
            child.send_signal(signal.SIGKILL)
        code = child.wait()
        reader.join()
        child.stdout.close()
        if exited_by_itself or code != -signal.SIGKILL:
            errors.seek(0)
            tail = errors.read().decode("utf-8", "replace")[-2000:]
            summary.problems.append(
                f"{where}: the child exited with code {code} before the kill:\n{tail}"
            )
        else:
            summary.kills += 1
    return parse_messages(reader.lines)


def _inject_loss(store: Path, model: dict[str, Value], inflight_key: str | None) -> str:
    """Test the checker: make the store disagree with an acknowledged write."""
    with Engine.open(store) as engine:
        for key in sorted(model):
            if key != inflight_key:
                engine.delete(key)
                return f"deleted acknowledged key {key!r}"
        engine.set("never-written", b"phantom")
        return "wrote a key the child never wrote"


def tear_unacknowledged_tail(store: Path, acked_seq: int, rng: random.Random) -> int:
    """Cut the newest record short, as a crash half-way through its write would, if it was
    never acknowledged (its seq is above ``acked_seq``); return the bytes cut (0: none).

    A ``SIGKILL`` rarely lands inside the ``pwrite`` itself, so this makes torn tails of every
    shape common: cut anywhere from the frame's second byte to its last.
    """
    segments = list_segments(store)
    if not segments:
        return 0
    path = segments[-1][1]
    data = path.read_bytes()
    if check_segment_header(data[:SEGMENT_HEADER_SIZE], segments[-1][0]) is not None:
        return 0
    newest: tuple[int, int, int] | None = None
    try:
        for offset, length, fields in iter_frames(data, SEGMENT_HEADER_SIZE, len(data)):
            newest = (offset, length, fields[0])
    except BadFrame:
        return 0  # already torn by the kill
    if newest is None or newest[2] <= acked_seq:
        return 0
    offset, length, _ = newest
    cut = rng.randint(offset + 1, offset + length - 1)
    os.truncate(path, cut)
    return offset + length - cut


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
        model = read_state(engine)  # a store that already holds data is fine
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
        for key, state in outcome.acked:
            if state is None:
                model.pop(key, None)
            else:
                model[key] = state
        inflight_key = outcome.inflight[0] if outcome.inflight else None
        if inject_loss and number == rounds:
            note = _inject_loss(store, model, inflight_key)
            if progress is not None:
                print(f"{where}: injected a loss: {note}", file=progress)
        try:
            engine = Engine.open(store, segment_size=segment_size)
        except CorruptionError as exc:
            summary.problems.append(f"{where}: the store no longer opens: {exc}")
            break
        with engine:
            torn = engine.report.torn_tail
            check_store(read_state(engine), model, outcome.inflight, summary, where)
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
    summary.keys, summary.segments, summary.log_bytes = stats.keys, stats.segments, stats.log_bytes
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
    if summary.ok:
        lines.append("  OK: no acknowledged write was lost")
    else:
        lines.append(f"  FAILED: {len(summary.problems)} problem(s):")
        lines.extend(f"    {problem}" for problem in summary.problems[:50])
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.crash_torture",
        description="SIGKILL a logkv writer many times and check that no acknowledged write "
        "was lost.",
    )
    parser.add_argument("--rounds", type=int, default=20, help="kills to perform (default 20)")
    parser.add_argument(
        "--store", type=Path, help="store folder (default: a temporary folder, removed after)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--durability", choices=[d.value for d in Durability], default=Durability.PROCESS.value
    )
    parser.add_argument(
        "--segment-size", type=int, default=DEFAULT_SEGMENT_SIZE, help="bytes per segment"
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
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--verbose", action="store_true", help="print a line per round")
    return parser


def _child_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.crash_torture child")
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--durability", choices=[d.value for d in Durability], required=True)
    parser.add_argument("--segment-size", type=int, required=True)
    parser.add_argument("--compact-rate", type=float, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (1 when a write was lost)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["child"]:
        child = _child_parser().parse_args(args_list[1:])
        return run_child(
            child.store, child.seed, child.durability, child.segment_size, child.compact_rate
        )
    args = _parser().parse_args(args_list)
    if args.rounds < 0:
        raise SystemExit("--rounds must be >= 0")
    temporary = args.store is None
    store = Path(tempfile.mkdtemp(prefix="logkv-torture-")) if temporary else args.store
    try:
        summary = torture(
            store.resolve(),
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
    finally:
        if temporary:
            shutil.rmtree(store, ignore_errors=True)
    if args.json:
        print(json.dumps({**asdict(summary), "ok": summary.ok, "durability": args.durability}))
    else:
        print(format_summary(summary, args.durability))
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
