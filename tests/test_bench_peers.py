"""The peer benchmark runs end to end at tiny sizes: every peer's adapter gives right answers
(the benchmark checks each one and stops on a wrong one) and the report and chart are written."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_command

from benchmarks.peer_report import RAW, Results, render_prefix, targets
from benchmarks.peer_stores import peers


@pytest.mark.slow
def test_the_peer_benchmark_runs_and_writes_its_report_and_chart(tmp_path: Path) -> None:
    out = tmp_path / "peers.md"
    command = ["--quick", "--records", "300"]
    command += ["--reopen", "1000", "--rounds", "1", "--sync-seconds", "0.1", "--writers", "4"]
    command += ["--out", str(out), "--tmp-dir", str(tmp_path)]
    done = run_command(*command, module="benchmarks.bench_peers", text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    sections = ("## Targets", "## Time per operation", "## Durable writes", "## Reopen")
    for section in (*sections, "## Prefix listing"):
        assert section in text
    for peer in peers():
        assert f"| {peer.name} |" in text
    assert "| logkv (compacted) | 1,000 |" in text
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The scratch folder of the stores is gone: only the report and the chart are left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["peers.md", "peers.png"]


@pytest.mark.slow
def test_the_durable_writes_run_alone_in_rounds_after_the_raw_sync_loop(tmp_path: Path) -> None:
    out = tmp_path / "sync.md"
    command = ["--quick", "--durable-only"]
    command += ["--rounds", "2", "--sync-seconds", "0.05", "--writers", "4"]
    command += ["--only", "logkv,logkv Engine", "--out", str(out), "--tmp-dir", str(tmp_path)]
    done = run_command(*command, module="benchmarks.bench_peers", text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("raw loop:") == 4  # before each peer, in each round
    text = out.read_text(encoding="utf-8")
    assert "## Durable writes" in text and "## Time per operation" not in text
    assert "| raw write + fdatasync |" in text and "| logkv Engine |" in text
    assert "durable writes, logkv, 1 writer against the raw" in text


@pytest.mark.parametrize(
    ("logkv_set", "expected"), [(4e-6, "PASS"), (5e-6, "**MISS**")], ids=["pass", "miss"]
)
def test_the_raw_limit_target_compares_times_per_set(logkv_set: float, expected: str) -> None:
    results = Results("", peers=peers())
    results.keep(RAW, "set", 2e-6)
    results.keep(RAW, "set json", 2.2e-6)
    results.keep("logkv", "set", logkv_set)
    results.keep("logkv", "set", logkv_set * 2)  # a slower round does not replace the best one
    row = next(r for r in targets(results) if r[2] == "logkv, small JSON set")
    assert row[3] == expected
    assert row[1].startswith(f"{2e-6 / logkv_set:.0%}")


def test_the_page_document_targets_compare_against_crawlee_memory_and_the_floor() -> None:
    results = Results("", peers=peers())
    results.keep(RAW, "doc set", 6e-6)
    results.keep("crawlee memory", "doc set", 7e-6)
    results.keep("crawlee memory", "doc get", 4e-6)
    results.keep("logkv", "doc set", 9e-6)  # 0.78x Crawlee's, 67 % of the floor
    results.keep("logkv", "doc get", 6e-6)  # 0.67x Crawlee's
    rows = {r[0]: r for r in targets(results)}
    set_row = rows["`set_value` of a 1 KB JSON document ≥ 0.7x Crawlee's memory client"]
    get_row = rows["`get_value` of a 1 KB JSON document ≥ 0.8x Crawlee's memory client"]
    floor_row = rows["`set_value` of a 1 KB JSON document ≥ 60 % of the floor"]
    assert (set_row[3], get_row[3], floor_row[3]) == ("PASS", "**MISS**", "PASS")
    assert set_row[1].startswith("0.78x") and floor_row[1].startswith("67%")


@pytest.mark.parametrize(("rate", "expected"), [(950.0, "PASS"), (850.0, "**MISS**")])
def test_the_synced_writer_target_compares_with_the_raw_sync_loop(
    rate: float, expected: str
) -> None:
    results = Results("", peers=peers())
    results.durable[("raw write + fdatasync", 1)] = 1000.0
    results.durable[("logkv", 1)] = rate
    row = next(r for r in targets(results) if r[0].startswith("`fsync` durability, one writer"))
    assert row[3] == expected


def test_the_prefix_listing_table_shows_each_size_and_what_was_not_run() -> None:
    results = Results("", peers=peers())
    for size, took in ((1000, 2e-4), (10_000, 2e-3)):
        results.prefix[("logkv", size, "1 % of the keys")] = took
        results.prefix[("logkv", size, "10 keys")] = 2e-5
    results.prefix[("lmdb", 1000, "1 % of the keys")] = 1e-4
    lines = render_prefix(results)
    header = next(line for line in lines if line.startswith("| store"))
    assert "1 % of the keys, 1,000 keys" in header and "10 keys, 10,000 keys" in header
    logkv = next(line for line in lines if line.startswith("| logkv |"))
    assert "200 µs" in logkv and "2.0 ms" not in logkv and "2,000 µs" in logkv
    lmdb = next(line for line in lines if line.startswith("| lmdb |"))
    assert "100 µs" in lmdb and "not run" in lmdb
    assert render_prefix(Results("", peers=peers())) == []
