"""The crawl benchmark runs end to end at tiny sizes on every storage client (each crawl and the
resume after kill -9 checked by the benchmark itself), and its checks reject wrong answers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import run_command

from benchmarks.bench_crawl import (
    CLIENTS,
    CrawlResult,
    check_crawl,
    check_storages,
    speedup_rows,
)
from benchmarks.harness import Report, WrongAnswerError

REQUESTS = 5


@pytest.mark.slow
def test_the_crawl_benchmark_runs_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "crawl.md"
    command = ["--quick", "--sizes", "40"]
    command += ["--resume", "80", "--out", str(out), "--tmp-dir", str(tmp_path)]
    done = run_command(*command, module="benchmarks.bench_crawl", text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    for heading in ("## Crawl of 40 requests", "## Resume after kill -9", "## Targets"):
        assert heading in text
    for client in CLIENTS:
        assert f"| {client} |" in text
    assert "| logkv vs sql, 40 requests |" in text
    assert "`crawler.run` to the first handled request" in text
    # The scratch folder of the stores is gone: only the report is left.
    assert [p.name for p in tmp_path.iterdir()] == ["crawl.md"]


def facts(**changes: Any) -> dict[str, Any]:
    """What a right crawl of :data:`REQUESTS` requests reports, with ``changes``."""
    right: dict[str, Any] = {
        "requests": REQUESTS,
        "handled": list(range(REQUESTS)),
        "finished": REQUESTS,
        "failed": 0,
        "queue_handled": REQUESTS,
        "queue_total": REQUESTS,
        "queue_finished": True,
        "items": [(n, 1) for n in range(REQUESTS)],
        "wrong_items": 0,
        "state_counters": [REQUESTS],
    }
    return right | changes


def test_a_right_crawl_passes() -> None:
    check_crawl("logkv", facts())


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"handled": [0, 1, 2, 3, 3]}, "handled more than once"),
        ({"handled": [0, 1, 2, 3]}, "never handled"),
        ({"finished": REQUESTS - 1}, "statistics"),
        ({"queue_finished": False}, "not finished"),
        ({"queue_handled": REQUESTS - 1}, "request queue counts"),
        ({"items": [(n, 1) for n in range(1, REQUESTS)]}, "missing from the dataset"),
        ({"items": [(0, 2), *((n, 1) for n in range(1, REQUESTS))]}, "more items than"),
        ({"wrong_items": 1}, "items are wrong"),
        ({"state_counters": [REQUESTS - 1]}, "use_state"),
        ({"state_counters": []}, "use_state"),
    ],
)
def test_a_wrong_answer_stops_the_run(changes: dict[str, Any], complaint: str) -> None:
    with pytest.raises(WrongAnswerError, match=complaint):
        check_crawl("logkv", facts(**changes))


def test_a_resumed_crawl_may_hold_a_redone_page_twice_but_not_more() -> None:
    handled = Counter([*range(REQUESTS), 2])  # request 2 was in progress at the kill
    twice = [(n, 2 if n == 2 else 1) for n in range(REQUESTS)]
    check_storages("resume", facts(items=twice), handled)
    thrice = [(n, 3 if n == 2 else 1) for n in range(REQUESTS)]
    with pytest.raises(WrongAnswerError, match="more items than handler calls"):
        check_storages("resume", facts(items=thrice), handled)


def test_speedups_are_reported_per_size_against_each_peer() -> None:
    def result(client: str, seconds: float) -> CrawlResult:
        return CrawlResult(client, 1000, seconds, 0, 0, 0)

    report = Report()
    speedup_rows(report, [result("memory", 1.0), result("logkv", 1.1), result("sql", 20.0)])
    rows: dict[str, tuple[str, str]] = {r.measurement: (r.target, r.status) for r in report.rows}
    assert rows == {
        "logkv vs memory, 1,000 requests": (">= 0.8x", "PASS"),
        "logkv vs sql, 1,000 requests": (">= 15x", "PASS"),
    }
    speedup_rows(report, [result("file-system", 1.0), result("logkv", 1.0)])
    assert (report.rows[-1].measurement, report.rows[-1].status) == (
        "logkv vs file-system, 1,000 requests",
        "MISS",
    )
