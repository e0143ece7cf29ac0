"""The permissions of what logkv creates: every file gets the mode of a segment (``0o644`` less
the umask) and every folder ``0o755`` less the umask, whatever created it; nothing is group- or
world-writable, even under ``umask 0``."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from logkv import Configuration, Engine, KeyValueStore
from logkv.cli.transfer import export_store, import_store
from logkv.storage_clients._public import PublicFiles


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """Run the test under ``umask 0`` (the most permissive), then restore the umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def modes_under(root: Path) -> dict[str, int]:
    """The permission bits of every file and folder under ``root`` (not ``root`` itself)."""
    return {
        str(path.relative_to(root)): stat.S_IMODE(path.lstat().st_mode)
        for path in sorted(root.rglob("*"))
    }


def assert_modes(root: Path, file_mode: int, dir_mode: int) -> None:
    modes = modes_under(root)
    assert modes, "nothing was created"
    wanted = {name: dir_mode if (root / name).is_dir() else file_mode for name in modes}
    assert modes == wanted


async def test_every_file_of_a_store_gets_the_segment_mode(
    tmp_path: Path, umask_zero: None
) -> None:
    configuration = Configuration(
        storage_dir=str(tmp_path / "storage"),
        purge_on_start=False,
        persist_state_interval=timedelta(hours=1),
        auto_compact=False,
        segment_size=4096,
        retention="archive",
    )
    kvs = await KeyValueStore.open(name="crawl", configuration=configuration)
    for round_ in range(3):
        for i in range(40):
            await kvs.set_value(f"page-{i:03d}", {"round": round_, "text": "x" * 100})
    await kvs.set_value("page.html", "<p>hello</p>", content_type="text/html")
    assert (await kvs.get_public_url("page.html")).startswith("file://")
    result = await kvs.compact()
    assert result is not None
    await kvs.set_value("after", 1)
    assert (await kvs.get_metadata()).name == "crawl"
    await kvs.close()
    folder = tmp_path / "storage" / "key_value_stores" / "crawl"
    names = {p.name for p in folder.iterdir()}
    assert {"LOCK", "META.json", "archive", "public"} <= names
    assert any(name.endswith(".snap") for name in names)
    assert_modes(tmp_path / "storage", 0o644, 0o755)


def test_the_umask_is_respected(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        with Engine.open(tmp_path / "a" / "store", segment_size=4096) as engine:
            for i in range(60):
                engine.set(f"key-{i}", b"v" * 100)
            engine.compact()
        PublicFiles(tmp_path / "a" / "store").publish("k", b"v", "text/plain")
    finally:
        os.umask(old)
    assert_modes(tmp_path / "a", 0o600, 0o700)


def test_export_and_import_create_files_with_the_segment_mode(
    tmp_path: Path, umask_zero: None
) -> None:
    source = tmp_path / "source"
    with Engine.open(source) as engine:
        for i in range(5):
            engine.set(f"key-{i}", b"value", "text/plain")
    export_store(source, tmp_path / "out" / "exported", bar=False)
    assert_modes(tmp_path / "out", 0o644, 0o755)
    import_store(tmp_path / "out" / "exported", tmp_path / "in" / "imported", bar=False)
    assert_modes(tmp_path / "in", 0o644, 0o755)
