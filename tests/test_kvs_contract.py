"""The KeyValueStore contract (Crawlee's API, classic and 1.x), run against every storage client.

Every test that takes ``open_kvs`` runs twice: over the log-based client and the in-memory one.
Tests about the log-based client's files use ``open_log_kvs``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

from logkv import (
    Configuration,
    DiskStorageClient,
    Durability,
    Engine,
    Event,
    EventManager,
    InvalidKeyError,
    KeyValueStore,
    KeyValueStoreMetadata,
    MemoryStorageClient,
    NotALogKVStoreError,
    StorageClient,
    StoreClosedError,
    StoreNotFoundError,
    key_range,
)
from logkv import index as index_module
from logkv.content import MAX_NESTING_DEPTH
from logkv.key_value_store import close_all, open_stores
from logkv.layout import CRAWLEE_METADATA_FILE, KVS_DIR, META_FILE, PUBLIC_DIR
from logkv.models import StorageMetadata
from logkv.modes import MAX_KEY_LENGTH
from logkv.storage_clients import memory as memory_module

OpenKvs = Callable[..., Awaitable[KeyValueStore]]
PATIENCE = 10.0


pytestmark = pytest.mark.usefixtures("clean_environment")


@pytest.fixture
def configuration(storage_dir: Path) -> Configuration:
    return Configuration(
        storage_dir=str(storage_dir),
        purge_on_start=False,
        persist_state_interval=timedelta(hours=1),
    )


@pytest.fixture(params=["log", "memory"])
def storage_client(request: pytest.FixtureRequest, configuration: Configuration) -> StorageClient:
    if request.param == "log":
        return DiskStorageClient(configuration)
    return MemoryStorageClient(configuration)


async def _opener(
    configuration: Configuration, storage_client: StorageClient
) -> AsyncIterator[OpenKvs]:
    async def opener(**kwargs: Any) -> KeyValueStore:
        kwargs.setdefault("configuration", configuration)
        kwargs.setdefault("storage_client", storage_client)
        return await KeyValueStore.open(**kwargs)

    yield opener
    await close_all()
    assert open_stores() == []


@pytest.fixture
async def open_kvs(
    configuration: Configuration, storage_client: StorageClient
) -> AsyncIterator[OpenKvs]:
    """``await open_kvs(name=...)`` with this test's configuration and client (both clients in
    turn); all closed at the end, and the registry checked empty so no test leaks a store."""
    async for opener in _opener(configuration, storage_client):
        yield opener


@pytest.fixture
async def open_log_kvs(configuration: Configuration) -> AsyncIterator[OpenKvs]:
    """Like ``open_kvs``, for the tests about the log-based client's files only."""
    async for opener in _opener(configuration, DiskStorageClient()):
        yield opener


# ---------------------------------------------------------------------------------- opening


