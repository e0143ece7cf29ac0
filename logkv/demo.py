"""The demo: a crawler's state survives ``kill -9``; then compaction, history and paging.

Run it with ``python -m logkv.demo`` (or ``logkv-demo``). Everything happens in a fresh
temporary storage folder (``Configuration.storage_dir``), removed afterwards unless ``--keep``.

1. A crawler child process writes through :class:`logkv.KeyValueStore`. It crawls a small
   catalogue again and again (prices change between rounds): for every page it stores the HTML,
   then the product as JSON (or deletes it while it is sold out), then saves its progress, an
   autosaved dict (``get_auto_saved_value`` + ``persist_autosaved_values``). Pages, products and
   the progress record are overwritten again and again: hot keys. Before each write the child
   reports it (kind and number), and once the call returned it reports an ack: only then is the
   write *acknowledged* (the protocol of :mod:`logkv.killcheck`).
2. The parent kills the child with ``SIGKILL`` in the middle of its run.
3. It reopens the store: every key must hold the value of its last acknowledged write (the one
   write in flight at the kill may or may not have made it); a torn tail is reported.
4. It compacts the store (``await kvs.compact(retention="archive")``) and shows the bytes before
   and after.
5. It shows one key's history (:func:`logkv.history.key_history`, read from ``archive/`` and the
   log beside the open store) and checks that the log holds every acknowledged write, in order.
6. It reopens the store and pages through its keys with ``exclusive_start_key``.

The exit status is 0 only if nothing acknowledged was lost. Every write is deterministic (write
``N`` of a kind always stores the same value), so the parent needs only the child's report lines
to know what the store must hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from .compaction import CompactionResult
from .configuration import Configuration
from .content import decode
from .engine import Engine
from .format import DeleteRecord, Record, SetRecord
from .history import iter_log, key_history
from .key_value_store import KeyValueStore
from .killcheck import (
    ACK,
    INTENT,
    READY,
    Message,
    Pump,
    Reporter,
    Run,
    read_transcript,
    run_and_kill,
)
from .layout import ARCHIVE_DIR, SEGMENT_SUFFIX
from .modes import Durability, Retention
from .names import store_folder

#: The crawler's store, under ``{storage_dir}/key_value_stores/``.
STORE_NAME: Final = "shop-crawl"
#: The key of the crawler's autosaved progress record.
STATE_KEY: Final = "CRAWLER_STATE"
#: Items in the catalogue; the crawler visits them in rounds.
CATALOGUE: Final = 40
#: The child is killed once it has acknowledged this many writes (it keeps writing meanwhile).
KILL_AFTER_ACKS: Final = 600
#: The item whose product history step 5 shows (sold out, so deleted, in odd rounds).
HISTORY_ITEM: Final = 5
KINDS: Final = ("page", "product", "state")
HTML: Final = "text/html; charset=utf-8"
_SEGMENT_SIZE: Final = 128 * 1024
_WORDS: Final = ("price", "stock", "review", "colour", "size", "shipping", "warranty", "sale")
#: Page text is cut from this (so that making a page costs next to nothing next to storing it).
_FILLER: Final = " ".join(random.Random(0).choices(_WORDS, k=2000))


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


#: What ``get_value`` returns for a key without a record.
ABSENT: Final = _Absent()


# ---------------------------------------------------------------------------------- the crawl


def item_url(item: int) -> str:
    """The URL of catalogue item ``item``."""
    return f"https://shop.example/item/{item}"


def page_key(item: int) -> str:
    """The key of item ``item``'s HTML page."""
    return f"pages/item-{item:03d}.html"


def product_key(item: int) -> str:
    """The key of item ``item``'s product record (JSON)."""
    return f"products/item-{item:03d}"


def fetch(number: int) -> tuple[int, int]:
    """``(item, round)`` of the crawler's ``number``-th page fetch."""
    crawl_round, item = divmod(number, CATALOGUE)
    return item, crawl_round


