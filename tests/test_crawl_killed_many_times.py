"""A real crawler on ``LogKvStorageClient``, killed with SIGKILL over and over, finishes its crawl.

The crawler (Crawlee's ``BasicCrawler``, five requests at a time, pages fetched with ``urllib``
from a local HTTP server on 127.0.0.1) starts at ``/p0``, pushes one item per page to its
default dataset and adds the two pages each page links to while their number is below
``PAGES``. Every run resumes the last one (``purge_on_start=False``): it is killed after a
random number of handled pages, plus a random pause, again and again; then one run finishes.

At the end every page is handled and in the dataset; the request queue counts ``PAGES``
handled requests and nothing pending; the stores pass ``logkv verify``. A page may be handled
more than once only when it was in progress at a kill (Crawlee is at-least-once): the handled
pages beyond ``PAGES`` are at most the kills times the concurrency.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from crawlee import service_locator
from crawlee.configuration import Configuration
from crawlee.storages import Dataset, RequestQueue
from test_crawler_resume import child_env

from logkv.cli.main import main as logkv_main
from logkv.crawlee import LogKvStorageClient

pytestmark = pytest.mark.slow

PAGES = 400
KILLS = 22
CONCURRENCY = 5

CHILD = textwrap.dedent(
    '''
    """Crawls the local site from /p0 on logkv, printing each handled page."""

    import asyncio
    import re
    import sys
    import urllib.request

    from crawlee import ConcurrencySettings, service_locator
    from crawlee.crawlers import BasicCrawler, BasicCrawlingContext

    from logkv.crawlee import LogKvStorageClient

    BASE, PAGES, CONCURRENCY = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


    async def main():
        service_locator.set_storage_client(LogKvStorageClient())
        crawler = BasicCrawler(
            concurrency_settings=ConcurrencySettings(
                desired_concurrency=CONCURRENCY, max_concurrency=CONCURRENCY
            ),
        )

        @crawler.router.default_handler
        async def handle(context: BasicCrawlingContext) -> None:
            url = context.request.url
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read().decode())
            numbers = [int(n) for n in re.findall(r'href="/p(\\d+)"', body)]
            await context.push_data({"url": url, "length": len(body)})
            await context.add_requests([f"{BASE}/p{n}" for n in numbers if n < PAGES])
            print("handled", url, flush=True)

        await crawler.run([f"{BASE}/p0"])
        print("finished", flush=True)


    asyncio.run(main())
    '''
)


def run_until(
    command: list[str], env: dict[str, str], errors_to: Path, handled: int | None
) -> tuple[list[str], bool]:
    """Run the crawler; SIGKILL it once it printed ``handled`` pages and paused a random moment
    (None: let it finish). Returns every page it printed (those printed between the last one
    read and the kill too) and whether it finished."""
    with errors_to.open("w", encoding="utf-8") as errors:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=errors, text=True
        )
        assert process.stdout is not None
        lines: list[str] = []
        try:
            for line in process.stdout:
                lines.append(line)
                if handled is not None and sum(map(_is_handled, lines)) >= handled:
                    time.sleep(random.uniform(0, 0.05))
                    process.send_signal(signal.SIGKILL)
                    break
            lines += process.stdout.readlines()  # until the process is gone
            process.wait(timeout=120)
        finally:
            process.kill()
            process.wait()
    if handled is None:
        assert process.returncode == 0, errors_to.read_text(encoding="utf-8")[-3000:]
    printed = [line.split()[1] for line in lines if _is_handled(line)]
    return printed, any(line.startswith("finished") for line in lines)


def _is_handled(line: str) -> bool:
    return line.startswith("handled ")


def test_crawler_killed_twenty_times_handles_every_page(tmp_path: Path, site: str) -> None:
    random.seed(1209)
    script = tmp_path / "crawler.py"
    script.write_text(CHILD, encoding="utf-8")
    storage_dir = tmp_path / "storage"
    env = child_env(storage_dir)
    command = [sys.executable, str(script), site, str(PAGES), str(CONCURRENCY)]
    errors = tmp_path / "stderr.txt"

    handled: list[str] = []
    kills = 0
    finished = False
    while kills < KILLS and not finished:
        printed, finished = run_until(command, env, errors, handled=random.randint(1, 6))
        handled += printed
        kills += not finished
    assert kills == KILLS, f"the crawl ended after {kills} kills: make the site bigger"
    printed, finished = run_until(command, env, errors, handled=None)
    handled += printed
    assert finished

    every_page = {f"{site}/p{i}" for i in range(PAGES)}
    assert set(handled) == every_page
    # Only requests in progress at a kill are handled again.
    assert len(handled) - PAGES <= kills * CONCURRENCY, Counter(handled).most_common(5)

    items, counts = asyncio.run(_read_results(storage_dir))
    assert {item["url"] for item in items} == every_page
    assert len(items) - PAGES <= kills * CONCURRENCY
    assert counts == (PAGES, 0, PAGES)  # handled, pending, total
    for kind in ("datasets", "request_queues", "key_value_stores"):
        for folder in sorted((storage_dir / kind).glob("*")):
            if (folder / "META.json").exists():
                assert logkv_main(["verify", str(folder)]) == 0, folder


async def _read_results(storage_dir: Path) -> tuple[list[dict[str, object]], tuple[int, int, int]]:
    """The default dataset's items and the default request queue's counts, read through Crawlee
    on the same storage client as the crawler."""
    configuration = Configuration(storage_dir=str(storage_dir), purge_on_start=False)
    client = LogKvStorageClient()
    try:
        dataset = await Dataset.open(storage_client=client, configuration=configuration)
        items = [json.loads(json.dumps(item)) async for item in dataset.iterate_items()]
        queue = await RequestQueue.open(storage_client=client, configuration=configuration)
        metadata = await queue.get_metadata()
        counts = (
            metadata.handled_request_count,
            metadata.pending_request_count,
            metadata.total_request_count,
        )
    finally:
        await client.close()
        service_locator.storage_instance_manager.clear_cache()
    return items, counts
