"""Values and content types: inference, exact round trips, refusals, markers, extensions."""

from __future__ import annotations

import doctest
import enum
import math
import uuid
from collections import OrderedDict
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logkv import ValueDecodeError, content
from logkv.content import (
    BINARY_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    check_content_type,
    decode,
    encode,
    extension_for,
    infer_content_type,
    is_json_type,
    public_content_type,
)


class Color(enum.Enum):
    RED = "red"


class Size(enum.StrEnum):
    BIG = "big"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": 1}, JSON_CONTENT_TYPE),
        ([1, 2], JSON_CONTENT_TYPE),
        ((1, 2), JSON_CONTENT_TYPE),
        (5, JSON_CONTENT_TYPE),
        (2.5, JSON_CONTENT_TYPE),
        (True, JSON_CONTENT_TYPE),
        (OrderedDict(a=1), JSON_CONTENT_TYPE),
        ("text", TEXT_CONTENT_TYPE),
        (b"\x00", BINARY_CONTENT_TYPE),
        (bytearray(b"\x00"), BINARY_CONTENT_TYPE),
        (memoryview(b"\x00"), BINARY_CONTENT_TYPE),
    ],
)
def test_inferred_content_types(value: object, expected: str) -> None:
    assert infer_content_type(value) == expected


@pytest.mark.parametrize("value", [object(), {1, 2}, datetime(2024, 1, 1), Color.RED, None])
def test_inference_refuses_what_it_cannot_name(value: object) -> None:
    with pytest.raises(TypeError, match="cannot infer a content type"):
        infer_content_type(value)


ROUND_TRIPS: list[tuple[Any, str | None, Any]] = [
    # (value given, content type given, value expected back)
    ({"a": None, "b": [1, 2.5, None, {"c": None}], "d": ""}, None, None),
    ([], None, None),
    ({}, None, None),
    (0, None, None),
    (-17, None, None),
    (1.0, None, None),  # a float stays a float
    (1e300, None, None),
    (False, None, None),
    (2**64 + 5, None, None),  # beyond 64 bits: exact
    ({"big": -(2**80), "n": [2**70]}, None, None),
    ((1, (2, 3)), None, [1, [2, 3]]),  # JSON has no tuples
    (OrderedDict(b=1, a=2), None, {"b": 1, "a": 2}),
    ("héllo wörld ✓ 🎉", None, None),
    ("", None, None),
    (b"\x00\xff binary", None, None),
    (bytearray(b"abc"), None, b"abc"),
    (memoryview(b"abc"), None, b"abc"),
    (b"<p>bytes under a text type</p>", "text/html", None),
    (b'{"still": "bytes"}', "application/json", None),
    ("<svg/>", "image/svg+xml", None),
    ('{"a": 1}', "application/json", None),  # a JSON string, not an object
    ({"@id": "x"}, "application/ld+json", None),
    ("plain", "text/plain", None),
    ("latin: é", "text/plain; charset=latin-1", None),
    ("<html>é</html>", "text/html; charset=utf-8", None),
    (b"\x89PNG", "image/png", None),
]


@pytest.mark.parametrize(("value", "content_type", "expected"), ROUND_TRIPS)
def test_values_come_back_as_they_went_in(
    value: Any, content_type: str | None, expected: Any
) -> None:
    data, stored = encode(value, content_type)
    back = decode(data, stored)
    want = value if expected is None else expected
    assert back == want
    assert type(back) is type(want)
    if content_type is not None:
        assert public_content_type(stored) == content_type


def test_floats_and_ints_keep_their_types_in_documents() -> None:
    value = {"i": 1, "f": 1.0, "nested": [0.0, 0, -0.5]}
    back = decode(*encode(value))
    assert [type(x) for x in back["nested"]] == [float, int, float]
    assert type(back["i"]) is int and type(back["f"]) is float


def test_marker_only_when_the_python_type_differs_from_the_default() -> None:
    assert encode(b"x", "text/html")[1] == "text/html; x-logkv-value=bytes"
    assert encode("x", "image/svg+xml")[1] == "image/svg+xml; x-logkv-value=str"
    assert encode("x", "text/html")[1] == "text/html"
    assert encode(b"x", "image/png")[1] == "image/png"
    assert encode({"a": 2**70})[1] == JSON_CONTENT_TYPE + "; x-logkv-value=bigint"
    for stored in ("text/html; x-logkv-value=bytes", JSON_CONTENT_TYPE + "; x-logkv-value=bigint"):
        assert "x-logkv" not in public_content_type(stored)


