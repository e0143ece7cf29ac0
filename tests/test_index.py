"""The index against a dict: point operations, and ordered reads that merge fresh keys."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from logkv.index import Index
from logkv.replay import Entry

keys = st.text(alphabet="abcdé\U0001f600", min_size=1, max_size=4)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys, st.integers(0, 10**6)),
        st.tuples(st.just("remove"), keys, st.just(0)),
        st.tuples(st.just("after"), st.one_of(st.none(), keys), st.integers(0, 12)),
        st.tuples(st.just("sort"), st.just(""), st.just(0)),
    ),
    max_size=200,
)


def entry(n: int) -> Entry:
    return (1, n, 40, n % 97, None)


@settings(max_examples=300, deadline=None)
@given(initial=st.dictionaries(keys, st.integers(0, 10**6), max_size=30), steps=ops)
def test_index_matches_a_dict_and_sorted(
    initial: dict[str, int], steps: list[tuple[str, object, int]]
) -> None:
    model = {k: entry(v) for k, v in initial.items()}
    index = Index(dict(model))
    for op, key, n in steps:
        if op == "put":
            assert isinstance(key, str)
            assert index.put(key, entry(n)) == model.get(key)
            model[key] = entry(n)
        elif op == "remove":
            assert isinstance(key, str)
            assert index.remove(key) == model.pop(key, None)
        elif op == "after":
            expected = sorted(k for k in model if key is None or k > key)[:n]  # type: ignore[operator]
            assert index.after(key, n) == expected  # type: ignore[arg-type]
        else:
            index.sort()
            assert index.unsorted == 0
        assert len(index) == len(model)
        assert all(index.get(k) == v for k, v in model.items())
    assert list(index.keys()) == sorted(model)


def test_many_fresh_keys_are_merged_by_one_rebuild_and_few_one_by_one() -> None:
    index = Index({f"k{i:05d}": entry(i) for i in range(0, 2000, 2)})
    for i in range(1, 2000, 2):  # as many fresh keys as sorted ones: a rebuild
        index.put(f"k{i:05d}", entry(i))
    assert index.unsorted == 1000
    assert index.after("k00010", 3) == ["k00011", "k00012", "k00013"]
    assert index.unsorted == 0
    index.put("k00000x", entry(1))  # one fresh key: inserted on its own
    index.remove("k00001")
    assert index.after(None, 3) == ["k00000", "k00000x", "k00002"]
    assert list(index.keys()) == sorted(index.entries)


def test_a_key_removed_and_put_again_before_a_merge_is_listed_once() -> None:
    index = Index({"b": entry(1)})
    index.put("a", entry(2))
    index.remove("a")
    index.put("a", entry(3))
    index.remove("b")
    index.put("b", entry(4))
    assert index.after(None, 10) == ["a", "b"]
    assert index.get("a") == entry(3)
