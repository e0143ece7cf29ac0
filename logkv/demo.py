"""A short demo: a crawler's state survives ``kill -9``.

Run it with ``python -m logkv.demo`` (or ``logkv-demo``). It

1. starts a "crawler" child process that stores pages and a progress record in a fresh store,
   reporting every write to this process as soon as the call that made it has returned;
2. kills the child with ``SIGKILL`` in the middle of its run;
3. reopens the store and checks that every acknowledged write is there with the right bytes
   (the one write in flight at the kill may or may not be), printing what recovery did;
4. pages through the keys in order with ``exclusive_start_key`` and prints the store's figures.

It exits 0 only if nothing acknowledged was lost. The child's writes are deterministic (page
``i`` always has the same bytes), so the parent needs only the page numbers to check them.
"""

from __future__ import annotations

import argparse
import json
import logging
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
from pathlib import Path
from typing import IO

from .engine import Engine
from .options import Durability

#: The key of the crawler's progress record, overwritten after every page.
STATE_KEY = "CRAWLER_STATE"
#: The child is killed once it has acknowledged this many writes (it keeps writing meanwhile).
KILL_AFTER_ACKS = 600
_SEGMENT_SIZE = 256 * 1024
_WORDS = ("price", "stock", "review", "colour", "size", "shipping", "warranty", "brand", "sale")


def page_key(number: int) -> str:
    """The key page ``number`` is stored under."""
    return f"pages/item-{number:05d}"


def page_url(number: int) -> str:
    """The URL the crawler fetched for page ``number``."""
    return f"https://shop.example/item/{number}"


def page_body(number: int) -> bytes:
    """The HTML of page ``number``: deterministic, 0.3 to 12 KB."""
    rng = random.Random(number)
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(40, 2000)))
    return (
        f"<html><head><title>Item {number}</title></head><body><p>{words}</p></body></html>"
    ).encode()


def state_body(number: int) -> bytes:
    """The progress record written right after page ``number`` was stored."""
    return json.dumps({"pages_done": number + 1, "last_url": page_url(number)}).encode()


# ---------------------------------------------------------------------------------- the child


def crawl(store: Path, durability: str, out: IO[str]) -> None:
    """The crawler child: store pages and progress forever, reporting each write on ``out``.

    Before each call it prints ``page N`` or ``state N``, and ``ok`` once the call returned:
    only then is the write *acknowledged*.
    """
    with Engine.open(store, durability=durability, segment_size=_SEGMENT_SIZE) as engine:
        out.write("ready\n")
        out.flush()
        number = 0
        while True:
            out.write(f"page {number}\n")
            out.flush()
            engine.set(page_key(number), page_body(number), "text/html; charset=utf-8")
            out.write(f"ok\nstate {number}\n")
            out.flush()
            engine.set(STATE_KEY, state_body(number), "application/json")
            out.write("ok\n")
            out.flush()
            number += 1


# ---------------------------------------------------------------------------------- the parent


class _Listener(threading.Thread):
    """Reads the child's report lines; sets ``enough`` after ``kill_after`` acknowledgements."""

    def __init__(self, stream: IO[str], kill_after: int) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.kill_after = kill_after
        self.lines: list[str] = []
        self.enough = threading.Event()

    def run(self) -> None:
        acks = 0
        for line in self.stream:
            self.lines.append(line)
            if line == "ok\n":
                acks += 1
                if acks == self.kill_after:
                    self.enough.set()
        self.enough.set()


def acknowledged(lines: Sequence[str]) -> tuple[list[tuple[str, int]], tuple[str, int] | None]:
    """The acknowledged writes, in order, and the write in flight at the kill (if any).

    A line without its newline was cut by the kill and acknowledges nothing.
    """
    done: list[tuple[str, int]] = []
    pending: tuple[str, int] | None = None
    for line in lines:
        if not line.endswith("\n"):
            break
        words = line.split()
        if words == ["ok"]:
            if pending is None:
                raise ValueError("the crawler acknowledged a write it never announced")
            done.append(pending)
            pending = None
        elif len(words) == 2 and words[0] in ("page", "state"):
            pending = (words[0], int(words[1]))
    return done, pending


