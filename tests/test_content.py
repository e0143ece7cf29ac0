"""Values and content types: inference, exact round trips, refusals, markers, extensions."""

from __future__ import annotations

import asyncio
import doctest
import enum
import math
import uuid
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logkv import (
    Configuration,
    DiskStorageClient,
    KeyValueStore,
    MemoryStorageClient,
    StorageClient,
    ValueDecodeError,
    content,
)
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
        # The top container is checked in a loop of its own: what follows a run of leaves
        # there, or sits below it, is refused alike.
        ({"url": "u", "title": "t", "price": float("nan")}, None, "nan"),
        (["a", "b", 1, True, None, -math.inf], None, "inf"),
        ({"url": "u", "tags": ["a", "b", Color.RED]}, None, "Color"),
        ({"url": "u", "id": uuid.UUID(int=2)}, None, "UUID"),
        ({"url": "u", "body": b"raw bytes"}, None, "bytes"),
        ({"url": "u", "nested": [1, {"deeper": [{"when": datetime(2024, 1, 1)}]}]}, None, "date"),
        ([{"ok": 1}, {"n": float("nan")}], None, "nan"),
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


def test_nesting_beyond_the_documented_limit_is_refused() -> None:
    deep: Any = {"leaf": 1}
    for _ in range(300):  # beyond orjson's own limit too
        deep = {"d": deep}
    with pytest.raises(TypeError, match="nested too deeply"):
        encode(deep)
    with pytest.raises(TypeError, match="nested too deeply"):
        content.check_nesting(deep)


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


# ------------------------------------------------------------------ charsets

CHARSET_CASES: list[tuple[str, str, str]] = [
    # (value, content type, the charset its bytes must be in)
    ("café", "application/xml; charset=iso-8859-1", "latin-1"),
    ("hi", "application/xml; charset=utf-16", "utf-16"),
    ("naïve €", "image/svg+xml; charset=cp1252", "cp1252"),
    ("hi ✓", "text/plain; charset=utf-16", "utf-16"),
    ("Grüße", "text/csv; charset=UTF-32-LE", "utf-32-le"),
    ("日本語", "text/html; charset=shift_jis", "shift_jis"),
    ("EBCDIC", "text/plain; charset=cp500", "cp500"),
    ("café", 'text/plain; charset="latin-1"', "latin-1"),
    ("utf8 ✓", "application/xml; charset=UTF8", "utf-8"),
]


@pytest.mark.parametrize(("value", "content_type", "charset"), CHARSET_CASES)
def test_str_is_stored_in_its_declared_charset(value: str, content_type: str, charset: str) -> None:
    data, stored = encode(value, content_type)
    assert data == value.encode(charset)
    back = decode(data, stored)
    assert back == value and type(back) is str
    assert content.decoder_for(stored)(data) == value
    assert public_content_type(stored) == content_type


@pytest.mark.parametrize(
    ("value", "charset"),
    [
        ({"name": "café", "emoji": "🎉", "n": [1, 2.5, None]}, "latin-1"),
        ({"name": "café", "emoji": "🎉"}, "utf-16"),
        ({"big": 2**70, "text": "Grüße"}, "utf-16"),
        ("a JSON string ✓", "cp500"),
        ([2**80, "ü"], "cp1252"),
    ],
)
def test_json_under_a_declared_charset_is_written_in_it(value: Any, charset: str) -> None:
    content_type = f"application/json; charset={charset}"
    data, stored = encode(value, content_type)
    text = data.decode(charset)
    assert text.isascii()  # what the charset cannot encode is escaped as JSON allows
    assert decode(data, stored) == value
    assert public_content_type(stored) == content_type


def test_json_written_as_utf8_under_another_charset_still_reads() -> None:
    # Earlier versions wrote JSON as UTF-8 whatever charset its content type named.
    for charset in ("latin-1", "utf-16", "cp1252"):
        stored = f"application/json; charset={charset}"
        assert decode('{"name":"café"}'.encode(), stored) == {"name": "café"}
        assert decode(b'{"n":36893488147419103232}', stored + "; x-logkv-value=bigint") == {
            "n": 2**65
        }


