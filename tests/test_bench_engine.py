"""The engine benchmark runs end to end at tiny sizes, in its full mode and in its light mode
(many small records, no compaction), and each mode's defaults give way to the options given."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import run_command

from benchmarks import bench_engine
from benchmarks.harness import Run, Script

#: Small enough for a test, big enough for the engine to rotate segments and write hints.
TINY = ["--records", "3000", "--gets", "300", "--fsync-seconds", "0.05", "--writers", "2"]


def run_at(quick: bool = False) -> Run:
    """A run of the benchmark that measures nothing (for its settings)."""
    return Run("bench_engine", quick, None, Path("."), 1, "", (), "", "")


def settings(*argv: str) -> bench_engine.Settings:
    args = bench_engine.parser().parse_args(list(argv))
    return bench_engine.settings_for(args, run_at(quick=args.quick))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "shown", "compacted"),
    [
        (["--light"], "Mode: light, 3,000 records of 100 B values, 1 round(s), no compaction", 0),
        (["--repeat", "1"], "Mode: full, 3,000 records of 1,000 B values, 1 round(s), with", 1),
    ],
    ids=["light", "full"],
)
def test_the_engine_benchmark_runs_and_writes_its_report(
    tmp_path: Path, mode: list[str], shown: str, compacted: int
) -> None:
    out = tmp_path / "engine.md"
    run_command(
        *mode, *TINY, "--out", out, "--tmp-dir", tmp_path,
        module="benchmarks.bench_engine", text=True, code=0,
    )  # fmt: skip
    text = out.read_text(encoding="utf-8")
    assert shown in text
    for row in (
        "| raw pack + frame + os.write loop |",
        "| append 3,000 records of ",
        "| point get, 300 random keys |",
        "| ordered iteration of 3,000 keys (keys()) |",
        "| open from the log (3,000 records, ",
        "| index memory beyond the key (tracemalloc) |",
        "| index memory beyond the key (RssAnon, fresh process) |",
        "| FSYNC, 2 writer threads (group commit) |",
    ):
        assert row in text
    assert text.count("| open after compaction") == compacted
    # The scratch folder of the stores is gone: only the report is left.
    assert [p.name for p in tmp_path.iterdir()] == ["engine.md"]


def test_the_light_mode_defaults() -> None:
    light = settings("--light")
    assert (light.records, light.value_size, light.repeat) == (10_000_000, 100, 1)
    assert (light.compaction, light.light, light.gets) == (False, True, 200_000)
    full = settings()
    assert (full.records, full.value_size, full.repeat) == (1_000_000, 1000, 3)
    assert (full.compaction, full.light) == (True, False)
    quick = settings("--light", "--quick")
    assert (quick.records, quick.value_size, quick.compaction) == (50_000, 100, False)


def test_options_given_win_over_the_light_defaults() -> None:
    given = settings(
        "--light", "--records", "7", "--value-size", "33", "--repeat", "2", "--compaction"
    )
    assert (given.records, given.value_size, given.repeat, given.compaction) == (7, 33, 2, True)
    assert (given.gets, given.light) == (7, True)
    assert settings("--no-compaction").compaction is False


@pytest.mark.parametrize(
    ("argv", "default_out"),
    [
        (["--light"], Path("benchmarks/results/engine-light.md")),
        ([], bench_engine.SCRIPT.default_out),
    ],
    ids=["light", "full"],
)
def test_a_light_run_writes_its_own_results_file(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], default_out: Path
) -> None:
    chosen: list[Path] = []

    def main(
        self: Script,
        argv: list[str] | None,
        parser: argparse.ArgumentParser,
        measure: Callable[[argparse.Namespace, Run], str],
        probe: Callable[[list[str]], Mapping[str, Any]] | None = None,
    ) -> int:
        chosen.append(self.default_out)
        return 0

    monkeypatch.setattr(Script, "main", main)
    assert bench_engine.main(argv) == 0
    assert chosen == [default_out]
