"""Values and content types: inference, encoding to bytes, decoding back, file extensions.

The engine stores bytes and a content type; this module turns Python values into those and back,
so that every value comes back exactly as it went in:

================================  ===================================  ======================
value given                       content type (inferred when None)    value returned
================================  ===================================  ======================
``dict``, ``list``, ``int``,      ``application/json; charset=utf-8``  an equal JSON value
``float``, ``bool`` (JSON)        (or any ``*/json``, ``*/*+json``)    (tuples come back as
                                                                       lists)
``str``                           ``text/plain; charset=utf-8``        ``str``
                                  (or any other type)
``bytes``, ``bytearray``,         ``application/octet-stream``         ``bytes``
``memoryview``                    (or any other type)
================================  ===================================  ======================

A value that cannot be stored under its content type raises :class:`TypeError` and nothing is
written: a ``dict`` under ``text/plain``, a ``set``, a ``datetime``, a float NaN, a ``dict`` with
non-string keys, a string that its charset cannot encode, lists and dicts nested deeper than
:data:`MAX_NESTING_DEPTH` (128) levels. logkv never stores ``str(value)`` in place of a value.

Text is stored in the charset its content type names (``charset=utf-16``, ``charset=iso-8859-1``,
under any type, ``text/*`` or not), in UTF-8 when it names none, and read back in that charset,
so a ``str`` comes back equal under every content type that accepts it; a string the charset
cannot encode, or does not read back unchanged, raises :class:`TypeError`. JSON is written in
UTF-8, or, under a type naming another charset, as ASCII (every other character escaped, as
JSON allows) in that charset. A ``charset`` that is unknown or not a text encoding (``base64``,
``hex``, ``rot13``, ``zlib``, ...) raises :class:`ValueError` on writing; a record stored under
such a type by something else reads as ``bytes``.

How a value is decoded follows from its content type: JSON types are parsed, ``text/*`` is
decoded with its charset, anything else is returned as ``bytes``. When the Python type given
differs from that default (``bytes`` under ``text/html``, ``str`` under ``image/svg+xml``), the
stored content type carries one extra parameter, ``x-logkv-value=bytes`` or ``x-logkv-value=str``,
which :func:`public_content_type` strips again: users never see it.

JSON is written compactly (UTF-8, no spaces) and read with orjson. A value holding integers
beyond 64 bits, which orjson can neither write nor read exactly, is written by the standard
library and marked ``x-logkv-value=bigint`` so that it is read back by the standard library too,
exactly. (JSON that other tools wrote straight through the engine carries no such mark: integers
beyond 64 bits in it are read as floats. Write values through :func:`encode` to keep them exact.)
"""

from __future__ import annotations

import codecs
import json
import math
import mimetypes
import re
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Final

import orjson

from .errors import LogKVError

JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"
TEXT_CONTENT_TYPE: Final = "text/plain; charset=utf-8"
BINARY_CONTENT_TYPE: Final = "application/octet-stream"

#: The parameter that records a Python type differing from the content type's default.
MARKER_PARAM: Final = "x-logkv-value"
_AS_BYTES: Final = f"; {MARKER_PARAM}=bytes"
_AS_STR: Final = f"; {MARKER_PARAM}=str"
_AS_BIGINT: Final = f"; {MARKER_PARAM}=bigint"

_DECODE_JSON: Final = 1
_DECODE_TEXT: Final = 2
_DECODE_BYTES: Final = 3
_DECODE_EXACT_JSON: Final = 4

#: The charset of text whose content type names none, and of all JSON unless one is named.
UTF8: Final = "utf-8"

#: The deepest nesting of lists, tuples and dicts that a stored JSON value may have (``[[1]]``
#: is 2 deep). orjson writes at most 254 levels and reads at most 1024 without using the Python
#: stack; the standard library's json module, which writes and reads integers beyond 64 bits,
#: takes one level of the interpreter's recursion limit (1000) per level of nesting. 128 leaves
#: most of that limit to the caller, so a stored value reads back from any reasonable depth.
MAX_NESTING_DEPTH: Final = 128