@pytest.mark.parametrize(
    ("value", "charset"), [("Ü.de", "idna"), ("Straße", "idna"), ("\\u00e9", "raw_unicode_escape")]
)
def test_text_that_its_charset_does_not_read_back_is_refused(value: str, charset: str) -> None:
    # idna folds case and maps characters; raw_unicode_escape reads escapes it never wrote.
    with pytest.raises(TypeError, match="does not read it back"):
        encode(value, f"text/plain; charset={charset}")
    with pytest.raises(TypeError, match="does not read it back"):
        encode(value, f"application/xml; charset={charset}")


@pytest.mark.parametrize("codec", ["base64", "hex", "rot13", "zlib", "bz2", "quopri", "uu"])
@pytest.mark.parametrize(
    ("value", "main"),
    [
        ("x", "text/plain"),
        ("x", "application/xml"),
        (b"x", "image/png"),
        (b"x", "text/html"),
        ({"a": 1}, "application/json"),
    ],
)
def test_non_text_codecs_as_charset_are_refused(codec: str, value: Any, main: str) -> None:
    with pytest.raises(ValueError, match="not a text encoding") as caught:
        encode(value, f"{main}; charset={codec}")
    assert not isinstance(caught.value, LookupError)
    with pytest.raises(ValueError, match="not a text encoding"):
        check_content_type(f"{main}; charset={codec}")


@pytest.mark.parametrize("main", ["text/plain", "image/png", "application/json"])
def test_unknown_charsets_are_refused_on_every_type(main: str) -> None:
    with pytest.raises(ValueError, match="unknown charset"):
        encode(b"x", f"{main}; charset=no-such-charset")


@pytest.mark.parametrize(
    "stored",
    [
        "text/plain; charset=base64",
        "application/xml; charset=base64; x-logkv-value=str",
        "application/json; charset=rot13",
        "application/json; charset=zlib; x-logkv-value=bigint",
        "text/html; charset=no-such-charset",
        "image/png; charset=hex",
    ],
)
def test_records_under_a_bad_charset_read_as_bytes(stored: str) -> None:
    assert decode(b"x", stored) == b"x"
    assert content.decoder_for(stored)(b"x") == b"x"
    # Reading it did not make the type acceptable for writing.
    with pytest.raises(ValueError):
        encode("x", public_content_type(stored))


# ------------------------------------------------------------------ nesting


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"d": value}
    return value


def _at_stack_depth(frames: int, call: Any) -> Any:
    """``call()`` from ``frames`` Python frames deeper than the caller."""
    if frames == 0:
        return call()
    return _at_stack_depth(frames - 1, call)


def _deepest_accepted() -> int:
    """The deepest nesting that encode() accepts, found by bisection."""
    low, high = 1, 5000
    while low < high:
        middle = (low + high + 1) // 2
        try:
            encode(_nested(middle))
        except TypeError:
            high = middle - 1
        else:
            low = middle
    return low


def test_the_deepest_accepted_value_reads_back_from_a_deep_stack() -> None:
    deepest = _deepest_accepted()
    for value in (_nested(deepest), [2**70, _nested(deepest - 1)]):
        data, stored = encode(value)
        assert _at_stack_depth(200, lambda: decode(data, stored)) == value  # noqa: B023
        assert _at_stack_depth(200, lambda: content.decoder_for(stored)(data)) == value  # noqa: B023
    assert deepest == content.MAX_NESTING_DEPTH


def test_the_nesting_limit_does_not_depend_on_the_callers_stack() -> None:
    depth = content.MAX_NESTING_DEPTH
    data, stored = _at_stack_depth(600, lambda: encode(_nested(depth)))
    assert decode(data, stored) == _nested(depth)
    with pytest.raises(TypeError, match=f"nested too deeply.*{depth}"):
        _at_stack_depth(600, lambda: encode(_nested(depth + 1)))


# ------------------------------------------------------------------ round trips through stores

STORE_CHARSETS = [
    "utf-8",
    "utf-16",
    "utf-16-le",
    "utf-32",
    "latin-1",
    "iso-8859-15",
    "cp1252",
    "ascii",
    "cp500",
    "shift_jis",
    "koi8-r",
    "utf-8-sig",
]
STORE_TYPES = [
    "text/plain",
    "text/html",
    "text/csv",
    "application/xml",
    "image/svg+xml",
    "application/json",
    "application/ld+json",
    "application/vnd.api+json",
    "application/octet-stream",
    "image/png",
]
store_content_types = st.none() | st.builds(
    lambda main, charset: main if charset is None else f"{main}; charset={charset}",
    st.sampled_from(STORE_TYPES),
    st.none() | st.sampled_from(STORE_CHARSETS),
)
store_values = (
    st.text()
    | st.text(st.characters(codec="latin-1"))
    | st.text(st.sampled_from("aé€🎉\ud800\udfff\x00"))
    | st.binary()
    | json_values.filter(lambda value: value is not None)  # None deletes the record
)


