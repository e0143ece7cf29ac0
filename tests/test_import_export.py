"""``logkv import`` / ``logkv export``: Crawlee file-system stores into logkv and back, exactly."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storage_clients import FileSystemStorageClient
from crawlee.storages import KeyValueStore as CrawleeKeyValueStore

from logkv import Configuration, Engine, KeyValueStore
from logkv.cli import ExitCode
from logkv.cli.main import main
from logkv.cli.transfer import export_store, import_store

STORE = "crawled"
#: key -> (value, content type given to Crawlee, or None to let it infer one)
RECORDS: dict[str, tuple[Any, str | None]] = {
    "state": ({"page": 3, "urls": ["https://a.example/ü", "b"], "done": False}, None),
    "numbers": ([1, 2.5, -7, None, True], None),
    "note": ("plain text, with ümlauts and 日本語", None),
    "page.html": ("<html><body>héllo</body></html>", "text/html; charset=utf-8"),
    "blob": (bytes(range(256)) * 3, None),
    "image.png": (b"\x89PNG\r\n\x1a\n" + b"\x00\xff" * 50, "image/png"),
    "svg": (b"<svg/>", "image/svg+xml"),
    "feed": ({"@context": "x"}, "application/ld+json"),
    "key with spaces": ("spaced out", None),
    "ключ/日本語 ü?#%&=+": ({"ok": 1}, None),
    "empty": (b"", None),
    "nothing": (None, None),
}


def crawlee_config(storage: Path) -> CrawleeConfiguration:
    return CrawleeConfiguration(storage_dir=str(storage), purge_on_start=False)


async def write_crawlee_store(storage: Path) -> Path:
    """A Crawlee file-system store named STORE in ``storage``, written by Crawlee itself."""
    kvs = await CrawleeKeyValueStore.open(
        name=STORE,
        configuration=crawlee_config(storage),
        storage_client=FileSystemStorageClient(),
    )
    for key, (value, content_type) in RECORDS.items():
        await kvs.set_value(key, value, content_type)
    return storage / "key_value_stores" / STORE


async def read_crawlee_store(storage: Path) -> dict[str, tuple[Any, str]]:
    """Every record of the Crawlee store STORE in ``storage``: key -> (value, content type)."""
    kvs = await CrawleeKeyValueStore.open(
        name=STORE,
        configuration=crawlee_config(storage),
        storage_client=FileSystemStorageClient(),
    )
    found: dict[str, tuple[Any, str]] = {}
    async for info in kvs.iterate_keys():
        record = await kvs.get_value(info.key)
        found[info.key] = (record, info.content_type)
    return found


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file of a Crawlee store folder except the store's own metadata."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "__metadata__.json"}


def crawlee_identity(folder: Path) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((folder / "__metadata__.json").read_bytes())
    return body


async def test_round_trip_through_crawlee_and_logkv(tmp_path: Path) -> None:
    source = await write_crawlee_store(tmp_path / "crawlee")
    before = await read_crawlee_store(tmp_path / "crawlee")
    assert set(before) == set(RECORDS)
    logkv_storage = tmp_path / "logkv"
    target = logkv_storage / "key_value_stores" / STORE

    imported = import_store(source, target, bar=False)
    assert imported.records == len(RECORDS)
    assert imported.skipped == []
    assert imported.kind == "named"

    # logkv's own store opens the imported store by name and reads values as Crawlee does.
    config = Configuration(storage_dir=str(logkv_storage), purge_on_start=False)
    kvs = await KeyValueStore.open(name=STORE, configuration=config)
    try:
        assert kvs.id == crawlee_identity(source)["id"]
        for key, (value, _) in before.items():
            assert await kvs.get_value(key) == value, key
        keys = [key async for key in kvs.iterate_keys()]
        assert sorted(k.key for k in keys) == sorted(RECORDS)
        for meta in keys:
            assert meta.content_type == before[meta.key][1], meta.key
    finally:
        await kvs.close()

    exported_storage = tmp_path / "exported"
    exported = exported_storage / "key_value_stores" / STORE
    result = export_store(target, exported, bar=False)
    assert result.records == len(RECORDS)

    # Byte for byte the same record files, the same store identity, the same values.
    assert folder_files(exported) == folder_files(source)
    # Opening the store through logkv touched accessed_at; everything else is unchanged.
    left, right = crawlee_identity(exported), crawlee_identity(source)
    assert left.pop("accessed_at") >= right.pop("accessed_at")
    assert left == right
    after = await read_crawlee_store(exported_storage)
    assert after == before


# ---------------------------------------------------------------------------------- helpers


def write_record(folder: Path, key: str, data: bytes, content_type: str) -> None:
    """One record as Crawlee's file-system store lays it out, written directly."""
    name = urllib.parse.quote(key, safe="")
    (folder / name).write_bytes(data)
    meta = {"key": key, "content_type": content_type, "size": len(data)}
    (folder / f"{name}.__metadata__.json").write_text(
        json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8"
    )


def new_crawlee_folder(folder: Path, name: str | None = STORE) -> Path:
    folder.mkdir(parents=True)
    identity = {
        "id": "AbCdEfGhIjKlMnOpQ",
        "name": name,
        "accessed_at": "2026-01-02 03:04:05.678901+00:00",
        "created_at": "2025-12-31 23:59:59+00:00",
        "modified_at": "2026-01-02 03:04:05.000001+00:00",
    }
    (folder / "__metadata__.json").write_text(json.dumps(identity, indent=2), encoding="utf-8")
    return folder


def cli(*args: str | Path) -> int:
    return main([str(a) for a in args])


# ---------------------------------------------------------------------------------- big stores


def test_100k_records_round_trip_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = new_crawlee_folder(tmp_path / "crawlee" / STORE)
    kinds = [
        ("application/json; charset=utf-8", lambda i: json.dumps({"n": i}).encode()),
        ("text/plain; charset=utf-8", lambda i: f"text {i} ü".encode()),
        ("application/octet-stream", lambda i: i.to_bytes(4, "big") * 3),
    ]
    total = 100_000
    for i in range(total):
        content_type, make = kinds[i % 3]
        write_record(source, f"key {i:06d}/ü", make(i), content_type)
    target = tmp_path / "logkv" / STORE
    capsys.readouterr()

    assert cli("import", source, target, "--json", "-q") == ExitCode.OK
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == total
    assert summary["skipped"] == [] and summary["stray_files"] == 0
    with Engine.open(target, readonly=True) as engine:
        assert engine.stats().keys == total
        assert engine.get_with_type("key 000004/ü") == (b"text 4 \xc3\xbc", kinds[1][0])

    exported = tmp_path / "exported" / STORE
    assert cli("export", target, exported, "--json", "-q") == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["records"] == total
    assert folder_files(exported) == folder_files(source)
    assert crawlee_identity(exported) == crawlee_identity(source)