_orjson_dumps = orjson.dumps
_orjson_loads = orjson.loads
_isfinite = math.isfinite
_CHARSET: Final = re.compile(r";\s*charset\s*=\s*\"?([^\s;\"]+)", re.IGNORECASE)
_NON_ASCII: Final = re.compile(r"[^\x00-\x7f]")

#: Extensions of common content types (the standard library's table covers the rest).
_EXTENSIONS: Final = {
    "application/json": "json",
    "application/ld+json": "jsonld",
    "application/octet-stream": "bin",
    "application/pdf": "pdf",
    "application/xml": "xml",
    "application/javascript": "js",
    "application/x-ndjson": "ndjson",
    "application/gzip": "gz",
    "application/zip": "zip",
    "text/plain": "txt",
    "text/html": "html",
    "text/css": "css",
    "text/csv": "csv",
    "text/markdown": "md",
    "text/xml": "xml",
    "text/javascript": "js",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/svg+xml": "svg",
    "image/avif": "avif",
}
_MIMETYPES: Final = mimetypes.MimeTypes()  # the built-in table only: same answer on every host

#: Decoding rule of each stored content type seen so far (content types repeat a lot).
_RULES: dict[str, tuple[int, str]] = {}
_RULES_LIMIT: Final = 4096
_DECODERS: dict[str, Callable[[bytes], Any]] = {}
#: Rules of content types :func:`check_content_type` accepted for writing (reading a record
#: caches its rule in ``_RULES`` without making its type acceptable).
_WRITABLE: dict[str, tuple[int, str]] = {}


class ValueDecodeError(LogKVError, ValueError):
    """Stored bytes do not parse under their content type (written by something else)."""


# ------------------------------------------------------------------ content types


def infer_content_type(value: object) -> str:
    """The content type logkv stores ``value`` under when none is given.

    ``bytes``-like → ``application/octet-stream``; ``str`` → ``text/plain; charset=utf-8``;
    ``dict``, ``list``, ``tuple``, ``int``, ``float``, ``bool`` → ``application/json;
    charset=utf-8``. Anything else raises :class:`TypeError`: say what it is with
    ``content_type`` (and give bytes), or convert it to one of those types.

    >>> infer_content_type({"a": 1})
    'application/json; charset=utf-8'
    >>> infer_content_type(b"\\x89PNG")
    'application/octet-stream'
    """
    kind = type(value)
    if kind is dict or kind is list:
        return JSON_CONTENT_TYPE
    if kind is str:
        return TEXT_CONTENT_TYPE
    if kind is bytes or kind is bytearray or kind is memoryview:
        return BINARY_CONTENT_TYPE
    if kind is int or kind is float or kind is bool or kind is tuple:
        return JSON_CONTENT_TYPE
    if isinstance(value, dict | list):
        return JSON_CONTENT_TYPE
    raise TypeError(
        f"cannot infer a content type for a {kind.__name__} value: store a dict, list, number, "
        "bool, str or bytes, or pass content_type= with the value encoded as bytes or str"
    )


def check_content_type(content_type: object) -> str:
    """Return ``content_type`` if it is a usable MIME type (``type/subtype[; params]``)."""
    if not isinstance(content_type, str):
        raise TypeError(f"content_type must be a str, got {type(content_type).__name__}")
    main = content_type.split(";", 1)[0].strip()
    if "/" not in main or main.startswith("/") or main.endswith("/") or " " in main:
        raise ValueError(f"content_type {content_type!r} is not a MIME type like 'text/html'")
    if MARKER_PARAM in content_type.lower():
        raise ValueError(f"content_type must not carry logkv's own {MARKER_PARAM!r} parameter")
    charset_of(content_type)
    return content_type


def base_type(content_type: str) -> str:
    """The ``type/subtype`` of a content type, lower-cased, without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json_type(content_type: str) -> bool:
    """True for ``application/json`` and every ``*/*+json`` or ``*/json`` type."""
    main = base_type(content_type)
    return main.endswith(("/json", "+json"))


def public_content_type(stored: str | None) -> str:
    """The content type to show users: the stored one without logkv's marker parameter."""
    if stored is None:
        return BINARY_CONTENT_TYPE
    if MARKER_PARAM not in stored:
        return stored
    if stored.endswith(_AS_BYTES):
        return stored[: -len(_AS_BYTES)]
    if stored.endswith(_AS_STR):
        return stored[: -len(_AS_STR)]
    if stored.endswith(_AS_BIGINT):
        return stored[: -len(_AS_BIGINT)]
    return stored