def run_crawler(store: Path, durability: str) -> tuple[int, list[str], int]:
    """Start the crawler child, kill it mid-run; return its pid, its lines and its exit code."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "logkv.demo", "--child", str(store)]
    command += ["--durability", durability]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None
    listener = _Listener(child.stdout, KILL_AFTER_ACKS)
    listener.start()
    listener.enough.wait(timeout=60)
    time.sleep(random.uniform(0.0, 0.02))  # land anywhere in a later write, not just after one
    if child.poll() is None:
        child.send_signal(signal.SIGKILL)
    code = child.wait()
    listener.join()
    child.stdout.close()
    return child.pid, listener.lines, code


def check(engine: Engine, done: list[tuple[str, int]], pending: tuple[str, int] | None) -> int:
    """Print what the reopened store holds against what was acknowledged; return losses."""
    pages = sorted({n for kind, n in done if kind == "page"})
    states = [n for kind, n in done if kind == "state"]
    missing = [n for n in pages if engine.get(page_key(n), None) != page_body(n)]
    print(
        f"   acknowledged pages present with the right bytes: {len(pages) - len(missing)}"
        f"/{len(pages)}"
    )
    for number in missing[:5]:
        print(f"   LOST: {page_key(number)}")
    lost = len(missing)
    # The progress record must hold the last acknowledged state, or the in-flight one.
    stored = engine.get(STATE_KEY, None)
    allowed: list[bytes | None] = [state_body(states[-1])] if states else [None]
    if pending is not None and pending[0] == "state":
        allowed.append(state_body(pending[1]))
    if isinstance(stored, bytes):
        print(f"   {STATE_KEY} = {stored.decode()}")
    if stored not in allowed:
        lost += 1
        print(f"   LOST: {STATE_KEY} should be {allowed[0]!r}, found {stored!r}")
    # Nothing else may exist (the in-flight page may).
    expected = {page_key(n) for n in pages} | ({STATE_KEY} if states else set())
    if pending is not None and pending[0] == "page":
        expected.add(page_key(pending[1]))
    extra = sorted(set(engine.keys()) - expected)
    if extra:
        lost += len(extra)
        print(f"   UNEXPECTED keys: {extra[:5]}")
    return lost


def show_paging(engine: Engine) -> bool:
    """Print the first pages of keys and check that paging visits every key once, in order."""
    print("4. Ordered paging with exclusive_start_key (4 keys per page):")
    start: str | None = None
    for page in range(1, 4):
        infos = list(engine.infos(exclusive_start_key=start, limit=4))
        shown = ", ".join(f"{info.key} ({info.size} B)" for info in infos)
        print(f"   page {page} (after {start!r}): {shown}")
        if not infos:
            break
        start = infos[-1].key
    walked: list[str] = []
    start = None
    pages = 0
    while True:
        batch = list(engine.keys(exclusive_start_key=start, limit=100))
        if not batch:
            break
        pages += 1
        walked.extend(batch)
        start = batch[-1]
    exact = walked == sorted(set(walked)) and len(walked) == len(engine)
    verdict = "exact: sorted, no duplicates, none missed" if exact else "NOT EXACT"
    print(f"   walked all {len(walked)} keys in {pages} pages of 100: {verdict}")
    return exact


def demo(durability: str, keep: bool) -> int:
    """Run the whole demo in a temporary folder; return the exit status."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("   logkv log: %(message)s"))
    logging.getLogger("logkv").addHandler(handler)
    folder = Path(tempfile.mkdtemp(prefix="logkv-demo-"))
    store = folder / "store"
    try:
        print("logkv demo: a crawler's state survives kill -9")
        print(f"store: {store} (durability={durability}: ", end="")
        if durability == Durability.FSYNC.value:
            print("a write returns once it is on disk)")
        else:
            print("a write returns once the OS has it; survives kill -9, not power loss)")
        pid, lines, code = run_crawler(store, durability)
        done, pending = acknowledged(lines)
        page_count = sum(1 for kind, _ in done if kind == "page")
        print(
            f"1. Crawler process {pid} stored pages and a progress record after each page; "
            f"{len(done)} writes acknowledged ({page_count} pages, {len(done) - page_count} "
            "progress updates)"
        )
        if code != -signal.SIGKILL:
            print(f"   FAILED: the crawler exited with code {code} before it was killed")
            return 1
        in_flight = f"{pending[0]} {pending[1]}" if pending else "none"
        print(f"2. Sent kill -9 mid-run; the write in flight at that moment: {in_flight}")
        started = time.perf_counter()
        with Engine.open(store, durability=durability, segment_size=_SEGMENT_SIZE) as engine:
            took = (time.perf_counter() - started) * 1000
            stats = engine.stats()
            print(
                f"3. Reopened in {took:.1f} ms: replayed {stats.segments} segments up to sequence "
                f"number {stats.last_seq}"
            )
            torn = engine.report.torn_tail
            if torn is None:
                print("   torn tail: none (no append was cut short by the kill)")
            else:
                print(
                    f"   torn tail: cut off {torn.end - torn.start} bytes at offset {torn.start} "
                    f"of {torn.path.name} ({torn.reason}); every record before it is intact"
                )
            if pending is not None:
                kind, number = pending
                there = (
                    engine.get(page_key(number), None) == page_body(number)
                    if kind == "page"
                    else engine.get(STATE_KEY, None) == state_body(number)
                )
                print(
                    f"   the in-flight write ({kind} {number}) "
                    f"{'made it' if there else 'did not make it'}: either is correct, it was "
                    "never acknowledged"
                )
            lost = check(engine, done, pending)
            exact = show_paging(engine)
            stats = engine.stats()
            print(
                f"5. Stats: {stats.keys} keys, {stats.live_bytes} live bytes, {stats.log_bytes} "
                f"log bytes ({stats.dead_bytes} dead: overwritten progress records), "
                f"{stats.segments} segments, last seq {stats.last_seq}"
            )
        if lost or not exact or not done:
            print(f"FAILED: {lost} acknowledged write(s) lost")
            return 1
        print(f"OK: all {len(done)} acknowledged writes survived kill -9.")
        return 0
    finally:
        if keep:
            print(f"(kept {store})")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m logkv.demo``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m logkv.demo",
        description="Show that a crawler's acknowledged writes survive kill -9.",
    )
    parser.add_argument(
        "--durability", choices=[d.value for d in Durability], default=Durability.PROCESS.value
    )
    parser.add_argument("--keep", action="store_true", help="keep the demo store afterwards")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        crawl(args.child, args.durability, sys.stdout)
        return 0
    return demo(args.durability, args.keep)


if __name__ == "__main__":
    sys.exit(main())
