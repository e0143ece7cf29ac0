"""Contract tests: Crawlee's own ``Dataset`` over logkv's dataset client and, side by side,
over Crawlee's file-system client, which must give the same results: push_data, get_data with
each of its parameters, iterate_items, export_to CSV and JSON, purge, drop, reopening. Also:
a page far into a large dataset reads only its own records.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from crawlee import service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storage_clients._base import DatasetClient
from crawlee.storage_clients._file_system import FileSystemDatasetClient
from crawlee.storages import Dataset, KeyValueStore
from crawlee_sides import Lone, Side
from hypothesis import given
from hypothesis import strategies as st

from logkv import Configuration, Engine, StoreClosedError
from logkv.crawlee._dataset import (
    ITEM_CONTENT_TYPE,
    LogKvDatasetClient,
    select_indexes,
    serialize_item,
    shape_item,
)
from logkv.layout import is_store_folder
from logkv.modes import Durability
from logkv.storage_clients import _base, _store
from logkv.storage_clients._meta import read_meta, write_meta
from logkv.storage_layout import item_key

ITEMS: list[dict[str, Any]] = [
    {"url": "https://a.invalid/1", "n": 1},
    {},
    {"url": "https://a.invalid/3", "title": "päge 日本語 🕷", "nested": {"x": [1, 2]}},
    {"n": 4, "none": None},
    {},
    {"n": 6, "ok": True},
]


@pytest.fixture
def crawlee_storage() -> type[Dataset]:
    """What the ``sides`` and ``lone`` fixtures open here: datasets."""
    return Dataset


async def _both(sides: dict[str, Side], **selector: Any) -> dict[str, Dataset]:
    opened = {}
    for name, side in sides.items():
        dataset = await side.open(**selector)
        await dataset.push_data(ITEMS[:2])
        for item in ITEMS[2:]:
            await dataset.push_data(item)
        opened[name] = dataset
    return opened


def _same(results: dict[str, Any]) -> Any:
    file_system, logkv = results["file-system"], results["logkv"]
    assert logkv == file_system
    return logkv


PAGES: list[dict[str, Any]] = [
    {},
    {"offset": 2},
    {"limit": 3},
    {"offset": 1, "limit": 2},
    {"offset": 4, "limit": 10},
    {"offset": 10},
    {"limit": 0},
    {"desc": True},
    {"desc": True, "offset": 1, "limit": 3},
    {"skip_empty": True},
    {"skip_empty": True, "offset": 1, "limit": 4, "desc": True},
]


@pytest.mark.parametrize("page", PAGES, ids=[json.dumps(p) for p in PAGES])
async def test_get_data_pages_match_crawlees_file_system_client(
    sides: dict[str, Side], page: dict[str, Any]
) -> None:
    datasets = await _both(sides)
    pages = {name: (await d.get_data(**page)).model_dump() for name, d in datasets.items()}
    got = _same(pages)
    assert got["total"] == len(ITEMS)


@pytest.mark.parametrize("page", PAGES, ids=[json.dumps(p) for p in PAGES])
async def test_iterate_items_matches_crawlees_file_system_client(
    sides: dict[str, Side], page: dict[str, Any]
) -> None:
    datasets = await _both(sides)
    _same({name: [i async for i in d.iterate_items(**page)] for name, d in datasets.items()})


UNSUPPORTED: list[dict[str, Any]] = [
    {"unwind": ["nested"]},
    {"flatten": ["nested"]},
    {"view": "overview"},
]


@pytest.mark.parametrize("argument", UNSUPPORTED, ids=[next(iter(a)) for a in UNSUPPORTED])
async def test_unsupported_arguments_are_ignored_with_a_warning_as_crawlee_does(
    sides: dict[str, Side], argument: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    datasets = await _both(sides)
    with caplog.at_level(logging.WARNING):
        pages = {n: (await d.get_data(**argument)).items for n, d in datasets.items()}
    assert _same(pages) == ITEMS
    warned = [r for r in caplog.records if "not supported" in r.getMessage()]
    assert len(warned) == 2  # one per client
    if "flatten" not in argument and "view" not in argument:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            listed = {
                n: [i async for i in d.iterate_items(**argument)] for n, d in datasets.items()
            }
        assert _same(listed) == ITEMS
        assert len([r for r in caplog.records if "not supported" in r.getMessage()]) == 2


SHAPED: list[dict[str, Any]] = [
    {"url": "u1", "n": 1, "#debug": "x"},
    {},
    {"#only": "hidden"},
    {"n": 4, "url": "u4", "extra": [1]},
]

#: (arguments, the items expected): Apify's dataset API rules, which logkv follows.
SHAPES: list[tuple[dict[str, Any], list[Any]]] = [
    ({"fields": ["n", "url"]}, [{"n": 1, "url": "u1"}, {}, {}, {"n": 4, "url": "u4"}]),
    ({"fields": ["#debug"]}, [{"#debug": "x"}, {}, {}, {}]),
    ({"fields": ["url", "#debug"], "skip_hidden": True}, [{"url": "u1"}, {}, {}, {"url": "u4"}]),
    ({"omit": ["url", "extra"]}, [{"n": 1, "#debug": "x"}, {}, {"#only": "hidden"}, {"n": 4}]),
    ({"fields": ["n", "url"], "omit": ["url"]}, [{"n": 1}, {}, {}, {"n": 4}]),
    ({"skip_hidden": True}, [{"url": "u1", "n": 1}, {}, {}, SHAPED[3]]),
    # skip_empty looks at the item as stored: an item of hidden fields only is not empty
    ({"clean": True}, [{"url": "u1", "n": 1}, {}, SHAPED[3]]),
    ({"clean": True, "desc": True, "limit": 2}, [SHAPED[3], {}]),
    ({"fields": []}, [{}, {}, {}, {}]),
]


@pytest.mark.parametrize(("arguments", "expected"), SHAPES, ids=[json.dumps(a) for a, _ in SHAPES])
async def test_fields_omit_skip_hidden_and_clean_shape_the_items(
    lone: Lone, arguments: dict[str, Any], expected: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    dataset = await lone.open(lone.client())
    await dataset.push_data(SHAPED)
    with caplog.at_level(logging.WARNING):
        page = await dataset.get_data(**arguments)
        listed = [item async for item in dataset.iterate_items(**arguments)]
    assert page.items == listed == expected
    assert page.total == len(SHAPED)
    assert not [r for r in caplog.records if "not supported" in r.getMessage()]
    assert (await dataset.get_data()).items == SHAPED  # the stored items are unchanged


_NAMES = st.sampled_from(["a", "b", "c", "#h", "#i", "", "#"])


@given(
    item=st.dictionaries(_NAMES, st.integers()),
    fields=st.none() | st.lists(_NAMES),
    omit=st.none() | st.lists(_NAMES),
    skip_hidden=st.booleans(),
)
def test_shape_item_against_a_model(
    item: dict[str, int], fields: list[str] | None, omit: list[str] | None, skip_hidden: bool
) -> None:
    chosen = list(item) if fields is None else [n for n in dict.fromkeys(fields) if n in item]
    kept = [n for n in chosen if n not in (omit or []) and not (skip_hidden and n.startswith("#"))]
    shaped = shape_item(dict(item), fields, omit, skip_hidden)
    assert list(shaped) == kept
    assert all(shaped[n] == item[n] for n in kept)


def test_shape_item_keeps_what_is_not_an_object() -> None:
    assert shape_item([1, 2], ["a"], ["b"], True) == [1, 2]
    assert shape_item("text", None, None, True) == "text"
    item = {"a": 1}
    assert shape_item(item, None, None, False) is item
    assert shape_item({"a": 1, "b": 2, "c": 3}, ["c", "a", "zz"], None, False) == {"c": 3, "a": 1}


async def test_metadata_counts_items(sides: dict[str, Side]) -> None:
    datasets = await _both(sides, name="counted")
    metadata = {n: await d.get_metadata() for n, d in datasets.items()}
    _same({n: (m.name, m.item_count) for n, m in metadata.items()})
    assert metadata["logkv"].item_count == len(ITEMS)
    assert metadata["logkv"].id == datasets["logkv"].id


@pytest.mark.parametrize("content_type", ["csv", "json"])
async def test_export_to_matches_crawlees_file_system_client(
    sides: dict[str, Side], content_type: Any
) -> None:
    datasets = await _both(sides)
    exported = {}
    for name, dataset in datasets.items():
        side = sides[name]
        await dataset.export_to(
            "OUTPUT",
            content_type=content_type,
            to_kvs_configuration=side.configuration,
            to_kvs_storage_client=side.client,
        )
        kvs = await KeyValueStore.open(configuration=side.configuration, storage_client=side.client)
        exported[name] = await kvs.get_value("OUTPUT")
    assert _same(exported)


async def test_values_json_cannot_hold_are_stored_as_crawlee_stores_them(
    sides: dict[str, Side],
) -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    items = {}
    for name, side in sides.items():
        dataset = await side.open(alias="odd")
        await dataset.push_data({"when": when, "path": Path("/x")})
        items[name] = (await dataset.get_data()).items
    assert _same(items) == [{"when": str(when), "path": "/x"}]


async def test_items_survive_a_restart_and_purge_and_drop_match(sides: dict[str, Side]) -> None:
    await _both(sides, name="kept")
    for side in sides.values():
        await side.restart()
    reopened = {n: await s.open(name="kept") for n, s in sides.items()}
    assert _same({n: (await d.get_data()).items for n, d in reopened.items()}) == ITEMS
    for dataset in reopened.values():
        await dataset.purge()
    assert _same({n: (await d.get_data()).model_dump() for n, d in reopened.items()})["total"] == 0
    for dataset in reopened.values():
        await dataset.push_data({"after": "purge"})
    assert _same({n: (await d.get_data()).items for n, d in reopened.items()}) == [
        {"after": "purge"}
    ]
    for dataset in reopened.values():
        await dataset.drop()
    assert not (sides["logkv"].root / "datasets" / "kept").exists()
    fresh = {n: await s.open(name="kept") for n, s in sides.items()}
    assert _same({n: (await d.get_data()).items for n, d in fresh.items()}) == []


async def test_open_by_id_and_alias(sides: dict[str, Side]) -> None:
    side = sides["logkv"]
    dataset = await side.open(alias="run")
    await dataset.push_data([{"i": 1}])
    await side.restart()
    by_id = await side.open(id=dataset.id)
    assert (await by_id.get_data()).items == [{"i": 1}]
    with pytest.raises(ValueError, match="not found"):
        await side.open(id="nosuchdataset0000")


async def test_a_logkv_dataset_is_a_logkv_store_of_json_records(sides: dict[str, Side]) -> None:
    side = sides["logkv"]
    dataset = await side.open()
    await dataset.push_data(ITEMS)
    await side.restart()
    folder = side.root / "datasets" / "default"
    assert is_store_folder(folder)
    with Engine.open(folder) as engine:
        assert list(engine.keys()) == [item_key(i) for i in range(len(ITEMS))]
        value = engine.get_with_type(item_key(2))
        assert value == (serialize_item(ITEMS[2]), ITEM_CONTENT_TYPE)


def test_select_indexes_is_a_slice_of_the_ordered_items() -> None:
    for total in range(5):
        for offset in range(6):
            for limit in (None, 0, 1, 2, 7):
                for desc in (False, True):
                    order = list(range(total))[::-1] if desc else list(range(total))
                    want = order[offset:] if limit is None else order[offset:][:limit]
                    assert list(select_indexes(total, offset, limit, desc)) == want


async def test_purge_on_start_empties_unnamed_datasets_only(lone: Lone) -> None:
    lone.configuration = CrawleeConfiguration(storage_dir=str(lone.root), purge_on_start=True)
    for round_ in range(2):
        client = lone.client()
        default = await lone.open(client)
        named = await lone.open(client, name="keep")
        assert (await default.get_metadata()).item_count == 0
        assert (await named.get_metadata()).item_count == round_
        await default.push_data({"r": round_})
        await named.push_data({"r": round_})
        await client.close()
        service_locator.storage_instance_manager.clear_cache()


async def test_a_far_page_reads_only_its_own_records(
    lone: Lone, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = await lone.open(lone.client())
    for start in range(0, 20_000, 5_000):
        await dataset.push_data([{"i": i} for i in range(start, start + 5_000)])
    reads: list[str] = []
    original = Engine.get_small

    def counted(self: Engine, key: str, *args: Any) -> Any:
        reads.append(key)
        return original(self, key, *args)

    def no_listing(*_: Any, **__: Any) -> Any:
        raise AssertionError("a page must not list the dataset's keys")

    monkeypatch.setattr(Engine, "get_small", counted)
    monkeypatch.setattr(Engine, "keys", no_listing)
    page = await dataset.get_data(offset=18_000, limit=100)
    assert [item["i"] for item in page.items] == list(range(18_000, 18_100))
    assert reads == [item_key(i) for i in range(18_000, 18_100)]
    reads.clear()
    listed = [item async for item in dataset.iterate_items(offset=19_990, desc=True)]
    assert [item["i"] for item in listed] == list(range(9, -1, -1))
    assert len(reads) == 10


def test_the_client_is_crawlees_dataset_client() -> None:
    assert issubclass(LogKvDatasetClient, DatasetClient)


@pytest.mark.parametrize("durability", [Durability.PROCESS, Durability.FSYNC])
async def test_pushes_small_and_large_under_each_durability(
    lone: Lone, durability: Durability
) -> None:
    settings = Configuration(durability=durability, offload_threshold=4096, auto_compact=False)
    dataset = await lone.open(lone.client(settings=settings))
    small = [{"i": i} for i in range(3)]
    large = [{"i": i, "body": "x" * 1000} for i in range(3, 13)]
    await asyncio.gather(*(dataset.push_data(batch) for batch in (small, large, small)))
    items = (await dataset.get_data()).items
    assert len(items) == 16
    runs = [items[:3], items[3:13], items[13:]]
    assert sorted(runs, key=len) == [small, small, large]


async def test_native_datasets_false_hands_datasets_to_the_delegate(lone: Lone) -> None:
    await lone.check_native_switch("native_datasets", FileSystemDatasetClient, LogKvDatasetClient)


async def test_a_store_whose_keys_are_not_item_keys_is_refused(lone: Lone) -> None:
    client = lone.client()
    dataset = await lone.open(client, name="d")
    await dataset.push_data([{"i": 0}, {"i": 1}])
    await client.close()
    await lone.check_hostile_keys_refused(
        lambda: client,
        "d",
        lone.root / "datasets" / "d",
        ("zzz", item_key(5), "000000000001a"),
        ITEM_CONTENT_TYPE,
        "not a dataset",
    )
    reopened = await lone.raw(client, name="d")
    assert (await reopened.get_data()).items == [{"i": 0}, {"i": 1}]


async def test_an_item_that_is_not_json_is_skipped_with_a_logged_error(
    lone: Lone, caplog: pytest.LogCaptureFixture
) -> None:
    client = lone.client()
    dataset = await lone.open(client, name="d")
    await dataset.push_data([{"i": 0}, {"i": 1}, {"i": 2}])
    raw = await lone.raw(client, name="d")
    raw.engine.set(item_key(1), b"\xff not json", ITEM_CONTENT_TYPE)
    with caplog.at_level(logging.ERROR):
        assert (await dataset.get_data()).items == [{"i": 0}, {"i": 2}]
    assert any("Corrupt JSON" in record.getMessage() for record in caplog.records)


async def test_reads_after_drop_find_it_empty_as_crawlees_file_system_client(
    sides: dict[str, Side], caplog: pytest.LogCaptureFixture
) -> None:
    clients = {}
    for name, side in sides.items():
        client = await side.client.create_dataset_client(
            name="gone", configuration=side.configuration
        )
        await client.push_data(ITEMS)
        await client.drop()
        clients[name] = client
    with caplog.at_level(logging.WARNING):
        pages = {n: (await c.get_data(offset=1, limit=2)).model_dump() for n, c in clients.items()}
        listed = {n: [i async for i in c.iterate_items()] for n, c in clients.items()}
    assert _same(pages)["items"] == []
    assert _same(listed) == []
    assert len(caplog.records) == 4  # each read of each client warns
    metadata = {n: await c.get_metadata() for n, c in clients.items()}
    _same({n: (m.id is not None, m.name) for n, m in metadata.items()})
    # Crawlee's file-system client keeps the count it had; the dataset holds nothing now
    assert metadata["logkv"].item_count == 0
    with pytest.raises(StoreClosedError):
        await clients["logkv"].push_data({"after": "drop"})
    assert not (sides["logkv"].root / "datasets" / "gone").exists()


async def test_timestamps_are_saved_once_per_persist_interval(
    lone: Lone, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Configuration(auto_compact=False, persist_state_interval=timedelta(seconds=30))
    client = lone.client(settings=settings)
    dataset = await lone.open(client, name="timed")
    folder = lone.root / "datasets" / "timed"
    created = read_meta(folder)
    assert created is not None
    clock = [time.time()]
    monkeypatch.setattr(_store, "_now", lambda: clock[0])
    monkeypatch.setattr(_base, "_now", lambda: clock[0])
    clock[0] += 10
    await dataset.push_data({"i": 0})
    assert read_meta(folder) == created  # within the interval: in memory only
    clock[0] += 31
    await dataset.push_data({"i": 1})
    saved = read_meta(folder)
    assert saved is not None and saved.modified_at == clock[0]
    clock[0] += 31
    await dataset.get_data()
    later = read_meta(folder)
    assert later is not None
    assert (later.accessed_at, later.modified_at) == (clock[0], saved.modified_at)


async def test_modified_at_comes_back_from_the_log_when_meta_json_is_stale(lone: Lone) -> None:
    client = lone.client()
    dataset = await lone.open(client, name="stale")
    await dataset.push_data({"i": 0})
    folder = lone.root / "datasets" / "stale"
    await client.close()
    service_locator.storage_instance_manager.clear_cache()
    meta = read_meta(folder)
    assert meta is not None
    pushed_at = meta.modified_at
    meta.modified_at = meta.created_at - 100  # as if the last save was lost
    write_meta(folder, meta)
    reopened = await lone.open(lone.client(), name="stale")
    got = (await reopened.get_metadata()).modified_at.timestamp()
    assert pushed_at - 1 < got <= time.time()
