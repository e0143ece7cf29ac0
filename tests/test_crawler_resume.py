"""A real Crawlee crawler over ``logkv.crawlee`` is killed with SIGKILL mid-run and resumes.

The crawler (Crawlee's ``BasicCrawler``, pages fetched with ``urllib`` from a local HTTP server)
keeps a ``use_state`` counter and the list of handled URLs, stores every page, and persists its
statistics, all in a logkv key-value store, with Crawlee's persist interval set to 200 ms. It runs
in a child process that journals every write of the state and statistics keys to the store
("begin" before the call, "ack" after the store acknowledged it) and every stored page.

After ``kill -9`` the store must open cleanly (``logkv verify``) and hold, for each of those keys,
the last acknowledged value or a value written after it; every acknowledged page must be there.
A second run must resume from exactly that state: ``use_state`` and the statistics start from the
persisted values, and the second run adds to them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, run_command

from logkv.cli.main import main as logkv_main

# Every test here runs a Crawlee crawler in a child process: all of it is slow.
pytestmark = pytest.mark.slow

REQUESTS = 120
#: The first run is killed once it has handled this many requests and persisted its state.
KILL_AFTER = 25
STATE_PREFIX = "CRAWLEE_STATE_"
STATISTICS_PREFIX = "__CRAWLER_STATISTICS_"
#: The logkv store that holds the crawler's default key-value store.
STORE_ID = "crawler"

CHILD = textwrap.dedent(
    '''
    """A crawler over logkv that journals the writes the store acknowledged."""

    import asyncio
    import json
    import sys
    import urllib.request

    from crawlee import ConcurrencySettings, service_locator
    from crawlee.crawlers import BasicCrawler, BasicCrawlingContext

    from logkv import Configuration
    from logkv.crawlee import LogKvKeyValueStoreClient, LogKvStorageClient

    STORAGE_DIR, JOURNAL, BASE, REQUESTS = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    WATCHED = ("CRAWLEE_STATE_", "__CRAWLER_STATISTICS_", "page-")


    journal = open(JOURNAL, "a", encoding="utf-8")


    def note(*fields):
        journal.write(json.dumps(fields) + "\\n")
        journal.flush()


    original_set_value = LogKvKeyValueStoreClient.set_value


    async def journaled_set_value(self, *, key, value, content_type=None):
        watched = key.startswith(WATCHED)
        if watched:  # the value as passed (the caller may change its objects while we wait)
            passed = json.loads(json.dumps(value))
            note("begin", key, passed)
        await original_set_value(self, key=key, value=value, content_type=content_type)
        if watched:
            note("ack", key, passed)


    LogKvKeyValueStoreClient.set_value = journaled_set_value


    async def main():
        storage = LogKvStorageClient(settings=Configuration(default_key_value_store_id="crawler"))
        service_locator.set_storage_client(storage)
        crawler = BasicCrawler(
            concurrency_settings=ConcurrencySettings(max_concurrency=1, desired_concurrency=1)
        )
        kvs = await crawler.get_key_value_store()
        before = {}
        async for key in kvs.iterate_keys():
            before[key.key] = await kvs.get_value(key.key)
        note("before", before)
        handled = []

        @crawler.router.default_handler
        async def handle(context: BasicCrawlingContext) -> None:
            url = context.request.url
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read().decode())
            state = await context.use_state({"count": 0, "urls": []})
            if not handled:
                note("resumed", json.loads(json.dumps(dict(state))))
            state["count"] += 1
            state["urls"].append(url)
            store = await context.get_key_value_store()
            await store.set_value("page-" + url.rsplit("/", 1)[1], body, "text/html")
            handled.append(url)
            print("handled", url, flush=True)
            await asyncio.sleep(0.02)

        statistics = await crawler.run([f"{BASE}/p{i}" for i in range(REQUESTS)])
        final_state = await kvs.get_value(f"CRAWLEE_STATE_{crawler._id}")
        note("final", final_state, statistics.requests_finished, handled)


    asyncio.run(main())
    '''
)


def child_env(storage_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CRAWLEE_STORAGE_DIR=str(storage_dir),
        CRAWLEE_PURGE_ON_START="false",
        CRAWLEE_PERSIST_STATE_INTERVAL_MILLIS="200",
        CRAWLEE_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def read_journal(path: Path) -> list[list[Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line]


def acked_writes(entries: list[list[Any]]) -> dict[str, tuple[Any, list[Any]]]:
    """Per key: the last acknowledged value and the values begun after it (unacknowledged)."""
    result: dict[str, tuple[Any, list[Any]]] = {}
    for entry in entries:
        if entry[0] == "ack":
            result[entry[1]] = (entry[2], [])
    for entry in entries:
        if entry[0] == "begin" and entry[1] in result:
            result[entry[1]][1].append(entry[2])
    # Keep only the values begun after the last acknowledgement of each key.
    for key, (last, begun) in result.items():
        position = max(i for i, value in enumerate(begun) if value == last)
        result[key] = (last, begun[position + 1 :])
    return result


def only(entries: list[list[Any]], kind: str) -> list[Any]:
    found = [entry for entry in entries if entry[0] == kind]
    assert len(found) == 1, f"expected one {kind!r} entry, got {len(found)}"
    return found[0]


def one_key(keys: dict[str, Any], prefix: str) -> str:
    matching = [key for key in keys if key.startswith(prefix)]
    assert len(matching) == 1, matching
    return matching[0]


def test_killed_crawler_resumes_from_its_last_persisted_state(tmp_path: Path, site: str) -> None:
    script = tmp_path / "crawler.py"
    script.write_text(CHILD, encoding="utf-8")
    storage_dir = tmp_path / "storage"
    env = child_env(storage_dir)
    first_journal, second_journal = tmp_path / "first.jsonl", tmp_path / "second.jsonl"

    # First run: kill -9 once enough requests are handled and the state has been persisted.
    command = [sys.executable, str(script), str(storage_dir)]
    first = subprocess.Popen(
        [*command, str(first_journal), site, str(REQUESTS)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert first.stdout is not None
    handled = 0
    try:
        for line in first.stdout:
            handled += line.startswith("handled ")
            if handled >= KILL_AFTER and any(
                entry[0] == "ack" and entry[1].startswith(STATE_PREFIX)
                for entry in read_journal(first_journal)
            ):
                break
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL
    assert handled >= KILL_AFTER, "the first run ended before it could be killed"

    # The store opens cleanly after the kill and every checksum holds.
    folder = storage_dir / "key_value_stores" / STORE_ID
    assert logkv_main(["verify", str(folder)]) == 0

    # Second run: it reads the store before crawling, then resumes and finishes.
    second = run_command(
        second_journal, site, str(REQUESTS), program=command, env=env, text=True, timeout=120
    )
    assert second.returncode == 0, second.stderr[-3000:]

    acked = acked_writes(read_journal(first_journal))
    second_entries = read_journal(second_journal)
    before: dict[str, Any] = only(second_entries, "before")[1]

    # Nothing acknowledged is lost: each watched key holds its last acknowledged value or a
    # value written after it; every acknowledged page is there with its content.
    state_key = one_key(acked, STATE_PREFIX)
    statistics_key = one_key(acked, STATISTICS_PREFIX)
    pages = [key for key in acked if key.startswith("page-")]
    assert len(pages) >= KILL_AFTER - 1
    for key, (last, later) in acked.items():
        assert key in before, key
        assert before[key] == last or before[key] in later, key
    for key in pages:
        assert f"/{key.removeprefix('page-')} " in before[key]

    # The persisted state is one consistent snapshot of the handler's state.
    state = before[state_key]
    assert state["count"] == len(state["urls"]) > 0

    # Crawlee resumes from exactly the persisted state and statistics.
    assert only(second_entries, "resumed")[1] == state
    _, final_state, finished, handled_again = only(second_entries, "final")
    assert final_state["urls"] == state["urls"] + handled_again
    assert final_state["count"] == state["count"] + len(handled_again)
    assert finished == before[statistics_key]["requestsFinished"] + len(handled_again)
    # Together the two runs handled every request (the queue resumed too).
    assert {f"p{i}" for i in range(REQUESTS)} <= {
        url.rsplit("/", 1)[1] for url in [*state["urls"], *handled_again]
    } | {key.removeprefix("page-") for key in pages}
    assert logkv_main(["verify", str(folder)]) == 0


def test_example_crawler_runs_offline(tmp_path: Path) -> None:
    storage_dir = tmp_path / "storage"
    done = run_command(
        storage_dir,
        program=[sys.executable, ROOT / "examples" / "crawler_with_logkv.py"],
        env=child_env(storage_dir),
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "crawled 30 pages" in done.stdout
    pages = storage_dir / "key_value_stores" / "pages"
    assert f"logkv stats {pages}" in done.stdout
    assert logkv_main(["verify", str(pages)]) == 0
