"""The web console's server-side time: the key list of a 1M-key store and the history of a key
with 10,000 versions (target: 200 ms each), beside the key list of a 100-key store.

The history page is measured four ways: the first view of a key while the store's history index
is being built (a search of the whole log), the first view once it is ready (a lookup), repeated
views, and views while a writer appends between them (each takes in only the new log). The
index's build time and memory are reported too.

Run: ``python -m benchmarks.bench_web`` (``--quick``: 100,000 keys, 1,000 versions). Needs the
``web`` extra. The console runs in this process (Starlette's test client, no network); each
figure is the ``Server-Timing`` the console reports: from the request reaching it to the
response starting, rendering included. The first request of a store opens it (a read-only open
replays its log) and is reported apart; the rest are the median and 95th percentile of
repeated requests, each of which refreshes the store first, as every console request does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from logkv import Engine
from logkv.web.views import HISTORY_PAGE as PAGE

from .harness import Report, Run, Script, check, percentile, results_file, section, start_clock

SCRIPT = Script(
    "bench_web",
    "Server-side time of the web console's key list and history pages.",
    Path("benchmarks/results/web.md"),
)
TARGET_MS = 200.0
REPEATS = 30


def build(root: Path, keys: int, versions: int) -> None:
    """``key_value_stores/big``: ``keys`` keys of ~100-byte JSON and the key ``hot`` written
    ``versions`` times among them, one record per write as a crawler's ``set_value`` makes
    them; ``key_value_stores/small``: 100 keys."""
    every = max(keys // versions, 1)
    written = 0
    with Engine.open(root / "key_value_stores" / "big") as engine:
        for i in range(keys):
            body = {"url": f"https://shop.invalid/p/{i}", "price": i % 1000, "ok": True}
            engine.set(f"page-{i:07d}", json.dumps(body).encode(), "application/json")
            if i % every == 0 and written < versions:
                hot = {"cursor": written, "seen": i, "note": "state " * 20}
                engine.set("hot", json.dumps(hot).encode(), "application/json")
                written += 1
    check(written == versions, f"wrote {written} versions of hot, not {versions}")
    with Engine.open(root / "key_value_stores" / "small") as engine:
        for i in range(100):
            engine.set(f"page-{i:03d}", b'{"small": true}', "application/json")


def server_ms(client: Any, url: str) -> float:
    """The console's own time for ``url`` (its ``Server-Timing``), after checking the answer."""
    response = client.get(url)
    check(response.status_code == 200, f"{url} answered {response.status_code}")
    timing = response.headers["server-timing"]
    return float(timing.split("dur=")[1])


def timed(client: Any, url: str, repeats: int) -> tuple[float, float]:
    """Median and 95th percentile of ``repeats`` requests of ``url``, in ms."""
    times = sorted(server_ms(client, url) for _ in range(repeats))
    return statistics.median(times), percentile(times, 0.95)


def appending(
    client: Any, root: Path, big: str, versions: int, repeats: int
) -> tuple[str, str, str, bool]:
    """The history page of ``hot`` while a writer appends: before each request the writer
    adds a version of ``hot`` and 99 other records, so every view has new log to take in (the
    console searches only what was appended since its last view)."""
    url = f"{big}/history?key=hot&offset={max(versions - PAGE, 0)}"  # a full page of 200
    times = []
    with Engine.open(root / "key_value_stores" / "big") as writer:
        for round_ in range(repeats):
            for i in range(99):
                writer.set(f"page-new-{round_:03d}-{i:02d}", b'{"new": true}', "application/json")
            writer.set(
                "hot", json.dumps({"cursor": versions + round_}).encode(), "application/json"
            )
            times.append(server_ms(client, url))
    times.sort()
    median, p95 = statistics.median(times), percentile(times, 0.95)
    return (
        f"history page while a writer appends ({PAGE} changes; 100 records, one of them the "
        "key's, appended between views)",
        f"{median:,.1f} ms median, {p95:,.1f} ms p95",
        f"≤ {TARGET_MS:.0f} ms",
        median <= TARGET_MS,
    )


def indexed_first_views(
    client: Any, root: Path, big: str, versions: int, repeats: int
) -> list[tuple[Any, ...]]:
    """Rows for the store's history index: its build time and memory once it is ready, and
    first views of ``hot`` read from it (its timeline dropped before each view)."""
    console = client.app.state.console
    folder = root / "key_value_stores" / "big"
    indexes = console.timelines.indexes
    indexes.join()
    status = indexes.status(folder)
    check(status["state"] == "ready", f"the history index is {status['state']}")
    index = indexes.ready(folder, _covers(console, folder))
    check(index is not None, "the history index is not ready")
    memory = index.memory()
    records = index.records
    times = []
    for _ in range(repeats):
        console.timelines.forget(folder, "hot")
        times.append(server_ms(client, f"{big}/history?key=hot"))
    times.sort()
    median, p95 = statistics.median(times), percentile(times, 0.95)
    return [
        (
            f"history index of the store built in the background ({records:,} records)",
            f"{status['build_s']:,.1f} s",
        ),
        (
            "history index memory (a dict by key of packed record locations)",
            f"{memory / 1e6:,.1f} MB, {memory / records:,.0f} bytes per record",
        ),
        (
            f"first view of the key's history from the store's index ({versions:,} "
            "records read by location)",
            f"{median:,.1f} ms median, {p95:,.1f} ms p95",
            f"≤ {TARGET_MS:.0f} ms",
            median <= TARGET_MS,
        ),
    ]


