"""The index against a dict: point operations, ordered reads that merge fresh keys, and merges
that run while the index keeps changing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logkv import Engine
from logkv import index as index_module
from logkv.index import INLINE_MERGE, Index, Merge, from_sorted, merge_sorted
from logkv.replay import Entry

keys = st.text(alphabet="abcdé\U0001f600", min_size=1, max_size=4)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys, st.integers(0, 10**6)),
        st.tuples(st.just("remove"), keys, st.just(0)),
        st.tuples(st.just("after"), st.one_of(st.none(), keys), st.integers(0, 12)),
        st.tuples(st.just("begin merge"), st.just(""), st.just(0)),
        st.tuples(st.just("finish merge"), st.just(""), st.just(0)),
    ),
    max_size=200,
)


def entry(n: int) -> Entry:
    return (1, n, 40, n % 97, None)


def force_merge(index: Index) -> Merge:
    """Take the fresh keys into a merge however few they are (the engine does it past
    INLINE_MERGE; the tests want the three steps at every size)."""
    index._fresh.extend([""] * (INLINE_MERGE + 1))  # "" is never a key: filtered by the merge
    merge = index.take_fresh()
    assert merge is not None and index.merging
    return merge


@settings(max_examples=300, deadline=None)
@given(initial=st.dictionaries(keys, st.integers(0, 10**6), max_size=30), steps=steps)
def test_index_matches_a_dict_and_sorted(
    initial: dict[str, int], steps: list[tuple[str, object, int]]
) -> None:
    model = {k: entry(v) for k, v in initial.items()}
    index = Index(dict(model))
    merge: Merge | None = None
    for op, key, n in steps:
        if op == "put":
            assert isinstance(key, str)
            assert index.put(key, entry(n)) == model.get(key)
            model[key] = entry(n)
        elif op == "remove":
            assert isinstance(key, str)
            assert index.remove(key) == model.pop(key, None)
        elif op == "after" and merge is None:
            expected = sorted(k for k in model if key is None or k > key)[:n]  # type: ignore[operator]
            assert index.after(key, n) == expected  # type: ignore[arg-type]
        elif op == "begin merge" and merge is None:
            merge = force_merge(index)
        elif op == "finish merge" and merge is not None:
            merge.run()  # puts and removes may have come between take_fresh and here
            index.finish(merge)
            merge = None
        assert len(index) == len(model)
        assert all(index.get(k) == v for k, v in model.items())
    if merge is not None:
        merge.run()
        index.finish(merge)
    assert index.after(None, 10**6) == sorted(model)
    assert not index.merging


def test_many_fresh_keys_are_merged_by_one_rebuild_and_few_one_by_one() -> None:
    index = Index({f"k{i:05d}": entry(i) for i in range(0, 2000, 2)})
    for i in range(1, 2000, 2):  # as many fresh keys as sorted ones: a rebuild
        index.put(f"k{i:05d}", entry(i))
    assert index.unsorted == 1000
    assert index.take_fresh() is None  # too few for a merge away from the lock
    assert index.after("k00010", 3) == ["k00011", "k00012", "k00013"]
    assert index.unsorted == 0
    index.put("k00000x", entry(1))  # one fresh key: inserted on its own
    index.remove("k00001")
    assert index.after(None, 3) == ["k00000", "k00000x", "k00002"]
    assert index.after(None, 5000) == sorted(index.entries)


def test_a_key_removed_and_put_again_before_a_merge_is_listed_once() -> None:
    index = Index({"b": entry(1)})
    index.put("a", entry(2))
    index.remove("a")
    index.put("a", entry(3))
    index.remove("b")
    index.put("b", entry(4))
    assert index.after(None, 10) == ["a", "b"]
    assert index.get("a") == entry(3)


def test_an_abandoned_merge_gives_its_keys_back() -> None:
    index = Index({"m": entry(0)})
    for i in range(INLINE_MERGE + 10):
        index.put(f"f{i:05d}", entry(i))
    merge = index.take_fresh()
    assert merge is not None and index.unsorted == 0
    index.put("z", entry(1))
    index.abandon(merge)
    assert not index.merging
    assert index.after(None, 10**6) == sorted(index.entries)


def test_ordered_reads_while_many_new_keys_are_merged_and_written(tmp_path: Path) -> None:
    """Engine level: a merge of many fresh keys runs without the lock while writers add and
    delete keys and readers page through the store; every page is exact."""
    with Engine.open(tmp_path / "store") as engine:
        for i in range(20_000):
            engine.set(f"base-{i:06d}", b"v")
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer(prefix: str) -> None:
            i = 0
            try:
                while not stop.is_set():
                    engine.set(f"{prefix}-{i:06d}", b"w")
                    if i % 3 == 0:
                        engine.delete(f"base-{i % 20_000:06d}")
                    i += 1
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(p,)) for p in ("new", "other")]
        for thread in threads:
            thread.start()
        try:
            for _ in range(3):
                listed = list(engine.keys())
                assert listed == sorted(set(listed)), "pages out of order or repeated"
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert errors == []
        assert list(engine.keys()) == sorted(engine._index.entries)


@settings(max_examples=300, deadline=None)
@given(keys_=st.sets(keys, max_size=300), data=st.data())
def test_merge_sorted_in_small_parts_is_a_sort(keys_: set[str], data: st.DataObject) -> None:
    every = sorted(keys_)
    base = data.draw(st.lists(st.sampled_from(every), unique=True) if every else st.just([]))
    new = [k for k in every if k not in set(base)]
    data.draw(st.randoms()).shuffle(new)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(index_module, "SORT_PART", 8)  # many parts even for a few keys
        assert merge_sorted(sorted(base), new) == every


def test_from_sorted_builds_what_sortedlist_builds() -> None:
    keys_ = [f"k{i:06d}" for i in range(12_345)]
    built = from_sorted(keys_)
    built._check()
    assert list(built) == keys_
    assert built.index("k010000") == 10_000
    built.add("k0000005")
    built.discard("k000007")
    assert list(built.irange("k000004", "k000009")) == [
        "k000004",
        "k000005",
        "k000006",
        "k000008",
        "k000009",
    ]
