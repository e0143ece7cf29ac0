"""A small offline Crawlee crawler whose key-value stores are logkv stores.

Run it with ``python examples/crawler_with_logkv.py [STORAGE_DIR]`` (needs ``logkv[crawlee]``).
It serves a tiny web site on 127.0.0.1, crawls it with Crawlee's ``BasicCrawler`` (following the
links of every page), stores each page in the logkv store ``pages`` and keeps a ``use_state``
counter in the crawler's default store; Crawlee's request statistics are persisted there too.
Then it prints what it stored and the logkv commands that inspect the stores.

Datasets and request queues stay with Crawlee's file-system client. The default key-value store
is given the folder ``crawler`` because Crawlee's file-system request queue keeps its own state
in a file-system store in ``key_value_stores/default``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from crawlee import ConcurrencySettings, service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.crawlers import BasicCrawler, BasicCrawlingContext
from crawlee.storages import KeyValueStore

from logkv import Configuration
from logkv.crawlee import LogKvStorageClient

#: Pages of the local site: /page/0 ... /page/{PAGES - 1}; each links to the next two.
PAGES = 30
LINK = re.compile(r'href="(/page/\d+)"')


class Site(BaseHTTPRequestHandler):
    """The local web site: small HTML pages that link to each other."""

    def do_GET(self) -> None:
        """Serve ``/page/N`` (404 for anything else)."""
        match = re.fullmatch(r"/page/(\d+)", self.path)
        if match is None or int(match.group(1)) >= PAGES:
            self.send_error(404)
            return
        number = int(match.group(1))
        links = "".join(
            f'<a href="/page/{target}">page {target}</a> '
            for target in (number + 1, number + 2)
            if target < PAGES
        )
        body = f"<html><body><h1>Page {number}</h1>{links}</body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the example's output short."""


def fetch(url: str) -> str:
    """GET ``url`` with the standard library (run in a worker thread)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode("utf-8")
    return text


async def crawl(storage_dir: Path, base: str) -> None:
    """Crawl the site at ``base`` with logkv key-value stores under ``storage_dir``."""
    configuration = CrawleeConfiguration(
        storage_dir=str(storage_dir), purge_on_start=False, log_level="WARNING"
    )
    storage_client = LogKvStorageClient(
        settings=Configuration(default_key_value_store_id="crawler")
    )
    service_locator.set_configuration(configuration)
    service_locator.set_storage_client(storage_client)
    crawler = BasicCrawler(
        concurrency_settings=ConcurrencySettings(max_concurrency=4, desired_concurrency=4),
    )
    pages = await KeyValueStore.open(name="pages")

    async def handle(context: BasicCrawlingContext) -> None:
        html = await asyncio.to_thread(fetch, context.request.url)
        path = context.request.url.removeprefix(base)
        await pages.set_value(path.strip("/").replace("/", "-"), html, "text/html")
        state = await context.use_state({"pages_seen": 0})
        state["pages_seen"] = int(str(state["pages_seen"])) + 1
        await context.add_requests([base + link for link in LINK.findall(html)])

    crawler.router.default_handler(handle)
    statistics = await crawler.run([f"{base}/page/0"])
    state = await (await crawler.get_key_value_store()).get_value(
        "CRAWLEE_STATE_" + str(crawler._id)  # the key Crawlee's use_state writes
    )
    keys = [info.key async for info in pages.iterate_keys()]
    print(f"crawled {statistics.requests_finished} pages; crawler state: {state}")
    print(f"stored {len(keys)} pages in the logkv store 'pages': {', '.join(keys[:5])}, ...")
    await storage_client.close()

    stores = storage_dir / "key_value_stores"
    print("\ninspect the stores with logkv's command line tools:")
    print(f"  logkv stats {stores / 'pages'}")
    print(f"  logkv history {stores / 'pages'} page-0")
    print(f"  logkv history --values {stores / 'crawler'} CRAWLEE_STATE_{crawler._id}")


def main() -> None:
    """Serve the site, crawl it and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "storage_dir", nargs="?", type=Path, help="Crawlee storage directory (default: a new one)"
    )
    arguments = parser.parse_args()
    storage_dir: Path = arguments.storage_dir or Path(tempfile.mkdtemp(prefix="logkv-crawl-"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        asyncio.run(crawl(storage_dir, f"http://127.0.0.1:{server.server_address[1]}"))
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
