"""Values as Crawlee's file-system storage serialises them, kept as logkv records.

Crawlee's key-value store hands the storage client the Python value and an optional content
type; the client serialises. This module applies Crawlee's rules so that a store behaves the
same whichever of the two clients holds it:

* a ``None`` value is a record of content type :data:`NONE_CONTENT_TYPE` and no bytes (logkv
  stores it as a stored None, distinct from a missing key);
* with no content type given, ``bytes``/``bytearray`` are ``application/octet-stream``, ``dict``
  and ``list`` are ``application/json; charset=utf-8``, ``str``, ``int``, ``float`` and ``bool``
  are ``text/plain; charset=utf-8``, anything else ``application/octet-stream``;
* under a content type containing ``application/json`` the value is written as JSON (objects
  JSON cannot represent are written as their ``str``); otherwise a ``str`` is written as text,
  bytes as they are, and anything else as the text of its ``str``;
* reading back: JSON types are parsed, ``text/*`` is decoded as text, the rest is ``bytes``
  (records that logkv's own client wrote are decoded by its rules, see :mod:`logkv.content`).

So ``set_value("n", 5)`` reads back as the string ``"5"``, exactly as in Crawlee's file-system
storage. JSON is written compactly (Crawlee's file-system client indents it), so record sizes
are smaller than there.

Two rules differ from Crawlee's, and are logkv's own (:mod:`logkv.content`), so that a store
reads the same through either client:

* text is written and read in the charset the content type names (UTF-8 when it names none),
  where Crawlee always uses UTF-8 and so mislabels the bytes it stores under any other charset.
  JSON under another charset is written as ASCII in it. A ``charset`` that is unknown or not a
  text encoding (``base64``, ``rot13``, ...) raises ``ValueError`` and nothing is written; a
  record stored under one reads as ``bytes``;
* lists, tuples and dicts nested deeper than ``logkv.content.MAX_NESTING_DEPTH`` (128) levels
  raise ``TypeError`` (Crawlee fails at the interpreter's recursion limit), so that every value
  stored reads back from any reasonable stack depth.
"""

from __future__ import annotations

import json
from typing import Any, Final

from ..content import (
    MARKER_PARAM,
    charset_of,
    check_nesting,
    decode,
    decode_json,
    encode_json_text,
    encode_text,
    public_content_type,
    readable_charset,
)

#: The content type Crawlee gives a record whose value is ``None``.
NONE_CONTENT_TYPE: Final = "application/x-none"
JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"
TEXT_CONTENT_TYPE: Final = "text/plain; charset=utf-8"
BINARY_CONTENT_TYPE: Final = "application/octet-stream"


def infer_content_type(value: object) -> str:
    """The content type Crawlee infers for ``value`` when none is given."""
    if isinstance(value, bytes | bytearray):
        return BINARY_CONTENT_TYPE
    if isinstance(value, dict | list):
        return JSON_CONTENT_TYPE
    if isinstance(value, str | int | float | bool):
        return TEXT_CONTENT_TYPE
    return BINARY_CONTENT_TYPE


def serialize(value: object, content_type: str | None) -> tuple[bytes | None, str]:
    """``(bytes to store or None for a None value, content type to store)``.

    Raises ``ValueError`` for a charset that is unknown or not a text encoding, and
    ``TypeError`` for text that the charset cannot encode and for nesting too deep.
    """
    if value is None:
        return None, NONE_CONTENT_TYPE
    if content_type is None:
        content_type = infer_content_type(value)
    elif not isinstance(content_type, str):
        raise TypeError(f"content_type must be a str, got {type(content_type).__name__}")
    charset = charset_of(content_type)
    if "application/json" in content_type:
        check_nesting(value)
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
        return encode_json_text(text, charset, content_type), content_type
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), content_type
    text = value if isinstance(value, str) else str(value)
    return encode_text(text, charset, content_type), content_type


def deserialize(data: bytes | None, content_type: str | None) -> Any:
    """The value Crawlee reads back from stored ``data`` under ``content_type``.

    Raises ``ValueError`` when the bytes do not parse under their content type.
    """
    if data is None or content_type == NONE_CONTENT_TYPE:
        return None
    if content_type is None:
        return data
    if MARKER_PARAM in content_type:  # written by logkv's own client: its rules apply
        return decode(data, content_type)
    charset = readable_charset(content_type)
    if charset is None:  # not written by logkv: an unknown or non-text charset
        return data
    if "application/json" in content_type:
        return decode_json(data, charset)
    if content_type.startswith("text/"):
        return data.decode(charset)
    return data


def shown_content_type(stored: str | None) -> str:
    """The content type reported for a stored record: as stored, without the type marker that
    logkv's own client adds to some records (records written straight through the engine may
    have no content type: they are binary)."""
    return public_content_type(stored)
