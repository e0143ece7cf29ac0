"""Stores written by format version 1 (``tests/fixtures/v1``) open, read, verify and compact.

The fixtures were written by logkv before version 2 (batches) existed: ``log`` is a log of four
segments with a synced mark, ``snapshot`` a snapshot with archived segments and log after it.
The expected states below repeat the writes that made them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from logkv import Engine
from logkv.format import FORMAT_VERSION, SEGMENT_HEADER
from logkv.history import state_at
from logkv.layout import segment_name
from logkv.verify import verify

FIXTURES = Path(__file__).parent / "fixtures" / "v1"


def _log_state() -> dict[str, tuple[bytes | None, str | None]]:
    state: dict[str, tuple[bytes | None, str | None]] = {}
    for i in range(60):
        state[f"k{i:03d}"] = (bytes([i]) * (i * 7), "text/plain" if i % 3 else None)
    state["none"] = (None, None)
    for i in range(0, 60, 5):
        del state[f"k{i:03d}"]
    state["k001"] = (b"rewritten", "application/json")
    return state


def _snapshot_state() -> dict[str, tuple[bytes | None, str | None]]:
    state: dict[str, tuple[bytes | None, str | None]] = {
        f"s{i:03d}": (b"v" * (i * 11), None) for i in range(40)
    }
    del state["s003"]
    state.update({f"after{i}": (b"a" * i, "text/plain") for i in range(10)})
    del state["s004"]
    return state


EXPECTED = {"log": _log_state, "snapshot": _snapshot_state}


def read_state(engine: Engine) -> dict[str, tuple[bytes | None, str | None]]:
    found: dict[str, tuple[bytes | None, str | None]] = {}
    for key in list(engine.keys()):
        value = engine.get_with_type(key)
        assert value is not None
        found[key] = value
    return found


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_version_1_store_opens_reads_verifies_and_compacts(tmp_path: Path, name: str) -> None:
    check_an_older_store(tmp_path / name, FIXTURES / name, EXPECTED[name](), 1)


def check_an_older_store(
    store: Path, fixture: Path, expected: dict[str, tuple[bytes | None, str | None]], version: int
) -> None:
    """The store ``fixture`` of format ``version`` (holding ``expected``), copied to ``store``,
    verifies, opens read-only and writable, takes new records in new segments of the current
    version (its own segments unchanged), and compacts into a current snapshot."""
    shutil.copytree(fixture, store)
    assert verify(store).ok
    with Engine.open(store, readonly=True) as reader:
        assert read_state(reader) == expected and reader.report.clean
    with Engine.open(store, segment_size=4096) as engine:
        assert read_state(engine) == expected and engine.report.clean
        engine.set_many([("new", b"batch", None), ("k001", None, None)])
        expected.update({"new": (b"batch", None), "k001": (None, None)})
        assert read_state(engine) == expected
        last = engine.last_seq
    # The old segments stay as they were; the writer starts a segment of the current version
    # (an older logkv refuses it rather than misreading its frames).
    versions = [
        SEGMENT_HEADER.unpack(path.read_bytes()[:16])[1] for path in sorted(store.glob("*.seg"))
    ]
    assert versions[-1] == FORMAT_VERSION and set(versions[:-1]) == {version}
    for path in fixture.glob("*.seg"):
        assert (store / path.name).read_bytes() == path.read_bytes()
    assert verify(store).ok
    with Engine.open(store, segment_size=4096) as engine:
        assert read_state(engine) == expected and engine.last_seq == last
        engine.compact()
        engine.set("later", b"x")
        expected["later"] = (b"x", None)
    assert verify(store).ok
    with Engine.open(store) as engine:
        assert read_state(engine) == expected and engine.report.clean
    snapshots = sorted(store.glob("*.snap"))
    assert SEGMENT_HEADER.unpack(snapshots[-1].read_bytes()[:16])[1] == FORMAT_VERSION
    last_segment = sorted(store.glob("*.seg"))[-1]
    assert SEGMENT_HEADER.unpack(last_segment.read_bytes()[:16])[1] == FORMAT_VERSION
    assert last_segment.name != segment_name(1)


@pytest.mark.parametrize(("version", "size"), [(1, 11), (2, 13)])
def test_history_reads_an_older_archive(tmp_path: Path, version: int, size: int) -> None:
    # Both fixtures' snapshot stores begin with sets of s000, s001, ... of size * i bytes.
    store = tmp_path / "snapshot"
    shutil.copytree(FIXTURES.parent / f"v{version}" / "snapshot", store)
    state = state_at(store, until_seq=5)
    assert sorted(state) == [f"s{i:03d}" for i in range(5)]
    assert state["s004"].value == b"v" * size * 4
