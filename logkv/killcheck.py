"""Kill and check: run a writing child process, ``SIGKILL`` it, read what it acknowledged.

The demo (:mod:`logkv.demo`) and the torture tools of the source tree (``tools/``) all prove
one thing the same way: a child process writes and reports every write, the parent kills it
with ``SIGKILL`` at a moment of its choosing, then checks that the store holds every
acknowledged write. This module is the part they share.

The child reports on stdout, one JSON object per line, flushed at once, its type first
(:class:`Reporter` writes them)::

    {"t": "ready"}                                the store is open
    {"t": "intent", ...}                          a write is about to be made (what it is)
    {"t": "ack", ...}                             the call returned: the write is acknowledged

and any types of its own (say ``compacting``). The parent runs it with :func:`run_and_kill`:
a :class:`Pump` thread collects the lines as they come, the caller's ``wait`` decides when
to kill (usually through :meth:`Pump.wait_for`), and the :class:`Run` it returns holds every
line, the exit status and the end of the child's stderr. :func:`read_transcript` pairs each
ack with its intent; the one intent left over was in flight at the kill: it may or may not
have reached the store.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

#: Message types every child sends (see the module's docstring).
READY: Final = "ready"
INTENT: Final = "intent"
ACK: Final = "ack"
#: Characters of the child's stderr kept for a report.
STDERR_TAIL: Final = 2000

#: One decoded line of a child's report.
Message = dict[str, Any]

_TYPE_START: Final = b'{"t": "'


class Reporter:
    """The child's side: writes each message as one JSON line and flushes it at once, so that
    a message the parent has read was sent before whatever the child does next. Safe to use
    from several threads (their lines never mix)."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def say(self, kind: str, /, **fields: Any) -> None:
        """Send a message of type ``kind`` with ``fields``."""
        line = json.dumps({"t": kind, **fields}) + "\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()


def message_type(raw: bytes) -> str:
    """The type of a report line as :class:`Reporter` writes it, without decoding the rest
    ("" for a line that is not a message)."""
    if not raw.startswith(_TYPE_START):
        return ""
    end = raw.find(b'"', len(_TYPE_START))
    return raw[len(_TYPE_START) : end].decode("ascii", "replace") if end > 0 else ""


class Pump(threading.Thread):
    """Reads a child's stdout as it comes: keeps every line and counts them by message type,
    so that the parent can wait for the moment it wants to kill the child."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True, name="killcheck-pump")
        self._stream = stream
        #: Every line read so far; the last one lacks its newline when the kill cut it.
        self.lines: list[bytes] = []
        self._counts: Counter[str] = Counter()  # guarded by _changed
        self._ended = False  # guarded by _changed
        self._changed = threading.Condition()

    def run(self) -> None:
        """Read lines until the child's stdout ends."""
        for raw in self._stream:
            self.lines.append(raw)
            kind = message_type(raw)
            with self._changed:
                self._counts[kind] += 1
                self._changed.notify_all()
        with self._changed:
            self._ended = True  # nobody may wait for more lines
            self._changed.notify_all()

    def wait_for(self, kind: str, count: int, timeout: float) -> bool:
        """Wait until the child has sent ``count`` messages of type ``kind``, its output has
        ended or ``timeout`` seconds have passed; True unless the time ran out."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._ended or self._counts[kind] >= count, timeout
            )


@dataclass(frozen=True)
class Run:
    """A child that ran until the parent killed it (or until it ended by itself)."""

    pid: int
    #: Every line of its stdout (see :attr:`Pump.lines`).
    lines: list[bytes]
    #: Its exit status: ``-SIGKILL`` when the kill ended it.
    code: int
    #: True when the parent's ``SIGKILL`` ended it, False when it ended before.
    killed: bool
    #: The last :data:`STDERR_TAIL` characters of its stderr.
    stderr: str

    def failure(self) -> str | None:
        """What went wrong when the child ended by itself (None when it was killed)."""
        if self.killed:
            return None
        return f"the child exited with code {self.code} before it was killed:\n{self.stderr}"


def child_env(module: str) -> dict[str, str]:
    """This process's environment for ``python -m module``, with the folder that holds the
    module's top-level package first on ``PYTHONPATH``: the child runs the parent's code even
    from another working folder."""
    env = dict(os.environ)
    spec = importlib.util.find_spec(module.partition(".")[0])
    if spec is None or spec.origin is None:
        return env
    origin = Path(spec.origin).resolve()
    root = origin.parent.parent if spec.submodule_search_locations is not None else origin.parent
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    return env


def run_and_kill(module: str, args: Sequence[str], wait: Callable[[Pump], object]) -> Run:
    """Run ``python -m module *args``, call ``wait`` with its :class:`Pump`, then ``SIGKILL``
    the child (unless it already ended) and return the :class:`Run`."""
    command = [sys.executable, "-m", module, *args]
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=errors, env=child_env(module)
        )
        assert child.stdout is not None
        pump = Pump(child.stdout)
        pump.start()
        try:
            wait(pump)
        finally:
            ended = child.poll() is not None
            if not ended:
                child.send_signal(signal.SIGKILL)
            code = child.wait()
            pump.join()
            child.stdout.close()
        errors.seek(0)
        tail = errors.read().decode("utf-8", "replace")[-STDERR_TAIL:]
    killed = not ended and code == -signal.SIGKILL
    return Run(child.pid, pump.lines, code, killed, tail)


@dataclass
class Transcript:
    """What a killed child reported, intents paired with their acks."""

    #: The acknowledged writes in order: each intent with the ack that answered it.
    acked: list[tuple[Message, Message]] = field(default_factory=list)
    #: The intent not acknowledged when the child died: that write was in flight.
    in_flight: Message | None = None
    #: The other messages (``ready`` and the child's own types), in order.
    events: list[Message] = field(default_factory=list)


def read_transcript(lines: Iterable[bytes]) -> Transcript:
    """Pair a child's intents and acks. A last line without its newline was cut by the kill
    and says nothing; an ack without an intent is an error (``ValueError``)."""
    transcript = Transcript()
    for raw in lines:
        if not raw.endswith(b"\n"):
            break
        message: Message = json.loads(raw)
        kind = message["t"]
        if kind == INTENT:
            transcript.in_flight = message
        elif kind == ACK:
            if transcript.in_flight is None:
                raise ValueError(f"the child acknowledged a write it never announced: {message}")
            transcript.acked.append((transcript.in_flight, message))
            transcript.in_flight = None
        else:
            transcript.events.append(message)
    return transcript