def _covers(console: Any, folder: Path) -> int:
    with console.opened.use(folder) as store:
        return int(store.engine.snapshot_covers)


def measure(args: argparse.Namespace, run: Run) -> str:
    keys, versions = (100_000, 1_000) if run.quick else (args.keys, args.versions)
    from logkv.web.app import create_app  # noqa: PLC0415 (the web extra)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Starlette's notice about its test client's httpx
        from starlette.testclient import TestClient  # noqa: PLC0415

    report = Report()
    with run.scratch() as root:
        clock = start_clock()
        build(root, keys, versions)
        build_s = time.perf_counter() - clock
        print(f"built {keys:,} keys and {versions:,} versions of 'hot' in {build_s:.1f} s")
        client = TestClient(create_app(root), base_url="http://127.0.0.1")
        big, small = "/stores/key_value_stores/big", "/stores/key_value_stores/small"
        api = "/api/stores/key_value_stores/big"
        middle = f"page-{keys // 2:07d}"
        opened = server_ms(client, big)
        report.add("first key list page, including the read-only open", f"{opened:,.0f} ms")
        searched = server_ms(client, f"{big}/history?key=hot")
        report.add(
            f"first view of the key's history while the store's index is built (its "
            f"{versions:,} records searched for in the whole log)",
            f"{searched:,.0f} ms",
        )
        for row in indexed_first_views(client, root, big, versions, args.repeats):
            report.add(*row)
        first_two = client.get(f"{api}/history", params={"key": "hot", "limit": 2}).json()
        a, b = (change["seq"] for change in first_two["changes"])
        pages = [
            (f"key list, first page ({keys:,} keys)", big, True),
            (f"key list, a page from the middle ({keys:,} keys)", f"{big}?after={middle}", True),
            (f"key list, prefix filter ({keys:,} keys)", f"{big}?prefix=page-00123", True),
            ("key list, first page (100 keys)", small, False),
            (f"history page of a key with {versions:,} versions", f"{big}/history?key=hot", True),
            (
                f"history page, the last {versions % PAGE or PAGE} changes",
                f"{big}/history?key=hot&offset={(versions - 1) // PAGE * PAGE}",
                False,
            ),
            (
                "history page with a diff of two versions",
                f"{big}/history?key=hot&a={a}&b={b}",
                False,
            ),
            (f"history, JSON API ({PAGE} changes)", f"{api}/history?key=hot", False),
        ]
        report.add(*appending(client, root, big, versions, args.repeats))
        for label, url, targeted in pages:
            server_ms(client, url)  # the first request of a page compiles its template
            median, p95 = timed(client, url, args.repeats)
            result = f"{median:,.1f} ms median, {p95:,.1f} ms p95"
            if targeted:
                report.add(label, result, f"≤ {TARGET_MS:.0f} ms", median <= TARGET_MS)
            else:
                report.add(label, result)
        client.close()
    summary = (
        f"One run ({run.mode}): {keys:,} keys of ~100-byte JSON in one store, and the key "
        f"`hot` written {versions:,} times among them (its first view is a lookup in the store's "
        f"history index once that is built); each page requested {args.repeats} times."
    )
    return results_file(
        run,
        "logkv serve: server-side time of the console's pages",
        summary,
        section("Results", report.table()),
        method=[
            "The console runs in process under Starlette's test client; each figure is the "
            "`Server-Timing` header it sends (request in to response start: the store's "
            "refresh, the reads and the template).",
            "Key lists read one page (100 keys) from the sorted index as a range, with each "
            "key's last change read from its record's head: the page costs the same in a "
            "1M-key store as in a 100-key one.",
            "Opening a store starts its history index in a background thread (one pass over "
            "the log; per key, where its records are). The index's build time is from its start "
            "to its end; its memory is the size of its dict and of the keys, ints and arrays in "
            "it (`sys.getsizeof`), divided by the records indexed.",
            f"A history page lists {PAGE} changes of the key's timeline. A first view once the "
            "index is ready reads the key's locations from it and then the records of the page "
            "(measured with the key's timeline dropped before each view). A first view before "
            "then, measured right after the store's first page while the index is being built "
            "(the two share the 2 cores), finds them with a byte search of the whole log for "
            "the key, decoding only the frames around hits (`logkv.history.key_log`). The "
            "console keeps the timeline (each change's seq, time, size and "
            "location; no values) with where its read-only open had read the log to, and a "
            "later view searches only what was appended since "
            "(`logkv.history.key_records_from`): the row 'while a writer appends' measures "
            "that. A compaction makes the index be built again. Values are read only for the "
            "two versions a diff shows.",
        ],
        notes=[
            "The machine's load at the start and end of the run is in the machine table: "
            "on a loaded machine, ratios between rows of one run are more telling than the "
            "figures."
        ],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = SCRIPT.parser()
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys of the big store")
    parser.add_argument("--versions", type=int, default=10_000, help="versions of the hot key")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="requests per page")
    return SCRIPT.main(argv, parser, measure)


if __name__ == "__main__":
    sys.exit(main())
