"""``logkv import`` / ``logkv export``: Crawlee file-system stores into logkv and back, exactly."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from crawlee.configuration import Configuration as CrawleeConfiguration
from crawlee.storage_clients import FileSystemStorageClient
from crawlee.storages import KeyValueStore as CrawleeKeyValueStore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logkv import Configuration, Engine, KeyValueStore
from logkv.cli import ExitCode
from logkv.cli.main import main
from logkv.cli.transfer import export_store, import_store
from logkv.content import decode, public_content_type

STORE = "crawled"
#: Records of the big-store round trip (each is two files in the Crawlee folder, written twice:
#: the test's cost is creating those files, which depends on the disk). Several times the
#: index's merge batch (``logkv.index.MERGE_BATCH``); nothing in import or export changes with
#: the count beyond that, so more records would only cost time.
BIG_STORE_RECORDS = 20_000
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
    found: dict[str, bytes] = {}
    for name in os.listdir(folder):
        if name != "__metadata__.json":
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            found[name] = os.read(fd, 1 << 20)
            os.close(fd)
    return found


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


def write_record(folder: Path, key: str, data: bytes, content_type: str) -> dict[str, bytes]:
    """One record as Crawlee's file-system store lays it out, written directly; returns the
    files written (name -> bytes)."""
    name = urllib.parse.quote(key, safe="")
    meta = {"key": key, "content_type": content_type, "size": len(data)}
    files = {
        name: data,
        f"{name}.__metadata__.json": json.dumps(meta, ensure_ascii=False, indent=2).encode(),
    }
    for file_name, body in files.items():
        fd = os.open(os.path.join(folder, file_name), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        os.write(fd, body)
        os.close(fd)
    return files


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


@pytest.mark.slow
def test_a_big_store_round_trips_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = new_crawlee_folder(tmp_path / "crawlee" / STORE)
    kinds = [
        ("application/json; charset=utf-8", lambda i: json.dumps({"n": i}).encode()),
        ("text/plain; charset=utf-8", lambda i: f"text {i} ü".encode()),
        ("application/octet-stream", lambda i: i.to_bytes(4, "big") * 3),
    ]
    total = BIG_STORE_RECORDS
    written: dict[str, bytes] = {}
    for i in range(total):
        content_type, make = kinds[i % 3]
        written.update(write_record(source, f"key {i:06d}/ü", make(i), content_type))
    target = tmp_path / "logkv" / STORE
    capsys.readouterr()

    assert cli("import", source, target, "--json", "-q") == ExitCode.OK
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == total
    assert summary["skipped"] == [] and summary["stray_files"] == 0
    with Engine.open(target, readonly=True) as engine:
        assert engine.stats().keys == total
        assert engine.get_with_type("key 000004/ü") == (b"text 4 \xc3\xbc", kinds[1][0])

    identity = crawlee_identity(source)
    # The record files are kept in memory (``written``): free the disk of those files now,
    # since pytest's temporary folders outlive the test.
    shutil.rmtree(source)

    exported = tmp_path / "exported" / STORE
    assert cli("export", target, exported, "--json", "-q") == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["records"] == total
    try:
        assert folder_files(exported) == written
        assert crawlee_identity(exported) == identity
    finally:
        shutil.rmtree(exported)


# ---------------------------------------------------------------------------------- content types


async def test_logkv_decodes_every_record_as_crawlee_does(tmp_path: Path) -> None:
    crawlee_storage = tmp_path / "crawlee"
    source = new_crawlee_folder(crawlee_storage / "key_value_stores" / STORE)
    records = {
        "jsonl": (b'{"a": 1}', "application/jsonl"),  # JSON to Crawlee, bytes to logkv
        "text-json": (b'{"a": 1}', "text/json"),  # text to Crawlee, JSON to logkv
        "ld": (b'{"@id": "x"}', "application/ld+json"),  # bytes to Crawlee, JSON to logkv
        "upper": (b"<p>", "Text/HTML"),  # bytes to Crawlee, text to logkv
        "big": (b"[123456789012345678901234567890]", "application/json"),
        "none": (b"", "application/x-none"),
        "html": ("<p>é</p>".encode(), "text/html; charset=utf-8"),
    }
    for key, (data, content_type) in records.items():
        write_record(source, key, data, content_type)
    write_record(source, "broken", b"{not json", "application/json")  # Crawlee gives up on it
    crawlee_view = await read_crawlee_store(crawlee_storage)

    logkv_storage = tmp_path / "logkv"
    target = logkv_storage / "key_value_stores" / STORE
    assert import_store(source, target, bar=False).records == len(records) + 1
    config = Configuration(storage_dir=str(logkv_storage), purge_on_start=False)
    kvs = await KeyValueStore.open(name=STORE, configuration=config)
    try:
        for key in records:
            assert await kvs.get_value(key) == crawlee_view[key][0], key
        assert crawlee_view["broken"][0] is None
        assert await kvs.get_value("broken") == b"{not json"  # still readable, as bytes
        types = {info.key: info.content_type async for info in kvs.iterate_keys()}
        assert types == {key: ct for key, (_, ct) in crawlee_view.items()}
    finally:
        await kvs.close()

    exported = tmp_path / "exported" / STORE
    export_store(target, exported, bar=False)
    assert folder_files(exported) == folder_files(source)


# ---------------------------------------------------------------------------------- charsets

#: Crawlee records under text and JSON types naming a charset: Crawlee reads every one as UTF-8.
CHARSET_RECORDS: dict[str, tuple[bytes, str]] = {
    "latin1": ("café".encode(), "text/plain; charset=iso-8859-1"),
    "cp1252": ("€ and é".encode(), "text/html; charset=windows-1252"),
    "utf16": ("日本語 ü 🎉".encode(), "text/plain; charset=utf-16"),
    "utf8-alias": ("ü".encode(), "text/plain; charset=UTF8"),
    "quoted": ("ß".encode(), 'text/csv; charset="ISO-8859-1"'),
    "text-json": ('{"a": "é"}'.encode(), "text/json; charset=iso-8859-1"),  # text to Crawlee
    "json-latin1": ('{"a": "é"}'.encode(), "application/json; charset=iso-8859-1"),
    "json-big": (
        '[123456789012345678901234567890, "é"]'.encode(),
        "application/json; charset=latin-1",
    ),
}
#: Records Crawlee reads as text, but that logkv cannot hold as that text in their charset.
AS_BYTES_RECORDS: dict[str, tuple[bytes, str]] = {
    "outside": ("€ 日本".encode(), "text/plain; charset=iso-8859-1"),  # no latin-1 for them
    "invalid-utf8": (b"caf\xe9", "text/plain; charset=iso-8859-1"),  # Crawlee gives up
    "utf16-bytes": ("hi".encode("utf-16"), "text/plain; charset=utf-16"),  # not UTF-8 either
    "json-latin1-bytes": ('{"a": "é"}'.encode("latin-1"), "application/json; charset=latin-1"),
}


async def test_text_under_any_charset_reads_as_crawlee_reads_it(tmp_path: Path) -> None:
    crawlee_storage = tmp_path / "crawlee"
    source = new_crawlee_folder(crawlee_storage / "key_value_stores" / STORE)
    for key, (data, content_type) in (CHARSET_RECORDS | AS_BYTES_RECORDS).items():
        write_record(source, key, data, content_type)
    crawlee_view = await read_crawlee_store(crawlee_storage)
    assert crawlee_view["latin1"][0] == "café"
    assert crawlee_view["outside"][0] == "€ 日本"  # text to Crawlee, which latin-1 cannot hold
    unreadable = set(AS_BYTES_RECORDS) - {"outside"}
    assert all(crawlee_view[key][0] is None for key in unreadable)  # Crawlee gives up...

    logkv_storage = tmp_path / "logkv"
    target = logkv_storage / "key_value_stores" / STORE
    import_store(source, target, bar=False)
    config = Configuration(storage_dir=str(logkv_storage), purge_on_start=False)
    kvs = await KeyValueStore.open(name=STORE, configuration=config)
    try:
        for key in CHARSET_RECORDS:
            assert await kvs.get_value(key) == crawlee_view[key][0], key
        for key, (data, _) in AS_BYTES_RECORDS.items():  # ... logkv keeps the bytes readable
            assert await kvs.get_value(key) == data, key
        types = {info.key: info.content_type async for info in kvs.iterate_keys()}
        assert types == {key: ct for key, (_, ct) in crawlee_view.items()}
    finally:
        await kvs.close()
    with Engine.open(target, readonly=True) as engine:  # stored in the charset declared
        assert engine.get("latin1") == b"caf\xe9"

    exported = tmp_path / "exported" / STORE
    export_store(target, exported, bar=False)
    assert folder_files(exported) == folder_files(source)


async def test_export_writes_text_as_the_utf8_crawlee_reads(tmp_path: Path) -> None:
    logkv_storage = tmp_path / "logkv"
    config = Configuration(storage_dir=str(logkv_storage), purge_on_start=False)
    values: dict[str, tuple[Any, str]] = {
        "latin1": ("café", "text/plain; charset=iso-8859-1"),
        "utf16": ("日本語 🎉", "text/html; charset=utf-16"),
        "raw": (b"caf\xe9", "text/plain; charset=iso-8859-1"),  # bytes: kept byte for byte
        "json": ({"a": "é"}, "application/json; charset=iso-8859-1"),
    }
    kvs = await KeyValueStore.open(name=STORE, configuration=config)
    try:
        for key, (value, content_type) in values.items():
            await kvs.set_value(key, value, content_type)
    finally:
        await kvs.close()

    exported_storage = tmp_path / "exported"
    exported = exported_storage / "key_value_stores" / STORE
    export_store(logkv_storage / "key_value_stores" / STORE, exported, bar=False)
    assert (exported / "latin1").read_bytes() == "café".encode()
    assert (exported / "raw").read_bytes() == b"caf\xe9"
    crawlee_view = await read_crawlee_store(exported_storage)
    for key in ("latin1", "utf16", "json"):
        assert crawlee_view[key] == values[key], key

    # And back: the same values and types through logkv.
    back_storage = tmp_path / "back"
    back = back_storage / "key_value_stores" / STORE
    import_store(exported, back, bar=False)
    config = Configuration(storage_dir=str(back_storage), purge_on_start=False)
    kvs = await KeyValueStore.open(name=STORE, configuration=config)
    try:
        for key, (value, _) in values.items():
            assert await kvs.get_value(key) == value, key
    finally:
        await kvs.close()


#: Charsets of the property test: single-byte, multi-byte, UTF-16/32, UTF-8 under other names.
CHARSETS = ["iso-8859-1", "cp1252", "koi8-r", "ascii", "shift_jis", "utf-16", "utf-32-be", "utf8"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.text(st.characters(exclude_categories=["Cs"])).map(lambda text: text.encode()),
        st.binary(max_size=16),
    ),
    charset=st.sampled_from(CHARSETS),
    base=st.sampled_from(["text/plain", "text/json"]),
)
def test_imported_text_reads_as_crawlee_decodes_it_or_as_bytes(
    data: bytes, charset: str, base: str
) -> None:
    content_type = f"{base}; charset={charset}"
    with tempfile.TemporaryDirectory() as folder:
        source = new_crawlee_folder(Path(folder) / "crawlee" / STORE)
        write_record(source, "k", data, content_type)
        target = Path(folder) / "logkv" / STORE
        import_store(source, target, bar=False)
        with Engine.open(target, readonly=True) as engine:
            found = engine.get_with_type("k")
        assert found is not None
        value = decode(*found)
        assert public_content_type(found[1]) == content_type
        try:
            crawlee_text: str | None = data.decode("utf-8")  # what Crawlee reads
        except UnicodeDecodeError:
            crawlee_text = None
        if value != crawlee_text:  # only when logkv cannot hold that text in the charset
            assert value == data
            assert crawlee_text is None or not _writable(crawlee_text, charset)
        exported = Path(folder) / "exported" / STORE
        export_store(target, exported, bar=False)
        assert (exported / "k").read_bytes() == data


def _writable(text: str, charset: str) -> bool:
    """True if ``charset`` writes ``text`` and reads it back unchanged."""
    try:
        return text.encode(charset).decode(charset) == text
    except UnicodeError:
        return False


# ---------------------------------------------------------------------------------- kinds


async def test_default_and_unnamed_stores_keep_their_kind(tmp_path: Path) -> None:
    crawlee = tmp_path / "crawlee" / "key_value_stores"
    write_record(new_crawlee_folder(crawlee / "default", name=None), "k", b"1", "text/plain")
    write_record(new_crawlee_folder(crawlee / "run-1", name=None), "k", b"2", "text/plain")
    logkv_storage = tmp_path / "logkv"
    default = import_store(crawlee / "default", logkv_storage / "key_value_stores" / "default")
    alias = import_store(crawlee / "run-1", logkv_storage / "key_value_stores" / "run-1")
    assert (default.kind, alias.kind) == ("default", "alias")

    config = Configuration(storage_dir=str(logkv_storage), purge_on_start=False)
    async with await KeyValueStore.open(configuration=config) as kvs:
        assert await kvs.get_value("k") == "1"
    async with await KeyValueStore.open(alias="run-1", configuration=config) as kvs:
        assert await kvs.get_value("k") == "2"

    exported = tmp_path / "exported"
    export_store(logkv_storage / "key_value_stores" / "run-1", exported, bar=False)
    assert crawlee_identity(exported)["name"] is None


# ---------------------------------------------------------------------------------- the command


def test_import_skips_unreadable_records_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = new_crawlee_folder(tmp_path / "crawlee" / STORE)
    write_record(source, "good", b"fine", "text/plain")
    (source / "lost.__metadata__.json").write_text('{"key": "lost", "content_type": "text/plain"}')
    (source / "bad").write_bytes(b"x")
    (source / "bad.__metadata__.json").write_text("{oops")
    (source / "stray.txt").write_bytes(b"no metadata")
    target = tmp_path / "logkv" / STORE

    assert cli("import", source, target, "-q") == ExitCode.OK
    out, err = capsys.readouterr()
    assert "Imported 1 records" in out
    assert "Skipped 2 unreadable record(s)" in out
    assert "Ignored 1 file(s)" in out  # stray.txt; bad is a skipped record's value file
    assert "lost.__metadata__.json: the value file lost is missing" in err
    assert "bad.__metadata__.json: not valid JSON" in err
    with Engine.open(target, readonly=True) as engine:
        assert list(engine.keys(None)) == ["good"]


def test_refusals_leave_the_target_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = new_crawlee_folder(tmp_path / "crawlee" / STORE)
    write_record(source, "a", b"1", "text/plain")

    not_crawlee = tmp_path / "plain"
    not_crawlee.mkdir()
    assert cli("import", not_crawlee, tmp_path / "t1") == ExitCode.USAGE
    assert "not a Crawlee file-system key-value store" in capsys.readouterr().err
    assert not (tmp_path / "t1").exists()

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_bytes(b"mine")
    assert cli("import", source, busy) == ExitCode.USAGE
    assert "is not empty" in capsys.readouterr().err
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]

    # A key logkv cannot hold (too long) fails the whole import; nothing is left behind.
    (source / "long.__metadata__.json").write_text(
        json.dumps({"key": "k" * 2000, "content_type": "text/plain"})
    )
    (source / "long").write_bytes(b"x")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("import", source, empty) == ExitCode.USAGE
    assert "cannot import key" in capsys.readouterr().err
    assert list(empty.iterdir()) == []

    assert cli("export", tmp_path / "nowhere", tmp_path / "t2") == ExitCode.USAGE
    assert not (tmp_path / "t2").exists()


def test_export_refuses_keys_crawlee_cannot_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    with Engine.open(store) as engine:
        engine.set("fine", b"1", "text/plain")
        engine.set("__metadata__.json", b"2", "text/plain")
    target = tmp_path / "out"
    assert cli("export", store, target, "--json") == ExitCode.USAGE
    assert "cannot export key '__metadata__.json'" in capsys.readouterr().err
    assert not target.exists()


def test_export_of_an_engine_store_without_meta(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    with Engine.open(store) as engine:
        engine.set("raw", b"\x00\x01", None)
        engine.set("nothing", None, None)
    target = tmp_path / "out"
    assert cli("export", store, target, "--json") == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["records"] == 2
    assert json.loads((target / "raw.__metadata__.json").read_text()) == {
        "key": "raw",
        "content_type": "application/octet-stream",
        "size": 2,
    }
    assert (target / "nothing").read_bytes() == b""
    assert json.loads((target / "nothing.__metadata__.json").read_text())["content_type"] == (
        "application/x-none"
    )


async def test_a_bad_environment_variable_is_reported_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = await write_crawlee_store(tmp_path / "crawlee")
    monkeypatch.setenv("LOGKV_SEGMENT_SIZE", "tiny")
    capsys.readouterr()
    code = cli("import", source, tmp_path / "logkv" / "default", "-q")
    err = capsys.readouterr().err
    assert code != ExitCode.OK
    assert "LOGKV_SEGMENT_SIZE='tiny'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "logkv" / "default").exists()  # nothing half-made
