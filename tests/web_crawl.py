"""A small crawl for the web console's browser test: ``python web_crawl.py STORAGE_DIR SITE``.

Crawlee's ``BasicCrawler`` on logkv (``LogKvStorageClient``: key-value stores, the dataset and
the request queue are logkv stores) crawls the local site, storing each page's HTML and pushing
an item per page; then a product record is written three times (a history to diff), with an
image, a hostile stored page and a hostile key. Run in its own process: Crawlee's service
locator is global.
"""

from __future__ import annotations

import asyncio
import re
import sys
import urllib.request
from pathlib import Path

from crawlee import ConcurrencySettings, service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.crawlers import BasicCrawler, BasicCrawlingContext
from crawlee.storages import KeyValueStore
from web_support import HOSTILE_KEY, HOSTILE_PAGE, PNG

from logkv import Configuration
from logkv.crawlee import LogKvStorageClient

PAGES = 12


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
    return text


async def crawl(storage_dir: Path, base: str) -> None:
    service_locator.set_configuration(
        CrawleeConfiguration(
            storage_dir=str(storage_dir), purge_on_start=False, log_level="WARNING"
        )
    )
    client = LogKvStorageClient(settings=Configuration(auto_compact=False))
    service_locator.set_storage_client(client)
    crawler = BasicCrawler(
        max_requests_per_crawl=PAGES,
        concurrency_settings=ConcurrencySettings(max_concurrency=2, desired_concurrency=2),
    )
    pages = await KeyValueStore.open(name="pages")

    async def handle(context: BasicCrawlingContext) -> None:
        html = await asyncio.to_thread(fetch, context.request.url)
        path = context.request.url.removeprefix(base).strip("/")
        await pages.set_value(path, html, "text/html")
        await context.push_data({"url": context.request.url, "length": len(html)})
        await context.add_requests([base + link for link in re.findall(r'href="([^"]+)"', html)])

    crawler.router.default_handler(handle)
    await crawler.run([f"{base}/p0"])
    products = await KeyValueStore.open(name="products")
    for price in (799, 749, 699):
        await products.set_value("product-1", {"name": "Phone", "price": price, "stock": 3})
    await products.set_value("logo.png", PNG, "image/png")
    await products.set_value("page-hostile", HOSTILE_PAGE, "text/html")
    await products.set_value(HOSTILE_KEY, "a key with markup", "text/plain")
    await client.close()


if __name__ == "__main__":
    asyncio.run(crawl(Path(sys.argv[1]), sys.argv[2]))