def _charset_named(content_type: str | None) -> str:
    """The charset a generated content type names (UTF-8 when none)."""
    _, _, charset = (content_type or "").partition("; charset=")
    return charset or "utf-8"


def _must_refuse(value: Any, content_type: str | None) -> bool:
    """Whether logkv must refuse ``value`` under ``content_type`` (the test's own oracle)."""
    if isinstance(value, bytes):
        return False
    json_type = not isinstance(value, str) if content_type is None else is_json_type(content_type)
    if not isinstance(value, str):
        return not json_type
    if json_type:  # a JSON string: refused only for a lone surrogate, which JSON cannot carry
        return any(0xD800 <= ord(char) <= 0xDFFF for char in value)
    charset = _charset_named(content_type)
    try:
        return value.encode(charset).decode(charset) != value
    except UnicodeError:
        return True


async def _check_round_trip(kvs: KeyValueStore, value: Any, content_type: str | None) -> None:
    before = await kvs.get_metadata()
    previous = await kvs.get_value("k", "missing")
    try:
        await kvs.set_value("k", value, content_type)
    except (TypeError, ValueError):
        assert _must_refuse(value, content_type)
        assert repr(await kvs.get_value("k", "missing")) == repr(previous)
        assert (await kvs.get_metadata()).last_seq == before.last_seq
        return
    assert not _must_refuse(value, content_type)
    back = await kvs.get_value("k")
    assert back == value
    assert repr(back) == repr(value)  # same types all the way down
    (info,) = await kvs.list_keys()
    assert info.content_type == (content_type or infer_content_type(value))
    if isinstance(value, str) and not is_json_type(info.content_type):
        assert info.size == len(value.encode(_charset_named(info.content_type)))


@pytest.mark.parametrize("kind", ["log", "memory"])
def test_stores_return_what_they_accepted_under_every_content_type(
    kind: str, tmp_path: Path
) -> None:
    configuration = Configuration(storage_dir=str(tmp_path / "storage"))
    client: StorageClient = (
        DiskStorageClient(configuration) if kind == "log" else MemoryStorageClient(configuration)
    )
    with asyncio.Runner() as runner:
        kvs = runner.run(
            KeyValueStore.open(
                name="round-trips", configuration=configuration, storage_client=client
            )
        )

        @settings(max_examples=200, deadline=None)
        @given(store_values, store_content_types)
        def check(value: Any, content_type: str | None) -> None:
            runner.run(_check_round_trip(kvs, value, content_type))

        try:
            check()
        finally:
            runner.run(kvs.close())


@pytest.mark.parametrize(
    "content_type", ["json", "text/plain; charset=base64", "image/png; charset=no-such-charset"]
)
def test_reading_a_record_does_not_make_its_type_writable(content_type: str) -> None:
    # Another tool may have stored records under types that logkv refuses to write.
    decode(b"x", content_type)
    content.decoder_for(content_type)
    with pytest.raises(ValueError):
        encode("x", content_type)


async def test_the_public_door_refuses_what_json_cannot_hold(tmp_path: Path) -> None:
    """``KeyValueStore.set_value`` raises the encoder's clear TypeError and writes nothing."""
    kvs = await KeyValueStore.open(
        name="door", configuration=Configuration(storage_dir=str(tmp_path), purge_on_start=False)
    )
    bad = [
        {"price": float("nan")},
        {1: "non-str key"},
        {"tags": ["a", Color.RED]},
        {"body": b"bytes"},
        {"n": 2**70, 5: "int key beside a big int"},
        _nested(content.MAX_NESTING_DEPTH + 1),
    ]
    for value in bad:
        with pytest.raises(TypeError):
            await kvs.set_value("k", value)
    assert await kvs.get_value("k") is None
    await kvs.set_value("k", {"n": 2**70, "deep": _nested(content.MAX_NESTING_DEPTH - 1)})
    assert await kvs.get_value("k") == {"n": 2**70, "deep": _nested(content.MAX_NESTING_DEPTH - 1)}
    await kvs.close()
