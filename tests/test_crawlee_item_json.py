"""Dataset items are stored as Crawlee's file-system client writes them, whichever encoder
writes them: orjson's fast path must give ``json.dumps(..., indent=2)``'s exact bytes."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logkv.crawlee._dataset import serialize_item


def crawlee_json(item: Any) -> bytes:
    """What Crawlee's file-system dataset client writes for ``item``."""
    return json.dumps(item, ensure_ascii=False, indent=2, default=str).encode("utf-8")


def same_as_crawlee(item: Any) -> None:
    try:
        expected = crawlee_json(item)
    except (ValueError, TypeError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        with pytest.raises(type(exc)):
            serialize_item(item)
        return
    assert serialize_item(item) == expected


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text()
    | st.text(alphabet=st.characters(codec=None, categories=None))  # control characters too
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@pytest.mark.slow
@given(st.dictionaries(st.text(max_size=8), VALUES, max_size=6))
def test_every_plain_item_is_written_as_crawlee_writes_it(item: dict[str, Any]) -> None:
    same_as_crawlee(item)


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=8))
def test_floats_are_written_as_json_writes_them(numbers: list[float]) -> None:
    same_as_crawlee({"numbers": numbers})


class Colour(enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    LARGE = 3


class Name(str):
    pass


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    "item",
    [
        {"bench": "x" * 900, "i": 12, "url": "https://bench.invalid/p/12"},
        {"small": 1e-05, "big": 1e16, "nan": float("nan"), "inf": float("-inf")},
        {"huge": 2**64, "negative": -(2**63) - 1},
        {"when": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)},
        {"day": datetime.date(2024, 5, 6)},
        {"colour": Colour.RED, "size": Size.LARGE},
        {"name": Name("x"), Name("key"): 1},
        {1: "int key", 2.5: "float key", None: "none key", False: "bool key"},
        {"point": Point(1)},
        {"set": {1}},
        {"bytes": b"abc"},
        OrderedDict(a=1),
        {"nested": OrderedDict(a=[1, (2, 3)])},
        {"lone surrogate": "\ud800"},
        {"deep": json.loads("[" * 70 + "]" * 70)},
    ],
)
def test_what_is_not_plain_is_written_by_json(item: Any) -> None:
    same_as_crawlee(item)


def test_a_circular_item_fails_as_with_json() -> None:
    item: dict[str, Any] = {}
    item["self"] = item
    with pytest.raises(ValueError, match="Circular"):
        serialize_item(item)
