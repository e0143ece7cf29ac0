"""Streamed values on the async side: any source of bytes as an async iterator of pieces, and
the engine's synchronous streaming (:meth:`Engine.set_stream <logkv.engine.Engine.set_stream>`,
:meth:`Engine.open_value <logkv.engine.Engine.open_value>`) driven from an event loop.

Every blocking step (a piece written to the value file, the commit, a chunk read back, a read
of a synchronous source) runs in a worker thread, so the loop stays free however big the value.
"""

from __future__ import annotations

import asyncio
import inspect
import io
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from ..engine import Engine
from ..group_commit import Commit
from ..values import CHUNK_SIZE, Piece, ValueStream, iter_source

_to_thread = asyncio.to_thread

#: What :meth:`KeyValueStore.set_value_stream <logkv.KeyValueStore.set_value_stream>` streams a
#: value from: an async iterable of bytes, an async binary file (``aiofiles``: a coroutine
#: ``read``), a binary file object, or an iterable of bytes.
StreamSource = Any


async def async_pieces(source: StreamSource) -> AsyncIterator[Piece]:
    """The pieces of ``source`` (see :data:`StreamSource`); synchronous reads run in a worker
    thread. A source of another kind raises ``TypeError``."""
    if isinstance(source, AsyncIterable) and not callable(getattr(source, "read", None)):
        async for piece in source:
            yield _checked(piece)
        return
    read = getattr(source, "read", None)
    if callable(read) and inspect.iscoroutinefunction(read):
        while piece := await read(CHUNK_SIZE):
            yield _checked(piece)
        return
    pieces = iter_source(source)  # a file object or an iterable of bytes (TypeError otherwise)
    while (piece := await _to_thread(next, pieces, None)) is not None:
        yield piece


def is_stream_source(value: object) -> bool:
    """Whether ``value``, given to a ``set_value`` as Crawlee's API allows any value, is a
    stream to store as a streamed value rather than a value to serialise: an async iterable
    (not a str or bytes), an async binary file (a coroutine ``read``), or a binary file object
    (``io.BufferedIOBase`` or ``io.RawIOBase``)."""
    if isinstance(value, io.BufferedIOBase | io.RawIOBase | AsyncIterable):
        return True
    read = getattr(value, "read", None)
    return callable(read) and inspect.iscoroutinefunction(read)


def _checked(piece: object) -> Piece:
    if not isinstance(piece, bytes | bytearray | memoryview):
        raise TypeError(f"a streamed value's pieces are bytes, got {type(piece).__name__}")
    return piece


async def write_stream(
    engine: Engine, key: str, pieces: AsyncIterator[Piece], content_type: str | None
) -> Commit:
    """Write the value of ``pieces`` into a value file and commit it as ``key``'s value; the
    commit to await (durable at the store's level when it is done). Nothing is visible if
    the pieces raise or the task is cancelled before the commit: the file is removed."""
    writer = await _to_thread(engine.value_writer)
    try:
        async for piece in pieces:
            await _to_thread(writer.write, piece)
        _, commit = await _to_thread(engine.commit_value, key, writer, content_type)
    except BaseException:
        await asyncio.shield(_to_thread(writer.abort))
        raise
    return commit


async def read_stream(engine: Engine, key: str) -> AsyncIterator[bytes]:
    """The value of ``key`` a chunk at a time (nothing for an absent key or a stored None),
    each chunk read and checked in a worker thread."""
    stream = await _to_thread(engine.open_value, key)
    if stream is None:
        return
    try:
        while (chunk := await _to_thread(_next_chunk, stream)) is not None:
            yield chunk
    finally:
        stream.close()


def _next_chunk(stream: ValueStream) -> bytes | None:
    return next(stream, None)


__all__ = ["StreamSource", "async_pieces", "is_stream_source", "read_stream", "write_stream"]
