"""Contract tests: Crawlee's own ``KeyValueStore`` over ``logkv.crawlee.LogKvStorageClient``.

Each test checks a behaviour Crawlee documents for key-value stores (opening by id, name and
alias, instance caching, ``None`` values, ``record_exists``, purge, drop, listing and iteration
with ``limit`` and ``exclusive_start_key``, autosaved values, awkward keys), and that the stores
are logkv stores that logkv's own tools and client read.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from crawlee import service_locator
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storage_clients import FileSystemStorageClient
from crawlee.storages import Dataset, KeyValueStore, RequestQueue

import logkv.crawlee._client as adapter_client
from logkv import Configuration, Engine, NotALogKVStoreError, StoreClosedError
from logkv import KeyValueStore as LogKvKeyValueStore
from logkv.cli.main import main as logkv_main
from logkv.content import MAX_NESTING_DEPTH
from logkv.crawlee import LogKvKeyValueStoreClient, LogKvStorageClient
from logkv.crawlee._storage_client import BESIDE_FILE_SYSTEM_DEFAULT
from logkv.layout import (
    CRAWLEE_METADATA_FILE,
    KVS_DIR,
    META_FILE,
    TRASH_DIR,
    is_store_folder,
)
from logkv.modes import Durability

AWKWARD_KEYS = [
    "with space",
    "a/b/c",
    "päge/ü · 日本語",
    "emoji 🕷",
    "trailing slash/",
    "100%25 encoded?&=",
    "..",
]


class Env:
    """A storage directory, a Crawlee configuration for it and a logkv storage client."""

    def __init__(self, root: Path, *, purge_on_start: bool = False) -> None:
        self.root = root
        self.purge_on_start = purge_on_start
        self.configuration = CrawleeConfiguration(
            storage_dir=str(root), purge_on_start=purge_on_start
        )
        self.clients: list[LogKvStorageClient] = []
        self.client = self.new_client()

    def new_client(self) -> LogKvStorageClient:
        client = LogKvStorageClient(settings=Configuration(auto_compact=False))
        self.clients.append(client)
        return client

    async def open(self, **selector: Any) -> KeyValueStore:
        return await KeyValueStore.open(
            configuration=self.configuration, storage_client=self.client, **selector
        )

    async def restart(self) -> None:
        """What a new process sees: every store closed, Crawlee's caches empty."""
        for client in self.clients:
            await client.close()
        service_locator.storage_instance_manager.clear_cache()
        KeyValueStore._autosaved_values.clear()
        self.client = self.new_client()

    def folder(self, name: str) -> Path:
        return self.root / KVS_DIR / name

    def delegate_request_queues(self, **options: Any) -> None:
        """Use a client whose request queues are Crawlee's file-system ones from now on."""
        self.client = LogKvStorageClient(
            settings=Configuration(auto_compact=False), native_request_queues=False, **options
        )
        self.clients.append(self.client)


@pytest.fixture
async def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    monkeypatch.setattr(KeyValueStore, "_autosaved_values", {})
    service_locator.storage_instance_manager.clear_cache()
    made = Env(tmp_path / "storage")
    yield made
    for client in made.clients:
        await client.close()
    service_locator.storage_instance_manager.clear_cache()


def path_of_url(url: str) -> Path:
    assert url.startswith("file://")
    return Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))


async def keys_of(kvs: KeyValueStore, **paging: Any) -> list[str]:
    return [item.key async for item in kvs.iterate_keys(**paging)]


# ---------------------------------------------------------------- opening


@pytest.mark.parametrize("native_request_queues", [True, False])
async def test_default_store_is_a_logkv_store_in_default_unless_crawlees_queues_write_there(
    env: Env, native_request_queues: bool
) -> None:
    if not native_request_queues:
        env.delegate_request_queues()
    kvs = await env.open()
    await kvs.set_value("k", {"a": 1})
    metadata = await kvs.get_metadata()
    assert metadata.name is None
    assert kvs.id == metadata.id
    # Delegated request queues are Crawlee's file-system ones, which write their own state into
    # key_value_stores/default: the logkv default store then keeps out of that folder.
    folder_name = "default" if native_request_queues else BESIDE_FILE_SYSTEM_DEFAULT
    other = BESIDE_FILE_SYSTEM_DEFAULT if native_request_queues else "default"
    assert not env.folder(other).exists()
    folder = env.folder(folder_name)
    assert is_store_folder(folder)
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["id"] == kvs.id
    assert meta["kind"] == "default"
    # Crawlee caches the instance: every way of opening it again gives the same object.
    assert await env.open() is kvs
    assert await env.open(id=kvs.id) is kvs