def page_html(item: int, crawl_round: int) -> str:
    """The HTML of ``item``'s page in ``crawl_round``: deterministic, 0.3 to 10 KB."""
    rng = random.Random(item * 1000 + crawl_round)
    start = rng.randrange(1000)
    words = _FILLER[start : start + rng.randint(250, 10_000)]
    return f"<html><head><title>Item {item}</title></head><body><p>{words}</p></body></html>"


def product(item: int, crawl_round: int) -> dict[str, Any] | None:
    """``item``'s product as of ``crawl_round``; None while it is sold out (every fifth item,
    in odd rounds): the crawler then deletes its record."""
    if item % 5 == 0 and crawl_round % 2 == 1:
        return None
    rng = random.Random(item * 1000 + crawl_round)
    return {
        "url": item_url(item),
        "title": f"Item {item}",
        "price": round(5 + item * 1.25 + rng.randint(0, 400) / 100, 2),
        "in_stock": rng.random() < 0.8,
        "crawl_round": crawl_round,
    }


def progress(number: int) -> dict[str, Any]:
    """The crawler's progress record once fetch ``number`` was stored."""
    item, crawl_round = fetch(number)
    return {"fetched": number + 1, "round": crawl_round, "last_url": item_url(item)}


def write_of(kind: str, number: int) -> tuple[str, Any]:
    """``(key, value)`` of the crawler's write ``kind`` for fetch ``number`` (None: a delete)."""
    item, crawl_round = fetch(number)
    if kind == "page":
        return page_key(item), page_html(item, crawl_round)
    if kind == "product":
        return product_key(item), product(item, crawl_round)
    if kind == "state":
        return STATE_KEY, progress(number)
    raise ValueError(f"unknown write kind {kind!r}")


def configuration(storage_dir: Path, durability: str) -> Configuration:
    """The demo store's configuration: its own storage folder, small segments, and no
    automatic compaction (step 4 compacts explicitly)."""
    return Configuration(
        storage_dir=str(storage_dir),
        durability=Durability(durability),
        segment_size=_SEGMENT_SIZE,
        auto_compact=False,
    )


# ---------------------------------------------------------------------------------- the child


async def crawl(storage_dir: Path, durability: str, out: IO[str]) -> None:
    """The crawler child: crawl forever, reporting each write before it and once it returned
    (:class:`~logkv.killcheck.Reporter` messages ``intent`` and ``ack``)."""
    reporter = Reporter(out)
    settings = configuration(storage_dir, durability)
    async with await KeyValueStore.open(name=STORE_NAME, configuration=settings) as kvs:
        state = await kvs.get_auto_saved_value(STATE_KEY, {"fetched": 0, "round": 0})
        reporter.say(READY)
        number = 0
        while True:
            for kind in ("page", "product"):
                key, value = write_of(kind, number)
                reporter.say(INTENT, kind=kind, n=number)
                if value is None:
                    await kvs.delete_value(key)
                else:
                    await kvs.set_value(key, value, HTML if kind == "page" else None)
                reporter.say(ACK)
            state.update(progress(number))
            reporter.say(INTENT, kind="state", n=number)
            await kvs.persist_autosaved_values()  # writes the dict: it changed
            reporter.say(ACK)
            number += 1


# ---------------------------------------------------------------------------------- the parent


Write = tuple[str, int]


def _write(intent: Message) -> Write:
    return str(intent["kind"]), int(intent["n"])


def acknowledged(lines: Sequence[bytes]) -> tuple[list[Write], Write | None]:
    """The acknowledged writes, in order, and the write in flight at the kill (if any)."""
    transcript = read_transcript(lines)
    done = [_write(intent) for intent, _ in transcript.acked]
    pending = transcript.in_flight
    return done, None if pending is None else _write(pending)


