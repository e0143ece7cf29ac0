"""What every benchmark script shares, so that each script holds only what it measures.

- The command line: :class:`Script` makes the parser with the options every script has
  (``--quick``, ``--out``, ``--tmp-dir``, ``--seed``) and runs the script's ``main``: it parses
  the arguments, starts a :class:`Run`, lets the script measure and render, then writes and
  prints the results. ``--probe`` (hidden) runs one measurement in this fresh interpreter and
  prints it as JSON: :meth:`Script.in_child` starts such a child and reads its answer.
- Checks: :func:`check` stops the run on a wrong answer from a measured store; a benchmark's
  figures mean nothing when the store is broken. A missed target never stops a run.
- Timing: rates, a clock started after a garbage collection, the best of repeated runs,
  percentiles, and writer threads started together for a fixed time.
- Results: a :class:`Report` of measurements with their targets, and Markdown pieces (the
  command, the machine, tables, bulleted sections) that every results file is made of.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .machine import facts, load_average, utc_now

#: The repository root: where the stores go unless ``--tmp-dir`` says otherwise.
REPO_ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000
GB = 1_000_000_000
#: Said under every table of targets.
TARGETS_NOTE = (
    "Targets are goals for the engine, not limits of the benchmark: a MISS is reported, never"
    " treated as a failure."
)


# ---------------------------------------------------------------------------------- checks


class WrongAnswerError(RuntimeError):
    """A measured store gave a wrong answer: the run stops, its figures would mean nothing."""


def check(condition: bool, message: str) -> None:
    """Stop the run with ``message`` unless ``condition`` holds."""
    if not condition:
        raise WrongAnswerError(message)


# ---------------------------------------------------------------------------------- command line


def positive_int(text: str) -> int:
    """An ``argparse`` type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    """An ``argparse`` type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def non_negative_float(text: str) -> float:
    """An ``argparse`` type: a number of at least 0."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {text}")
    return value


@dataclass(frozen=True)
class Run:
    """One run of a benchmark script: the options every script has, the command that started
    it, and the machine it runs on (read when it starts)."""

    module: str
    quick: bool
    #: The Markdown results file, or None to print only.
    out: Path | None
    #: Where the temporary folder of the stores is made.
    tmp_dir: Path
    seed: int
    #: The command line, as the results show it.
    command: str
    machine: tuple[tuple[str, str], ...]
    date: str
    load_at_start: str
    started: float = field(default_factory=time.perf_counter)

    @property
    def mode(self) -> str:
        """``quick`` or ``full``."""
        return "quick" if self.quick else "full"

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.started

    @contextmanager
    def scratch(self) -> Iterator[Path]:
        """A temporary folder in :attr:`tmp_dir` for the run's stores, removed afterwards."""
        prefix = f".tmp-{self.module.replace('_', '-')}-"
        with tempfile.TemporaryDirectory(
            prefix=prefix, dir=self.tmp_dir, ignore_cleanup_errors=True
        ) as folder:
            yield Path(folder)

    def machine_section(self, *extra: tuple[str, str]) -> list[str]:
        """The *Machine* section: the facts read at the start, ``extra`` rows, the date, and
        the machine's load at the start and now."""
        rows = [
            *self.machine,
            *extra,
            ("Date", self.date),
            ("Machine load at start", self.load_at_start),
            ("Machine load at end", load_average()),
        ]
        return section("Machine", table(("Item", "Value"), rows))


@dataclass(frozen=True)
class Script:
    """A benchmark script, run as ``python -m benchmarks.<module>`` from the repository root."""

    module: str
    description: str
    #: Where a full run writes its results.
    default_out: Path

    @property
    def prog(self) -> str:
        """The command that runs the script."""
        return f"python -m benchmarks.{self.module}"

    def parser(self) -> argparse.ArgumentParser:
        """A parser with the options every script has; the script adds its own."""
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description)
        parser.add_argument(
            "--quick",
            action="store_true",
            help="small sizes for a fast before/after check; print only unless --out",
        )
        parser.add_argument(
            "--out",
            type=Path,
            default=None,
            help=f"Markdown results file (default {self.default_out} for a full run; none with"
            " --quick)",
        )
        parser.add_argument(
            "--tmp-dir",
            type=Path,
            default=None,
            help="where to make the temporary store folder (default: the repository root)",
        )
        parser.add_argument("--seed", type=int, default=1, help="seed of the workload (1)")
        parser.add_argument("--probe", nargs="+", default=None, help=argparse.SUPPRESS)
        return parser

    def start(self, args: argparse.Namespace, argv: Sequence[str] | None) -> Run:
        """The run the parsed ``args`` ask for; ``argv`` None means this process's arguments."""
        given = sys.argv[1:] if argv is None else list(argv)
        tmp_dir: Path = args.tmp_dir or REPO_ROOT
        return Run(
            module=self.module,
            quick=args.quick,
            out=args.out if args.out is not None or args.quick else self.default_out,
            tmp_dir=tmp_dir,
            seed=args.seed,
            command=shlex.join([*self.prog.split(), *given]),
            machine=tuple(facts(tmp_dir)),
            date=utc_now(),
            load_at_start=load_average(),
        )

    def main(
        self,
        argv: Sequence[str] | None,
        parser: argparse.ArgumentParser,
        measure: Callable[[argparse.Namespace, Run], str],
        probe: Callable[[list[str]], Mapping[str, Any]] | None = None,
    ) -> int:
        """Parse ``argv``; with ``--probe``, print ``probe(its arguments)`` as JSON; else run
        ``measure`` (which returns the Markdown results), write the results to the run's
        ``out`` and print them. A wrong answer ends the process with its message."""
        args = parser.parse_args(argv)
        if args.probe is not None:
            if probe is None:
                parser.error("this benchmark has no probe")
            print(json.dumps(dict(probe(args.probe))))
            return 0
        run = self.start(args, argv)
        try:
            text = measure(args, run)
        except WrongAnswerError as wrong:
            raise SystemExit(f"benchmark check failed: {wrong}") from wrong
        publish(text, run.out)
        return 0

    def in_child(self, *args: str) -> dict[str, Any]:
        """Run the script's probe with ``args`` in a fresh interpreter (nothing cached, no
        store open) and return its answer."""
        command = [sys.executable, "-m", f"benchmarks.{self.module}", "--probe", *args]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"the probe {shlex.join(args)} of {self.module} failed:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return answer


