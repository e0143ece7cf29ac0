"""The peer benchmark runs end to end at tiny sizes: every peer's adapter gives right answers
(the benchmark checks each one and stops on a wrong one) and the report and chart are written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.peer_report import RAW, Results, targets
from benchmarks.peer_stores import peers

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_peer_benchmark_runs_and_writes_its_report_and_chart(tmp_path: Path) -> None:
    out = tmp_path / "peers.md"
    command = [sys.executable, "-m", "benchmarks.bench_peers", "--quick", "--records", "300"]
    command += ["--reopen", "1000", "--rounds", "1", "--sync-seconds", "0.1", "--writers", "4"]
    command += ["--out", str(out), "--tmp-dir", str(tmp_path)]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    for section in ("## Targets", "## Time per operation", "## Durable writes", "## Reopen"):
        assert section in text
    for peer in peers():
        assert f"| {peer.name} |" in text
    assert "| logkv (compacted) | 1,000 |" in text
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The scratch folder of the stores is gone: only the report and the chart are left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["peers.md", "peers.png"]


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