def run_crawler(storage_dir: Path, durability: str) -> Run:
    """Start the crawler child and kill it mid-run, once it has acknowledged
    :data:`KILL_AFTER_ACKS` writes."""

    def until_enough(pump: Pump) -> None:
        pump.wait_for(ACK, KILL_AFTER_ACKS, timeout=60)
        time.sleep(random.uniform(0.0, 0.02))  # land anywhere in a later write, not just after one

    args = ["--child", str(storage_dir), "--durability", durability]
    return run_and_kill("logkv.demo", args, until_enough)


def final_state(done: Sequence[Write]) -> dict[str, Any]:
    """What each key must hold after the acknowledged writes ``done`` (None: no record)."""
    state: dict[str, Any] = {}
    for kind, number in done:
        key, value = write_of(kind, number)
        state[key] = value
    return state


async def check_store(kvs: KeyValueStore, done: list[Write], pending: Write | None) -> int:
    """Print whether every key holds its last acknowledged value; return the keys that do not
    (and keys that should not exist)."""
    expected = final_state(done)
    in_flight = write_of(*pending) if pending is not None else None
    wrong: list[str] = []
    for key, value in expected.items():
        stored = await kvs.get_value(key, ABSENT)
        if _holds(stored, value):
            continue
        if in_flight is not None and in_flight[0] == key and _holds(stored, in_flight[1]):
            continue  # the unacknowledged write made it: allowed
        wrong.append(key)
    allowed = {key for key, value in expected.items() if value is not None}
    if in_flight is not None and in_flight[1] is not None:
        allowed.add(in_flight[0])
    extra = [info.key async for info in kvs.iterate_keys() if info.key not in allowed]
    pages = sum(1 for key in expected if key.startswith("pages/"))
    products = [key for key in expected if key.startswith("products/")]
    removed = sum(1 for key in products if expected[key] is None)
    good = len(expected) - len(wrong)
    print(
        f"   keys holding their last acknowledged value: {good}/{len(expected)} ({pages} pages, "
        f"{len(products) - removed} products, {removed} sold out (no record), {STATE_KEY})"
    )
    for key in wrong[:5]:
        print(f"   LOST: {key} does not hold its last acknowledged value")
    for key in extra[:5]:
        print(f"   UNEXPECTED: {key} exists but no write to it was acknowledged")
    return len(wrong) + len(extra)


def _holds(stored: Any, value: Any) -> bool:
    """True when ``stored`` (from ``get_value(key, ABSENT)``) is what a write of ``value``
    (None: a delete) leaves."""
    return stored is ABSENT if value is None else bool(stored == value)


def report_kill_damage(folder: Path) -> int:
    """Print what the kill left at the end of the log, seen by a read-only open (which changes
    nothing); return the log's last sequence number."""
    with Engine.open(folder, readonly=True) as engine:
        torn = engine.report.torn_tail
        last_seq = engine.last_seq
    if torn is None:
        print("   torn tail: none (no append was cut short by the kill)")
    else:
        print(
            f"   torn tail: {torn.end - torn.start} bytes at offset {torn.start} of "
            f"{torn.path.name} ({torn.reason}): an unacknowledged append, cut off by the open; "
            "every record before it is intact"
        )
    return last_seq


