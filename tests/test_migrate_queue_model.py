"""Any history of a Crawlee file-system request queue (adds, forefront adds, fetches, handles,
reclaims, a crawler stopped with requests in progress) migrates to a queue that a crawler
cannot tell apart from Crawlee's own reopen of the original: the same counts, the same fetch
order, handled requests never fetched again, user data kept; and back again to Crawlee."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from pathlib import Path
from typing import Any

import pytest
from crawlee import Request, service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storage_clients import FileSystemStorageClient, StorageClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logkv.crawlee import LogKvStorageClient
from logkv.migrate_run import migrate_storage

pytestmark = pytest.mark.slow

URLS = st.integers(min_value=0, max_value=12).map(lambda i: f"https://q.invalid/{i}")
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(URLS, min_size=1, max_size=4), st.booleans()),
        st.tuples(st.just("fetch"), st.sampled_from(["handle", "reclaim", "reclaim-front", "-"])),
    ),
    max_size=25,
)


_CASES = itertools.count()


def _fresh_crawlee(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget Crawlee's process-wide storage cache and event manager (with the listeners the
    queues of earlier examples left on it, bound to their event loops)."""
    service_locator.storage_instance_manager.clear_cache()
    monkeypatch.setattr(service_locator, "_event_manager", None)


def _configuration(folder: Path) -> CrawleeConfiguration:
    return CrawleeConfiguration(storage_dir=str(folder), purge_on_start=False)


async def _build(folder: Path, ops: list[tuple[Any, ...]]) -> None:
    """Play ``ops`` on a Crawlee file-system queue in ``folder``; its state is persisted when
    the event manager ends, as at the end of a crawl."""
    async with service_locator.get_event_manager():
        queue = await FileSystemStorageClient().create_rq_client(
            configuration=_configuration(folder)
        )
        for n, op in enumerate(ops):
            if op[0] == "add":
                requests = [Request.from_url(u, user_data={"n": n}) for u in op[1]]
                await queue.add_batch_of_requests(requests, forefront=op[2])
                continue
            request = await queue.fetch_next_request()
            if request is None:
                continue
            if op[1] == "handle":
                await queue.mark_request_as_handled(request)
            elif op[1].startswith("reclaim"):
                await queue.reclaim_request(request, forefront=op[1] == "reclaim-front")


async def _drain(folder: Path, client: StorageClient) -> tuple[Any, ...]:
    queue = await client.create_rq_client(configuration=_configuration(folder))
    meta = await queue.get_metadata()  # Crawlee's file-system client's is live: copy it now
    counts = (meta.handled_request_count, meta.pending_request_count, meta.total_request_count)
    order = []
    while (request := await queue.fetch_next_request()) is not None:
        order.append((request.url, request.user_data.get("n")))
        await queue.mark_request_as_handled(request)
    finished = await queue.is_finished()
    close = getattr(client, "close", None)
    if close is not None:
        await close()
    return counts, order, finished


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=OPS)
def test_any_queue_history_migrates_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ops: list[tuple[Any, ...]]
) -> None:
    root = tmp_path / f"case-{next(_CASES)}"
    storage = root / "storage"
    _fresh_crawlee(monkeypatch)
    asyncio.run(_build(storage, ops))
    oracle = root / "oracle"
    shutil.copytree(storage, oracle)
    _fresh_crawlee(monkeypatch)
    expected = asyncio.run(_drain(oracle, FileSystemStorageClient()))

    _fresh_crawlee(monkeypatch)
    migrate_storage(storage, to="logkv", bar=False)
    migrated = root / "migrated"
    shutil.copytree(storage, migrated, ignore=shutil.ignore_patterns("LOCK"))
    _fresh_crawlee(monkeypatch)
    assert asyncio.run(_drain(migrated, LogKvStorageClient())) == expected

    shutil.rmtree(root / "storage.crawlee-backup")
    _fresh_crawlee(monkeypatch)
    migrate_storage(storage, to="crawlee", bar=False)
    _fresh_crawlee(monkeypatch)
    assert asyncio.run(_drain(storage, FileSystemStorageClient())) == expected
    shutil.rmtree(root)
