"""A stored value as the console shows it: which view its content type gets, its text (capped),
and a JSON value as a tree of collapsible nodes (capped).

Everything here returns plain data; the templates escape it. Nothing here decides what may
run: HTML and SVG are shown as source text here and previewed only through the raw endpoint
(:mod:`logkv.web.security`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ..content import base_type, is_json_type, public_content_type, readable_charset

#: Bytes of a value shown as text in a page (the rest: download it).
PREVIEW_BYTES: Final = 1 << 20
#: Nodes of a JSON tree rendered in a page.
TREE_NODES: Final = 5000
#: Depth of a JSON tree rendered in a page.
TREE_DEPTH: Final = 64
#: Image types shown inline (through the raw endpoint, as ``<img>``).
IMAGE_TYPES: Final = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"}
)
#: Types previewed in a sandboxed frame besides their source.
PAGE_TYPES: Final = frozenset({"text/html", "application/xhtml+xml", "image/svg+xml"})


def view_kind(content_type: str | None, value: bytes | None) -> str:
    """How a value is shown: ``none`` (a stored None), ``json``, ``image``, ``page`` (HTML or
    SVG: source, and a sandboxed preview), ``text`` or ``binary``."""
    if value is None:
        return "none"
    shown = public_content_type(content_type)
    main = base_type(shown)
    if is_json_type(shown):
        return "json"
    if main in IMAGE_TYPES:
        return "image"
    if main in PAGE_TYPES:
        return "page"
    if (
        main.startswith("text/")
        or main.endswith("+xml")
        or main in ("application/xml", "application/javascript")
    ):
        return "text"
    return "binary"


def value_text(
    value: bytes | None, content_type: str | None, limit: int = PREVIEW_BYTES
) -> tuple[str | None, bool]:
    """``(text, truncated)``: the first ``limit`` bytes of ``value`` decoded in the charset
    its content type names (UTF-8 when none; bad bytes replaced), or None for a stored None
    and for values that are not text (a NUL byte in the first 8 KiB)."""
    if value is None:
        return None, False
    head = value[:limit]
    if b"\x00" in head[:8192]:
        return None, False
    charset = readable_charset(public_content_type(content_type)) or "utf-8"
    text = bytes(head).decode(charset, errors="replace")
    return text, len(value) > limit


def pretty_json(value: bytes) -> str | None:
    """``value`` as indented JSON with sorted keys (None when it is not JSON)."""
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return orjson.dumps(parsed, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


@dataclass
class Node:
    """One node of a JSON tree: a scalar (``text``: its JSON) or a container (``children``:
    label and node pairs; ``more``: children left out by the cap)."""

    kind: str  # "object", "array", "scalar" or "cut" (left out: too deep)
    text: str = ""
    children: list[tuple[str, Node]] = field(default_factory=list)
    more: int = 0
    size: int = 0  # members of a container


def json_tree(value: bytes, nodes: int = TREE_NODES) -> Node | None:
    """The parsed JSON ``value`` as a tree of at most ``nodes`` nodes and :data:`TREE_DEPTH`
    levels (None when it is not JSON)."""
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    budget = [nodes]
    return _node(parsed, 0, budget)


def _node(value: Any, depth: int, budget: list[int]) -> Node:
    budget[0] -= 1
    if isinstance(value, dict | list):
        if depth >= TREE_DEPTH:
            return Node("cut", "…")
        pairs = value.items() if isinstance(value, dict) else enumerate(value)
        node = Node("object" if isinstance(value, dict) else "array", size=len(value))
        for label, child in pairs:
            if budget[0] <= 0:
                node.more = len(value) - len(node.children)
                break
            node.children.append((str(label), _node(child, depth + 1, budget)))
        return node
    return Node("scalar", orjson.dumps(value).decode())