def extension_for(content_type: str | None) -> str:
    """A file extension (without the dot) for a content type; ``bin`` when none is known.

    >>> extension_for("application/json; charset=utf-8")
    'json'
    >>> extension_for("image/jpeg")
    'jpg'
    """
    main = base_type(public_content_type(content_type))
    known = _EXTENSIONS.get(main)
    if known is not None:
        return known
    if main.endswith("+json"):
        return "json"
    if main.endswith("+xml"):
        return "xml"
    guessed = _MIMETYPES.guess_extension(main, strict=False)
    return guessed[1:] if guessed else "bin"


def charset_of(content_type: str) -> str:
    """The canonical name of the text encoding ``content_type`` names in its ``charset``
    parameter; ``utf-8`` when it names none.

    Raises :class:`ValueError` for a charset Python does not know and for a codec that is not a
    text encoding (``base64``, ``hex``, ``rot13``, ``zlib``, ...): text cannot be stored in it.

    >>> charset_of("text/plain; charset=ISO-8859-1")
    'iso8859-1'
    >>> charset_of("application/json")
    'utf-8'
    """
    match = _CHARSET.search(content_type)
    if match is None:
        return UTF8
    name = match.group(1)
    try:
        codec = codecs.lookup(name)
    except LookupError:
        raise ValueError(
            f"content_type {content_type!r} names an unknown charset {name!r}"
        ) from None
    if not codec._is_text_encoding:
        raise ValueError(
            f"content_type {content_type!r} names {name!r} as its charset, which is not a text "
            "encoding: name one such as utf-8, utf-16 or iso-8859-1 (or give bytes under a "
            "type without a charset)"
        )
    return codec.name


def readable_charset(stored: str) -> str | None:
    """:func:`charset_of` a stored content type, or None when it is unknown or not a text
    encoding (such records were never written by logkv: they read as bytes)."""
    try:
        return charset_of(stored)
    except ValueError:
        return None


def text_charset(stored: str) -> str | None:
    """The charset in which :func:`decode` reads a value stored under ``stored`` as text, or
    None when it reads it as JSON or bytes.

    >>> text_charset("text/plain; charset=ISO-8859-1")
    'iso8859-1'
    >>> text_charset("text/plain; x-logkv-value=bytes") is None
    True
    """
    rule, charset = _rule(stored)
    return charset if rule == _DECODE_TEXT else None


def _rule(stored: str) -> tuple[int, str]:
    """``(decoding rule, charset)`` of a stored content type (cached: types repeat).

    A type naming an unknown or non-text charset reads as bytes.
    """
    rule = _RULES.get(stored)
    if rule is not None:
        return rule
    rule = _new_rule(stored) or (_DECODE_BYTES, "")
    if len(_RULES) >= _RULES_LIMIT:
        _RULES.clear()
    _RULES[stored] = rule
    return rule


def _new_rule(stored: str) -> tuple[int, str] | None:
    """The rule of :func:`_rule`; None when the type names an unusable charset."""
    if stored.endswith(_AS_BYTES):
        return (_DECODE_BYTES, "")
    if stored.endswith(_AS_STR):
        rule, base = _DECODE_TEXT, stored[: -len(_AS_STR)]
    elif stored.endswith(_AS_BIGINT):
        rule, base = _DECODE_EXACT_JSON, stored[: -len(_AS_BIGINT)]
    elif is_json_type(stored):
        rule, base = _DECODE_JSON, stored
    elif base_type(stored).startswith("text/"):
        rule, base = _DECODE_TEXT, stored
    else:
        rule, base = _DECODE_BYTES, stored
    charset = readable_charset(base)
    return None if charset is None else (rule, charset)


# ------------------------------------------------------------------ encoding


