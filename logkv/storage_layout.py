"""How Crawlee's three storage kinds lay their content out as logkv keys, for every reader.

A storage directory holds one folder per kind, one logkv store per storage below it::

    key_value_stores/NAME/   a key-value store: any keys
    datasets/NAME/           a dataset: item i under the key f"{i:012d}" (see ITEM_KEY_DIGITS)
    request_queues/NAME/     a request queue: r/<h> and p/<order>/<h> (see below)

``META.json``'s ``storage`` field says which kind a store folder holds. The dataset and
request-queue clients and the operators' commands (``logkv stats``) read the layout here, so
that it has one home; this module imports neither Crawlee nor asyncio.

A request queue's keys: ``r/<h>`` holds the JSON of the request whose ``unique_key`` hashes to
``h`` (handled requests are rewritten compactly, with a ``handledAt`` field); ``p/<o>/<h>`` (an
empty value) marks that request pending, ``o`` being its place in the queue as 16 hexadecimal
digits. So pending requests are the ``p/`` keys, all requests are the ``r/`` keys, and handled
requests are the difference: counted from keys alone, no value read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from .key_range import prefix_end
from .layout import KVS_DIR
from .names import StorageType

if TYPE_CHECKING:
    from .engine import Engine

#: The folder of every dataset under a storage directory.
DATASETS_DIR: Final = "datasets"
#: The folder of every request queue under a storage directory.
REQUEST_QUEUES_DIR: Final = "request_queues"
#: The folder under a storage directory that holds the stores of each storage type.
STORAGE_DIRS: Final[dict[StorageType, str]] = {
    "key_value_store": KVS_DIR,
    "dataset": DATASETS_DIR,
    "request_queue": REQUEST_QUEUES_DIR,
}

#: Digits of a dataset item's key: room for 10**12 items, and key order is push order.
ITEM_KEY_DIGITS: Final = 12

#: The prefix of a request queue's request records (``r/<h>``).
REQUEST_PREFIX: Final = "r/"
#: The prefix of a request queue's pending marks (``p/<order>/<h>``).
PENDING_PREFIX: Final = "p/"
#: Hexadecimal digits of a pending mark's order.
ORDER_DIGITS: Final = 16


def item_key(index: int) -> str:
    """The key of dataset item ``index`` (0-based)."""
    return f"{index:0{ITEM_KEY_DIGITS}d}"


def request_key(request_hash: str) -> str:
    """The key of the record of the request whose unique key hashes to ``request_hash``."""
    return f"{REQUEST_PREFIX}{request_hash}"


def pending_key(order: int, request_hash: str) -> str:
    """The key that marks request ``request_hash`` pending at place ``order`` (0 or more,
    below ``16**ORDER_DIGITS``)."""
    return f"{PENDING_PREFIX}{order:0{ORDER_DIGITS}x}/{request_hash}"


def count_prefix(engine: Engine, prefix: str) -> int:
    """The number of keys of ``engine`` that start with ``prefix`` (two bisections of the
    sorted keys, :meth:`~logkv.Engine.count_keys`; no value is read)."""
    end = prefix_end(prefix)
    if end is None:
        return len(engine) if not prefix else len(engine) - engine.count_keys("", prefix)
    return engine.count_keys(prefix, end)


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """A request queue's counts, as Crawlee's metadata names them."""

    pending: int
    handled: int
    total: int


def queue_counts(engine: Engine) -> QueueCounts:
    """The counts of the request queue in ``engine`` (from its keys alone)."""
    pending = count_prefix(engine, PENDING_PREFIX)
    total = count_prefix(engine, REQUEST_PREFIX)
    return QueueCounts(pending=pending, handled=total - pending, total=total)
