"""A whole crawl through Crawlee's ``BasicCrawler`` on each storage client, and a crawl resumed
after ``kill -9``.

Run from the repository root (needs the extra ``logkv[bench]``)::

    python -m benchmarks.bench_crawl            # 2,000 and 50,000 requests; writes results/crawl.md
    python -m benchmarks.bench_crawl --quick    # 200 and 1,000 requests (~2 min); prints only

**The crawl.** Crawlee's ``BasicCrawler`` with ``ConcurrencySettings(desired_concurrency=10,
max_concurrency=10)``, ``max_requests_per_crawl=n``, Crawlee's logging at ``WARNING`` and
``purge_on_start=True``, started with ``https://bench.invalid/p/0``. The URLs are never fetched:
the handler of ``/p/{i}`` pushes one item ``{url, i, body: 900 x "x"}`` to the default dataset,
increments a counter in ``use_state`` and adds the URLs of ``2i+1``, ``2i+2`` and ``i`` itself
when below ``n`` (so one added request in three is new), until all ``n`` are handled. Each crawl
runs in a fresh interpreter (nothing cached, no store open) on a fresh storage folder, for each
storage client:

- ``memory``: Crawlee's ``MemoryStorageClient`` (persists nothing);
- ``file-system``: Crawlee's ``FileSystemStorageClient`` (Crawlee's default);
- ``sql``: Crawlee's ``SqlStorageClient`` on its default SQLite database in the storage folder;
- ``logkv``: ``logkv.crawlee.LogKvStorageClient`` at its defaults, serving natively whatever it
  serves natively (the rest through its ``delegate``).

Requests per second are ``n`` over the wall time of ``crawler.run`` (which opens the storages).
After the process ends, the files left in the storage folder and the disk they use are counted.
Every run is checked: each of the ``n`` requests handled exactly once (by the handler's own count,
Crawlee's statistics and the request queue's counts), the dataset holding one right item per
request, and the persisted ``use_state`` counter equal to ``n``.

**Resume after kill -9** (logkv only). The same crawl, with ``purge_on_start=False`` so that a
restart resumes (as Crawlee says to resume a crawl), runs in a child that reports each handled
request; it is ``SIGKILL``ed after a random number (seeded) of them, between a quarter and three
quarters of ``n``, and started again. Measured: the time from the restart to the end of the first
handler call, from the new process's start and from ``crawler.run``. Checked: every request is
handled by one of the two runs, none handled twice in one run, at most one per concurrent slot
(10) handled again after the kill (Crawlee is at-least-once: the requests in progress at the kill
may be redone), and the dataset holds every page, twice only for a redone one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from crawlee import ConcurrencySettings, service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.crawlers import BasicCrawler, BasicCrawlingContext
from crawlee.storage_clients import FileSystemStorageClient, MemoryStorageClient, SqlStorageClient

from logkv import killcheck
from logkv.crawlee import LogKvStorageClient

from .harness import (
    TARGETS_NOTE,
    Report,
    Run,
    Script,
    WrongAnswerError,
    check,
    mib,
    ms,
    per_second,
    positive_int,
    rate,
    results_file,
    section,
    table,
)
from .machine import disk_usage, version_of

SCRIPT = Script(
    "bench_crawl",
    "A whole crawl through Crawlee's BasicCrawler on Crawlee's memory, file-system and SQL"
    " storage clients and on logkv's, and a logkv crawl resumed after kill -9; write Markdown.",
    Path("benchmarks/results/crawl.md"),
)
#: The storage clients measured, in the order of the results.
CLIENTS: Final = ("memory", "file-system", "sql", "logkv")
DEFAULT_SIZES: Final = (2_000, 50_000)
QUICK_SIZES: Final = (200, 1_000)
DEFAULT_RESUME: Final = 50_000
QUICK_RESUME: Final = 1_000
#: The crawler's desired and maximal concurrency.
CONCURRENCY: Final = 10
BODY: Final = "x" * 900
#: The handler's report of a handled request (a :mod:`logkv.killcheck` message type).
HANDLED: Final = "handled"
#: How long the parent waits for the killed crawl to reach its kill point.
KILL_WAIT_SECONDS: Final = 3600.0
#: The issue's targets: logkv's requests/s at least these multiples of each peer's.
SPEEDUP_TARGETS: Final = {"memory": 0.8, "file-system": 8.0, "sql": 15.0}
RESUME_TARGET_SECONDS: Final = 1.0


def url(number: int) -> str:
    """The synthetic URL of request ``number`` (never fetched)."""
    return f"https://bench.invalid/p/{number}"


def number_of(address: str) -> int:
    """The request number in a URL made by :func:`url`."""
    return int(address.rsplit("/", 1)[1])


# ---------------------------------------------------------------------------------- the crawl


def storage_client(name: str) -> Any:
    """A fresh Crawlee storage client of the kind ``name`` (one of :data:`CLIENTS`)."""
    if name == "memory":
        return MemoryStorageClient()
    if name == "file-system":
        return FileSystemStorageClient()
    if name == "sql":
        return SqlStorageClient()
    if name == "logkv":
        return LogKvStorageClient()
    raise ValueError(f"unknown storage client {name!r}; known: {', '.join(CLIENTS)}")


async def close_client(client: Any) -> None:
    """Close ``client`` when its kind has something to close (logkv's locks, SQL's engine)."""
    close = getattr(client, "close", None)
    if close is not None:
        await close()


def make_crawler(
    client: Any,
    storage_dir: Path,
    requests: int,
    *,
    purge: bool,
    on_handled: Callable[[int], None],
) -> BasicCrawler:
    """The benchmark's crawler over ``client`` in ``storage_dir``: ``requests`` URLs reached from
    ``/p/0``; ``on_handled(i)`` is called at the end of the handler of ``/p/{i}``."""
    # Set as a crawler script sets them, before anything asks the service locator for them.
    service_locator.set_configuration(
        CrawleeConfiguration(
            storage_dir=str(storage_dir), purge_on_start=purge, log_level="WARNING"
        )
    )
    service_locator.set_storage_client(client)
    crawler = BasicCrawler(
        concurrency_settings=ConcurrencySettings(
            desired_concurrency=CONCURRENCY, max_concurrency=CONCURRENCY
        ),
        # A resumed crawl's statistics may count requests of the killed run again.
        max_requests_per_crawl=requests if purge else 2 * requests,
    )

    async def handle(context: BasicCrawlingContext) -> None:
        number = number_of(context.request.url)
        await context.push_data({"url": context.request.url, "i": number, "body": BODY})
        state = await context.use_state({"count": 0})
        state["count"] = int(state["count"]) + 1
        links = [url(n) for n in (2 * number + 1, 2 * number + 2, number) if n < requests]
        await context.add_requests(links)
        on_handled(number)

    crawler.router.default_handler(handle)
    return crawler


async def outcome(crawler: BasicCrawler, requests: int) -> dict[str, Any]:
    """What the storages hold after a crawl, for the parent's checks: the request queue's
    counts, the dataset's items by request number (and how many are not the item pushed), and
    the persisted ``use_state`` counter."""
    queue = await crawler.get_request_manager()  # the default request queue
    items: Counter[int] = Counter()
    wrong = 0
    async for item in (await crawler.get_dataset()).iterate_items():
        number = item.get("i")
        if not isinstance(number, int) or item != {"url": url(number), "i": number, "body": BODY}:
            wrong += 1
            continue
        items[number] += 1
    kvs = await crawler.get_key_value_store()
    counters = [
        (await kvs.get_value(key.key) or {}).get("count")
        async for key in kvs.iterate_keys()
        if key.key.startswith(BasicCrawler._CRAWLEE_STATE_KEY)
    ]
    return {
        "queue_handled": await queue.get_handled_count(),
        "queue_total": await queue.get_total_count(),
        "queue_finished": await queue.is_finished(),
        "items": sorted(items.items()),
        "wrong_items": wrong,
        "state_counters": counters,
        "requests": requests,
    }


async def crawl(name: str, storage_dir: Path, requests: int) -> dict[str, Any]:
    """The crawl on the storage client ``name``, in this process: its wall time, what each
    handler call handled, and the :func:`outcome`."""
    logging.getLogger("crawlee").setLevel(logging.WARNING)
    client = storage_client(name)
    handled: list[int] = []
    crawler = make_crawler(client, storage_dir, requests, purge=True, on_handled=handled.append)
    start = time.perf_counter()
    statistics = await crawler.run([url(0)])
    seconds = time.perf_counter() - start
    facts = await outcome(crawler, requests)
    await close_client(client)
    return {
        "seconds": seconds,
        "handled": handled,
        "finished": statistics.requests_finished,
        "failed": statistics.requests_failed,
        **facts,
    }


async def resumable_crawl(storage_dir: Path, requests: int) -> dict[str, Any]:
    """The logkv crawl without purging, reporting each handled request (``killcheck``
    messages on stdout) as it ends: the run the parent kills, and the run that resumes it."""
    logging.getLogger("crawlee").setLevel(logging.WARNING)
    reporter = killcheck.Reporter(sys.stdout)
    client = storage_client("logkv")
    handled: list[int] = []
    first_handled: list[float] = []

    def on_handled(number: int) -> None:
        if not first_handled:
            first_handled.append(time.monotonic())
        handled.append(number)
        reporter.say(HANDLED, i=number)

    crawler = make_crawler(client, storage_dir, requests, purge=False, on_handled=on_handled)
    started = time.monotonic()
    reporter.say(killcheck.READY)
    await crawler.run([url(0)])
    facts = await outcome(crawler, requests)
    await close_client(client)
    return {
        "run_started": started,
        "first_handled": first_handled[0] if first_handled else None,
        "handled": handled,
        **facts,
    }


# ---------------------------------------------------------------------------------- checks


def check_storages(label: str, facts: Mapping[str, Any], handled: Counter[int]) -> None:
    """The checks every finished crawl passes, whatever ran before it: the queue finished with
    every request handled, every request handled (by ``handled``, the handler calls of all runs)
    and in the dataset (twice at most for a request handled twice), the items right."""
    requests = facts["requests"]
    check(facts["queue_finished"], f"{label}: the request queue is not finished")
    check(
        facts["queue_handled"] == facts["queue_total"] == requests,
        f"{label}: the request queue counts {facts['queue_handled']} handled of "
        f"{facts['queue_total']}, not {requests} of {requests}",
    )
    missing = [n for n in range(requests) if handled[n] == 0]
    check(not missing, f"{label}: {len(missing)} requests never handled, such as {missing[:5]}")
    check(facts["wrong_items"] == 0, f"{label}: {facts['wrong_items']} dataset items are wrong")
    items = dict(facts["items"])
    absent = [n for n in range(requests) if n not in items]
    check(
        not absent, f"{label}: {len(absent)} pages missing from the dataset, such as {absent[:5]}"
    )
    extra = sorted(n for n, count in items.items() if count > handled[n])
    check(not extra, f"{label}: more items than handler calls for {len(extra)} pages: {extra[:5]}")


def check_crawl(name: str, facts: Mapping[str, Any]) -> None:
    """The checks of a crawl run start to end: each request handled exactly once, one item per
    request, the persisted ``use_state`` counter equal to the number of requests."""
    requests = facts["requests"]
    label = f"{name}, {requests:,} requests"
    handled = Counter(facts["handled"])
    twice = sorted(n for n, count in handled.items() if count > 1)
    check(not twice, f"{label}: {len(twice)} requests handled more than once: {twice[:5]}")
    check(
        facts["finished"] == requests and facts["failed"] == 0,
        f"{label}: Crawlee's statistics count {facts['finished']} finished and "
        f"{facts['failed']} failed requests, not {requests} and 0",
    )
    check_storages(label, facts, handled)
    duplicated = sum(count - 1 for _, count in facts["items"])
    check(duplicated == 0, f"{label}: {duplicated} dataset items are duplicates")
    check(
        facts["state_counters"] == [requests],
        f"{label}: the persisted use_state counters are {facts['state_counters']}, not "
        f"[{requests}]",
    )


# ---------------------------------------------------------------------------------- measures


@dataclass(frozen=True)
class CrawlResult:
    """One crawl of one client."""

    client: str
    requests: int
    seconds: float
    files: int
    disk_bytes: int
    file_bytes: int

    @property
    def per_second(self) -> float:
        """Requests handled per second."""
        return rate(self.requests, self.seconds)


@dataclass(frozen=True)
class ResumeResult:
    """The logkv crawl killed and resumed."""

    requests: int
    #: Requests handled (reported) by the killed run.
    before_kill: int
    #: Requests handled again by the second run.
    redone: int
    #: From the start of the second process to the end of its first handler call.
    from_process_start: float
    #: From ``crawler.run`` in the second process to the end of its first handler call.
    from_run: float
    #: Wall time of the whole second process.
    second_run_seconds: float
    #: The ``use_state`` counter as the killed run last saved it (the final counter less the
    #: second run's handler calls): Crawlee saves it on its persist-state events and at the end.
    state_saved: int
    files: int
    disk_bytes: int


def count_files(folder: Path) -> int:
    """The files under ``folder`` (not the folders)."""
    return sum(1 for path in folder.rglob("*") if path.is_file())


def measure_crawl(name: str, root: Path, requests: int) -> CrawlResult:
    """The crawl of ``requests`` on client ``name`` in a fresh interpreter, checked, with what it
    left on disk."""
    storage_dir = root / f"{name}-{requests}"
    storage_dir.mkdir()
    facts = SCRIPT.in_child("crawl", name, str(storage_dir), str(requests))
    check_crawl(name, facts)
    disk, file_bytes = disk_usage(storage_dir)
    result = CrawlResult(
        name, requests, facts["seconds"], count_files(storage_dir), disk, file_bytes
    )
    shutil.rmtree(storage_dir)  # measured: the next crawl needs the space more
    print(
        f"  {name}, {requests:,} requests: {result.per_second:,.0f} req/s, {result.files:,} "
        f"files, {mib(disk)}",
        flush=True,
    )
    return result


def measure_resume(root: Path, requests: int, seed: int) -> ResumeResult:
    """The logkv crawl killed at a random point and run again: the resume's figures, checked."""
    storage_dir = root / f"resume-{requests}"
    storage_dir.mkdir()
    args = ["--probe", "resumable", str(storage_dir), str(requests)]
    kill_at = random.Random(seed).randint(max(1, requests // 4), max(1, 3 * requests // 4))
    killed = killcheck.run_and_kill(
        f"benchmarks.{SCRIPT.module}",
        args,
        lambda pump: pump.wait_for(HANDLED, kill_at, KILL_WAIT_SECONDS),
    )
    failure = killed.failure()
    check(failure is None, f"resume: {failure}")
    transcript = killcheck.read_transcript(killed.lines)
    before = Counter(m["i"] for m in transcript.events if m["t"] == HANDLED)
    check(
        sum(before.values()) >= kill_at, f"resume: the killed run reported {before.total()} handled"
    )
    spawned = time.monotonic()
    try:
        facts = SCRIPT.in_child("resumable", str(storage_dir), str(requests))
    except RuntimeError as failed:  # the storages left by the kill would not resume
        raise WrongAnswerError(f"resume: the crawl after the kill failed: {failed}") from failed
    ended = time.monotonic()
    check(facts["first_handled"] is not None, "resume: the second run handled nothing")
    after = Counter(facts["handled"])
    label = f"resume, {requests:,} requests killed after {before.total():,}"
    for run, counts in (("killed", before), ("second", after)):
        twice = sorted(n for n, count in counts.items() if count > 1)
        check(not twice, f"{label}: the {run} run handled {twice[:5]} more than once")
    redone = sorted(set(before) & set(after))
    check(
        len(redone) <= CONCURRENCY,
        f"{label}: {len(redone)} requests handled before the kill were handled again (at most "
        f"{CONCURRENCY}, the requests in progress at the kill): {redone[:10]}",
    )
    check_storages(label, facts, before + after)
    counters = facts["state_counters"]
    check(
        len(counters) == 1 and after.total() <= counters[0] <= before.total() + after.total(),
        f"{label}: the persisted use_state counters are {counters}; {after.total()} handled "
        f"after the kill, {before.total() + after.total()} in all",
    )
    disk, _ = disk_usage(storage_dir)
    result = ResumeResult(
        requests=requests,
        before_kill=before.total(),
        redone=len(redone),
        from_process_start=facts["first_handled"] - spawned,
        from_run=facts["first_handled"] - facts["run_started"],
        second_run_seconds=ended - spawned,
        state_saved=counters[0] - after.total(),
        files=count_files(storage_dir),
        disk_bytes=disk,
    )
    print(f"  resume: {result}", flush=True)
    return result


# ---------------------------------------------------------------------------------- results


def speedup_rows(report: Report, crawls: list[CrawlResult]) -> None:
    """logkv's requests/s against each peer's, per size, as rows of ``report``."""
    by_key = {(c.client, c.requests): c for c in crawls}
    for requests in sorted({c.requests for c in crawls}):
        ours = by_key.get(("logkv", requests))
        for peer, target in SPEEDUP_TARGETS.items():
            theirs = by_key.get((peer, requests))
            if ours is None or theirs is None:
                continue
            ratio = ours.per_second / theirs.per_second
            report.add(
                f"logkv vs {peer}, {requests:,} requests",
                f"{ratio:.2f}x ({ours.per_second:,.0f} vs {theirs.per_second:,.0f} req/s)",
                f">= {target:g}x",
                ratio >= target,
            )


def render(run: Run, crawls: list[CrawlResult], resume: ResumeResult | None, report: Report) -> str:
    """The Markdown results."""
    body: list[str] = []
    for requests in sorted({c.requests for c in crawls}):
        rows = [
            (
                c.client,
                per_second(c.per_second, "req/s"),
                f"{c.seconds:,.2f} s",
                f"{c.files:,}",
                mib(c.disk_bytes),
                mib(c.file_bytes),
            )
            for c in crawls
            if c.requests == requests
        ]
        body += section(
            f"Crawl of {requests:,} requests",
            table(
                ("Storage client", "Requests/s", "Wall time", "Files left", "Disk (du)", "Bytes"),
                rows,
            ),
        )
    if resume is not None:
        body += section(
            f"Resume after kill -9 (logkv, {resume.requests:,} requests)",
            table(
                ("Item", "Value"),
                [
                    ("Requests handled before the kill", f"{resume.before_kill:,}"),
                    (
                        "Restart to the first handled request (process start)",
                        ms(resume.from_process_start),
                    ),
                    ("`crawler.run` to the first handled request", ms(resume.from_run)),
                    ("Second run, whole process", f"{resume.second_run_seconds:,.2f} s"),
                    ("Requests handled again after the kill", f"{resume.redone:,}"),
                    (
                        "`use_state` counter as the killed run last saved it",
                        f"{resume.state_saved:,} (Crawlee saves it every 60 s and at the end)",
                    ),
                    ("Files left", f"{resume.files:,}"),
                    ("Disk (du)", mib(resume.disk_bytes)),
                ],
            ),
        )
    body += section("Targets", [*report.table(), "", TARGETS_NOTE])
    return results_file(
        run,
        "A whole crawl on each storage client",
        f"One run; whole run {run.elapsed():.0f} s. Crawlee's `BasicCrawler`, 10 concurrent "
        "requests, synthetic URLs never fetched; each handler call pushes one ~1 KB item, "
        "increments a `use_state` counter and adds three URLs (one new).",
        body,
        method=[
            "Each crawl runs in a fresh interpreter on a fresh storage folder, "
            "`purge_on_start=True`; requests/s is the number of requests over the wall time "
            "of `crawler.run`; files and disk are counted after the process ended.",
            "Every crawl is checked: each request handled exactly once, the request queue "
            "finished with every request handled, the dataset holding one right item per "
            "request, the persisted `use_state` counter equal to the number of requests.",
            "Resume: the logkv crawl with `purge_on_start=False`, killed with SIGKILL after a "
            "random number of handled requests (between a quarter and three quarters), then "
            "run again to the end. The first handled request is the end of the first handler "
            "call of the second run. At most 10 requests (those in progress at the kill) may "
            "be handled again; every request must be handled by one of the runs and in the "
            "dataset.",
            "`logkv` is `LogKvStorageClient()` at its defaults, with whatever it serves "
            "natively at the measured commit (the other storages through its delegate, "
            "Crawlee's file-system client).",
        ],
        notes=report.notes,
        machine=[
            ("Crawlee", version_of("crawlee")),
            ("SQLAlchemy", version_of("sqlalchemy")),
            ("aiosqlite", version_of("aiosqlite")),
        ],
    )


# ---------------------------------------------------------------------------------- the run


def parser() -> argparse.ArgumentParser:
    """The command line: the common options and the crawl benchmark's own."""
    parser = SCRIPT.parser()
    sizes = ",".join(str(n) for n in DEFAULT_SIZES)
    quick = ",".join(str(n) for n in QUICK_SIZES)
    parser.add_argument(
        "--sizes",
        type=str,
        default=None,
        help=f"comma-separated crawl sizes in requests ({sizes}; quick {quick})",
    )
    parser.add_argument(
        "--resume",
        type=int,
        default=None,
        help=f"requests of the crawl killed and resumed ({DEFAULT_RESUME:,}; quick "
        f"{QUICK_RESUME:,}; 0 leaves it out)",
    )
    parser.add_argument(
        "--only",
        type=str,
        default="",
        help=f"comma-separated storage clients to run ({','.join(CLIENTS)})",
    )
    return parser


def sizes_of(text: str | None, quick: bool) -> list[int]:
    """The crawl sizes asked for."""
    if text is None:
        return list(QUICK_SIZES if quick else DEFAULT_SIZES)
    return [positive_int(part.strip()) for part in text.split(",") if part.strip()]


def benchmark(args: argparse.Namespace, run: Run) -> str:
    """Measure what ``args`` ask for; the results as Markdown."""
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(CLIENTS))
    if unknown:
        raise SystemExit(f"unknown storage clients: {', '.join(unknown)}")
    chosen = [name for name in CLIENTS if not only or name in only]
    resume_size = (
        args.resume if args.resume is not None else (QUICK_RESUME if run.quick else DEFAULT_RESUME)
    )
    report = Report()
    with run.scratch() as root:
        crawls = [
            measure_crawl(name, root, requests)
            for requests in sizes_of(args.sizes, run.quick)
            for name in chosen
        ]
        resume = (
            measure_resume(root, resume_size, run.seed)
            if resume_size > 0 and "logkv" in chosen
            else None
        )
    speedup_rows(report, crawls)
    if resume is not None:
        report.add(
            f"Resume after kill -9, {resume.requests:,} requests: `crawler.run` to the first "
            "handled request",
            ms(resume.from_run),
            f"< {ms(RESUME_TARGET_SECONDS)}",
            resume.from_run < RESUME_TARGET_SECONDS,
        )
    return render(run, crawls, resume, report)


def probe(args: list[str]) -> dict[str, Any]:
    """``--probe crawl CLIENT DIR N`` (:func:`crawl`) or ``--probe resumable DIR N``
    (:func:`resumable_crawl`), in this process."""
    kind, *rest = args
    if kind == "crawl":
        name, storage_dir, requests = rest
        return asyncio.run(crawl(name, Path(storage_dir), int(requests)))
    if kind == "resumable":
        storage_dir, requests = rest
        return asyncio.run(resumable_crawl(Path(storage_dir), int(requests)))
    raise ValueError(f"unknown probe {kind!r}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--probe``, one crawl in this process)."""
    return SCRIPT.main(argv, parser(), benchmark, probe)


if __name__ == "__main__":
    sys.exit(main())