def encode(value: object, content_type: str | None = None) -> tuple[bytes, str]:
    """``(bytes to store, content type to store)`` for ``value``; see the module docstring.

    Raises :class:`TypeError` when ``value`` cannot be stored under ``content_type`` (nothing
    is written then) and :class:`ValueError` for a malformed ``content_type``.

    >>> encode({"n": 1})
    (b'{"n":1}', 'application/json; charset=utf-8')
    >>> encode(b"<p>", "text/html")
    (b'<p>', 'text/html; x-logkv-value=bytes')
    """
    if content_type is None:
        kind = type(value)
        if kind is dict or kind is list:  # the common case first, without further checks
            data, exact = _encode_json(value)
            return data, JSON_CONTENT_TYPE if exact else JSON_CONTENT_TYPE + _AS_BIGINT
        content_type = infer_content_type(value)
    rule, charset = _WRITABLE.get(content_type) or _writable_rule(content_type)
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return data, content_type if rule == _DECODE_BYTES else content_type + _AS_BYTES
    if rule == _DECODE_JSON:
        data, exact = _encode_json(value)
        if charset != UTF8:
            data = encode_json_text(data.decode(UTF8), charset, content_type)
        return data, content_type if exact else content_type + _AS_BIGINT
    if isinstance(value, str):
        data = encode_text(value, charset, content_type)
        return data, content_type if rule == _DECODE_TEXT else content_type + _AS_STR
    raise TypeError(
        f"a {type(value).__name__} value cannot be stored as {content_type!r}: give bytes or str "
        "for this content type, or use a JSON content type for JSON values (logkv never stores "
        "str(value) in place of a value)"
    )


def _writable_rule(content_type: str) -> tuple[int, str]:
    """The rule of a content type given for writing, checked by :func:`check_content_type`."""
    check_content_type(content_type)
    rule = _rule(content_type)
    if len(_WRITABLE) >= _RULES_LIMIT:
        _WRITABLE.clear()
    _WRITABLE[content_type] = rule
    return rule


def encode_text(value: str, charset: str, content_type: str) -> bytes:
    """``value`` in ``charset`` (a name from :func:`charset_of`), checked to read back equal.

    Raises :class:`TypeError` when ``charset`` cannot encode ``value`` (a lone surrogate, a
    character outside latin-1, ...) or does not decode it back unchanged (``idna``).
    """
    try:
        data = value.encode(charset)
    except UnicodeError as exc:
        reason = exc.reason if isinstance(exc, UnicodeEncodeError) else str(exc)
        raise TypeError(
            f"the text cannot be stored as {content_type!r}: {charset} cannot encode it ({reason})"
        ) from None
    if charset != UTF8 and not _reads_back(data, charset, value):
        raise TypeError(
            f"the text cannot be stored as {content_type!r}: {charset} does not read it back "
            "unchanged"
        )
    return data


def _reads_back(data: bytes, charset: str, value: str) -> bool:
    try:
        return data.decode(charset) == value
    except UnicodeError:
        return False


def encode_json_text(text: str, charset: str, content_type: str) -> bytes:
    """JSON ``text`` in ``charset``: as it is in UTF-8; in any other charset with every
    non-ASCII character escaped (``\\u00e9``), which JSON allows anywhere a character may be,
    so that any charset able to write ASCII writes any JSON value.

    Raises :class:`TypeError` as :func:`encode_text` does.
    """
    if charset != UTF8:
        text = _NON_ASCII.sub(_escape_json_char, text)
    return encode_text(text, charset, content_type)


def _escape_json_char(match: re.Match[str]) -> str:
    """The JSON escape of one character (a surrogate pair beyond the BMP)."""
    escaped: str = json.dumps(match.group())
    return escaped[1:-1]


def encode_json(value: object) -> bytes:
    """Compact UTF-8 JSON for ``value``, checked to come back equal; else :class:`TypeError`.

    Accepted: ``dict`` with ``str`` keys, ``list``, ``tuple`` (read back as a list), ``str``,
    ``int``, finite ``float``, ``bool`` and ``None``, nested in any way. Subclasses of ``dict``
    and ``list`` are read back as plain ``dict`` and ``list``; subclasses of ``str``, ``int``
    and ``float`` (enum members, for example) are refused: store their ``.value``.
    """
    return _encode_json(value)[0]