async def test_a_crawler_request_queue_and_the_default_store_coexist(env: Env) -> None:
    queue = await RequestQueue.open(storage_client=env.client, configuration=env.configuration)
    await queue.add_request("http://127.0.0.1/page")
    kvs = await env.open()
    await kvs.set_value("state", {"page": 1})
    assert await kvs.get_value("state") == {"page": 1}
    await env.restart()
    kvs = await env.open()
    assert await kvs.get_value("state") == {"page": 1}


@pytest.mark.parametrize("selector", [{"name": "pages"}, {"alias": "run"}, {}])
async def test_a_store_reopens_after_its_client_closed(env: Env, selector: dict[str, str]) -> None:
    kvs = await env.open(**selector)
    await kvs.set_value("k", {"a": 1})
    await env.client.close()
    again = await env.open(**selector)  # the same client, without clearing Crawlee's caches
    assert await again.get_value("k") == {"a": 1}
    await again.set_value("k2", "more")
    with pytest.raises(StoreClosedError):
        await kvs.get_value("k")  # the closed handle stays closed
    await env.client.close()
    env.client = env.new_client()
    fresh = await env.open(**selector)  # a new client, same storage directory
    assert await fresh.get_value("k") == {"a": 1}
    assert await fresh.get_value("k2") == "more"
    assert await env.open(**selector) is fresh


async def test_a_store_reopens_after_it_was_closed_alone(env: Env) -> None:
    kvs = await env.open(name="pages")
    await kvs.set_value("k", {"a": 1})
    raw = await env.client.create_kvs_client(name="pages", configuration=env.configuration)
    await raw.close()
    again = await env.open(name="pages")
    assert again is not kvs
    assert await again.get_value("k") == {"a": 1}


async def test_named_store_persists_across_runs_and_opens_by_id(env: Env) -> None:
    kvs = await env.open(name="pages")
    assert kvs.name == "pages"
    await kvs.set_value("page-1", "<html></html>", "text/html")
    store_id = kvs.id
    await env.restart()
    again = await env.open(name="pages")
    assert again is not kvs
    assert again.id == store_id
    assert await again.get_value("page-1") == "<html></html>"
    await env.restart()
    by_id = await env.open(id=store_id)
    assert by_id.name == "pages"
    assert await by_id.get_value("page-1") == "<html></html>"


async def test_alias_store_is_unnamed_and_distinct(env: Env) -> None:
    default = await env.open()
    aliased = await env.open(alias="run-extra")
    named = await env.open(name="run-named")
    assert aliased.name is None
    assert len({default.id, aliased.id, named.id}) == 3
    await aliased.set_value("k", "alias")
    await default.set_value("k", "default")
    assert await aliased.get_value("k") == "alias"
    assert await env.open(alias="run-extra") is aliased
    assert env.folder("run-extra").is_dir()
    await env.restart()
    by_id = await env.open(id=aliased.id)
    assert (by_id.id, by_id.name) == (aliased.id, None)
    assert await by_id.get_value("k") == "alias"


async def test_opening_errors(env: Env) -> None:
    with pytest.raises(ValueError, match="not found"):
        await env.open(id="no-such-store")
    with pytest.raises(ValueError):
        await env.open(name="a", alias="b")
    with pytest.raises(ValueError):
        await env.open(id="x", name="a")
    with pytest.raises(ValueError):
        await env.open(name="bad_name!")
    with pytest.raises(ValueError):
        await env.open(alias="a/b")
    await env.open(name="taken")
    # Crawlee's own check within a process ...
    with pytest.raises(ValueError):
        await env.open(alias="taken")
    # ... and logkv's on disk, in a later run: the folder holds a named store.
    await env.restart()
    with pytest.raises(ValueError, match="named store"):
        await env.open(alias="taken")


