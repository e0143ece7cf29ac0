"""What the torture tools share: the model of acknowledged writes, its check, the command line.

A torture's child writes through :class:`logkv.Engine` and reports each write with
:func:`announce_set` or :func:`announce_delete` (the ``intent`` messages of
:mod:`logkv.killcheck`), then an ``ack``. After the kill, :func:`read_outcome` turns the
child's lines into the writes it acknowledged and the one in flight; the parent folds the
acknowledged ones into its model (:func:`apply`) and compares the reopened store with it
(:func:`check_store`). :func:`main` is the command line both tools share: a ``child``
subcommand, a temporary store unless ``--store`` names one, and a summary as text or JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

from logkv import Engine
from logkv.killcheck import INTENT, READY, Message, Pump, Reporter, read_transcript, run_and_kill

#: The children's own message types: a compaction starts, a compaction finished.
COMPACTING = "compacting"
COMPACTED = "compacted"


class Value(NamedTuple):
    """What a key holds, as the checker compares it: ``sha256`` is None for a stored None."""

    size: int
    sha256: str | None
    content_type: str | None


#: The state of one key: a :class:`Value`, or None when the key is absent.
State = Value | None
#: A write: its key and the state it leaves (None: a delete).
Write = tuple[str, State]


def value_of(value: bytes | None, content_type: str | None) -> Value:
    """The :class:`Value` of a stored value (None: a stored None)."""
    if value is None:
        return Value(0, None, content_type)
    return Value(len(value), hashlib.sha256(value).hexdigest(), content_type)


def describe(state: State) -> str:
    """A short human description of a key's state."""
    if state is None:
        return "absent"
    if state.sha256 is None:
        return f"None ({state.content_type})"
    return f"{state.size} bytes sha256={state.sha256[:12]} ({state.content_type})"


# ---------------------------------------------------------------------------------- child side


def announce_set(reporter: Reporter, key: str, value: bytes | None, ct: str | None) -> None:
    """Report that the child is about to set ``key`` to ``value`` (content type ``ct``)."""
    size, sha, _ = value_of(value, ct)
    reporter.say(INTENT, op="set", key=key, size=size, sha=sha, ct=ct)


def announce_delete(reporter: Reporter, key: str) -> None:
    """Report that the child is about to delete ``key``."""
    reporter.say(INTENT, op="del", key=key)


# ---------------------------------------------------------------------------------- parent side


@dataclass
class Outcome:
    """What one child reported before it died."""

    acked: list[Write]
    inflight: Write | None
    ready: bool
    compactions: int = 0
    killed_compacting: bool = False
    last_acked_seq: int = 0
    #: The ``compacted`` messages, in order.
    compacted: tuple[Message, ...] = ()


def _write(intent: Message) -> Write:
    if intent["op"] == "del":
        return intent["key"], None
    return intent["key"], Value(intent["size"], intent["sha"], intent["ct"])


def read_outcome(lines: Sequence[bytes]) -> Outcome:
    """The writes a child acknowledged and the one it left in flight, whether it opened the
    store, and the compactions it finished (or was killed in). A final line without its
    newline was cut by the kill; it acknowledges nothing."""
    transcript = read_transcript(lines)
    compacted = tuple(m for m in transcript.events if m["t"] == COMPACTED)
    marks = (COMPACTING, COMPACTED)
    last = next((m["t"] for m in reversed(transcript.events) if m["t"] in marks), "")
    return Outcome(
        acked=[_write(intent) for intent, _ in transcript.acked],
        inflight=None if transcript.in_flight is None else _write(transcript.in_flight),
        ready=any(m["t"] == READY for m in transcript.events),
        compactions=len(compacted),
        killed_compacting=last == COMPACTING,
        last_acked_seq=max((ack.get("seq", 0) for _, ack in transcript.acked), default=0),
        compacted=compacted,
    )


def kill_round(
    module: str, args: Sequence[str], wait: Callable[[Pump], object], tally: Tally, where: str
) -> Outcome:
    """Run ``python -m module *args`` until ``wait`` returns, then ``SIGKILL`` it
    (:func:`~logkv.killcheck.run_and_kill`); count the kill in ``tally``, or record there that
    the child ended by itself; return what it reported."""
    run = run_and_kill(module, args, wait)
    failure = run.failure()
    if failure is None:
        tally.kills += 1
    else:
        tally.problems.append(f"{where}: {failure}")
    return read_outcome(run.lines)


def read_state(engine: Engine) -> dict[str, Value]:
    """Every key of an open store and the :class:`Value` it holds."""
    state: dict[str, Value] = {}
    for key in engine.keys(exclusive_start_key=None):
        found = engine.get_with_type(key)
        if found is not None:
            state[key] = value_of(*found)
    return state