# ---------------------------------------------------------------------------------- timing


def rate(count: float, seconds: float) -> float:
    """``count`` per second, guarding against a zero duration."""
    return count / seconds if seconds > 0 else float("inf")


def start_clock() -> float:
    """``time.perf_counter()`` after a garbage collection, so that timed phases start alike."""
    gc.collect()
    return time.perf_counter()


def repeat_timed(repeat: int, run: Callable[[], float]) -> tuple[float, float]:
    """Call ``run`` (which returns seconds) ``repeat`` times, each after a garbage collection:
    ``(best, worst)``."""
    times = []
    for _ in range(repeat):
        gc.collect()
        times.append(run())
    return min(times), max(times)


def slowest_note(count: int, slowest: str) -> str:
    """``; best of 3, slowest ...`` after a figure that is the best of ``count`` runs (nothing
    after a single run)."""
    return f"; best of {count}, slowest {slowest}" if count > 1 else ""


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending sequence (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def run_writers(
    threads: int, seconds: float, write: Callable[[int, int], object]
) -> tuple[list[int], float]:
    """``threads`` threads, started together, each calling ``write(thread, n)`` for n = 0, 1,
    ... until ``seconds`` have passed: how many writes each finished, and the wall time until
    the last one returned. A writer's error stops the run."""
    barrier = threading.Barrier(threads + 1)
    stop = threading.Event()
    counts = [0] * threads
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        done = 0
        try:
            barrier.wait()
            while not stop.is_set():
                write(number, done)
                done += 1
        except threading.BrokenBarrierError:
            return  # the run was abandoned before it started
        except BaseException as exc:
            errors.append(exc)
        counts[number] = done

    workers = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(threads)]
    try:
        for worker in workers:
            worker.start()
        barrier.wait()
        start = time.perf_counter()
        time.sleep(seconds)
        stop.set()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - start
    finally:
        stop.set()
        barrier.abort()  # frees writers still waiting to start if the run failed early
    if errors:
        raise RuntimeError(f"a writer failed: {errors[0]!r}") from errors[0]
    return counts, elapsed


# ---------------------------------------------------------------------------------- figures


def per_second(value: float, unit: str) -> str:
    """A rate with thousands separators: ``123,456 rec/s``."""
    return f"{value:,.0f} {unit}"


def ms(seconds: float) -> str:
    """Seconds shown in milliseconds: ``12.3 ms``."""
    return f"{seconds * 1000:,.1f} ms"


def mib(size: float) -> str:
    """Bytes as MiB: ``12.3 MiB``."""
    return f"{size / 1024 / 1024:,.1f} MiB"


def verdict(passed: bool, *, loud: bool = False) -> str:
    """``PASS`` or ``MISS`` (in bold when ``loud``) for a measurement against its target."""
    if passed:
        return "PASS"
    return "**MISS**" if loud else "MISS"


# ---------------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of a results table."""

    measurement: str
    result: str
    target: str = ""
    status: str = ""


@dataclass
class Report:
    """A results table, filled as the measurements come in, and the notes gathered meanwhile."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self, measurement: str, result: str, target: str = "", passed: bool | None = None
    ) -> None:
        """Add a row (and print it); ``passed`` None means the row has no target."""
        status = "" if passed is None else verdict(passed)
        self.rows.append(Row(measurement, result, target, status))
        shown = f"  [{status} vs {target}]" if status else ""
        print(f"  {measurement}: {result}{shown}", flush=True)

    def table(self) -> list[str]:
        """The rows as a Markdown table."""
        return table(
            ("Measurement", "Result", "Target", "Status"),
            ((r.measurement, r.result, r.target, r.status) for r in self.rows),
        )


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A Markdown table."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows),
    ]


def section(heading: str, body: Iterable[str]) -> list[str]:
    """A ``##`` section: a blank line, the heading, a blank line, the body."""
    return ["", f"## {heading}", "", *body]


def bullets(heading: str, items: Iterable[str]) -> list[str]:
    """A section of bullet points; nothing when there are none (notes often are)."""
    points = [f"- {item}" for item in items]
    return section(heading, points) if points else []


def results_file(
    run: Run,
    title: str,
    summary: str,
    body: Iterable[str],
    *,
    method: Iterable[str] = (),
    notes: Iterable[str] = (),
    machine: Iterable[tuple[str, str]] = (),
) -> str:
    """A results file: the title, the command that made it, a paragraph of ``summary``, the
    *Machine* section (with the ``machine`` rows added), ``body`` (the sections of results),
    then the *Method* and *Notes* as bullet points."""
    lines = [
        f"# {title}",
        "",
        "Command (from the repository root):",
        "",
        "```bash",
        run.command,
        "```",
        "",
        summary,
        *run.machine_section(*machine),
        *body,
        *bullets("Method", method),
        *bullets("Notes", notes),
    ]
    return "\n".join(lines) + "\n"


def publish(text: str, out: Path | None) -> None:
    """Write the results to ``out`` (when given), then print them."""
    if out is not None:  # first, so that a closed stdout cannot lose the results
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    print()
    print(text)
    if out is not None:
        print(f"results written to {out}")
