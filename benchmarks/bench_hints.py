"""What writing the hint files of sealed segments costs the writer and the readers: appends and
gets per second with hints written from the data the writer collects as it appends (how logkv
writes them), with no hint files at all, and with each sealed segment scanned for its hint
(how logkv wrote them before), measured in the same run.

Run from the repository root::

    python -m benchmarks.bench_hints            # 200,000 records, 3 rounds; writes results/hints.md
    python -m benchmarks.bench_hints --quick    # 50,000 records, 1 round; prints only

Each measurement runs in a fresh interpreter: a new store with segments of the default size
(64 MiB), ``--records`` appends of distinct keys with 1 KiB values (``Engine.set``, one thread),
then as many gets of random keys right after (while the hint thread may still be writing the
last sealed segment's hint), then the wait for the last hint. The modes take turns in each
round, so that a change in the machine's load hits them alike.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from logkv import Engine
from logkv import hints as hints_module
from logkv.hints import CollectedHint, HintWriter
from logkv.layout import list_hints, list_segments

from .harness import Run, Script, check, per_second, positive_int, results_file, section, table

SCRIPT = Script(
    "bench_hints",
    "Appends and gets per second with hint files collected, off, or scanned.",
    Path("benchmarks/results/hints.md"),
)

#: The modes, in the order of the table: how the sealed segments' hints are written.
MODES = {
    "collected": "hints from the data collected as the writer appends (logkv's way)",
    "off": "no hint files",
    "scan": "hints from a scan of each sealed segment (the way before)",
}
VALUE_SIZE = 1024


def _scan_instead(writer: HintWriter, job: int | CollectedHint) -> None:
    """``HintWriter.submit`` for the ``scan`` mode: every sealed segment's hint from a scan."""
    _SUBMIT(writer, job.number if isinstance(job, CollectedHint) else job)


_SUBMIT = HintWriter.submit


def probe(args: list[str]) -> Mapping[str, Any]:
    """One measurement (in a fresh interpreter): ``[mode, records, folder, seed]``."""
    mode, records, folder, seed = args[0], int(args[1]), Path(args[2]), int(args[3])
    if mode == "off":
        hints_module.MIN_HINTED_SEGMENT = 1 << 62
    elif mode == "scan":
        HintWriter.submit = _scan_instead  # type: ignore[method-assign,assignment]
    value = random.Random(seed).randbytes(VALUE_SIZE)
    keys = [f"key-{i:09d}" for i in range(records)]
    with Engine.open(folder) as engine:
        started = time.perf_counter()
        for key in keys:
            engine.set(key, value)
        appended = time.perf_counter()
        wanted = random.Random(seed + 1).choices(keys, k=records)
        got = time.perf_counter()
        for key in wanted:
            engine.get(key)
        read = time.perf_counter()
        engine.wait_for_hints()
        hinted = time.perf_counter()
        check(engine.get(keys[-1]) == value, "the last value reads back")
    return {
        "appends": records / (appended - started),
        "gets": records / (read - got),
        "hints_after": hinted - read,
        "segments": len(list_segments(folder)),
        "hint_files": len(list_hints(folder)),
    }


def benchmark(args: argparse.Namespace, run: Run) -> str:
    """Every mode, ``--rounds`` times in turn; the results as Markdown."""
    records = 50_000 if run.quick and args.records is None else args.records or 200_000
    rounds = 1 if run.quick and args.rounds is None else args.rounds or 3
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with run.scratch() as scratch:
        for round_number in range(rounds):
            turn = round_number % len(MODES)
            order = list(MODES)[turn:] + list(MODES)[:turn]
            for mode in order:
                folder = scratch / f"{mode}-{round_number}"
                answer = SCRIPT.in_child(mode, str(records), str(folder), str(run.seed))
                results[mode].append(answer)
                shutil.rmtree(folder)  # a store of --records values at most on disk at once
                print(mode, {k: round(v, 3) for k, v in answer.items()}, flush=True)
    expected_hints = {"collected": True, "scan": True, "off": False}
    for mode, answers in results.items():
        for answer in answers:
            hinted = answer["hint_files"] == answer["segments"] - 1
            check(hinted if expected_hints[mode] else answer["hint_files"] == 0, f"{mode} hints")
    base = {
        name: statistics.median(a[name] for a in results["off"]) for name in ("appends", "gets")
    }
    rows = []
    for mode, answers in results.items():
        appends = [a["appends"] for a in answers]
        gets = [a["gets"] for a in answers]
        rows.append(
            [
                f"`{mode}`: {MODES[mode]}",
                per_second(statistics.median(appends), "appends"),
                f"{statistics.median(appends) / base['appends']:.2f} x",
                per_second(statistics.median(gets), "gets"),
                f"{statistics.median(gets) / base['gets']:.2f} x",
                f"{statistics.median(a['hints_after'] for a in answers) * 1e3:,.0f} ms",
                f"{answers[0]['hint_files']} / {answers[0]['segments']}",
            ]
        )
    body = section(
        f"{records:,} appends of 1 KiB values, then {records:,} gets (median of {rounds})",
        table(
            [
                "hints",
                "appends/s",
                "vs off",
                "gets/s right after",
                "vs off",
                "last hint done after the gets",
                "hint files / segments",
            ],
            rows,
        ),
    )
    return results_file(
        run,
        "Hint files: what writing them costs",
        "Appends and gets per second while the hint files of sealed segments are written in"
        " the background, against a store that writes none and against the scan of each sealed"
        " segment that wrote them before.",
        body,
        method=[
            "Each measurement is a fresh interpreter and a new store (segments of 64 MiB,"
            " durability `process`), the modes taking turns in each round.",
            "`scan` makes the hint writer scan each sealed segment (decoding every record, as"
            " before the writer collected the hint data); `off` raises the segment size below"
            " which no hints are written.",
            "The gets start right after the last append, while the hint thread may still be"
            " writing; the last column is how long the last hint took after the gets ended.",
        ],
        notes=[
            "Read the ratios between the modes, measured in the same run: the absolute rates"
            " follow the machine's load (its table above), and a run on a shared machine gives"
            " a fraction of a quiet machine's.",
        ],
    )


def parser() -> argparse.ArgumentParser:
    """The options of this benchmark."""
    parser = SCRIPT.parser()
    parser.add_argument(
        "--records", type=positive_int, default=None, help="appends per measurement (200,000)"
    )
    parser.add_argument("--rounds", type=positive_int, default=None, help="rounds (3)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the results and write them to ``--out``."""
    return SCRIPT.main(argv, parser(), benchmark, probe)


if __name__ == "__main__":
    sys.exit(main())