def apply(model: dict[str, Value], writes: Iterable[Write]) -> None:
    """Fold acknowledged ``writes`` into ``model``."""
    for key, state in writes:
        if state is None:
            model.pop(key, None)
        else:
            model[key] = state


class InFlight(StrEnum):
    """What the key of the write in flight at the kill was found to hold."""

    NEW = "new"
    OLD = "old"
    SAME = "same"  # old and new are the same state


def check_store(
    actual: dict[str, Value],
    model: dict[str, Value],
    inflight: Write | None,
    problems: list[str],
    where: str,
) -> InFlight | None:
    """Compare the store's state with the model, resolving the in-flight write.

    Appends every discrepancy to ``problems`` and returns what the in-flight key held (None
    when no write was in flight, or its key held neither state); afterwards ``model`` holds
    the store's state for the in-flight key, so the next round starts from a known state.
    """
    inflight_key = inflight[0] if inflight is not None else None
    for key in sorted(set(actual) | set(model)):
        if key == inflight_key:
            continue
        have, want = actual.get(key), model.get(key)
        if have != want:
            problems.append(
                f"{where}: key {key!r} should be {describe(want)}, found {describe(have)}"
            )
    if inflight is None:
        return None
    key, new = inflight
    old, have = model.get(key), actual.get(key)
    found: InFlight | None = None
    if have == new:
        found = InFlight.SAME if have == old else InFlight.NEW
    elif have == old:
        found = InFlight.OLD
    else:
        problems.append(
            f"{where}: key {key!r} (write in flight at the kill) should be {describe(old)} or "
            f"{describe(new)}, found {describe(have)}"
        )
    apply(model, [(key, have)])
    return found


# ---------------------------------------------------------------------------------- command line


class Tally:
    """Mixed into each torture's summary (a dataclass with ``kills`` and ``problems``
    fields): whether the run passed, and the lines that say so."""

    __dataclass_fields__: ClassVar[dict[str, Any]]
    kills: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        """True when nothing acknowledged was lost or wrong and every check passed."""
        return not self.problems

    def verdict(self) -> list[str]:
        """The last lines of the summary's text: OK, or the problems (the first 50)."""
        if self.ok:
            return ["  OK: no acknowledged write was lost"]
        lines = [f"  FAILED: {len(self.problems)} problem(s):"]
        lines.extend(f"    {problem}" for problem in self.problems[:50])
        return lines


_Summary = TypeVar("_Summary", bound=Tally)


def parser(prog: str, description: str, rounds: int, segment_size: int) -> argparse.ArgumentParser:
    """A torture's argument parser with the options every torture has."""
    result = argparse.ArgumentParser(prog=prog, description=description)
    result.add_argument(
        "--rounds", type=int, default=rounds, help=f"kills to perform (default {rounds})"
    )
    result.add_argument(
        "--store", type=Path, help="store folder (default: a temporary folder, removed after)"
    )
    result.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    result.add_argument("--segment-size", type=int, default=segment_size, help="bytes per segment")
    result.add_argument("--json", action="store_true", help="print the summary as JSON")
    result.add_argument("--verbose", action="store_true", help="print a line per round")
    return result


def child_parser(prog: str) -> argparse.ArgumentParser:
    """A torture child's argument parser with the options every child has."""
    result = argparse.ArgumentParser(prog=f"{prog} child")
    result.add_argument("--store", type=Path, required=True)
    result.add_argument("--seed", type=int, required=True)
    result.add_argument("--segment-size", type=int, required=True)
    return result


def main(
    argv: Sequence[str] | None,
    options: argparse.ArgumentParser,
    child: Callable[[Sequence[str]], int],
    torture: Callable[[argparse.Namespace, Path], _Summary],
    text: Callable[[_Summary, argparse.Namespace], str],
    extra: Callable[[argparse.Namespace], dict[str, Any]] = lambda args: {},
) -> int:
    """A torture's command line: ``child ...`` runs ``child``, anything else is parsed by
    ``options`` and runs ``torture`` on the store (a temporary one, removed afterwards, unless
    ``--store``); prints the summary as ``text`` or as JSON (with ``ok`` and ``extra``) and
    returns 0 when nothing was lost, else 1."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["child"]:
        return child(arguments[1:])
    args = options.parse_args(arguments)
    folder = Path(tempfile.mkdtemp(prefix="logkv-torture-")) if args.store is None else None
    store: Path = args.store if folder is None else folder / "store"
    try:
        summary = torture(args, store.resolve())
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps({**asdict(summary), "ok": summary.ok, **extra(args)}))
    else:
        print(text(summary, args))
    return 0 if summary.ok else 1
