"""Contract tests: Crawlee's own ``RequestQueue`` over logkv's request queue client and, side by
side, over Crawlee's file-system client, which must give the same results: deduplication by
unique key, forefront order, reclaim, handled requests, is_empty/is_finished, counts,
get_request, purge, drop, reopening by id, name and alias, purge_on_start. Also what only logkv
promises: requests in progress are pending again at once after a reopen, handled requests shrink
to a compact record, imports of handled requests, and hostile input.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import Any

import pytest
from crawlee import Request, service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storage_clients import FileSystemStorageClient
from crawlee.storage_clients._base import RequestQueueClient
from crawlee.storage_clients._file_system import FileSystemRequestQueueClient
from crawlee.storages import Dataset, KeyValueStore, RequestQueue
from crawlee_sides import Lone, Side

from logkv import Configuration, Engine
from logkv.crawlee import LogKvRequestQueueClient
from logkv.crawlee import _request_queue as request_queue_module
from logkv.crawlee._request_records import REQUEST_CONTENT_TYPE, HashCollisionError, request_hash
from logkv.crawlee._storage_client import BESIDE_FILE_SYSTEM_DEFAULT
from logkv.errors import NotALogKVStoreError, StoreNotFoundError
from logkv.layout import is_store_folder
from logkv.modes import Durability
from logkv.storage_layout import request_key


def url(n: int | str) -> str:
    return f"https://a.invalid/{n}"


@pytest.fixture
def crawlee_storage() -> type[RequestQueue]:
    """What the ``sides`` and ``lone`` fixtures open here: request queues."""
    return RequestQueue


async def counts(queue: RequestQueue) -> tuple[int, int, int]:
    meta = await queue.get_metadata()
    return meta.pending_request_count, meta.handled_request_count, meta.total_request_count


async def drain(queue: RequestQueue, handle: bool = True) -> list[str]:
    """Fetch (and mark handled) until nothing is left; the URLs in fetch order."""
    fetched = []
    while (request := await queue.fetch_next_request()) is not None:
        fetched.append(request.url)
        if handle:
            await queue.mark_request_as_handled(request)
    return fetched


async def run_on_both(
    sides: dict[str, Side], scenario: Callable[[RequestQueue], Any], **selector: Any
) -> Any:
    """Run ``scenario`` on a queue of each side; assert the results are equal; return them."""
    results = {}
    for name, side in sides.items():
        results[name] = await scenario(await side.open(**selector))
    assert results["logkv"] == results["file-system"]
    return results["logkv"]


async def test_deduplication_by_unique_key_matches(sides: dict[str, Side]) -> None:
    async def scenario(queue: RequestQueue) -> list[Any]:
        seen = []
        for target in (url(1), url(2), url(1), Request.from_url(url(3), unique_key="same")):
            added = await queue.add_request(target)
            seen.append((added.was_already_present, added.was_already_handled))
        other = Request.from_url(url(4), unique_key="same")
        added = await queue.add_request(other)
        seen.append((added.was_already_present, added.was_already_handled))
        await queue.add_requests([url(5), url(5), url(6)], wait_for_all_requests_to_be_added=True)
        seen.append(await counts(queue))
        first = await queue.fetch_next_request()
        assert first is not None
        await queue.mark_request_as_handled(first)
        added = await queue.add_request(first.url)
        seen.append((added.was_already_present, added.was_already_handled))
        seen.append(await counts(queue))
        seen.append(await drain(queue))
        return seen

    result = await run_on_both(sides, scenario)
    assert result[-1] == [url(2), url(3), url(5), url(6)]


async def test_forefront_order_and_reclaim_match(sides: dict[str, Side]) -> None:
    async def scenario(queue: RequestQueue) -> list[Any]:
        seen: list[Any] = []
        await queue.add_requests([url(n) for n in range(4)], wait_for_all_requests_to_be_added=True)
        await queue.add_request(url("f1"), forefront=True)
        await queue.add_request(url("f2"), forefront=True)
        await queue.add_request(url(2), forefront=True)  # pending: moves to the front
        await queue.add_request(url(3))  # pending: stays
        first = await queue.fetch_next_request()
        second = await queue.fetch_next_request()
        assert first is not None and second is not None
        seen += [first.url, second.url, await counts(queue)]
        await queue.add_request(first.url, forefront=True)  # in progress: stays in progress
        first.user_data["tries"] = 1
        await queue.reclaim_request(first)  # to the back
        await queue.reclaim_request(second, forefront=True)  # to the front
        seen.append(await counts(queue))
        third = await queue.fetch_next_request()
        assert third is not None
        await queue.reclaim_request(third, forefront=True)
        fetched = []
        while (request := await queue.fetch_next_request()) is not None:
            fetched.append((request.url, dict(request.user_data).get("tries")))
            await queue.mark_request_as_handled(request)
        seen += [fetched, await counts(queue)]
        return seen

    result = await run_on_both(sides, scenario)
    assert result[0] == url(2) and result[1] == url("f2")


async def test_handled_in_progress_empty_and_finished_match(sides: dict[str, Side]) -> None:
    async def scenario(queue: RequestQueue) -> list[Any]:
        seen: list[Any] = [await queue.is_empty(), await queue.is_finished()]
        await queue.add_requests([url(1), url(2)], wait_for_all_requests_to_be_added=True)
        seen += [await queue.is_empty(), await queue.is_finished()]
        one = await queue.fetch_next_request()
        two = await queue.fetch_next_request()
        assert one is not None and two is not None
        seen += [
            await queue.fetch_next_request(),
            await queue.is_empty(),
            await queue.is_finished(),
        ]
        seen.append(await counts(queue))
        # Neither handling nor reclaiming what is not in progress does anything.
        stranger = Request.from_url(url(9))
        seen.append(await queue.mark_request_as_handled(stranger))
        seen.append(await queue.reclaim_request(stranger))
        handled = await queue.mark_request_as_handled(one)
        assert handled is not None
        seen.append((handled.was_already_present, handled.was_already_handled))
        assert one.handled_at is not None
        seen.append(await queue.mark_request_as_handled(one))  # again: no longer in progress
        seen += [await counts(queue), await queue.is_finished()]
        await queue.mark_request_as_handled(two)
        seen += [await counts(queue), await queue.is_empty(), await queue.is_finished()]
        return seen

    await run_on_both(sides, scenario)


async def test_get_request_matches(sides: dict[str, Side]) -> None:
    async def scenario(queue: RequestQueue) -> list[Any]:
        request = Request.from_url(url(1), user_data={"k": "v"}, headers={"h": "1"})
        await queue.add_request(request)
        await queue.add_request(url(2))
        pending = await queue.get_request(request.unique_key)
        assert pending is not None
        fetched = await queue.fetch_next_request()
        assert fetched is not None
        await queue.mark_request_as_handled(fetched)
        handled = await queue.get_request(request.unique_key)
        assert handled is not None
        return [
            (pending.url, dict(pending.user_data), dict(pending.headers), pending.handled_at),
            (handled.url, handled.unique_key, handled.handled_at is not None),
            await queue.get_request(url("missing")),
        ]

    await run_on_both(sides, scenario)


async def test_purge_and_drop_match(sides: dict[str, Side]) -> None:
    async def scenario(queue: RequestQueue) -> list[Any]:
        await queue.add_requests([url(1), url(2)], wait_for_all_requests_to_be_added=True)
        fetched = await queue.fetch_next_request()
        assert fetched is not None
        await queue.purge()
        seen: list[Any] = [await counts(queue), await queue.is_empty(), await queue.is_finished()]
        await queue.add_request(url(1))
        seen += [await counts(queue), await drain(queue)]
        await queue.drop()
        return seen

    await run_on_both(sides, scenario, name="p")
    for side in sides.values():
        assert not (side.root / "request_queues" / "p").exists()
        reopened = await side.open(name="p")
        assert await counts(reopened) == (0, 0, 0)


async def test_reopen_by_id_name_and_alias(sides: dict[str, Side]) -> None:
    for side in sides.values():
        for selector in ({"name": "n"}, {"alias": "a"}, {}):
            queue = await side.open(**selector)
            await queue.add_requests([url(1), url(2)], wait_for_all_requests_to_be_added=True)
            fetched = await queue.fetch_next_request()
            assert fetched is not None
            await queue.mark_request_as_handled(fetched)
            queue_id = queue.id
            await side.restart()
            for again in (selector, {"id": queue_id}):
                reopened = await side.open(**again)
                assert reopened.id == queue_id
                assert await counts(reopened) == (1, 1, 2)
            assert await drain(await side.open(**selector)) == [url(2)]
        with pytest.raises(ValueError, match="not found"):
            await side.open(id="nosuchqueue")


async def test_purge_on_start_empties_unnamed_queues_only(sides: dict[str, Side]) -> None:
    for side in sides.values():
        side.configuration = CrawleeConfiguration(storage_dir=str(side.root), purge_on_start=True)
        for round_ in range(2):
            default = await side.open()
            named = await side.open(name="keep")
            assert await counts(default) == (0, 0, 0)
            assert await counts(named) == (round_, 0, round_)
            await default.add_request(url(round_))
            await named.add_request(url(round_))
            await side.restart()


# ---------------------------------------------------------------- logkv only


def test_the_client_is_crawlees_request_queue_client() -> None:
    assert issubclass(LogKvRequestQueueClient, RequestQueueClient)


async def test_requests_in_progress_are_pending_again_at_once_after_a_reopen(lone: Lone) -> None:
    queue = await lone.open(lone.client())
    await queue.add_requests([url(n) for n in range(5)], wait_for_all_requests_to_be_added=True)
    await queue.add_request(url("f"), forefront=True)
    fetched = [await queue.fetch_next_request() for _ in range(3)]
    assert [r.url for r in fetched if r] == [url("f"), url(0), url(1)]
    assert fetched[1] is not None
    await queue.mark_request_as_handled(fetched[1])
    queue = await lone.open(await lone.restart())
    assert await counts(queue) == (5, 1, 6)
    assert await drain(queue) == [url("f"), url(1), url(2), url(3), url(4)]
    # New adds after a reopen go behind the old ones, forefront ones in front.
    await queue.add_requests([url(7), url(8)], wait_for_all_requests_to_be_added=True)
    queue = await lone.open(await lone.restart())
    await queue.add_request(url(9))
    await queue.add_request(url("g"), forefront=True)
    assert await drain(queue) == [url("g"), url(7), url(8), url(9)]


async def test_handled_requests_are_compact_and_compaction_shrinks_them(lone: Lone) -> None:
    client = lone.client()
    queue = await lone.open(client)
    body = "x" * 2000
    requests = [Request.from_url(url(n), user_data={"body": body}) for n in range(50)]
    await queue.add_requests(requests, wait_for_all_requests_to_be_added=True)
    raw = await lone.raw(client)
    assert len(await drain(queue)) == 50
    record = raw.engine.get(request_key(request_hash(url(0))))
    assert b"body" not in record and b"handledAt" in record
    handled = await queue.get_request(url(0))
    assert handled is not None and handled.handled_at is not None and not handled.user_data
    await raw._store.compact()
    size = sum(p.stat().st_size for p in raw.path.iterdir() if p.is_file())
    assert size < 50 * 2000 / 4, size


async def test_handled_requests_can_be_imported_and_every_request_listed(lone: Lone) -> None:
    client = lone.client()
    raw = await lone.raw(client)
    done = Request.from_url(url("done"))
    done.handled_at = datetime.datetime.now(datetime.UTC)
    response = await raw.add_batch_of_requests([done, Request.from_url(url("todo"))])
    assert [p.was_already_present for p in response.processed_requests] == [False, False]
    meta = await raw.get_metadata()
    assert (meta.pending_request_count, meta.handled_request_count) == (1, 1)
    again = await raw.add_batch_of_requests([Request.from_url(url("done"))])
    assert again.processed_requests[0].was_already_handled
    listed = {r.url: r.handled_at is not None async for r in raw.iter_requests()}
    assert listed == {url("done"): True, url("todo"): False}
    fetched = await raw.fetch_next_request()
    assert fetched.url == url("todo")
    assert await raw.fetch_next_request() is None


@pytest.mark.parametrize("durability", [Durability.PROCESS, Durability.FSYNC])
async def test_hostile_keys_and_large_requests(lone: Lone, durability: Durability) -> None:
    settings = Configuration(durability=durability, offload_threshold=4096, auto_compact=False)
    queue = await lone.open(lone.client(settings=settings))
    huge_key = "k" * 5000 + "é🕷\u0000"
    requests = [
        Request.from_url(url(1), unique_key=huge_key),
        Request.from_url(url("päge/日本語")),
        Request.from_url(url(3), user_data={"blob": "y" * 100_000}),  # a batch in a thread
    ]
    await queue.add_requests(requests, wait_for_all_requests_to_be_added=True)
    assert (await queue.get_request(huge_key)) is not None
    first = await queue.fetch_next_request()
    assert first is not None and first.unique_key == huge_key
    first.user_data["more"] = "z" * 10_000
    await queue.reclaim_request(first)  # rewritten larger: in a worker thread
    for _ in range(2):
        request = await queue.fetch_next_request()
        assert request is not None and request.unique_key != huge_key
        await queue.mark_request_as_handled(request)
    queue = await lone.open(await lone.restart())
    assert await counts(queue) == (1, 2, 3)
    last = await queue.fetch_next_request()
    assert last is not None and last.user_data["more"] == "z" * 10_000


async def test_a_hash_collision_is_refused_not_merged(
    lone: Lone, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = await lone.raw(lone.client())
    monkeypatch.setattr(request_queue_module, "request_hash", lambda unique_key: "a" * 32)
    await raw.add_batch_of_requests([Request.from_url(url(1))])
    with pytest.raises(HashCollisionError, match="same hash"):
        await raw.add_batch_of_requests([Request.from_url(url(2))])
    with pytest.raises(HashCollisionError, match="same hash"):
        await raw.add_batch_of_requests([Request.from_url(url(3)), Request.from_url(url(4))])
    assert await raw.get_request(url(2)) is None
    assert (await raw.get_metadata()).total_request_count == 1
    # Also while the request holding the hash is in progress.
    assert (await raw.fetch_next_request()) is not None
    with pytest.raises(HashCollisionError, match="same hash"):
        await raw.add_batch_of_requests([Request.from_url(url(2))], forefront=True)


async def test_adding_a_request_in_progress_again_writes_nothing(lone: Lone) -> None:
    raw = await lone.raw(lone.client())
    await raw.add_batch_of_requests([Request.from_url(url(n)) for n in range(3)])
    fetched = await raw.fetch_next_request()
    assert fetched is not None and fetched.url == url(0)
    seq = raw.engine.last_seq
    for forefront in (False, True):
        response = await raw.add_batch_of_requests([Request.from_url(url(0))], forefront=forefront)
        (processed,) = response.processed_requests
        assert (processed.was_already_present, processed.was_already_handled) == (True, False)
    assert raw.engine.last_seq == seq
    assert await raw.mark_request_as_handled(fetched) is not None
    response = await raw.add_batch_of_requests([Request.from_url(url(0))])
    assert response.processed_requests[0].was_already_handled
    assert [(await raw.fetch_next_request() or fetched).url for _ in range(2)] == [url(1), url(2)]
    assert await raw.fetch_next_request() is None


async def test_folders_of_other_storages_are_refused(lone: Lone) -> None:
    client = lone.client()
    dataset = await Dataset.open(name="d", configuration=lone.configuration, storage_client=client)
    await dataset.push_data({"a": 1})
    kvs = await KeyValueStore.open(
        name="k", configuration=lone.configuration, storage_client=client
    )
    await kvs.set_value("a", 1)
    await client.close()
    root = lone.root / "request_queues"
    root.mkdir()
    for folder in ("datasets/d", "key_value_stores/k"):
        (lone.root / folder).rename(root / "moved")
        with pytest.raises(ValueError, match="cannot be opened as a request queue"):
            await lone.raw(lone.client(), name="moved")
        (root / "moved").rename(lone.root / folder)
    # A queue whose keys are not a queue's (META.json says queue, keys say otherwise).
    queue = await lone.raw(lone.client(), name="q")
    await queue.add_batch_of_requests([Request.from_url(url(1))])
    await queue.close()
    await lone.check_hostile_keys_refused(
        lone.client,
        "q",
        root / "q",
        ("zzz", "a", "r/!short", "p/0/x"),
        REQUEST_CONTENT_TYPE,
        "not a request queue",
    )
    assert (await lone.raw(lone.client(), name="q")).engine is not None


async def test_native_request_queues_false_hands_queues_to_the_delegate(lone: Lone) -> None:
    await lone.check_native_switch(
        "native_request_queues", FileSystemRequestQueueClient, LogKvRequestQueueClient
    )


async def test_a_read_only_client_never_creates_a_request_queue(lone: Lone) -> None:
    with pytest.raises(StoreNotFoundError, match="no request queue at"):
        await lone.raw(lone.client(readonly=True))


async def test_the_default_key_value_store_is_default_with_native_queues(lone: Lone) -> None:
    kvs = await KeyValueStore.open(configuration=lone.configuration, storage_client=lone.client())
    await kvs.set_value("state", 1)
    assert is_store_folder(lone.root / "key_value_stores" / "default")
    assert not (lone.root / "key_value_stores" / BESIDE_FILE_SYSTEM_DEFAULT).exists()


async def test_a_crawl_whose_default_store_is_default_logkv_keeps_it(lone: Lone) -> None:
    old = lone.client(native_request_queues=False)
    queue = await lone.open(old)
    await queue.add_request(url(1))  # Crawlee's file-system queue writes into default
    kvs = await KeyValueStore.open(configuration=lone.configuration, storage_client=old)
    await kvs.set_value("state", {"page": 7})
    assert is_store_folder(lone.root / "key_value_stores" / BESIDE_FILE_SYSTEM_DEFAULT)
    new = await lone.restart()
    kvs = await KeyValueStore.open(configuration=lone.configuration, storage_client=new)
    assert await kvs.get_value("state") == {"page": 7}


async def test_requests_a_crash_in_a_purge_left_behind_can_be_added_again(lone: Lone) -> None:
    client = lone.client()
    raw = await lone.raw(client, name="q")
    await raw.add_batch_of_requests([Request.from_url(url(n)) for n in range(3)])
    await client.close()
    # A purge deletes the pending keys first, then the records: cut it after the first.
    with Engine.open(lone.root / "request_queues" / "q") as engine:
        engine.delete(next(iter(engine.keys("p/", 1))))
    raw = await lone.raw(lone.client(), name="q")
    meta = await raw.get_metadata()
    assert (meta.pending_request_count, meta.total_request_count) == (2, 3)
    response = await raw.add_batch_of_requests([Request.from_url(url(n)) for n in range(3)])
    assert [p.was_already_present for p in response.processed_requests] == [False, True, True]
    meta = await raw.get_metadata()
    assert (meta.pending_request_count, meta.total_request_count) == (3, 3)
    fetched = [await raw.fetch_next_request() for _ in range(4)]
    assert sorted(r.url for r in fetched if r) == [url(n) for n in range(3)]


async def test_handled_requests_are_compacted_automatically_as_the_queue_works(
    lone: Lone,
) -> None:
    settings = Configuration(
        persist_state_interval=datetime.timedelta(milliseconds=1),
        compaction_min_dead_bytes=10_000,
        compaction_min_dead_ratio=0.3,
        segment_size=20_000,
    )
    raw = await lone.raw(lone.client(settings=settings))
    body = "x" * 2000
    await raw.add_batch_of_requests(
        [Request.from_url(url(n), user_data={"body": body}) for n in range(40)]
    )
    while (request := await raw.fetch_next_request()) is not None:
        await raw.mark_request_as_handled(request)
    for _ in range(1200):  # the compaction runs in a worker thread: a minute at most
        if any(p.suffix == ".snap" for p in raw.path.iterdir()):
            break
        await asyncio.sleep(0.05)
    assert any(p.suffix == ".snap" for p in raw.path.iterdir())
    meta = await raw.get_metadata()
    assert (meta.pending_request_count, meta.handled_request_count) == (0, 40)


async def test_a_crawlee_file_system_queue_left_in_the_folder_is_refused(lone: Lone) -> None:
    old = await RequestQueue.open(
        storage_client=FileSystemStorageClient(), configuration=lone.configuration
    )
    await old.add_request(url(1))
    service_locator.storage_instance_manager.clear_cache()
    with pytest.raises(NotALogKVStoreError, match="Crawlee file-system"):
        await lone.open(lone.client())


@pytest.mark.parametrize("durability", [Durability.PROCESS, Durability.FSYNC])
async def test_concurrent_workers_handle_a_tree_of_requests_once_each(
    lone: Lone, durability: Durability
) -> None:
    """Ten workers, as a crawler's, each fetch a request, add its two children and itself
    again, and mark it handled (every fifth one reclaimed first, half of those to the front):
    every request is handled once, more pending keys than the in-memory head holds wait at
    times, and under fsync the writes await group commits."""
    total = 300
    settings = Configuration(durability=durability, auto_compact=False)
    raw = await lone.raw(lone.client(settings=settings))
    await raw.add_batch_of_requests([Request.from_url(url(0))])
    handled: list[int] = []
    reclaimed: set[int] = set()

    async def worker() -> None:
        while True:
            request = await raw.fetch_next_request()
            if request is None:
                if await raw.is_finished():
                    return
                await asyncio.sleep(0)
                continue
            number = int(request.url.rsplit("/", 1)[1])
            if number % 5 == 0 and number not in reclaimed:
                reclaimed.add(number)
                assert await raw.reclaim_request(request, forefront=number % 2 == 0)
                continue
            children = [n for n in (2 * number + 1, 2 * number + 2, number) if n < total]
            await raw.add_batch_of_requests([Request.from_url(url(n)) for n in children])
            handled.append(number)
            assert await raw.mark_request_as_handled(request) is not None

    await asyncio.gather(*(worker() for _ in range(10)))
    assert sorted(handled) == list(range(total))
    assert await counts(raw) == (0, total, total)