async def after_the_kill(settings: Configuration, done: list[Write], pending: Write | None) -> int:
    """Steps 3 to 6, through the async API; returns the number of problems found."""
    folder = store_folder(settings.storage_dir, STORE_NAME)
    print("3. Reopening the store (a read-only look first, which changes nothing):")
    last_seq = report_kill_damage(folder)
    started = time.perf_counter()
    async with await KeyValueStore.open(name=STORE_NAME, configuration=settings) as kvs:
        took = (time.perf_counter() - started) * 1000
        meta = await kvs.get_metadata()
        print(
            f"   reopened with KeyValueStore.open in {took:.0f} ms: {meta.record_count} records, "
            f"last seq {meta.last_seq};\n   {_size(meta.log_bytes)} on disk, of which "
            f"{_size(meta.live_bytes)} live (the rest: overwritten and deleted records)"
        )
        problems = 0
        if last_seq != meta.last_seq or not len(done) <= last_seq <= len(done) + 1:
            problems += 1
            print(f"   UNEXPECTED: the log ends at seq {last_seq}, after {len(done)} acked writes")
        if pending is not None:
            made_it = "made it" if last_seq > len(done) else "did not make it"
            print(
                f"   the in-flight write ({pending[0]} {pending[1]}) {made_it}: either is "
                "correct, it was never acknowledged"
            )
        problems += await check_store(kvs, done, pending)
        print(f"   {STATE_KEY} = {json.dumps(await kvs.get_value(STATE_KEY))}")

        print(
            '4. await kvs.compact(retention="archive") (a running store also compacts itself '
            "on PERSIST_STATE\n   past the Configuration's thresholds; operators run "
            "logkv-compact):"
        )
        result = await kvs.compact(retention=Retention.ARCHIVE.value)
        if result is None:
            print("   FAILED: the store was not compacted")
            problems += 1
        else:
            describe_compaction(folder, result)

        print(
            f"5. History of {product_key(HISTORY_ITEM)} (logkv.history.key_history; it reads "
            "beside the open store):"
        )
        problems += await asyncio.to_thread(show_history, folder, done, pending)

    print("6. Reopened after compaction; ordered paging with exclusive_start_key:")
    async with await KeyValueStore.open(name=STORE_NAME, configuration=settings) as kvs:
        problems += await check_store(kvs, done, pending)
        problems += await show_paging(kvs)
    return problems


def describe_compaction(folder: Path, result: CompactionResult) -> None:
    """Step 4: the bytes before and after, and what went to the archive."""
    archived = sum(p.stat().st_size for p in (folder / ARCHIVE_DIR).glob("*" + SEGMENT_SUFFIX))
    snapshot = result.snapshot.name if result.snapshot is not None else "no snapshot"
    print(
        f"   data files in the store folder: {_size(result.bytes_before)} -> "
        f"{_size(result.bytes_after)} ({result.records} live records copied into {snapshot});\n"
        f"   {result.retired_files} segments ({_size(archived)}) moved to {ARCHIVE_DIR}/ for audits"
    )


def show_history(folder: Path, done: list[Write], pending: Write | None) -> int:
    """Step 5: one key's history, and the whole log against the acknowledged writes; returns
    the number of problems found."""
    key = product_key(HISTORY_ITEM)
    print(f"   {'seq':>6}  {'time (UTC)':<15} {'op':<6} {'size':>6}  file")
    for logged in key_history(folder, key):
        record = logged.record
        when = datetime.fromtimestamp(record.timestamp_us / 1e6, UTC).strftime("%H:%M:%S.%f")
        op = "set" if isinstance(record, SetRecord) else "delete"
        size = str(logged.value_size) if isinstance(record, SetRecord) else "-"
        where = logged.path.relative_to(folder)
        print(f"   {record.seq:>6}  {when[:-3]:<15} {op:<6} {size:>6}  {where}")
    records = [logged.record for logged in iter_log(folder)]
    mismatch = next(
        (i for i, (r, w) in enumerate(zip(records, done, strict=False)) if not _is(r, w)), None
    )
    extra = records[len(done) :]
    in_flight_ok = len(extra) == 1 and pending is not None and _is(extra[0], pending)
    if mismatch is None and len(records) >= len(done) and (not extra or in_flight_ok):
        note = " plus the in-flight one" if extra else ""
        print(
            f"   the log (archive/ and after) holds all {len(done)} acknowledged writes{note}, "
            "in order: checked record by record"
        )
        return 0
    at = mismatch if mismatch is not None else min(len(records), len(done))
    print(f"   LOST: the log differs from the acknowledged writes at write {at + 1}")
    return 1


def _is(record: Record, write: Write) -> bool:
    """True when ``record`` is the crawler's ``write``."""
    key, value = write_of(*write)
    if record.key != key:
        return False
    if value is None:
        return isinstance(record, DeleteRecord)
    return isinstance(record, SetRecord) and decode(record.value, record.content_type) == value


