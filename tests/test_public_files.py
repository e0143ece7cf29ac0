"""Public files (``get_public_url``) for every valid key: one safe file name per key, found again
after the store is closed and reopened, and following its record from then on."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logkv import Configuration, KeyValueStore
from logkv.layout import PUBLIC_DIR, TEMP_SUFFIX
from logkv.modes import MAX_KEY_LENGTH
from logkv.storage_clients._public import PublicFiles, public_file_name

#: Characters that are awkward in file names or in percent-encoding, and multi-byte ones.
AWKWARD = 'aZ09/\\.%+ ?#&=:*"<>|~-_\u00e9\u00fc\u65e5\u672c\u8a9e\U0001f577\u200b'
CONTENT_TYPES = [
    None,
    "application/json; charset=utf-8",
    "text/plain; charset=utf-8",
    "application/octet-stream",
    "text/html",
    "image/svg+xml",
    "application/x-unknown-thing",
]
# Any str UTF-8 can encode (no lone surrogates).
any_text = st.characters(blacklist_categories=("Cs",))
keys = st.one_of(
    st.text(any_text, min_size=1, max_size=MAX_KEY_LENGTH),
    st.text(st.sampled_from(AWKWARD), min_size=1, max_size=MAX_KEY_LENGTH),
    st.text(st.sampled_from(AWKWARD), min_size=MAX_KEY_LENGTH - 3, max_size=MAX_KEY_LENGTH),
    st.integers(1, MAX_KEY_LENGTH).map(lambda n: "k" * n),
    st.integers(1, MAX_KEY_LENGTH).map(lambda n: "\u65e5" * n),
    st.integers(1, MAX_KEY_LENGTH).map(lambda n: ("x" * (n % 7) + "\U0001f577" * n)[:n]),
)


def neighbours(key: str) -> list[str]:
    """Valid keys that share long prefixes with ``key`` (what a file's key hint must tell
    apart), with ``key`` itself, in order."""
    found = {key, key[:-1] or "a", key[: MAX_KEY_LENGTH - 1] + "\x00", key[:-1] + "\uffff"}
    if len(key) < MAX_KEY_LENGTH:
        found |= {key + "a", key + "\u65e5"}
    return sorted(found)


def keys_from(ordered: list[str]) -> Any:
    def listing(prefix: str) -> list[str]:
        return [key for key in ordered if key >= prefix]

    return listing


@settings(max_examples=200, deadline=None)
@given(key=keys, content_type=st.sampled_from(CONTENT_TYPES))
def test_every_key_has_one_safe_file_name_that_leads_back_to_it(
    key: str, content_type: str | None
) -> None:
    name = public_file_name(key, content_type)
    assert len((name + TEMP_SUFFIX).encode("utf-8")) <= 255
    assert "/" not in name and "\x00" not in name and name not in {".", ".."}
    assert PublicFiles.find_key(name, keys_from(neighbours(key))) == key
    for other in neighbours(key):
        if other != key:
            assert public_file_name(other, content_type) != name


VALUES: list[Any] = [{"v": 1}, "text", b"bytes"]


def neighbour_of(key: str) -> str:
    """Another valid key with the longest possible common prefix."""
    if len(key) < MAX_KEY_LENGTH:
        return key + "a"
    return key[:-1] + ("b" if key[-1] == "a" else "a")


async def publish_reopen_and_follow(root: Path, key: str, value: Any) -> None:
    """Publish ``key``, reopen the store, and check that the file survived and follows."""
    configuration = Configuration(storage_dir=str(root), auto_compact=False)
    kvs = await KeyValueStore.open(name="public", configuration=configuration)
    await kvs.set_value(key, value)
    await kvs.set_value(neighbour_of(key), "a neighbour, not published")
    path = Path(unquote(urlparse(await kvs.get_public_url(key)).path))
    published = path.read_bytes()
    await kvs.close()
    kvs = await KeyValueStore.open(name="public", configuration=configuration)
    try:
        assert path.read_bytes() == published  # survived the reopen
        await kvs.set_value(key, [1, 2])  # followed: rewritten (renamed if its type changed)
        files = list(path.parent.iterdir())
        assert len(files) == 1
        assert json.loads(files[0].read_bytes()) == [1, 2]
        await kvs.delete_value(key)
        assert list(path.parent.iterdir()) == []
    finally:
        await kvs.drop()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(key=keys, value_number=st.integers(0, len(VALUES) - 1))
def test_published_files_survive_reopen_and_follow_their_record(
    tmp_path: Path, key: str, value_number: int
) -> None:
    root = tmp_path / hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    asyncio.run(publish_reopen_and_follow(root, key, VALUES[value_number]))


async def test_a_300_character_key_keeps_its_file_across_reopen(tmp_path: Path) -> None:
    configuration = Configuration(storage_dir=str(tmp_path), auto_compact=False)
    key = "p" * 300
    kvs = await KeyValueStore.open(name="public", configuration=configuration)
    await kvs.set_value(key, {"page": 1})
    path = Path(unquote(urlparse(await kvs.get_public_url(key)).path))
    await kvs.close()
    kvs = await KeyValueStore.open(name="public", configuration=configuration)
    assert path.exists()
    await kvs.set_value(key, {"page": 2})
    assert json.loads(path.read_bytes()) == {"page": 2}
    assert path.parent.name == PUBLIC_DIR
    await kvs.close()
