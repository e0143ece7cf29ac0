"""Prefix listing: the range arithmetic, and that a listing reads only the keys it returns."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sortedcontainers import SortedList

from logkv import Engine
from logkv.index import Index
from logkv.key_range import check_prefix, keys_after, prefix_end
from logkv.storage_layout import count_prefix

MAX_CHAR = chr(0x10FFFF)
# Few characters, the greatest among them, so that prefixes, bounds and starts collide often.
texts = st.text(st.sampled_from(["a", "b", "\x00", MAX_CHAR, "é"]), max_size=4)


@given(prefix=texts.filter(bool), key=texts)
def test_prefix_end_bounds_exactly_the_keys_with_the_prefix(prefix: str, key: str) -> None:
    end = prefix_end(prefix)
    in_range = prefix <= key and (end is None or key < end)
    assert in_range == key.startswith(prefix)


@given(
    keys=st.lists(texts.filter(bool), unique=True),
    prefix=texts,
    after=st.one_of(st.none(), texts),
    limit=st.integers(min_value=0, max_value=6),
)
def test_keys_after_is_filtering_the_sorted_keys(
    keys: list[str], prefix: str, after: str | None, limit: int
) -> None:
    expected = [k for k in sorted(keys) if (after is None or k > after) and k.startswith(prefix)]
    assert keys_after(SortedList(keys), after, limit, prefix) == expected[:limit]


def test_prefix_end_of_the_edges() -> None:
    assert prefix_end("") is None
    assert prefix_end(MAX_CHAR * 3) is None
    assert prefix_end("page-") == "page."
    assert prefix_end("a" + MAX_CHAR * 2) == "b"
    assert prefix_end("\x00") == "\x01"


@pytest.mark.parametrize("bad", [None, b"page-", 1, ["p"]])
def test_a_prefix_that_is_not_a_str_is_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="prefix"):
        check_prefix(bad)


def test_count_prefix_counts_keys_with_the_greatest_character(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "store") as engine:
        for key in ["a", MAX_CHAR, MAX_CHAR * 2, MAX_CHAR + "a", "b" + MAX_CHAR]:
            engine.set(key, b"")
        assert count_prefix(engine, MAX_CHAR) == 3
        assert count_prefix(engine, "b") == 1
        assert count_prefix(engine, "") == 5


def test_a_prefix_listing_in_a_big_store_reads_only_its_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50,000 keys, three of them under ``screenshot-``: the listing returns them with the
    index handing out only those three, and never walking the sorted keys from the front."""
    with Engine.open(tmp_path / "store") as engine:
        engine.set_many([(f"page-{i:06d}", b"", None) for i in range(50_000)])
        engine.set_many([(f"screenshot-{i}", b"png", "image/png") for i in range(3)])
        engine.settle_order()
        handed_out: list[int] = []
        after = Index.after

        def counting_after(
            index: Index, start: str | None, limit: int, prefix: str = ""
        ) -> list[str]:
            batch = after(index, start, limit, prefix)
            handed_out.append(len(batch))
            return batch

        def no_full_walk(_: SortedList) -> None:
            raise AssertionError("the sorted keys were walked from the front")

        monkeypatch.setattr(Index, "after", counting_after)
        monkeypatch.setattr(SortedList, "__iter__", no_full_walk)
        keys = list(engine.keys(prefix="screenshot-"))
        assert keys == ["screenshot-0", "screenshot-1", "screenshot-2"]
        assert handed_out == [3]
        assert list(engine.keys("screenshot-0", 1, "screenshot-")) == ["screenshot-1"]
        assert list(engine.keys("page-", None, "screenshot-")) == keys
        assert list(engine.keys("page-049999", None, "page-")) == []
