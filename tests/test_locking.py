"""One writer per store: the lock, in this process and across processes, and read-only opens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import run_command

from logkv import Engine, ReadOnlyStoreError, StoreLockedError
from logkv.layout import list_segments

OpenEngine = Callable[..., Engine]

# A writer in a child process, driven line by line over stdin/stdout:
#   "write N"  -> sets N more keys "child-00000".. (values of 300 bytes) and answers "ok <last seq>"
#   "open"     -> tries to open the store as a second writer and answers how that went
# It answers "ready <pid>" once it holds the store, and exits at end of input.
CHILD = r"""
import os, sys
from logkv import Engine, StoreLockedError

path = sys.argv[1]
if sys.argv[2] == "try-open":
    try:
        Engine.open(path)
    except StoreLockedError as exc:
        print("locked", exc.holder_pid, flush=True)
    else:
        print("opened", flush=True)
    sys.exit(0)
engine = Engine.open(path, segment_size=4096)
print("ready", os.getpid(), flush=True)
written = 0
for line in sys.stdin:
    command, arg = line.split()
    for _ in range(int(arg)):
        engine.set(f"child-{written:05d}", bytes([written % 256]) * 300)
        written += 1
    print("ok", engine.last_seq, flush=True)
engine.close()
"""


class Child:
    """A writer process holding the store at ``path``."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), "hold"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        answer = self.stdout.readline().split()
        assert answer == ["ready", str(self.proc.pid)], answer

    def write(self, count: int) -> int:
        """Have the child write ``count`` more keys; return its last sequence number."""
        self.stdin.write(f"write {count}\n")
        self.stdin.flush()
        answer = self.stdout.readline().split()
        assert answer[0] == "ok", answer
        return int(answer[1])

    def close(self) -> None:
        """Let the child close the store and exit."""
        self.stdin.close()
        assert self.proc.wait(timeout=60) == 0

    def kill(self) -> None:
        """SIGKILL the child while it holds the store."""
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=60) == -signal.SIGKILL
        self.stdin.close()
        self.stdout.close()


@pytest.fixture
def child(store_path: Path) -> Iterator[Child]:
    proc = Child(store_path)
    yield proc
    if proc.proc.poll() is None:
        proc.kill()
    else:
        proc.stdout.close()


def child_value(i: int) -> bytes:
    return bytes([i % 256]) * 300


def try_open_in_child(path: Path) -> list[str]:
    out = run_command(
        path, "try-open", program=[sys.executable, "-c", CHILD], text=True, timeout=60, code=0
    )
    return out.stdout.split()


# ---------------------------------------------------------------------------------- one writer


def test_second_writer_in_the_same_process_is_refused(store_path: Path) -> None:
    with Engine.open(store_path) as first:
        first.set("k", b"v")
        with pytest.raises(StoreLockedError) as caught:
            Engine.open(store_path)
        assert caught.value.holder_pid == os.getpid()
        assert caught.value.path == store_path
        assert str(os.getpid()) in str(caught.value)
        # The refused open left the holder alone: its lock and pid are intact.
        assert (store_path / "LOCK").read_text().strip() == str(os.getpid())
        first.set("k2", b"v2")
        errors: list[BaseException] = []

        def from_thread() -> None:
            try:
                Engine.open(store_path)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=from_thread)
        thread.start()
        thread.join()
        assert len(errors) == 1 and isinstance(errors[0], StoreLockedError)
    with Engine.open(store_path) as second:  # free again once the first writer closed
        assert second.get("k2") == b"v2"


def test_second_writer_in_another_process_is_refused(store_path: Path, child: Child) -> None:
    with pytest.raises(StoreLockedError) as caught:
        Engine.open(store_path)
    assert caught.value.holder_pid == child.proc.pid
    assert str(child.proc.pid) in str(caught.value)
    child.write(3)  # the holder is unaffected
    child.close()
    with Engine.open(store_path) as engine:
        assert len(engine) == 3


@pytest.mark.slow
def test_other_process_is_refused_while_we_hold_the_store(store_path: Path) -> None:
    with Engine.open(store_path):
        assert try_open_in_child(store_path) == ["locked", str(os.getpid())]
    assert try_open_in_child(store_path) == ["opened"]


@pytest.mark.slow
def test_a_killed_holder_leaves_no_stale_lock(store_path: Path, child: Child) -> None:
    last_seq = child.write(25)  # several segments' worth
    child.kill()
    assert (store_path / "LOCK").exists()  # the file stays; the lock died with the process
    with Engine.open(store_path, segment_size=4096) as engine:
        assert engine.last_seq == last_seq
        assert len(engine) == 25
        for i in range(25):
            assert engine.get(f"child-{i:05d}") == child_value(i)
        engine.set("after-kill", b"mine now")
    assert try_open_in_child(store_path) == ["opened"]


# ---------------------------------------------------------------------------------- read-only


def test_readonly_beside_a_writer_in_another_process(store_path: Path, child: Child) -> None:
    child.write(2)
    with Engine.open(store_path, readonly=True) as reader:
        assert len(reader) == 2
        assert reader.refresh() == 0
        segments = len(list_segments(store_path))
        child.write(40)  # 40 x 300 bytes: several rotations at 4096 bytes
        assert len(list_segments(store_path)) > segments
        assert len(reader) == 2  # a reader sees new records only when it refreshes
        assert reader.refresh() == 40
        assert len(reader) == 42
        assert list(reader.keys()) == [f"child-{i:05d}" for i in range(42)]
        for i in range(42):
            assert reader.get(f"child-{i:05d}") == child_value(i)
        with pytest.raises(ReadOnlyStoreError):
            reader.set("reader", b"no")
        child.write(1)
        assert reader.refresh() == 1
        assert reader.refresh() == 0
        assert reader.stats().last_seq == 43
    child.close()


def test_readonly_refresh_follows_rotation_in_process(open_engine: OpenEngine) -> None:
    writer = open_engine(segment_size=4096)
    writer.set("first", b"1")
    reader = open_engine(readonly=True)
    expected = {"first": b"1"}
    for round_ in range(5):
        for i in range(30):
            key = f"r{round_}-{i:02d}"
            value = os.urandom(i * 20)
            writer.set(key, value)
            expected[key] = value
        writer.delete(f"r{round_}-00")
        del expected[f"r{round_}-00"]
        writer.set("first", f"round {round_}".encode())
        expected["first"] = f"round {round_}".encode()
        assert reader.refresh() == 32
        assert {info.key: reader.get(info.key) for info in reader.infos()} == expected
        assert reader.stats().keys == writer.stats().keys
        assert reader.stats().live_bytes == writer.stats().live_bytes
        assert reader.stats().segments == writer.stats().segments
    assert writer.stats().segments > 5


def test_readonly_open_takes_no_lock(store_path: Path) -> None:
    with Engine.open(store_path) as writer:
        writer.set("k", b"v")
    with Engine.open(store_path, readonly=True) as reader:
        with Engine.open(store_path) as writer:  # a writer may open beside a reader
            writer.set("k", b"new")
            assert (store_path / "LOCK").read_text().strip() == str(os.getpid())
        reader.refresh()
        assert reader.get("k") == b"new"
    with (
        Engine.open(store_path, readonly=True) as one,
        Engine.open(store_path, readonly=True) as two,
    ):
        assert one.get("k") == two.get("k") == b"new"
