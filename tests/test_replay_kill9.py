"""``kill -9`` of a replay at every step, and at random moments: the target is either absent or
the whole, checked copy; never half a store. The next replay into it removes what the killed
one left and succeeds."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_command

from logkv import Engine
from logkv.history import state_at
from logkv.rebuild import read_provenance, replay_store, staging_folder
from logkv.verify import verify

#: Runs ``replay_store(source, target, until_seq=until)``, killing itself with SIGKILL at
#: step ``step`` (the name of a function of logkv.rebuild, and the call of it to die in).
REPLAYER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import logkv.rebuild as rebuild

    source, target, until, name, nth, when = sys.argv[1:7]
    calls = []
    real = getattr(rebuild if name != "rename" else rebuild.os, name)

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == int(nth) and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(*args, **kwargs)
        if len(calls) == int(nth) and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(rebuild if name != "rename" else rebuild.os, name, dying)
    rebuild.replay_store(Path(source), Path(target), until_seq=int(until))
    """
)

STEPS = [
    ("_copy_file", 1, "before"),
    ("_copy_file", 2, "after"),
    ("_copy_file", 5, "after"),
    ("_write_provenance", 1, "after"),
    ("_check_copy", 1, "before"),
    ("_check_copy", 1, "after"),
    ("rename", 1, "before"),
    ("rename", 1, "after"),
]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of many segments, half of them archived by a compaction."""
    store = tmp_path_factory.mktemp("source") / "store"
    with Engine.open(store, segment_size=64 * 1024) as engine:
        for i in range(3000):
            engine.set(f"k{i % 400:04d}", os.urandom(200))
            if i == 1500:
                engine.compact(retention="archive")
    return store


def run_replayer(source: Path, target: Path, until: int, step: tuple[str, int, str]) -> int:
    name, nth, when = step
    args = (source, target, str(until), name, str(nth), when)
    return run_command(*args, program=[sys.executable, "-c", REPLAYER], timeout=300).returncode


def check_whole_or_absent(source: Path, target: Path, until: int) -> bool:
    """The target is absent (True), or the whole copy: verified, at ``until``, the
    original's state then (False)."""
    if not target.exists():
        return True
    assert verify(target).ok
    assert state_at(target) == state_at(source, until_seq=until)
    provenance = read_provenance(target)
    assert provenance is not None and provenance["last_seq"] == until
    return False


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS, ids=lambda s: f"{s[0]}-{s[1]}-{s[2]}")
def test_a_replay_killed_at_each_step_leaves_no_half_store(
    source: Path, tmp_path: Path, step: tuple[str, int, str]
) -> None:
    target = tmp_path / "out" / "copy"
    until = 2500
    assert run_replayer(source, target, until, step) == -signal.SIGKILL
    absent = check_whole_or_absent(source, target, until)
    assert absent == (step != ("rename", 1, "after"))
    if absent:
        replay_store(source, target, until_seq=until)
        assert not staging_folder(target).exists()
        check_whole_or_absent(source, target, until)


@pytest.mark.slow
def test_a_replay_killed_at_random_moments(source: Path, tmp_path: Path) -> None:
    until = 2999
    started = time.perf_counter()
    replay_store(source, tmp_path / "timed", until_seq=until)
    took = time.perf_counter() - started
    rng = random.Random(15)
    outcomes = set()
    for attempt in range(6):
        target = tmp_path / f"copy{attempt}"
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; from pathlib import Path; "
             "from logkv.rebuild import replay_store; "
             "replay_store(Path(sys.argv[1]), Path(sys.argv[2]), until_seq=int(sys.argv[3]))",
             str(source), str(target), str(until)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        time.sleep(0.3 + rng.uniform(0, took))  # the child's start (imports) comes first
        child.send_signal(signal.SIGKILL)
        child.wait(60)
        outcomes.add(check_whole_or_absent(source, target, until))
        if not target.exists():
            replay_store(source, target, until_seq=until)
            check_whole_or_absent(source, target, until)
    assert outcomes  # each kill left the target absent or whole