@pytest.mark.parametrize(
    ("value", "content_type", "message"),
    [
        ({1, 2}, "application/json", "set"),
        (datetime(2024, 1, 1), "application/json", "datetime"),
        (uuid.UUID(int=1), "application/json", "UUID"),
        (Color.RED, "application/json", "Color"),
        ({"size": Size.BIG}, None, "Size"),
        ({"when": datetime(2024, 1, 1)}, None, "datetime"),
        ([object()], None, "object"),
        (float("nan"), None, "nan"),
        ({"x": [1, float("inf")]}, None, "inf"),
        ({1: "int key"}, None, "key"),
        ({"a": {(1, 2): "tuple key"}}, None, "key"),
        ({"a": 2**70, 3: "int key beside a big int"}, None, "key"),
        ({"a": 1}, "text/plain", "cannot be stored as 'text/plain'"),
        ([1], "application/octet-stream", "cannot be stored"),
        (5, "text/plain", "cannot be stored"),
        (True, "image/png", "cannot be stored"),
        ("€uro", "text/plain; charset=latin-1", "cannot encode"),
        ("lone \ud800 surrogate", "text/plain", "cannot encode"),
        ("lone \ud800 surrogate", None, "cannot encode"),
    ],
)
def test_values_that_cannot_be_stored_raise_type_error(
    value: Any, content_type: str | None, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        encode(value, content_type)


def test_self_containing_and_too_deep_values_raise_type_error() -> None:
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(TypeError, match="nested too deeply"):
        encode(looped)
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(TypeError):
        encode(deep)


def test_nesting_beyond_orjsons_limit_still_round_trips() -> None:
    deep: Any = {"leaf": 1}
    for _ in range(300):
        deep = {"d": deep}
    data, stored = encode(deep)
    assert decode(data, stored) == deep


@pytest.mark.parametrize(
    ("content_type", "error"),
    [
        ("json", ValueError),
        ("", ValueError),
        ("/json", ValueError),
        ("text/", ValueError),
        ("text/plain; x-logkv-value=bytes", ValueError),
        ("text/plain; charset=no-such-charset", ValueError),
        (5, TypeError),
        (b"text/plain", TypeError),
    ],
)
def test_malformed_content_types(content_type: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        encode("x", content_type)


def test_check_content_type_accepts_parameters() -> None:
    assert check_content_type("text/html; charset=utf-8") == "text/html; charset=utf-8"
    assert is_json_type("application/vnd.api+json") and is_json_type("APPLICATION/JSON")
    assert not is_json_type("application/x-ndjson")


@pytest.mark.parametrize(
    ("content_type", "extension"),
    [
        (JSON_CONTENT_TYPE, "json"),
        ("application/json", "json"),
        ("application/vnd.api+json", "json"),
        ("application/atom+xml", "xml"),
        (TEXT_CONTENT_TYPE, "txt"),
        ("text/html; charset=utf-8", "html"),
        ("TEXT/HTML", "html"),
        ("image/png", "png"),
        ("image/jpeg", "jpg"),
        ("application/pdf", "pdf"),
        ("audio/mpeg", "mp3"),
        (BINARY_CONTENT_TYPE, "bin"),
        ("application/x-made-up", "bin"),
        ("text/html; x-logkv-value=bytes", "html"),
        (None, "bin"),
    ],
)
def test_extensions(content_type: str | None, extension: str) -> None:
    assert extension_for(content_type) == extension


def test_undecodable_stored_bytes_raise_value_decode_error() -> None:
    with pytest.raises(ValueDecodeError, match="not valid JSON"):
        decode(b"{not json", "application/json")
    with pytest.raises(ValueDecodeError, match="not valid utf-8"):
        decode(b"\xff\xfe", "text/plain")
    assert isinstance(ValueDecodeError("x"), ValueError)


def test_lenient_reading_of_foreign_json() -> None:
    # JSON that logkv never writes, but that another tool may have put in a store.
    assert math.isnan(decode(b"NaN", "application/json"))
    assert decode(b"1e400", "application/json") == math.inf


def test_stored_none_and_missing_content_type() -> None:
    assert decode(None, JSON_CONTENT_TYPE) is None
    assert decode(b"raw", None) == b"raw"
    assert public_content_type(None) == BINARY_CONTENT_TYPE


def test_module_doctests() -> None:
    assert doctest.testmod(content).failed == 0


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",))),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(st.characters(exclude_categories=("Cs",))), children, max_size=5)
    ),
    max_leaves=25,
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(json_values)
def test_every_json_value_round_trips_exactly(value: Any) -> None:
    data, stored = encode(value, JSON_CONTENT_TYPE)
    back = decode(data, stored)
    assert back == value
    assert repr(back) == repr(value)  # same types all the way down (1 vs 1.0, -0.0)


@settings(max_examples=100, deadline=None)
@given(st.binary(), st.sampled_from(["text/html", "application/json", "image/png", "text/csv"]))
def test_bytes_round_trip_under_any_content_type(value: bytes, content_type: str) -> None:
    data, stored = encode(value, content_type)
    assert decode(data, stored) == value
    assert type(decode(data, stored)) is bytes