async def test_default_store(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs()
    assert kvs.id == "default"
    assert kvs.name is None
    assert await open_kvs() is kvs
    assert await open_kvs(id="default") is kvs


async def test_default_store_id_from_configuration(
    open_kvs: OpenKvs, storage_dir: Path, configuration: Configuration
) -> None:
    configuration.default_key_value_store_id = "run-42"
    kvs = await open_kvs()
    assert kvs.id == "run-42"
    assert await open_kvs(id="run-42") is kvs
    if kvs.path is not None:
        assert kvs.path == storage_dir.absolute() / KVS_DIR / "run-42"


async def test_named_store_is_created_and_found_by_name_and_id(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="products")
    assert kvs.name == "products"
    assert kvs.id not in ("products", "default")
    assert await open_kvs(name="products") is kvs
    assert await open_kvs(id=kvs.id) is kvs
    other = await open_kvs(name="other")
    assert other is not kvs and other.id != kvs.id


async def test_named_store_found_by_id_after_reopen(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="products")
    await kvs.set_value("k", 1)
    store_id = kvs.id
    await kvs.close()
    again = await open_kvs(id=store_id)
    assert again is not kvs
    assert again.name == "products"
    assert await again.get_value("k") == 1


async def test_unknown_id_raises(open_kvs: OpenKvs) -> None:
    await open_kvs(name="exists")
    with pytest.raises(StoreNotFoundError, match="no-such-id"):
        await open_kvs(id="no-such-id")


@pytest.mark.parametrize(
    "selectors",
    [
        {"id": "a", "name": "b"},
        {"id": "a", "alias": "b"},
        {"name": "a", "alias": "b"},
        {"id": "a", "name": "b", "alias": "c"},
    ],
)
async def test_more_than_one_selector_raises(open_kvs: OpenKvs, selectors: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="at most one"):
        await open_kvs(**selectors)


@pytest.mark.parametrize(
    "name", ["", "../escape", "a/b", "a\\b", "-start", "end-", "with space", "dot.ted", "x" * 201]
)
async def test_invalid_names_raise(open_kvs: OpenKvs, name: str, storage_dir: Path) -> None:
    with pytest.raises(ValueError, match="invalid store name"):
        await open_kvs(name=name)
    assert not (storage_dir / "escape").exists()


@pytest.mark.parametrize(
    "alias", ["", ".", "..", "a/b", "../up", "a\\b", "nul\x00", "tab\t", "é" * 200]
)
async def test_invalid_aliases_raise(open_kvs: OpenKvs, alias: str) -> None:
    with pytest.raises(ValueError, match="invalid store alias"):
        await open_kvs(alias=alias)


async def test_selector_types_are_checked(open_kvs: OpenKvs) -> None:
    with pytest.raises(TypeError):
        await open_kvs(name=5)
    with pytest.raises(TypeError):
        await open_kvs(alias=b"x")


async def test_default_folder_name_is_reserved(open_kvs: OpenKvs) -> None:
    with pytest.raises(ValueError, match="reserved"):
        await open_kvs(name="default")
    with pytest.raises(ValueError, match="reserved"):
        await open_kvs(alias="default")


async def test_alias_store_is_unnamed_and_separate(open_kvs: OpenKvs) -> None:
    run = await open_kvs(alias="run-cache")
    assert run.name is None
    assert await open_kvs(alias="run-cache") is run
    assert await open_kvs(id=run.id) is run
    await run.set_value("k", "alias")
    named = await open_kvs(name="other-name")
    assert not await named.record_exists("k")


async def test_name_and_alias_cannot_share_a_folder(open_kvs: OpenKvs) -> None:
    named = await open_kvs(name="shared")
    await named.close()
    with pytest.raises(ValueError, match="cannot be opened as"):
        await open_kvs(alias="shared")
    aliased = await open_kvs(alias="other")
    await aliased.close()
    with pytest.raises(ValueError, match="cannot be opened as"):
        await open_kvs(name="other")


async def test_concurrent_opens_share_one_store(open_kvs: OpenKvs) -> None:
    stores = await asyncio.gather(*(open_kvs(name="busy") for _ in range(20)))
    assert all(store is stores[0] for store in stores)


async def test_purge_on_start_empties_unnamed_stores_once_per_process(
    open_kvs: OpenKvs, configuration: Configuration
) -> None:
    for opener in ({"alias": "scratch"}, {}, {"name": "keeper"}):
        kvs = await open_kvs(**opener)
        await kvs.set_value("left-over", "from an earlier run")
        await kvs.close()
    purging = configuration.model_copy(update={"purge_on_start": True})
    scratch = await open_kvs(alias="scratch", configuration=purging)
    default = await open_kvs(configuration=purging)
    keeper = await open_kvs(name="keeper", configuration=purging)
    assert not await scratch.record_exists("left-over")
    assert not await default.record_exists("left-over")
    assert await keeper.get_value("left-over") == "from an earlier run"  # named: never purged
    await scratch.set_value("written-this-run", 1)
    await scratch.close()
    scratch = await open_kvs(alias="scratch", configuration=purging)
    assert await scratch.get_value("written-this-run") == 1  # not purged twice in one process


# ---------------------------------------------------------------------------------- values

VALUES: list[tuple[Any, str | None, str]] = [
    ({"a": 1, "nested": {"n": None, "l": [1, 2.5, None]}}, None, "application/json; charset=utf-8"),
    ([1, "two", None], None, "application/json; charset=utf-8"),
    (42, None, "application/json; charset=utf-8"),
    (2.0, None, "application/json; charset=utf-8"),
    (False, None, "application/json; charset=utf-8"),
    (2**100, None, "application/json; charset=utf-8"),
    ("plain text ✓", None, "text/plain; charset=utf-8"),
    (b"\x00\x01binary", None, "application/octet-stream"),
    (b"<html></html>", "text/html", "text/html"),
    ("<svg/>", "image/svg+xml", "image/svg+xml"),
    ({"@context": "x"}, "application/ld+json", "application/ld+json"),
    (b"\x89PNG\r\n", "image/png", "image/png"),
    ("caf\xe9", "text/plain; charset=latin-1", "text/plain; charset=latin-1"),
    ("café", "application/xml; charset=iso-8859-1", "application/xml; charset=iso-8859-1"),
    ("hi", "application/xml; charset=utf-16", "application/xml; charset=utf-16"),
    ("hi ✓", "text/plain; charset=utf-16", "text/plain; charset=utf-16"),
    ({"é": ["🎉"]}, "application/json; charset=utf-16", "application/json; charset=utf-16"),
]


@pytest.mark.parametrize(("value", "content_type", "reported"), VALUES)
async def test_values_round_trip_with_their_content_type(
    open_kvs: OpenKvs, value: Any, content_type: str | None, reported: str
) -> None:
    kvs = await open_kvs(name="values")
    await kvs.set_value("k", value, content_type)
    back = await kvs.get_value("k")
    assert back == value and type(back) is type(value)
    (info,) = await kvs.list_keys()
    assert info.key == "k"
    assert info.content_type == reported
    assert info.size is not None and info.size > 0
    await kvs.close()
    kvs = await open_kvs(name="values")
    assert await kvs.get_value("k") == value


async def test_returned_values_are_private_copies(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="copies")
    original = {"list": [1]}
    await kvs.set_value("k", original)
    original["list"].append(2)
    first = await kvs.get_value("k")
    first["list"].append(3)
    assert await kvs.get_value("k") == {"list": [1]}


@pytest.mark.parametrize(
    ("value", "content_type"),
    [
        ({1, 2}, None),
        (datetime(2024, 1, 1), None),
        (uuid.UUID(int=7), None),
        (object(), None),
        ({"when": datetime(2024, 1, 1)}, None),
        ({1: "int key"}, None),
        (float("nan"), None),
        ({"a": 1}, "text/plain"),
        (12, "text/plain"),
        ("€", "text/plain; charset=latin-1"),
    ],
)
async def test_unstorable_values_raise_type_error_and_change_nothing(
    open_kvs: OpenKvs, value: Any, content_type: str | None
) -> None:
    kvs = await open_kvs(name="strict")
    await kvs.set_value("existing", "before")
    before = await kvs.get_metadata()
    with pytest.raises(TypeError):
        await kvs.set_value("existing", value, content_type)
    with pytest.raises(TypeError):
        await kvs.set_value("new", value, content_type)
    assert await kvs.get_value("existing") == "before"
    assert not await kvs.record_exists("new")
    assert (await kvs.get_metadata()).last_seq == before.last_seq


@pytest.mark.parametrize("charset", ["base64", "hex", "rot13", "zlib", "bz2", "no-such-charset"])
@pytest.mark.parametrize(
    ("value", "main"),
    [
        ("x", "text/plain"),
        ("x", "application/xml"),
        (b"x", "image/png"),
        ({"a": 1}, "application/json"),
    ],
)
async def test_unusable_charsets_raise_value_error_and_change_nothing(
    open_kvs: OpenKvs, charset: str, value: Any, main: str
) -> None:
    kvs = await open_kvs(name="codecs")
    await kvs.set_value("existing", "before")
    before = await kvs.get_metadata()
    for key in ("existing", "new"):
        with pytest.raises(ValueError, match="charset") as caught:
            await kvs.set_value(key, value, f"{main}; charset={charset}")
        assert not isinstance(caught.value, LookupError)
    with pytest.raises(ValueError, match="charset"):  # a delete (None) is refused as well
        await kvs.set_value("existing", None, f"{main}; charset={charset}")
    assert await kvs.get_value("existing") == "before"
    assert not await kvs.record_exists("new")
    assert (await kvs.get_metadata()).last_seq == before.last_seq


async def test_nesting_is_limited_and_too_deep_changes_nothing(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="deep")
    deepest: Any = {"n": 2**70}  # read back by the standard library's json module
    for level in range(MAX_NESTING_DEPTH - 1):
        deepest = [deepest] if level % 2 else {"d": deepest}
    await kvs.set_value("deepest", deepest)
    before = await kvs.get_metadata()
    with pytest.raises(TypeError, match="nested too deeply"):
        await kvs.set_value("deepest", [deepest])
    with pytest.raises(TypeError, match="nested too deeply"):
        await kvs.set_value("deeper", {"d": deepest})
    assert not await kvs.record_exists("deeper")
    assert (await kvs.get_metadata()).last_seq == before.last_seq
    assert await kvs.get_value("deepest") == deepest


async def test_malformed_content_type_raises(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="ct")
    with pytest.raises(ValueError, match="MIME type"):
        await kvs.set_value("k", "v", "json")
    with pytest.raises(TypeError):
        await kvs.set_value("k", "v", 5)  # type: ignore[arg-type]


async def test_none_deletes_and_delete_value(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="deletes")
    await kvs.set_value("a", 1)
    await kvs.set_value("b", 2)
    assert await kvs.record_exists("a")
    await kvs.set_value("a", None)
    assert not await kvs.record_exists("a")
    assert await kvs.get_value("a") is None
    await kvs.delete_value("b")
    assert await kvs.get_value("b", "gone") == "gone"
    await kvs.delete_value("never-existed")
    await kvs.set_value("never-existed", None)
    assert [info.key async for info in kvs.iterate_keys()] == []


async def test_get_value_default(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="defaults")
    assert await kvs.get_value("missing") is None
    assert await kvs.get_value("missing", {"d": 1}) == {"d": 1}
    await kvs.set_value("present", 0)
    assert await kvs.get_value("present", 99) == 0


@pytest.mark.parametrize("key", ["", "x" * (MAX_KEY_LENGTH + 1), 5, None, b"bytes", "lone\ud800"])
async def test_invalid_keys_raise(open_kvs: OpenKvs, key: Any) -> None:
    kvs = await open_kvs(name="keys")
    with pytest.raises(InvalidKeyError):
        await kvs.set_value(key, 1)
    with pytest.raises(InvalidKeyError):
        await kvs.get_value(key)
    with pytest.raises(InvalidKeyError):
        await kvs.record_exists(key)
    with pytest.raises(InvalidKeyError):
        await kvs.delete_value(key)
    with pytest.raises(ValueError):  # InvalidKeyError is a ValueError
        await kvs.get_auto_saved_value(key)


async def test_key_limits(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="limits")
    longest = "k" * MAX_KEY_LENGTH
    unicode_key = "ключ/🔑 with spaces & symbols?#%"
    await kvs.set_value(longest, 1)
    await kvs.set_value(unicode_key, 2)
    assert await kvs.get_value(longest) == 1
    assert await kvs.get_value(unicode_key) == 2


# ---------------------------------------------------------------------------------- listing


async def fill(kvs: KeyValueStore, keys: list[str]) -> None:
    for key in keys:
        await kvs.set_value(key, {"key": key})


KEYS = ["b", "a", "B", "A", "10", "9", "a-1", "a_1", "é", "z", "ü", "日本", "Ω", "~", " space"]


async def test_keys_are_in_python_string_order(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="order")
    await fill(kvs, KEYS)
    expected = sorted(KEYS)
    assert [info.key async for info in kvs.iterate_keys()] == expected
    assert [key async for key in kvs] == expected
    assert [info.key for info in await kvs.list_keys()] == expected
    assert [key async for key, _ in kvs.iterate_entries()] == expected
    assert [value["key"] async for value in kvs.iterate_values()] == expected


@pytest.mark.parametrize("page", [1, 3, 7, 1000])
async def test_paging_with_exclusive_start_key_is_exact(open_kvs: OpenKvs, page: int) -> None:
    kvs = await open_kvs(name="paging")
    keys = [f"key-{i:04d}" for i in range(600)]
    random.Random(page).shuffle(keys)
    await fill(kvs, keys)
    seen: list[str] = []
    start: str | None = None
    while True:
        batch = await kvs.list_keys(exclusive_start_key=start, limit=page)
        if not batch:
            break
        assert len(batch) <= page
        seen.extend(info.key for info in batch)
        start = batch[-1].key
    assert seen == sorted(keys)


async def test_paging_arguments(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="args")
    await fill(kvs, ["a", "b", "c", "d"])
    assert [i.key async for i in kvs.iterate_keys(exclusive_start_key="b")] == ["c", "d"]
    assert [i.key async for i in kvs.iterate_keys(exclusive_start_key="bb")] == ["c", "d"]
    assert [i.key async for i in kvs.iterate_keys(exclusive_start_key="z")] == []
    assert [i.key async for i in kvs.iterate_keys(limit=2)] == ["a", "b"]
    assert [i.key async for i in kvs.iterate_keys(limit=0)] == []
    assert [k async for k, _ in kvs.iterate_entries(exclusive_start_key="a", limit=2)] == ["b", "c"]
    assert [v async for v in kvs.iterate_values(exclusive_start_key="c")] == [{"key": "d"}]
    with pytest.raises(ValueError, match="limit"):
        await kvs.list_keys(limit=-1)
    with pytest.raises(TypeError, match="exclusive_start_key"):
        await kvs.list_keys(exclusive_start_key=5)  # type: ignore[arg-type]


CRAWL_KEYS = ["page-1", "page-10", "page-2", "pagex", "page", "screenshot-1", "screenshot-2"]
CRAWL_KEYS += ["p", "q", "a\U0010ffff", "a\U0010ffff\U0010ffff", "a", "b"]


async def test_prefix_listing(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="prefix")
    await fill(kvs, CRAWL_KEYS)

    async def listed(
        start: str | None = None, limit: int | None = None, *, prefix: str
    ) -> list[str]:
        return [i.key async for i in kvs.iterate_keys(start, limit, prefix=prefix)]

    pages = ["page-1", "page-10", "page-2"]
    assert await listed(prefix="page-") == pages
    assert [i.key for i in await kvs.list_keys(prefix="page-", limit=2)] == pages[:2]
    assert await listed("a", prefix="page-") == pages  # a start before the range
    assert await listed("page-1", prefix="page-") == pages[1:]  # inside it
    assert await listed("page-10x", 1, prefix="page-") == ["page-2"]
    assert await listed("page-2", prefix="page-") == []  # at its end
    assert await listed("z", prefix="page-") == []  # after it
    assert await listed(prefix="page-", limit=0) == []
    assert await listed(prefix="nothing") == []
    assert await listed(prefix="") == sorted(CRAWL_KEYS)
    assert await listed(prefix="a") == ["a", "a\U0010ffff", "a\U0010ffff\U0010ffff"]
    assert await listed(prefix="a\U0010ffff") == ["a\U0010ffff", "a\U0010ffff\U0010ffff"]
    assert await listed(prefix="screenshot-2") == ["screenshot-2"]
    assert [k async for k, _ in kvs.iterate_entries(prefix="screenshot-")] == [
        "screenshot-1",
        "screenshot-2",
    ]
    assert [v async for v in kvs.iterate_values("page-1", 1, prefix="page")] == [{"key": "page-10"}]
    await kvs.delete_value("page-10")
    assert await listed(prefix="page-") == ["page-1", "page-2"]
    with pytest.raises(TypeError, match="prefix"):
        await kvs.list_keys(prefix=b"page-")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prefix"):
        await kvs.list_keys(prefix=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("page", [1, 7, 1000])
async def test_paging_within_a_prefix_is_exact(open_kvs: OpenKvs, page: int) -> None:
    kvs = await open_kvs(name="prefix-paging")
    keys = [f"{kind}-{i:04d}" for i in range(300) for kind in ("page", "shot")]
    random.Random(page).shuffle(keys)
    await fill(kvs, keys)
    seen: list[str] = []
    start: str | None = None
    while batch := await kvs.list_keys(exclusive_start_key=start, limit=page, prefix="shot-"):
        assert len(batch) <= page
        seen.extend(info.key for info in batch)
        start = batch[-1].key
    assert seen == sorted(k for k in keys if k.startswith("shot-"))


async def test_a_prefix_listing_hands_out_only_its_keys(
    open_kvs: OpenKvs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both clients take a prefix listing's keys from a range of the sorted keys (the disk
    client through the engine's index): 3 keys of 3,000 are all that is handed out."""
    kvs = await open_kvs(name="prefix-big")
    await fill(kvs, [f"page-{i:05d}" for i in range(3000)] + ["shot-1", "shot-2", "shot-3"])
    handed_out: list[str] = []

    def counting(sorted_keys: Any, after: str | None, limit: int, prefix: str = "") -> list[str]:
        batch = key_range.keys_after(sorted_keys, after, limit, prefix)
        handed_out.extend(batch)
        return batch

    monkeypatch.setattr(index_module, "keys_after", counting)
    monkeypatch.setattr(memory_module, "keys_after", counting)
    assert [i.key for i in await kvs.list_keys(prefix="shot-")] == ["shot-1", "shot-2", "shot-3"]
    assert handed_out == ["shot-1", "shot-2", "shot-3"]


async def test_list_keys_defaults_to_1000(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="many")
    for i in range(1003):
        await kvs.set_value(f"k{i:05d}", i)
    assert len(await kvs.list_keys()) == 1000
    assert len([info async for info in kvs.iterate_keys()]) == 1003


async def test_iteration_sizes(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="sizes")
    await kvs.set_value("bytes", b"12345")
    await kvs.set_value("text", "héllo")
    await kvs.set_value("json", {"a": 1})
    sizes = {info.key: info.size async for info in kvs.iterate_keys()}
    assert sizes == {"bytes": 5, "text": len("héllo".encode()), "json": len(b'{"a":1}')}


async def test_iteration_while_deleting_and_writing(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="moving")
    keys = [f"k{i:04d}" for i in range(1000)]
    await fill(kvs, keys)
    seen: list[str] = []
    async for key, value in kvs.iterate_entries():
        seen.append(key)
        assert value == {"key": key}
        if key == "k0100":
            for doomed in keys[500:600]:
                await kvs.delete_value(doomed)
            await kvs.set_value("k0050x", {"key": "k0050x"})  # behind the cursor
            await kvs.set_value("k0700x", {"key": "k0700x"})  # ahead of it
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen)
    assert not set(keys[500:600]) & set(seen)
    assert "k0700x" in seen and "k0050x" not in seen


# ---------------------------------------------------------------------------------- public URLs


async def test_public_url_files(open_log_kvs: OpenKvs) -> None:
    kvs = await open_log_kvs(name="public")
    assert kvs.path is not None
    await kvs.set_value("page/1?x", b"<h1>hi</h1>", "text/html")
    await kvs.set_value("data", {"a": [1, None]})
    await kvs.set_value("note", "text")
    await kvs.set_value("blob", b"\x00\x01")
    await kvs.set_value("image", b"\x89PNG", "image/png")
    expected = {
        "page/1?x": ("page%2F1%3Fx.html", b"<h1>hi</h1>"),
        "data": ("data.json", b'{"a":[1,null]}'),
        "note": ("note.txt", b"text"),
        "blob": ("blob.bin", b"\x00\x01"),
        "image": ("image.png", b"\x89PNG"),
    }
    for key, (file_name, content) in expected.items():
        url = await kvs.get_public_url(key)
        parsed = urlparse(url)
        assert parsed.scheme == "file"
        path = Path(unquote(parsed.path))
        assert path == kvs.path / PUBLIC_DIR / file_name
        assert path.is_relative_to(kvs.path)
        assert path.read_bytes() == content
    assert sorted(os.listdir(kvs.path / PUBLIC_DIR)) == sorted(n for n, _ in expected.values())


async def test_public_file_follows_the_record(open_log_kvs: OpenKvs) -> None:
    kvs = await open_log_kvs(name="follow")
    assert kvs.path is not None
    await kvs.set_value("doc", {"v": 1})
    path = Path(unquote(urlparse(await kvs.get_public_url("doc")).path))
    await kvs.set_value("doc", {"v": 2})
    assert json.loads(path.read_bytes()) == {"v": 2}  # rewritten without asking again
    await kvs.set_value("doc", "now text")
    assert not path.exists()
    renamed = kvs.path / PUBLIC_DIR / "doc.txt"
    assert renamed.read_text() == "now text"
    await kvs.delete_value("doc")
    assert not renamed.exists()
    await kvs.set_value("doc", "back")  # no longer published: no file
    assert not renamed.exists()


async def test_public_files_are_checked_on_open(open_log_kvs: OpenKvs) -> None:
    kvs = await open_log_kvs(name="reopen")
    assert kvs.path is not None
    await kvs.set_value("kept", "new")
    await kvs.set_value("gone", "x")
    await kvs.get_public_url("kept")
    await kvs.get_public_url("gone")
    long_key = "L" * 900
    await kvs.set_value(long_key, b"long")
    long_path = Path(unquote(urlparse(await kvs.get_public_url(long_key)).path))
    assert len(long_path.name) <= 240
    folder = kvs.path
    await kvs.close()
    (folder / PUBLIC_DIR / "kept.txt").write_text("stale")  # as after a crash mid-rewrite
    engine = Engine.open(folder)
    engine.delete("gone")
    engine.set(long_key, b"longer", "application/octet-stream")
    engine.close()
    kvs = await open_log_kvs(name="reopen")
    assert (folder / PUBLIC_DIR / "kept.txt").read_text() == "new"
    assert not (folder / PUBLIC_DIR / "gone.txt").exists()
    assert long_path.read_bytes() == b"longer"
    await kvs.set_value(long_key, b"longest")
    assert long_path.read_bytes() == b"longest"


async def test_public_url_of_missing_key_raises(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="nothing")
    with pytest.raises(KeyError, match="missing"):
        await kvs.get_public_url("missing")


async def test_memory_public_url_is_a_data_url(configuration: Configuration) -> None:
    kvs = await KeyValueStore.open(
        name="mem", configuration=configuration, storage_client=MemoryStorageClient()
    )
    await kvs.set_value("k", {"a": 1})
    url = await kvs.get_public_url("k")
    header, payload = url.split(",", 1)
    assert header == "data:application/json;charset=utf-8;base64"
    assert base64.b64decode(payload) == b'{"a":1}'
    await kvs.close()


# ---------------------------------------------------------------------------------- metadata


async def test_metadata(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="meta")
    first = await kvs.get_metadata()
    assert isinstance(first, KeyValueStoreMetadata)
    assert (first.id, first.name, first.record_count, first.last_seq) == (kvs.id, "meta", 0, 0)
    assert first.created_at <= first.modified_at
    await kvs.set_value("a", b"12345")
    await kvs.set_value("b", "x")
    await kvs.set_value("a", b"123")
    meta = await kvs.get_metadata()
    assert meta.record_count == 2
    assert meta.last_seq == 3
    assert meta.live_bytes >= 4
    assert meta.modified_at >= first.modified_at
    assert meta.accessed_at >= meta.modified_at
    assert meta.created_at == first.created_at
    info = await kvs.get_info()
    assert (info.id, info.record_count) == (kvs.id, 2)
    dumped = meta.model_dump(by_alias=True)
    assert {"createdAt", "accessedAt", "modifiedAt", "recordCount", "lastSeq"} <= set(dumped)


async def test_metadata_timestamps_survive_reopen(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="stamps")
    await kvs.set_value("a", 1)
    before = await kvs.get_metadata()
    await kvs.close()
    kvs = await open_kvs(name="stamps")
    after = await kvs.get_metadata()
    assert after.created_at == before.created_at
    assert after.modified_at == before.modified_at
    assert after.id == before.id


async def test_log_store_folder_and_metadata_file(open_log_kvs: OpenKvs, storage_dir: Path) -> None:
    kvs = await open_log_kvs(name="on-disk")
    folder = storage_dir.absolute() / KVS_DIR / "on-disk"
    assert kvs.path == folder
    meta = json.loads((folder / META_FILE).read_text())
    assert (meta["id"], meta["name"], meta["kind"]) == (kvs.id, "on-disk", "named")
    assert (await kvs.get_metadata()).log_bytes > 0


async def test_storage_object_and_from_storage_object(
    open_kvs: OpenKvs, storage_client: StorageClient
) -> None:
    kvs = await open_kvs(name="classic")
    await kvs.set_value("k", "v")
    storage_object = kvs.storage_object
    assert isinstance(storage_object, StorageMetadata)
    assert (storage_object.id, storage_object.name) == (kvs.id, "classic")
    handle = KeyValueStore.from_storage_object(storage_client, storage_object)
    assert handle.storage_object is storage_object
    assert await handle.get_value("k") == "v"
    assert (handle.id, handle.name) == (kvs.id, "classic")
    await handle.set_value("k2", "from handle")
    assert await kvs.get_value("k2") == "from handle"
    assert await handle.get_auto_saved_value("S") is await kvs.get_auto_saved_value("S")
    for first_use in ("keys", "infos", "entries"):  # iterating first opens the handle too
        fresh = KeyValueStore(kvs.id, kvs.name, storage_client)
        if first_use == "keys":
            assert [key async for key in fresh] == ["k", "k2"]  # "S" is not saved yet
        elif first_use == "infos":
            assert [i.key async for i in fresh.iterate_keys(limit=1)] == ["k"]
        else:
            assert [k async for k, _ in fresh.iterate_entries(exclusive_start_key="k")] == ["k2"]
    direct = KeyValueStore(kvs.id, kvs.name, storage_client)
    assert await direct.record_exists("k2")
    await direct.close()  # closes the store itself
    with pytest.raises(StoreClosedError):
        await kvs.get_value("k")


# ---------------------------------------------------------------------------------- lifecycle


async def test_purge_keeps_the_store(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="purged")
    store_id = kvs.id
    await fill(kvs, ["a", "b", "c"])
    await kvs.purge()
    assert [info async for info in kvs.iterate_keys()] == []
    assert kvs.id == store_id
    assert (await kvs.get_metadata()).record_count == 0
    await kvs.set_value("after", 1)
    assert await kvs.get_value("after") == 1


async def test_purge_removes_public_files(open_log_kvs: OpenKvs) -> None:
    kvs = await open_log_kvs(name="purge-public")
    assert kvs.path is not None
    await kvs.set_value("k", "v")
    await kvs.get_public_url("k")
    await kvs.purge()
    assert not (kvs.path / PUBLIC_DIR).exists()


async def test_drop_removes_everything(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="doomed")
    await kvs.set_value("k", "v")
    await kvs.get_auto_saved_value("STATE")
    folder, old_id = kvs.path, kvs.id
    await kvs.drop()
    if folder is not None:
        assert not folder.exists()
    with pytest.raises(StoreClosedError):
        await kvs.get_value("k")
    with pytest.raises(StoreNotFoundError):
        await open_kvs(id=old_id)
    fresh = await open_kvs(name="doomed")
    assert fresh is not kvs and fresh.id != old_id
    assert await fresh.get_value("k") is None
    await kvs.close()  # closing a dropped store is harmless


async def test_close_and_reopen(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="closing")
    await kvs.set_value("k", [1, 2])
    await kvs.close()
    await kvs.close()  # idempotent
    for call in (
        kvs.get_value("k"),
        kvs.set_value("k", 1),
        kvs.delete_value("k"),
        kvs.record_exists("k"),
        kvs.get_metadata(),
        kvs.purge(),
    ):
        with pytest.raises(StoreClosedError):
            await call
    with pytest.raises(StoreClosedError):
        await kvs.list_keys()
    again = await open_kvs(name="closing")
    assert again is not kvs
    assert await again.get_value("k") == [1, 2]


async def test_async_with_closes(open_kvs: OpenKvs) -> None:
    async with await open_kvs(name="ctx") as kvs:
        await kvs.set_value("k", 1)
        assert kvs in open_stores()
    assert kvs not in open_stores()
    with pytest.raises(StoreClosedError):
        await kvs.get_value("k")
    async with await open_kvs(name="ctx") as again:
        assert await again.get_value("k") == 1


async def test_many_tasks_write_concurrently(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="concurrent")

    async def writer(task: int) -> None:
        for i in range(60):
            await kvs.set_value(f"t{task:02d}-{i:03d}", {"task": task, "i": i})
            if i % 10 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(writer(task) for task in range(50)))
    await kvs.close()
    kvs = await open_kvs(name="concurrent")
    entries = {key: value async for key, value in kvs.iterate_entries()}
    assert len(entries) == 3000
    assert all(
        entries[f"t{t:02d}-{i:03d}"] == {"task": t, "i": i} for t in range(50) for i in range(60)
    )


# ---------------------------------------------------------------------------------- autosave


async def test_autosaved_value_is_one_object_saved_on_demand(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="auto")
    default = {"page": 0}
    state = await kvs.get_auto_saved_value("STATE", default)
    assert state == {"page": 0} and state is not default
    assert await kvs.get_auto_saved_value("STATE") is state
    assert await kvs.get_auto_saved_value("STATE", {"other": 1}) is state
    default["page"] = 99  # the caller's default is not tracked
    state["page"] = 1
    assert await kvs.get_value("STATE") is None  # nothing saved yet
    await kvs.persist_autosaved_values()
    assert await kvs.get_value("STATE") == {"page": 1}


async def test_unchanged_autosaved_values_are_not_rewritten(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="quiet")
    state = await kvs.get_auto_saved_value("STATE")
    state["n"] = 1
    await kvs.persist_autosaved_values()
    seq = (await kvs.get_metadata()).last_seq
    for _ in range(3):
        await kvs.persist_autosaved_values()
        assert kvs.event_manager is not None
        await kvs.event_manager.persist_state()
    assert (await kvs.get_metadata()).last_seq == seq
    state["n"] = 2
    await kvs.persist_autosaved_values()
    assert (await kvs.get_metadata()).last_seq == seq + 1


async def test_autosaved_value_loaded_from_the_store(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="loaded")
    await kvs.set_value("STATE", {"from": "store"})
    seq = (await kvs.get_metadata()).last_seq
    state = await kvs.get_auto_saved_value("STATE", {"from": "default"})
    assert state == {"from": "store"}
    await kvs.persist_autosaved_values()
    assert (await kvs.get_metadata()).last_seq == seq  # loaded and unchanged: not rewritten


async def test_autosave_on_close_and_reopen(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="durable-state")
    state = await kvs.get_auto_saved_value("STATE", {"done": []})
    state["done"].append("url-1")
    await kvs.close()
    kvs = await open_kvs(name="durable-state")
    again = await kvs.get_auto_saved_value("STATE")
    assert again == {"done": ["url-1"]}
    assert again is not state


async def test_autosave_on_the_timer(open_kvs: OpenKvs, configuration: Configuration) -> None:
    fast = configuration.model_copy(update={"persist_state_interval": timedelta(milliseconds=20)})
    kvs = await open_kvs(name="ticking", configuration=fast)
    state = await kvs.get_auto_saved_value("STATE")
    state["tick"] = "saved by the timer"

    async def saved() -> None:
        while await kvs.get_value("STATE") != {"tick": "saved by the timer"}:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(saved(), PATIENCE)


async def test_autosave_rejects_non_dict_values(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="not-a-dict")
    await kvs.set_value("LIST", [1, 2])
    with pytest.raises(TypeError, match="not a dict"):
        await kvs.get_auto_saved_value("LIST")
    with pytest.raises(TypeError, match="default_value"):
        await kvs.get_auto_saved_value("OTHER", [1])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await kvs.get_auto_saved_value("BAD-DEFAULT", {"when": datetime(2024, 1, 1)})


async def test_autosave_reports_unstorable_content_after_saving_the_rest(
    open_kvs: OpenKvs,
) -> None:
    kvs = await open_kvs(name="partial")
    good = await kvs.get_auto_saved_value("GOOD")
    bad = await kvs.get_auto_saved_value("BAD")
    good["ok"] = True
    bad["when"] = datetime(2024, 1, 1)
    with pytest.raises(TypeError, match="BAD"):
        await kvs.persist_autosaved_values()
    assert await kvs.get_value("GOOD") == {"ok": True}
    del bad["when"]


async def test_direct_writes_to_an_autosaved_key(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="overwritten")
    state = await kvs.get_auto_saved_value("STATE", {"n": 1})
    await kvs.persist_autosaved_values()
    await kvs.set_value("STATE", {"n": "replaced"})
    await kvs.persist_autosaved_values()
    assert await kvs.get_value("STATE") == {"n": 1}  # the autosaved dict is the value
    await kvs.delete_value("STATE")
    await kvs.persist_autosaved_values()
    assert await kvs.get_value("STATE") == {"n": 1}
    await kvs.purge()
    await kvs.persist_autosaved_values()
    assert await kvs.get_value("STATE") == state


async def test_shared_event_manager_saves_every_store(open_kvs: OpenKvs) -> None:
    manager = EventManager(persist_state_interval=timedelta(hours=1))
    first = await open_kvs(name="first", event_manager=manager)
    second = await open_kvs(name="second", event_manager=manager)
    assert first.event_manager is manager and second.event_manager is manager
    assert manager.active
    (await first.get_auto_saved_value("S"))["v"] = 1
    (await second.get_auto_saved_value("S"))["v"] = 2
    await manager.persist_state()
    assert await first.get_value("S") == {"v": 1}
    assert await second.get_value("S") == {"v": 2}
    await first.close()
    assert manager.active  # still used by the second store
    await second.close()
    assert not manager.active
    assert manager.listener_count(Event.PERSIST_STATE) == 0


async def test_own_event_manager_starts_by_itself(open_kvs: OpenKvs) -> None:
    kvs = await open_kvs(name="self-starting")
    assert kvs.event_manager is not None and kvs.event_manager.active
    manager = kvs.event_manager
    await kvs.close()
    assert not manager.active


# ---------------------------------------------------------------------------------- log client


async def test_crawlee_file_system_store_is_refused(
    open_log_kvs: OpenKvs, storage_dir: Path
) -> None:
    folder = storage_dir / KVS_DIR / "crawled"
    folder.mkdir(parents=True)
    (folder / CRAWLEE_METADATA_FILE).write_text(json.dumps({"id": "crawlee-id", "name": "crawled"}))
    (folder / "record.json").write_text("{}")
    with pytest.raises(NotALogKVStoreError, match="Crawlee file-system key-value store") as info:
        await open_log_kvs(name="crawled")
    assert "logkv migrate" in str(info.value)
    with pytest.raises(NotALogKVStoreError, match="Crawlee"):
        await open_log_kvs(id="crawlee-id")
    assert sorted(os.listdir(folder)) == [CRAWLEE_METADATA_FILE, "record.json"]  # untouched


async def test_foreign_folder_is_refused(open_log_kvs: OpenKvs, storage_dir: Path) -> None:
    folder = storage_dir / KVS_DIR / "holiday-photos"
    folder.mkdir(parents=True)
    (folder / "beach.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(NotALogKVStoreError, match=r"beach\.jpg"):
        await open_log_kvs(name="holiday-photos")


@pytest.mark.parametrize(
    ("strays", "named"),
    [
        ([CRAWLEE_METADATA_FILE, "__RQ_STATE_x", "__RQ_STATE_x.__metadata__.json"], "Crawlee"),
        (["notes.txt"], "notes.txt"),
    ],
)
async def test_files_of_another_client_in_a_store_folder_are_named(
    open_log_kvs: OpenKvs, strays: list[str], named: str
) -> None:
    kvs = await open_log_kvs()
    await kvs.set_value("k", "v")
    folder = kvs.path
    assert folder is not None
    await kvs.close()
    for stray in strays:  # as another client that was given the same folder would write them
        (folder / stray).write_text("{}")
    with pytest.raises(NotALogKVStoreError, match=named) as info:
        await open_log_kvs()
    message = str(info.value)
    assert all(stray in message for stray in strays)
    assert "never share" in message
    for stray in strays:
        (folder / stray).unlink()
    kvs = await open_log_kvs()  # the files moved out: the store opens, whole
    assert await kvs.get_value("k") == "v"


async def test_engine_store_without_metadata_is_adopted(
    open_log_kvs: OpenKvs, storage_dir: Path
) -> None:
    folder = storage_dir / KVS_DIR / "raw-engine"
    with Engine.open(folder) as engine:
        engine.set("k", b'{"from":"engine"}', "application/json")
    kvs = await open_log_kvs(name="raw-engine")
    assert await kvs.get_value("k") == {"from": "engine"}
    assert (folder / META_FILE).exists()


@pytest.mark.parametrize(
    "options",
    [
        {"offload_threshold": 100},
        {"durability": Durability.FSYNC},
    ],
)
async def test_log_client_settings(
    open_log_kvs: OpenKvs, configuration: Configuration, options: dict[str, Any]
) -> None:
    tuned = configuration.model_copy(update=options)
    kvs = await open_log_kvs(name="tuned", configuration=tuned)
    big = {"blob": "x" * 50_000}

    async def writer(task: int) -> None:
        for i in range(10):
            await kvs.set_value(f"k{task}-{i}", {"task": task, "i": i})
            await kvs.set_value("shared", {"last": [task, i]})

    await asyncio.gather(*(writer(t) for t in range(10)))
    await kvs.set_value("big", big)
    await kvs.set_value("bytes", b"y" * 20_000, "image/png")
    assert await kvs.get_value("big") == big
    assert await kvs.get_value("bytes") == b"y" * 20_000
    assert await kvs.get_value("k3-7") == {"task": 3, "i": 7}
    last = await kvs.get_value("shared")
    await kvs.set_value("shared", "final")
    assert await kvs.get_value("shared") == "final"
    assert last["last"][1] == 9
    url = await kvs.get_public_url("big")
    assert json.loads(Path(unquote(urlparse(url).path)).read_bytes()) == big
    await kvs.delete_value("big")
    assert await kvs.get_value("big") is None
    entries = {k: v async for k, v in kvs.iterate_entries()}
    assert len(entries) == 102
    await kvs.close()
    kvs = await open_log_kvs(name="tuned", configuration=tuned)
    assert await kvs.get_value("shared") == "final"
    assert await kvs.get_value("bytes") == b"y" * 20_000


async def test_auto_compaction_on_persist_state(
    open_log_kvs: OpenKvs, configuration: Configuration
) -> None:
    tuned = configuration.model_copy(
        update={"compaction_min_dead_bytes": 1, "compaction_min_dead_ratio": 0.5}
    )
    kvs = await open_log_kvs(name="compacting", configuration=tuned)
    for round_ in range(20):
        for i in range(20):
            await kvs.set_value(f"k{i}", {"round": round_, "pad": "p" * 100})
    before = (await kvs.get_metadata()).log_bytes
    assert kvs.event_manager is not None
    await kvs.event_manager.persist_state()
    after = await kvs.get_metadata()
    assert after.log_bytes < before
    assert after.record_count == 20
    assert await kvs.get_value("k7") == {"round": 19, "pad": "p" * 100}
    await kvs.close()
    kvs = await open_log_kvs(name="compacting", configuration=tuned)
    assert await kvs.get_value("k19") == {"round": 19, "pad": "p" * 100}


def test_a_store_left_open_is_reused_by_a_later_event_loop(
    configuration: Configuration, storage_client: StorageClient
) -> None:
    fast = configuration.model_copy(update={"persist_state_interval": timedelta(milliseconds=20)})

    async def first_run() -> KeyValueStore:
        kvs = await KeyValueStore.open(
            name="long-lived", configuration=fast, storage_client=storage_client
        )
        (await kvs.get_auto_saved_value("STATE"))["run"] = 1
        return kvs  # left open when this event loop ends

    async def second_run(previous: KeyValueStore) -> None:
        kvs = await KeyValueStore.open(
            name="long-lived", configuration=fast, storage_client=storage_client
        )
        assert kvs is previous
        (await kvs.get_auto_saved_value("STATE"))["run"] = 2

        async def saved() -> None:  # the timer runs again, in this loop
            while await kvs.get_value("STATE") != {"run": 2}:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(saved(), PATIENCE)
        await kvs.close()

    previous = asyncio.run(first_run())
    asyncio.run(second_run(previous))
    assert open_stores() == []
