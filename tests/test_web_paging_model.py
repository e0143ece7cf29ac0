"""The console's key pages against a model: for any set of keys, prefix and page size, paging
with ``next`` returns exactly the keys that start with the prefix, in Python string order, each
once, and ``matching`` counts them."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logkv import Engine
from logkv.web import views
from logkv.web.catalog import resolve

ALPHABET = st.sampled_from(["a", "b", "/", "é", "\U0010ffff", "<", "0"])
KEYS = st.sets(st.text(ALPHABET, min_size=1, max_size=5), max_size=60)


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(keys=KEYS, deleted=st.sets(st.text(ALPHABET, min_size=1, max_size=5), max_size=10),
       prefix=st.text(ALPHABET, max_size=3), limit=st.integers(1, 7))  # fmt: skip
def test_paging_matches_the_model(
    keys: set[str], deleted: set[str], prefix: str, limit: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with Engine.open(root / "key_value_stores" / "s") as engine:
            engine.set("seed", b"")  # a store with at least one record
            for key in sorted(keys | deleted):
                engine.set(key, key.encode(), "text/plain")
            for key in deleted - keys:
                engine.delete(key)
        live = (keys | {"seed"}) - (deleted - keys)
        expected = sorted(k for k in live if k.startswith(prefix))
        console = views.Console(root)
        try:
            ref = resolve(root, "key_value_stores", "s")
            seen: list[str] = []
            after = None
            while True:
                page = views.key_page(console, ref, prefix, after, limit)
                assert page["matching"] == len(expected)
                assert len(page["keys"]) <= limit
                seen += [row["key"] for row in page["keys"]]
                assert all(row["seq"] and row["modified"] for row in page["keys"])
                after = page["next"]
                if after is None:
                    break
            assert seen == expected
        finally:
            console.opened.close()