def _encode_json(value: object) -> tuple[bytes, bool]:
    """``(JSON bytes, True if orjson reads them back exactly)``."""
    _check_types(value)
    try:
        return _orjson_dumps(value), True
    except TypeError:
        pass  # a non-str key or an integer beyond 64 bits
    try:
        _check_json(value, "value")  # the thorough check, which names what is wrong
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8", "strict"), False
    except (ValueError, RecursionError) as exc:
        raise TypeError(f"the value cannot be written as JSON ({exc})") from None


_LEAVES: Final = frozenset({str, int, bool, type(None)})


def _check_types(value: Any) -> None:
    """The fast check before orjson writes ``value``: raise :class:`TypeError` for anything
    orjson would write but not read back as it was (UUIDs, enum members, dates, NaN, ...), and
    for nesting deeper than :data:`MAX_NESTING_DEPTH`.

    The items of the top container are looked at in a loop of their own (a document is mostly
    leaves there); nested containers are then walked with a list of pending containers, not by
    recursion, so that the answer does not depend on how deep the caller's stack is. Keys are
    not looked at here: orjson itself refuses keys that are not ``str``.
    """
    kind = type(value)
    top: Iterable[Any] | None
    if kind is dict:
        top = value.values()
    elif kind is list:
        top = value
    else:
        top = _children(value)
        if top is None:
            return
    pending: list[tuple[Iterable[Any], int]] | None = None
    leaves = _LEAVES
    for item in top:
        sub = type(item)
        if sub is str:
            continue
        if sub is float:
            if not _isfinite(item):
                raise TypeError(f"{item!r} is not a JSON number")
            continue
        if sub in leaves:
            continue
        if sub is list:  # a list of str, int, bool or None (tags, ids) is done here
            for leaf in item:
                if type(leaf) not in leaves:
                    break
            else:
                continue
        inner = _children(item)
        if inner is not None:
            if pending is None:
                pending = [(inner, 2)]
            else:
                pending.append((inner, 2))
    if pending is not None:
        _check_nested(pending)


def _check_nested(pending: list[tuple[Iterable[Any], int]]) -> None:
    """:func:`_check_types` below the top container: ``pending`` holds the containers still to
    look at, each with its depth."""
    leaves = _LEAVES
    while pending:
        items, depth = pending.pop()
        for item in items:
            sub = type(item)
            if sub is str or sub in leaves:
                continue
            if sub is float:  # the commonest non-leaf, checked here rather than by a call
                if not _isfinite(item):
                    raise TypeError(f"{item!r} is not a JSON number")
                continue
            inner = _children(item)
            if inner is not None:
                if depth >= MAX_NESTING_DEPTH:
                    raise _too_deep()
                pending.append((inner, depth + 1))


def _children(value: Any) -> Iterable[Any] | None:
    """The items of a JSON container (the values of a dict), None for a JSON leaf; raises
    :class:`TypeError` for anything else."""
    kind = type(value)
    items: Iterable[Any]
    if kind is dict:
        items = value.values()
        return items
    if kind is list or kind is tuple:
        items = value
        return items
    if kind is float:
        if not _isfinite(value):
            raise TypeError(f"{value!r} is not a JSON number")
        return None
    if kind in _LEAVES:
        return None
    if isinstance(value, dict):
        return value.values()
    if isinstance(value, list):
        return value
    _check_json(value, "a nested value")  # raises, naming the type
    return None


def check_nesting(value: object) -> None:
    """Raise :class:`TypeError` if ``value`` nests lists, tuples and dicts (or their
    subclasses) deeper than :data:`MAX_NESTING_DEPTH`, or contains itself.

    >>> check_nesting([[1], {"a": [2]}])
    """
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            inner: Iterable[object] = item.values()
        elif isinstance(item, list | tuple):
            inner = item
        else:
            continue
        if depth >= MAX_NESTING_DEPTH:
            raise _too_deep()
        pending.extend((child, depth + 1) for child in inner)


def _too_deep() -> TypeError:
    return TypeError(
        f"the value is nested too deeply: logkv stores lists and dicts nested at most "
        f"{MAX_NESTING_DEPTH} levels deep (or the value contains itself)"
    )