async def test_foreign_folder_is_refused(env: Env) -> None:
    crawlee_store = await KeyValueStore.open(
        name="from-crawlee",
        configuration=env.configuration,
        storage_client=FileSystemStorageClient(),
    )
    await crawlee_store.set_value("k", 1)
    service_locator.storage_instance_manager.clear_cache()
    with pytest.raises(Exception, match="Crawlee file-system"):
        await env.open(name="from-crawlee")


@pytest.mark.parametrize("selector", [{"name": "default"}, {"alias": "default"}])
async def test_the_file_system_default_folder_is_refused_up_front(
    env: Env, selector: dict[str, str]
) -> None:
    # Crawlee's file-system request queue keeps its state in key_value_stores/default: a logkv
    # store there would be mixed with it (and emptied by its purge) on the next run.
    env.delegate_request_queues()
    with pytest.raises(ValueError, match="request queue") as info:
        await env.open(**selector)
    assert "another name" in str(info.value)
    assert not env.folder("default").exists()
    queue = await RequestQueue.open(storage_client=env.client, configuration=env.configuration)
    await queue.add_request("http://127.0.0.1/page")
    await env.restart()
    env.delegate_request_queues()
    kvs = await env.open(name="default-store")  # any other name is fine
    await kvs.set_value("k", {"a": 1})


async def test_a_crawlee_store_written_into_a_logkv_folder_is_named(env: Env) -> None:
    kvs = await env.open(name="shared-folder")
    await kvs.set_value("k", {"a": 1})
    await env.restart()
    # Crawlee's file-system client is given the same folder (same name, same storage_dir).
    crawlee_store = await KeyValueStore.open(
        name="shared-folder",
        configuration=env.configuration,
        storage_client=FileSystemStorageClient(),
    )
    await crawlee_store.set_value("theirs", {"b": 2})
    service_locator.storage_instance_manager.clear_cache()
    with pytest.raises(NotALogKVStoreError) as info:
        await env.open(name="shared-folder")
    message = str(info.value)
    assert CRAWLEE_METADATA_FILE in message and "theirs" in message
    assert "never share" in message and "move" in message.lower()


async def test_two_storage_clients_share_one_open_store(env: Env) -> None:
    first = await env.client.create_kvs_client(name="shared", configuration=env.configuration)
    second = await env.new_client().create_kvs_client(
        name="shared", configuration=env.configuration
    )
    assert first is second
    assert isinstance(first, LogKvKeyValueStoreClient)


