"""The records of a logkv request queue: its keys' hashes and order, and the requests' JSON
(the key layout itself is :mod:`logkv.storage_layout`'s).

A request queue is one logkv store (``META.json`` storage ``request_queue``) holding two kinds
of keys, and nothing else:

``r/<h>``
    The request whose unique key hashes to ``h`` (:func:`request_hash`: the first 128 bits of
    the SHA-256 of the UTF-8 unique key, 32 lowercase hex digits). The value is
    the request as Crawlee serializes it (``Request.model_dump_json(by_alias=True)``), content
    type JSON. A pending request's JSON also holds ``"logkvOrder"``: the order of its ``p/``
    key, so the key can be found from the request. A handled request's record is rewritten in
    a compact form, :func:`handled_record`: its unique key, URL, method, retry count, no-retry
    flag, loaded URL and ``handledAt``, what deduplication and ``get_request`` need (user data,
    headers and payload are dropped, so compaction shrinks handled requests).
``p/<order>/<h>``
    A pending request (value empty). ``<order>`` is 16 lowercase hex digits, so key order is
    fetch order: a request added normally gets ``2**63 + n``, ``n`` counting up; one added to
    the forefront gets ``2**63 - n``, so the newest forefront request comes first (Crawlee's
    forefront is last in, first out).

In-progress locks are never written: they live in the memory of the process that fetched the
request, whose ``p/`` key stays until the request is handled (or moved by a reclaim).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

from crawlee import Request

from ..engine import Engine
from ..storage_layout import ORDER_DIGITS, PENDING_PREFIX, REQUEST_PREFIX

#: The content type of every ``r/`` record.
REQUEST_CONTENT_TYPE: Final = "application/json; charset=utf-8"
#: Hex digits of a request hash (128 bits).
HASH_LENGTH: Final = 32
#: The order of the first normal add; forefront orders count down from just below it.
MIDDLE: Final = 2**63
#: Where the hash starts in a pending key: ``p/`` + order + ``/``.
_HASH_AT: Final = len(PENDING_PREFIX) + ORDER_DIGITS + 1
#: The JSON field of a pending record that holds its order.
ORDER_FIELD: Final = "logkvOrder"
#: The fields a handled request keeps (Crawlee's field names).
HANDLED_FIELDS: Final = frozenset(
    {"unique_key", "url", "method", "retry_count", "no_retry", "loaded_url", "handled_at"}
)


class HashCollisionError(RuntimeError):
    """Two unique keys hash to the same record key: logkv refuses to merge them."""


def request_hash(unique_key: str) -> str:
    """The fixed-width hash of ``unique_key`` in the queue's keys (see the module docstring)."""
    return hashlib.sha256(unique_key.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_LENGTH]


def hash_of_pending(key: str) -> str:
    """The request hash in a pending key."""
    return key[_HASH_AT:]


def order_of_pending(key: str) -> int:
    """The order in a pending key."""
    return int(key[len(PENDING_PREFIX) : _HASH_AT - 1], 16)


def order_text(order: int) -> str:
    """``order`` as it stands in keys and in ``logkvOrder``: fixed-width hex."""
    return f"{order:0{ORDER_DIGITS}x}"


def pending_record(request: Request, order: int) -> bytes:
    """The ``r/`` value of a pending request: Crawlee's JSON of it with its order."""
    body = request.model_dump_json(by_alias=True)
    return f'{{"{ORDER_FIELD}":"{order_text(order)}",{body[1:]}'.encode()


def handled_record(request: Request) -> bytes:
    """The compact ``r/`` value of a handled request (see the module docstring)."""
    body: str = request.model_dump_json(by_alias=True, include=set(HANDLED_FIELDS))
    return body.encode()