def _check_json(value: Any, where: str) -> None:
    """Raise :class:`TypeError` unless ``value`` is a JSON value that round-trips exactly."""
    kind = type(value)
    if kind is dict or (kind is not list and isinstance(value, dict)):
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(
                    f"JSON object keys are strings; {where} has a {type(key).__name__} key "
                    f"{key!r}, which would come back as a string"
                )
            sub = type(item)
            if sub is str or sub is int or item is None or sub is bool:
                continue
            _check_json(item, f"{where}[{key!r}]")
        return
    if kind is list or kind is tuple or isinstance(value, list):
        for index, item in enumerate(value):
            sub = type(item)
            if sub is str or sub is int or item is None or sub is bool:
                continue
            _check_json(item, f"{where}[{index}]")
        return
    if kind is float:
        if not _isfinite(value):
            raise TypeError(f"{where} is {value!r}, which JSON cannot represent")
        return
    if kind is str or kind is int or kind is bool or value is None:
        return
    raise TypeError(
        f"{where} is a {kind.__name__}, which is not a JSON value: convert it to a dict, list, "
        "str, int, float, bool or None first (logkv never stores str(value) in its place)"
    )


# ------------------------------------------------------------------ decoding


def decode(data: bytes | None, stored_content_type: str | None) -> Any:
    """The Python value of stored ``data`` under ``stored_content_type`` (see :func:`encode`).

    A stored None (possible through the engine, never through the facade) decodes to None.

    >>> decode(b'{"n":1}', "application/json")
    {'n': 1}
    >>> decode(b"<p>", "text/html; x-logkv-value=bytes")
    b'<p>'
    """
    if data is None:
        return None
    if stored_content_type is None:
        return data
    rule, charset = _RULES.get(stored_content_type) or _rule(stored_content_type)
    if rule == _DECODE_JSON:
        try:
            return _orjson_loads(data)
        except orjson.JSONDecodeError:
            return decode_json(data, charset)
    if rule == _DECODE_EXACT_JSON:
        return decode_json(data, charset)
    if rule == _DECODE_TEXT:
        try:
            return data.decode(charset)
        except UnicodeDecodeError as exc:
            raise ValueDecodeError(
                f"stored text is not valid {charset} ({exc.reason} at byte {exc.start})"
            ) from None
    return data


def decoder_for(stored_content_type: str | None) -> Callable[[bytes], Any]:
    """A one-argument function that decodes values stored under ``stored_content_type``:
    ``orjson.loads`` itself for plain JSON, so that hot reads pay for nothing else.

    It raises ``ValueError`` where :func:`decode` would be lenient or explain better (foreign
    JSON that orjson refuses, text that is not valid in its charset); callers fall back to
    :func:`decode` then.

    >>> decoder_for("application/json")(b"[1, 2.0]")
    [1, 2.0]
    """
    if stored_content_type is None:
        return bytes
    found = _DECODERS.get(stored_content_type)
    if found is not None:
        return found
    rule, charset = _rule(stored_content_type)
    if rule == _DECODE_JSON:
        found = _orjson_loads
    elif rule == _DECODE_EXACT_JSON:
        found = partial(decode_json, charset=charset)
    elif rule == _DECODE_TEXT:
        found = partial(str, encoding=charset)
    else:
        found = bytes
    if len(_DECODERS) >= _RULES_LIMIT:
        _DECODERS.clear()
    _DECODERS[stored_content_type] = found
    return found


def decode_json(data: bytes, charset: str = UTF8) -> Any:
    """Parse JSON with the standard library: exact for integers of any size, and lenient about
    what orjson refuses (NaN, huge exponents, deep nesting).

    JSON is read as UTF-8 (or UTF-16 or UTF-32, told apart by their bytes) first, then, if that
    fails, in the ``charset`` its content type names: logkv writes JSON under any other charset
    as ASCII in that charset (see :func:`encode_json_text`), and wrote it as UTF-8 before.
    """
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        error: Exception = exc
    if charset != UTF8:
        try:
            return json.loads(data.decode(charset))
        except (ValueError, RecursionError) as exc:
            error = exc
    raise ValueDecodeError(f"stored bytes are not valid JSON ({error})") from None


def value_size(data: bytes | None) -> int:
    """The size logkv reports for a stored value: its length in bytes (0 for None)."""
    return 0 if data is None else len(data)
