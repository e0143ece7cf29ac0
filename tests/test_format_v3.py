"""Format version 3: CRC-32C frames, a BLAKE3 chain, and every check of a frame in one place.

The worked example of docs/FORMAT.md section 3 byte for byte; the large-value encoder against
packing the whole body; flipped bits and cut bytes in frames of large values (the path a point
read takes copies the value and checks the CRC over the copy); and a version 3 snapshot that
holds version 2 frames, each checked by its own kind.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import zlib
from pathlib import Path

import blake3
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_recovery import flip

from logkv import CorruptionError, Engine, KeyValueStore
from logkv import format as format_module
from logkv.configuration import Configuration
from logkv.engine import LARGE_VALUE
from logkv.format import (
    FRAME_HEADER_SIZE,
    FRAME_KINDS,
    GENESIS_CHAIN,
    RECORD_MAGIC,
    RECORD_MAGIC_V2,
    SEGMENT_HEADER_SIZE,
    BadFrame,
    Op,
    chain_of,
    check_frame,
    check_value_read,
    checked_value,
    checksum,
    encode_batch,
    encode_record,
    encode_record_start,
    read_frame,
)
from logkv.layout import segment_name
from logkv.verify import verify

FIXTURES = Path(__file__).parent / "fixtures" / "v2"
EXAMPLE_SET = bytes.fromhex(
    "894c4b33b3534ec92800000063681a7539523b7d4ad3bd181da0b3e69601cf00"
    "060a24181e400001a6706167652f31a9746578742f68746d6cc4093c703e6869"
    "3c2f703e"
)
EXAMPLE_DELETE = bytes.fromhex(
    "894c4b3385f69a9f150000004ffea02220a6245f19a934dd0c8cdd009602cf00"
    "060a24181e400002a6706167652f31c0c0"
)


def test_the_worked_example_of_the_format_document() -> None:
    first = encode_record(1, 1_700_000_000_000_000, Op.SET, "page/1", "text/html", b"<p>hi</p>")
    assert first == EXAMPLE_SET
    body = first[FRAME_HEADER_SIZE:]
    assert first[12:28] == blake3.blake3(GENESIS_CHAIN + body).digest(16)
    assert int.from_bytes(first[4:8], "little") == checksum(first[8:]) == 0xC94E53B3
    second = encode_record(
        2, 1_700_000_000_000_000, Op.DELETE, "page/1", None, None, chain_of(first, 0)
    )
    assert second == EXAMPLE_DELETE
    assert checksum(b"123456789") == 0xE3069283  # CRC-32C's check value


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(
    size=st.sampled_from([4097, 4200, 65535, 65536, 70_000, 1 << 20]),
    key=st.text(min_size=1, max_size=20),
    content_type=st.none() | st.text(max_size=30),
    seq=st.integers(1, 2**63),
    op=st.sampled_from([Op.SET, 0x21, 0x19, 0x09]),
)
def test_a_large_value_is_framed_as_its_packed_body_would_be(
    size: int, key: str, content_type: str | None, seq: int, op: int
) -> None:
    # Large values are framed without packing the value into the body (one copy less): the
    # bytes must be exactly those of packing the whole six-element array.
    value = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    chain = bytes(range(16))
    frame = encode_record(seq, 7, op, key, content_type, value, chain)
    body = msgpack.packb((seq, 7, op, key, content_type, value), use_bin_type=True)
    assert frame[FRAME_HEADER_SIZE:] == body
    assert frame[12:28] == blake3.blake3(chain + body).digest(16)
    assert int.from_bytes(frame[4:8], "little") == checksum(frame[8:])
    (batched,) = encode_batch(seq, 7, [(op, key, content_type, value)], chain)
    assert batched == frame
    # What a large write hands to pwritev: the bytes before the value, then the value.
    assert encode_record_start(seq, 7, op, key, content_type, value, chain) + value == frame
    assert read_frame(frame, 0, len(frame))[0] == len(frame)


def test_each_frame_kind_is_checked_by_its_own_checksum() -> None:
    frame = encode_record(1, 0, Op.SET, "k", None, b"v" * 5000)
    assert check_frame(frame, 0, len(frame)) is None
    # The same bytes under the version 2 magic fail: CRC-32 is not CRC-32C.
    relabelled = RECORD_MAGIC_V2 + frame[4:]
    assert check_frame(relabelled, 0, len(frame)) == "checksum mismatch"
    with pytest.raises(BadFrame, match="checksum mismatch"):
        read_frame(relabelled, 0, len(frame))
    # A version 2 frame (CRC-32, SHA-256 chain) is checked as such.
    body = frame[FRAME_HEADER_SIZE:]
    tail = len(body).to_bytes(4, "little") + hashlib.sha256(GENESIS_CHAIN + body).digest()[:16]
    old = RECORD_MAGIC_V2 + zlib.crc32(tail + body).to_bytes(4, "little") + tail + body
    assert check_frame(old, 0, len(old)) is None
    assert FRAME_KINDS[RECORD_MAGIC_V2].chain(GENESIS_CHAIN, body) == old[12:28]
    assert FRAME_KINDS[RECORD_MAGIC].chain(GENESIS_CHAIN, body) == frame[12:28]


@pytest.mark.parametrize("size", [-1, 0, 10, 4000, 5000, 70_000])
def test_a_point_read_checks_every_byte_it_returns(size: int) -> None:
    value = None if size < 0 else bytes(i % 251 for i in range(size))
    frame = b"pad" + encode_record(3, 0, Op.SET, "key", "t/t", value)
    head = len(frame) - 3 - max(size, 0)
    assert checked_value(frame, 3, head, size) == value
    positions = range(3, len(frame)) if len(frame) < 600 else range(3, len(frame), 401)
    for position in positions:
        for bit in (0, 7):
            with pytest.raises(BadFrame):
                checked_value(flip(frame, position, bit), 3, head, size)


@pytest.mark.parametrize("size", [LARGE_VALUE, 100_000])
def test_a_large_read_in_two_parts_checks_every_byte_it_returns(size: int) -> None:
    # Values of LARGE_VALUE bytes or more are read with pread: the bytes before the value and
    # the value itself, each a fresh object, checked together.
    value = bytes(i % 251 for i in range(size))
    frame = encode_record(3, 0, Op.SET, "key", "t/t", value)
    head = len(frame) - size
    check_value_read(frame[:head], frame[head:], size)
    positions = [*range(head + 64), *range(head, len(frame), 997)]
    for position in [*positions, len(frame) - 1]:
        damaged = flip(frame, position, position % 8)
        with pytest.raises(BadFrame):
            check_value_read(damaged[:head], damaged[head:], size)
    for short in (0, 1, size // 2, size - 1):  # a file that ends inside the value
        with pytest.raises(BadFrame, match="cut short"):
            check_value_read(frame[:head], frame[head : head + short], size)
    with pytest.raises(BadFrame, match="cut short"):
        check_value_read(frame[: FRAME_HEADER_SIZE - 1], frame[head:], size)
    with pytest.raises(BadFrame, match="does not match the index"):
        check_value_read(frame[:head], frame[head:] + b"x", size + 1)


def _large_store(path: Path, size: int = 20_000) -> tuple[int, int, int, bytes]:
    """A store whose middle record holds a value of ``size`` bytes (``i % 253``); that
    record's offset, head and length, and the segment's bytes."""
    value = bytes(i % 253 for i in range(size))
    with Engine.open(path) as engine:
        engine.set("before", b"b")
        engine.set("large", value, "application/octet-stream")
        engine.set("after", b"a")
        entry = engine.entry("large")
    assert entry is not None
    _, offset, head, size, _ = entry
    return offset, head, head + size, (path / segment_name(1)).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("size", [20_000, 3 * LARGE_VALUE], ids=["mapped", "pread"])
def test_a_flipped_bit_in_a_large_frame_fails_its_get_and_the_open(
    tmp_path: Path, size: int
) -> None:
    offset, head, length, data = _large_store(tmp_path / "original", size)
    store = tmp_path / "store"
    shutil.copytree(tmp_path / "original", store)
    segment = store / segment_name(1)
    header_and_head = range(offset + 4, offset + head)  # all but the magic (not a frame then)
    sampled = range(offset + head, offset + length, 997 * (size // 20_000))
    for position in [*header_and_head, *sampled, offset + length - 1]:
        damaged = flip(data, position, position % 8)
        segment.write_bytes(damaged)
        with pytest.raises(CorruptionError) as caught:
            Engine.open(store, readonly=True).close()
        assert caught.value.offset == offset, position
        if position >= offset + FRAME_HEADER_SIZE:  # the header still says where the frame ends
            with Engine.open(store, readonly=True, recovery="salvage") as reader:
                assert "large" not in reader and reader.get("after") == b"a"
        verified = verify(store)
        assert not verified.ok and str(offset) in " ".join(verified.problems or [])


@pytest.mark.parametrize("size", [20_000, LARGE_VALUE, 1 << 20], ids=["mapped", "pread", "1MiB"])
def test_a_large_value_damaged_after_the_open_fails_its_get(tmp_path: Path, size: int) -> None:
    offset, head, length, data = _large_store(tmp_path / "store", size)
    segment = tmp_path / "store" / segment_name(1)
    middle = offset + head + (length - head) // 2
    positions = (offset + 4, offset + 8, offset + 12, offset + head - 1, offset + head, middle)
    with Engine.open(tmp_path / "store", readonly=True) as reader:
        for position in (*positions, offset + length - 1):
            segment.write_bytes(flip(data, position, 3))
            with pytest.raises(CorruptionError) as caught:
                reader.get("large")
            assert caught.value.offset == offset
            with pytest.raises(CorruptionError) as caught:  # the store clients' read
                reader.get_small("large", size)
            assert caught.value.offset == offset
            segment.write_bytes(data)
            assert reader.get("large") == bytes(i % 253 for i in range(size))
            assert reader.get_small("large", size) == (
                reader.get("large"),
                "application/octet-stream",
            )
        # A file cut inside the value, read with pread (a mapped file never shrinks).
        if size >= LARGE_VALUE:
            segment.write_bytes(data[: offset + length - 1])
            with pytest.raises(CorruptionError, match="cut short"):
                reader.get("large")


async def test_a_flipped_bit_in_a_1_mib_value_fails_the_stores_get(tmp_path: Path) -> None:
    # Read on the event loop (not offloaded: at most the offload threshold), checked all the same.
    kvs = await KeyValueStore.open(
        name="big", configuration=Configuration(storage_dir=str(tmp_path), purge_on_start=False)
    )
    value = bytes(i % 253 for i in range(1 << 20))
    await kvs.set_value("big", value)
    engine = kvs._client.engine  # type: ignore[union-attr]
    entry = engine.entry("big")
    assert entry is not None
    segment = engine.path / segment_name(entry[0])
    data = segment.read_bytes()
    segment.write_bytes(flip(data, entry[1] + entry[2] + 123_456, 6))
    with pytest.raises(CorruptionError):
        await kvs.get_value("big")
    segment.write_bytes(data)
    assert await kvs.get_value("big") == value
    await kvs.close()


@pytest.mark.slow
@pytest.mark.parametrize("size", [30_000, 2 * LARGE_VALUE], ids=["mapped", "pread"])
def test_a_large_last_record_cut_anywhere_is_a_torn_tail(tmp_path: Path, size: int) -> None:
    value = bytes(i % 241 for i in range(size))
    original = tmp_path / "original"
    with Engine.open(original) as engine:
        engine.set("small", b"s")
        end = (original / segment_name(1)).stat().st_size
        engine.set("large", value)
    data = (original / segment_name(1)).read_bytes()
    step = 1201 * (size // 30_000)
    cuts = [*range(end + 1, end + 64), *range(end + 64, len(data), step), len(data) - 1]
    for length in cuts:
        store = tmp_path / f"cut-{length}"
        store.mkdir()
        (store / segment_name(1)).write_bytes(data[:length])
        with Engine.open(store) as engine:
            torn = engine.report.torn_tail
            assert torn is not None and (torn.start, torn.end) == (end, length)
            assert list(engine.keys()) == ["small"]
        assert (store / segment_name(1)).stat().st_size == end
        shutil.rmtree(store)


def test_a_version_2_frame_in_a_version_3_snapshot_is_checked_as_version_2(
    tmp_path: Path,
) -> None:
    store = tmp_path / "log"
    shutil.copytree(FIXTURES / "log", store)
    with Engine.open(store) as engine:
        engine.set("new", b"n" * 5000)
        engine.compact()
        entry = engine.entry("big")
    assert entry is not None
    number, offset, head, size, _ = entry
    assert number < 0  # in the snapshot
    (snapshot,) = store.glob("*.snap")
    data = snapshot.read_bytes()
    assert data[offset : offset + 4] == RECORD_MAGIC_V2
    snapshot.write_bytes(flip(data, offset + head + size // 2, 5))
    with Engine.open(store, readonly=True) as reader:
        assert reader.get("new") == b"n" * 5000
        with pytest.raises(CorruptionError) as caught:
            reader.get("big")
        assert caught.value.path == snapshot and caught.value.offset == offset
    report = verify(store)
    assert not report.ok and any(str(offset) in p for p in report.problems or [])


def test_a_segment_header_of_version_3_is_read_and_an_unknown_version_refused(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    with Engine.open(store) as engine:
        engine.set("k", b"v")
    segment = store / segment_name(1)
    data = segment.read_bytes()
    assert int.from_bytes(data[8:12], "little") == 3
    segment.write_bytes(data[:8] + (4).to_bytes(4, "little") + data[12:])
    with pytest.raises(CorruptionError, match=r"version 4 is not supported .*1, 2, 3"):
        Engine.open(store, readonly=True)
    assert SEGMENT_HEADER_SIZE == 16


def test_chain_values_of_small_records_are_the_same_in_every_thread() -> None:
    """Each thread chains small records with a BLAKE3 hasher of its own, reset before each use:
    records framed by many threads at once, and after a use that failed half-way, carry the
    chain value a fresh hash gives, and the worked example still comes out byte for byte."""
    bodies = [bytes([i]) * (i * 37 % 4096) for i in range(64)]

    def expected(prev: bytes, body: bytes) -> bytes:
        return blake3.blake3(prev + body).digest(16)

    failures: list[str] = []

    def frame_all(start: bytes) -> None:
        prev = start
        for body in bodies:
            frame = encode_record(1, 2, Op.SET, "k", None, body, prev)
            if chain_of(frame, 0) != expected(prev, msgpack.packb((1, 2, 1, "k", None, body))):
                failures.append(f"body of {len(body)} bytes")
            prev = chain_of(frame, 0)

    threads = [threading.Thread(target=frame_all, args=(bytes([n]) * 16,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    format_module._hashers.blake3.update(b"left over by a use that failed half-way")
    assert encode_record(1, 1700000000000000, 1, "page/1", "text/html", b"<p>hi</p>") == (
        EXAMPLE_SET
    )