async def show_paging(kvs: KeyValueStore) -> int:
    """Page through the keys with ``exclusive_start_key``; returns 1 if paging was not exact."""
    print("   list_keys(exclusive_start_key=..., limit=4), three pages:")
    start: str | None = None
    for _ in range(3):
        infos = await kvs.list_keys(exclusive_start_key=start, limit=4)
        shown = ", ".join(f"{info.key} ({info.size} B)" for info in infos)
        print(f"     after {start!r}: {shown}")
        if not infos:
            break
        start = infos[-1].key
    walked: list[str] = []
    pages = 0
    start = None
    while True:
        batch = [info.key async for info in kvs.iterate_keys(start, limit=25)]
        if not batch:
            break
        pages += 1
        walked.extend(batch)
        start = batch[-1]
    meta = await kvs.get_metadata()
    exact = walked == sorted(set(walked)) and len(walked) == meta.record_count
    verdict = "exact: sorted, no duplicates, none missed" if exact else "NOT EXACT"
    print(f"   walked all {len(walked)} keys in {pages} pages of 25 (iterate_keys): {verdict}")
    return 0 if exact else 1


def _size(count: int) -> str:
    if count >= 1 << 20:
        return f"{count / (1 << 20):.1f} MiB"
    return f"{count / 1024:.0f} KiB"


def demo(durability: str, keep: bool) -> int:
    """Run the whole demo in a temporary storage folder; return the exit status."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("   logkv log: %(message)s"))
    logging.getLogger("logkv").addHandler(handler)
    storage_dir = Path(tempfile.mkdtemp(prefix="logkv-demo-"))
    settings = configuration(storage_dir, durability)
    try:
        print("logkv demo: a crawler's state survives kill -9")
        print(f"storage_dir: {storage_dir} (durability={durability}: ", end="")
        if durability == Durability.FSYNC.value:
            print("a write returns once it is on disk)")
        else:
            print("a write returns once the OS has it; survives kill -9, not power loss)")
        crawler = run_crawler(storage_dir, durability)
        done, pending = acknowledged(crawler.lines)
        counts = {kind: sum(1 for k, _ in done if k == kind) for kind in KINDS}
        last = ", ".join(f"{kind} {number}" for kind, number in done[-3:])
        print(
            f"1. Crawler process {crawler.pid} crawled {CATALOGUE} items in rounds into "
            f"KeyValueStore '{STORE_NAME}'.\n   {len(done)} writes acknowledged: "
            f"{counts['page']} HTML pages, {counts['product']} JSON products (deleted while "
            f"sold out), {counts['state']} saves of\n   its autosaved progress dict; the last "
            f"three: {last}"
        )
        if not crawler.killed or not done:
            print(f"   FAILED: the crawler exited with code {crawler.code} before it was killed")
            print(crawler.stderr, end="", file=sys.stderr)
            return 1
        in_flight = f"{pending[0]} {pending[1]}" if pending else "none"
        print(f"2. Sent kill -9 mid-run; the write in flight at that moment: {in_flight}")
        problems = asyncio.run(after_the_kill(settings, done, pending))
        if problems:
            print(f"FAILED: {problems} problem(s): acknowledged writes were lost or changed")
            return 1
        print(f"OK: all {len(done)} acknowledged writes survived kill -9 and compaction.")
        return 0
    finally:
        logging.getLogger("logkv").removeHandler(handler)
        if keep:
            print(f"(kept {storage_dir})")
        else:
            shutil.rmtree(storage_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m logkv.demo``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m logkv.demo",
        description="Show that a crawler's acknowledged writes survive kill -9, then compact "
        "the store and read its history.",
    )
    parser.add_argument(
        "--durability", choices=[d.value for d in Durability], default=Durability.PROCESS.value
    )
    parser.add_argument("--keep", action="store_true", help="keep the demo's storage folder")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        asyncio.run(crawl(args.child, args.durability, sys.stdout))
        return 0
    return demo(args.durability, args.keep)


if __name__ == "__main__":
    sys.exit(main())