def parse_record(value: bytes | None, unique_key: str | None, key: str) -> dict[str, Any]:
    """The JSON object of the record under ``key``; raises :class:`HashCollisionError` when it
    belongs to another unique key than ``unique_key`` (None: not checked) and ``ValueError``
    when it is not a request record."""
    try:
        body = json.loads(value or b"")
    except ValueError as exc:
        raise ValueError(f"the request record {key!r} is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("uniqueKey"), str):
        raise ValueError(f"the request record {key!r} has no unique key")
    if unique_key is not None:
        check_same_request(body["uniqueKey"], unique_key, key)
    return body


def check_same_request(stored: str, unique_key: str, key: str) -> None:
    """Raise :class:`HashCollisionError` when ``stored`` (the unique key under ``key``) is not
    ``unique_key``."""
    if stored != unique_key:
        raise HashCollisionError(
            f"the unique keys {unique_key!r} and {stored!r} have the same hash ({key!r}); logkv "
            "does not merge them. Give one of the requests another unique key"
        )


#: How a pending record starts (:func:`pending_record`): its order comes next.
_ORDER_START: Final = f'{{"{ORDER_FIELD}":"'.encode()
_ORDER_END: Final = len(_ORDER_START) + ORDER_DIGITS
#: What follows the order in a pending record, and starts a handled one.
_KEY_AFTER_ORDER: Final = b'","uniqueKey":'
_HANDLED_START: Final = b'{"uniqueKey":'


def record_order(value: bytes | None, unique_key: str, key: str) -> int | None:
    """The order of the pending request ``unique_key`` whose record (under ``key``) is
    ``value``; None when the record is a handled request's. Raises
    :class:`HashCollisionError` when the record is another unique key's.

    The records this module writes are recognised by their first bytes, without parsing
    them (what deduplication reads on every add of a known request); any other JSON is
    parsed."""
    data = value or b""
    quoted = json.dumps(unique_key, ensure_ascii=False).encode("utf-8", "surrogatepass") + b","
    if data.startswith(_HANDLED_START) and data.startswith(quoted, len(_HANDLED_START)):
        return None
    if (
        data.startswith(_ORDER_START)
        and data.startswith(_KEY_AFTER_ORDER, _ORDER_END)
        and data.startswith(quoted, _ORDER_END + len(_KEY_AFTER_ORDER))
    ):
        return int(data[len(_ORDER_START) : _ORDER_END], 16)
    return order_of_record(parse_record(value, unique_key, key))


def with_order(value: bytes | None, order: int) -> bytes:
    """The pending record ``value`` with its order replaced by ``order``."""
    data = value or b""
    if data.startswith(_ORDER_START):
        return data[: len(_ORDER_START)] + order_text(order).encode() + data[_ORDER_END:]
    body = json.loads(data)
    body[ORDER_FIELD] = order_text(order)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def order_of_record(body: dict[str, Any]) -> int | None:
    """The order of a pending request's record; None for a handled one."""
    order = body.get(ORDER_FIELD)
    return int(order, 16) if isinstance(order, str) else None


def request_of_record(value: bytes | None, key: str) -> Request:
    """The Crawlee request the record ``value`` (under ``key``) holds; ``ValueError`` when it
    holds none."""
    try:
        return Request.model_validate_json(value or b"")
    except ValueError as exc:
        raise ValueError(f"the request record {key!r} is not a request: {exc}") from None


def check_queue_keys(engine: Engine, pending: int, total: int) -> None:
    """Raise ``ValueError`` unless every key of the store is a pending key or a request record,
    no more pending keys than records, and the first of each looks like one (cheap checks: the
    counts and two lookups). A store written otherwise (a dataset or a key-value store) would
    be read as requests."""
    problem = None
    if pending + total != len(engine):
        problem = f"{len(engine) - pending - total} of its keys are not request queue keys"
    elif pending > total:
        problem = f"it has {pending} pending keys but only {total} requests"
    else:
        for prefix, width in (
            (PENDING_PREFIX, _HASH_AT + HASH_LENGTH),
            (REQUEST_PREFIX, len(REQUEST_PREFIX) + HASH_LENGTH),
        ):
            first = next(iter(engine.keys(prefix, 1)), None)
            if first is not None and first.startswith(prefix) and len(first) != width:
                problem = f"its key {first!r} is not a request queue key"
    if problem is not None:
        raise ValueError(f"{engine.path} is a logkv store but not a request queue: {problem}")


def first_pending(engine: Engine, limit: int) -> list[str]:
    """The first ``limit`` pending keys, in fetch order."""
    keys = list(engine.keys(PENDING_PREFIX, limit))
    return [key for key in keys if key.startswith(PENDING_PREFIX)]


def order_bounds(engine: Engine) -> tuple[int, int]:
    """``(front, back)``: the next forefront ``n`` and the next normal ``n`` for new pending
    keys, from the first and the last pending key (a bisection over orders, each step one index
    lookup)."""
    head = first_pending(engine, 1)
    if not head:
        return 1, 0
    lowest = order_of_pending(head[0])
    front = MIDDLE - lowest + 1 if lowest < MIDDLE else 1

    def any_from(order: int) -> bool:
        after = next(iter(engine.keys(PENDING_PREFIX + order_text(order), 1)), "")
        return after.startswith(PENDING_PREFIX) and order_of_pending(after) >= order

    if not any_from(MIDDLE):
        return front, 0
    low, high = MIDDLE, 2**64 - 1  # the last order present lies in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        if any_from(middle):
            low = middle
        else:
            high = middle - 1
    return front, low - MIDDLE + 1