async def test_service_locator_is_all_a_user_needs(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh locator state, as at the start of a program.
    monkeypatch.setattr(service_locator, "_configuration", None)
    monkeypatch.setattr(service_locator, "_storage_client", None)
    service_locator.set_configuration(env.configuration)
    service_locator.set_storage_client(env.client)
    kvs = await KeyValueStore.open(name="via-locator")
    await kvs.set_value("k", [1, 2])
    assert await kvs.get_value("k") == [1, 2]
    assert is_store_folder(env.folder("via-locator"))


# ---------------------------------------------------------------- values


CASES: list[tuple[str, Any, str | None]] = [
    ("dict", {"a": [1, 2.5, None, True], "ü": "日本"}, None),
    ("list", [1, "two", {"three": 3}], None),
    ("text", "plain text ü", None),
    ("bytes", b"\x00\xffbinary", None),
    ("int", 42, None),
    ("float", 2.5, None),
    ("bool", True, None),
    ("html", "<p>ü</p>", "text/html"),
    ("json-typed", {"k": "v"}, "application/json"),
    ("str-as-binary", "abc", "application/octet-stream"),
    ("none", None, None),
]


async def test_values_read_back_as_crawlees_file_system_client_reads_them(env: Env) -> None:
    ours = await env.open(name="ours")
    theirs = await KeyValueStore.open(
        name="theirs",
        configuration=CrawleeConfiguration(storage_dir=str(env.root / "fs"), purge_on_start=False),
        storage_client=FileSystemStorageClient(),
    )
    for key, value, content_type in CASES:
        await ours.set_value(key, value, content_type)
        await theirs.set_value(key, value, content_type)
    ours_meta = {item.key: item async for item in ours.iterate_keys()}
    theirs_meta = {item.key: item async for item in theirs.iterate_keys()}
    for key, _, _ in CASES:
        assert await ours.get_value(key, "missing") == await theirs.get_value(key, "missing"), key
        assert ours_meta[key].content_type == theirs_meta[key].content_type, key
    # The values after a restart (read back from the log).
    expected = {key: await theirs.get_value(key) for key, _, _ in CASES}
    await env.restart()
    reopened = await env.open(name="ours")
    assert {key: await reopened.get_value(key) for key, _, _ in CASES} == expected
    assert expected["int"] == "42"  # Crawlee's rule: numbers without a content type are text


CHARSET_CASES: list[tuple[str, Any, str, Any]] = [
    # (key, value, content type, value read back)
    ("latin", "café", "text/plain; charset=iso-8859-1", "café"),
    ("utf16", "hi ✓", "text/html; charset=utf-16", "hi ✓"),
    ("number", 42, "text/plain; charset=utf-16", "42"),
    ("xml", "café", "application/xml; charset=iso-8859-1", "café".encode("latin-1")),
    ("json16", {"name": "café 🎉"}, "application/json; charset=utf-16", {"name": "café 🎉"}),
    ("json-latin", ["€"], "application/json; charset=latin-1", ["€"]),
]


async def test_text_is_stored_in_its_declared_charset(env: Env) -> None:
    kvs = await env.open(name="charsets")
    for key, value, content_type, _ in CHARSET_CASES:
        await kvs.set_value(key, value, content_type)
    for key, _, _, expected in CHARSET_CASES:
        assert await kvs.get_value(key) == expected, key
    sizes = {item.key: item.size async for item in kvs.iterate_keys()}
    assert sizes["latin"] == len("café".encode("latin-1"))
    assert sizes["utf16"] == len("hi ✓".encode("utf-16"))
    await env.restart()
    # logkv's own client reads the same store the same way: the bytes match their charset.
    own = await LogKvKeyValueStore.open(
        name="charsets", configuration=Configuration(storage_dir=str(env.root))
    )
    try:
        for key, _, _, expected in CHARSET_CASES:
            assert await own.get_value(key) == expected, key
        await own.set_value("from-logkv", "Grüße", "text/plain; charset=utf-16")
    finally:
        await own.close()
    reopened = await env.open(name="charsets")
    assert await reopened.get_value("from-logkv") == "Grüße"


@pytest.mark.parametrize("codec", ["base64", "rot13", "zlib", "no-such-charset"])
async def test_unusable_charsets_are_refused_and_nothing_is_written(env: Env, codec: str) -> None:
    kvs = await env.open(name="codecs")
    for value, main in (
        ("x", "text/plain"),
        ("x", "application/xml"),
        ({"a": 1}, "application/json"),
    ):
        with pytest.raises(ValueError, match="charset"):
            await kvs.set_value("k", value, f"{main}; charset={codec}")
    assert not await kvs.record_exists("k")


async def test_records_under_a_non_text_codec_read_as_bytes(env: Env) -> None:
    kvs = await env.open(name="foreign")
    await env.restart()
    with Engine.open(env.folder("foreign")) as engine:  # records another tool wrote
        engine.set("b64", b"aGk=", "text/plain; charset=base64")
        engine.set("rot", b'{"a":1}', "application/json; charset=rot13")
    kvs = await env.open(name="foreign")
    assert await kvs.get_value("b64") == b"aGk="
    assert await kvs.get_value("rot") == b'{"a":1}'


async def test_nesting_is_limited_as_in_logkv(env: Env) -> None:
    kvs = await env.open(name="deep")
    deepest: Any = "leaf"
    for _ in range(MAX_NESTING_DEPTH):
        deepest = [deepest]
    await kvs.set_value("deepest", deepest)
    with pytest.raises(TypeError, match="nested too deeply"):
        await kvs.set_value("deeper", [deepest])
    assert not await kvs.record_exists("deeper")
    assert await kvs.get_value("deepest") == deepest


async def test_none_is_a_record_that_exists(env: Env) -> None:
    kvs = await env.open()
    await kvs.set_value("nothing", None)
    assert await kvs.record_exists("nothing")
    assert await kvs.get_value("nothing", "default") is None
    assert await kvs.get_value("missing", "default") == "default"
    assert not await kvs.record_exists("missing")
    [info] = await kvs.list_keys()
    assert (info.key, info.content_type, info.size) == ("nothing", "application/x-none", 0)
    assert [entry async for entry in kvs.iterate_entries()] == [("nothing", None)]
    await kvs.delete_value("nothing")
    assert not await kvs.record_exists("nothing")
    await kvs.delete_value("nothing")  # deleting a missing key is allowed


async def test_record_sizes_and_overwrites(env: Env) -> None:
    kvs = await env.open()
    await kvs.set_value("k", b"12345")
    await kvs.set_value("k", "ü")
    [info] = await kvs.list_keys()
    assert info.content_type == "text/plain; charset=utf-8"
    assert info.size == 2
    assert await kvs.get_value("k") == "ü"


async def test_large_values_round_trip(env: Env) -> None:
    kvs = await env.open()
    big = bytes(range(256)) * 4096  # 1 MiB: read and written off the event loop
    await kvs.set_value("big", big)
    assert await kvs.get_value("big") == big
    assert [value async for value in kvs.iterate_values()] == [big]


@pytest.mark.parametrize("key", AWKWARD_KEYS)
async def test_awkward_keys(env: Env, key: str) -> None:
    kvs = await env.open(name="awkward")
    await kvs.set_value(key, {"key": key})
    await kvs.set_value("plain", 1)
    assert await kvs.record_exists(key)
    assert await kvs.get_value(key) == {"key": key}
    assert key in await keys_of(kvs)
    url = await kvs.get_public_url(key)
    public = path_of_url(url)
    assert public.parent == env.folder("awkward") / "public"
    assert json.loads(public.read_bytes()) == {"key": key}
    await env.restart()
    kvs = await env.open(name="awkward")
    assert await kvs.get_value(key) == {"key": key}
    await kvs.delete_value(key)
    assert not await kvs.record_exists(key)
    assert await keys_of(kvs) == ["plain"]


async def test_invalid_keys_are_refused(env: Env) -> None:
    kvs = await env.open()
    with pytest.raises(ValueError):
        await kvs.set_value("", 1)
    with pytest.raises(ValueError):
        await kvs.set_value("x" * 2000, 1)
    assert await keys_of(kvs) == []


async def test_public_url_follows_the_record(env: Env) -> None:
    kvs = await env.open()
    await kvs.set_value("page", "<p>one</p>", "text/html")
    url = await kvs.get_public_url("page")
    assert url.endswith("page.html")
    path = path_of_url(url)
    assert path.read_text() == "<p>one</p>"
    await kvs.set_value("page", "<p>two</p>", "text/html")
    assert path.read_text() == "<p>two</p>"
    await kvs.delete_value("page")
    assert not path.exists()
    with pytest.raises(KeyError):
        await kvs.get_public_url("page")


# ---------------------------------------------------------------- listing and iterating


async def test_listing_with_limit_and_exclusive_start_key(env: Env) -> None:
    kvs = await env.open()
    keys = [f"key-{i:04d}" for i in range(600)]  # more than one index batch
    for key in reversed(keys):
        await kvs.set_value(key, {"n": key})
    assert await keys_of(kvs) == keys
    assert [item.key for item in await kvs.list_keys()] == keys  # list_keys' limit is 1000
    assert [item.key for item in await kvs.list_keys(limit=3)] == keys[:3]
    assert await keys_of(kvs, exclusive_start_key="key-0297", limit=5) == keys[298:303]
    assert await keys_of(kvs, exclusive_start_key="key-0100x") == keys[101:]
    assert await keys_of(kvs, exclusive_start_key="key-0599") == []
    assert await keys_of(kvs, limit=0) == []
    assert [key async for key in kvs] == keys
    entries = [entry async for entry in kvs.iterate_entries(exclusive_start_key="key-0500")]
    assert entries == [(key, {"n": key}) for key in keys[501:]]
    values = [value async for value in kvs.iterate_values(limit=300)]
    assert values == [{"n": key} for key in keys[:300]]


async def test_iterate_entries_reads_in_bounded_batches(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adapter_client, "ENTRY_BATCH_BYTES", 1000)
    read_groups: list[int] = []
    real = adapter_client._read_group

    def spy(engine: Any, group: Any) -> Any:
        read_groups.append(len(group))
        return real(engine, group)

    monkeypatch.setattr(adapter_client, "_read_group", spy)
    kvs = await env.open()
    for i in range(40):
        await kvs.set_value(f"k{i:02d}", "x" * 300)
    await kvs.set_value("k99", "y" * 5000)  # larger than a batch: read alone
    entries = [entry async for entry in kvs.iterate_entries()]
    assert [key for key, _ in entries] == [f"k{i:02d}" for i in range(40)] + ["k99"]
    assert entries[-1][1] == "y" * 5000
    assert max(read_groups) <= 3
    assert read_groups[-1] == 1
    assert sum(read_groups) == 41


async def test_record_deleted_during_iteration_is_skipped(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Crawlee: a record deleted during the iteration is yielded only if its value was already
    # read. With one record per read batch, k3 is read after its deletion.
    monkeypatch.setattr(adapter_client, "ENTRY_BATCH_BYTES", 1)
    kvs = await env.open()
    for i in range(5):
        await kvs.set_value(f"k{i}", i)
    seen = []
    async for key, _ in kvs.iterate_entries():
        seen.append(key)
        if key == "k1":
            await kvs.delete_value("k3")
    assert seen == ["k0", "k1", "k2", "k4"]


# ---------------------------------------------------------------- purge, drop, timestamps


async def test_purge_keeps_the_store(env: Env) -> None:
    kvs = await env.open(name="purged")
    await kvs.set_value("a", 1)
    await kvs.set_value("b", None)
    before = await kvs.get_metadata()
    await kvs.purge()
    after = await kvs.get_metadata()
    assert await keys_of(kvs) == []
    assert not await kvs.record_exists("b")
    assert (after.id, after.name) == (before.id, before.name)
    assert after.modified_at >= before.modified_at
    await kvs.set_value("c", 3)
    assert await kvs.get_value("c") == "3"
    await env.restart()
    assert await keys_of(await env.open(name="purged")) == ["c"]


async def test_purge_on_start_empties_unnamed_stores_only(env: Env) -> None:
    default = await env.open()
    named = await env.open(name="kept")
    await default.set_value("k", 1)
    await named.set_value("k", 1)
    await env.restart()
    env.configuration = CrawleeConfiguration(storage_dir=str(env.root), purge_on_start=True)
    default = await env.open()
    assert await keys_of(default) == []
    assert await keys_of(await env.open(name="kept")) == ["k"]
    # Crawlee hands its cached object back without asking the storage client: no purge.
    await default.set_value("new", 1)
    assert await env.open() is default
    assert await keys_of(default) == ["new"]


async def purge_observations(
    storage_client: Any, configuration: CrawleeConfiguration, close: bool
) -> list[list[str]]:
    """What Crawlee's ``KeyValueStore`` shows of a default store, an alias store and a named
    store, each written to, through ``storage_client`` under ``purge_on_start``: after a first
    open, after a cached open, after Crawlee's instance cache is cleared, after an open by id
    with a cleared cache, and (``close``) after the storage client closed its stores."""
    manager = service_locator.storage_instance_manager
    seen: list[list[str]] = []
    selectors: list[dict[str, str]] = [{}, {"alias": "run"}, {"name": "kept"}]

    async def open_all() -> list[KeyValueStore]:
        return [
            await KeyValueStore.open(
                storage_client=storage_client, configuration=configuration, **selector
            )
            for selector in selectors
        ]

    async def look(stores: list[KeyValueStore]) -> None:
        for store in stores:
            seen.append(await keys_of(store))
            await store.set_value(f"k{len(seen)}", 1)

    stores = await open_all()
    await look(stores)
    await look(await open_all())  # cached: the same objects
    manager.clear_cache()
    await look(await open_all())
    ids = [store.id for store in stores]
    manager.clear_cache()
    await look(
        [
            await KeyValueStore.open(
                id=store_id, storage_client=storage_client, configuration=configuration
            )
            for store_id in ids
        ]
    )
    if close:
        await storage_client.close()
        await look(await open_all())
    return seen


async def test_purge_on_start_purges_every_open_after_the_cache_is_cleared_as_crawlee_does(
    env: Env,
) -> None:
    """Crawlee's rule, and its file-system client's behaviour: every open of an unnamed store
    that reaches the storage client (the first, and each after Crawlee's instance cache was
    cleared, by name or alias or id) purges it; cached opens and named stores are kept."""
    service_locator.storage_instance_manager.clear_cache()
    crawlee_fs = await purge_observations(
        FileSystemStorageClient(),
        CrawleeConfiguration(storage_dir=str(env.root / "fs"), purge_on_start=True),
        close=False,
    )
    service_locator.storage_instance_manager.clear_cache()
    logkv = await purge_observations(
        env.client,
        CrawleeConfiguration(storage_dir=str(env.root / "logkv"), purge_on_start=True),
        close=True,
    )
    default, alias, named = [], [], ["k3"]
    expected = [
        *([], [], []),  # the first open of each purged nothing that was not empty
        *(["k1"], ["k2"], named),  # cached: kept
        *(default, alias, ["k3", "k6"]),  # cache cleared: the unnamed stores purged
        *(default, alias, ["k3", "k6", "k9"]),  # by id, cache cleared: purged
    ]
    assert crawlee_fs == expected
    assert logkv[: len(expected)] == expected
    # Closed by the logkv client (which evicts them from Crawlee's cache), opened again: purged.
    assert logkv[len(expected) :] == [[], [], ["k12", "k3", "k6", "k9"]]


@pytest.mark.parametrize("selector", [{"alias": "run"}, {}])
async def test_an_unnamed_store_is_purged_at_each_reopen_through_the_storage_client(
    env: Env, selector: dict[str, str]
) -> None:
    """Under ``purge_on_start``, an unnamed store closed and opened again in the same process
    is purged again (Crawlee's rule), whether by the same client or a new one; logkv's own
    ``KeyValueStore`` keeps its records then (its rule: once per process)."""
    env.configuration = CrawleeConfiguration(storage_dir=str(env.root), purge_on_start=True)
    kvs = await env.open(**selector)
    await kvs.set_value("k", {"a": 1})
    await env.client.close()
    again = await env.open(**selector)  # the same client
    assert await again.get_value("k") is None
    await again.set_value("k", {"a": 2})
    await env.client.close()
    env.client = env.new_client()
    fresh = await env.open(**selector)  # a new client
    assert await fresh.get_value("k") is None
    await fresh.set_value("k", {"a": 3})
    await env.client.close()
    own = await LogKvKeyValueStore.open(
        configuration=Configuration(storage_dir=str(env.root), purge_on_start=True),
        **({"alias": selector["alias"]} if selector else {"id": fresh.id}),
    )
    try:
        assert await own.get_value("k") == {"a": 3}  # purged before in this process: kept
    finally:
        await own.close()


async def test_drop_removes_the_store(env: Env) -> None:
    kvs = await env.open(name="dropped")
    await kvs.set_value("k", 1)
    old_id = kvs.id
    raw_client = await env.client.create_kvs_client(name="dropped", configuration=env.configuration)
    await kvs.drop()
    assert not env.folder("dropped").exists()
    with pytest.raises(StoreClosedError):
        await raw_client.get_value(key="k")
    with pytest.raises(ValueError, match="not found"):
        await env.open(id=old_id)
    fresh = await env.open(name="dropped")
    assert fresh.id != old_id
    assert await keys_of(fresh) == []


async def test_a_drop_that_fails_mid_delete_leaves_no_half_store(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    kvs = await env.open(name="dropped")
    for number in range(20):
        await kvs.set_value(f"k{number}", number)
    real_unlink = os.unlink
    deleted: list[str] = []

    def failing_unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if deleted:
            raise PermissionError(13, "injected failure", str(path))
        real_unlink(path, *args, **kwargs)
        deleted.append(str(path))

    with monkeypatch.context() as patch:
        patch.setattr(os, "unlink", failing_unlink)
        await kvs.drop()
    assert deleted  # the deletion really was cut short
    assert not env.folder("dropped").exists()
    fresh = await env.open(name="dropped")
    assert await keys_of(fresh) == []
    assert not any((env.root / TRASH_DIR).iterdir())


async def test_metadata_timestamps(env: Env) -> None:
    kvs = await env.open(name="stamps")
    first = await kvs.get_metadata()
    assert first.created_at <= first.accessed_at
    assert first.created_at <= first.modified_at
    await kvs.set_value("k", 1)
    written = await kvs.get_metadata()
    assert written.modified_at > first.modified_at
    await kvs.get_value("k")
    read = await kvs.get_metadata()
    assert read.accessed_at > written.accessed_at
    assert read.modified_at == written.modified_at
    await kvs.delete_value("missing")  # changes nothing: not a modification
    assert (await kvs.get_metadata()).modified_at == written.modified_at
    await env.restart()
    reopened = await (await env.open(name="stamps")).get_metadata()
    assert reopened.created_at == first.created_at
    assert reopened.modified_at == written.modified_at


# ---------------------------------------------------------------- autosaved values


async def test_autosaved_values(env: Env) -> None:
    kvs = await env.open()
    state = await kvs.get_auto_saved_value("STATE", {"pages": 0})
    assert state == {"pages": 0}
    state["pages"] = 7
    assert await kvs.get_auto_saved_value("STATE") is state
    await kvs.persist_autosaved_values()
    assert await kvs.get_value("STATE") == {"pages": 7}
    await env.restart()
    again = await env.open()
    assert await again.get_auto_saved_value("STATE", {"pages": 0}) == {"pages": 7}


# ---------------------------------------------------------------- logkv's view of the stores


async def test_logkv_tools_and_client_read_what_crawlee_wrote(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    kvs = await env.open(name="shared-format")
    await kvs.set_value("page", {"title": "ü"})
    await kvs.set_value("page", {"title": "v2"})
    await kvs.set_value("html", "<p>", "text/html")
    await env.restart()
    folder = env.folder("shared-format")
    assert logkv_main(["stats", "--json", str(folder)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["keys"] == 2
    assert logkv_main(["history", "--json", str(folder), "page"]) == 0
    versions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(versions) == 2
    own = await LogKvKeyValueStore.open(
        name="shared-format", configuration=Configuration(storage_dir=str(env.root))
    )
    try:
        assert await own.get_value("page") == {"title": "v2"}
        assert await own.get_value("html") == "<p>"
        assert own.id == kvs.id
    finally:
        await own.close()


async def test_datasets_are_logkv_stores_and_the_delegate_is_crawlees_file_system(
    env: Env,
) -> None:
    dataset = await Dataset.open(configuration=env.configuration, storage_client=env.client)
    await dataset.push_data({"url": "https://example.com"})
    assert (await dataset.get_data()).items == [{"url": "https://example.com"}]
    assert is_store_folder(env.root / "datasets" / "default")
    assert isinstance(env.client.delegate, FileSystemStorageClient)


async def test_concurrent_opens_share_one_engine(env: Env) -> None:
    opened = await asyncio.gather(
        *(
            env.new_client().create_kvs_client(alias="raced", configuration=env.configuration)
            for _ in range(4)
        )
    )
    assert all(client is opened[0] for client in opened)


async def test_fsync_durability(tmp_path: Path) -> None:
    configuration = CrawleeConfiguration(storage_dir=str(tmp_path), purge_on_start=False)
    client = LogKvStorageClient(settings=Configuration(durability=Durability.FSYNC))
    try:
        kvs = await KeyValueStore.open(
            name="synced", configuration=configuration, storage_client=client
        )
        await asyncio.gather(*(kvs.set_value(f"k{i}", {"i": i}) for i in range(20)))
        await kvs.delete_value("k0")
        assert await keys_of(kvs, limit=3) == ["k1", "k10", "k11"]
        assert await kvs.get_value("k5") == {"i": 5}
    finally:
        await client.close()
        service_locator.storage_instance_manager.clear_cache()
