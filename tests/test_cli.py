"""The ``logkv`` and ``logkv-compact`` commands, run as their users run them: as subprocesses."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Arg, assert_one_error, run_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logkv import Engine, history
from logkv.cli import ExitCode, audit
from logkv.cli import compact as compact_cli
from logkv.cli import dump as dump_module
from logkv.cli import main as logkv_cli
from logkv.format import FRAME_HEADER_SIZE, checksum
from logkv.layout import TRASH_DIR

BINARY = bytes(range(256)) * 4


def logkv(*args: Arg, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``logkv ARGS`` as a process; its output as text."""
    return run_command(*args, module="logkv.cli.main", text=True, env=env)


def compact(*args: Arg, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``logkv-compact ARGS`` as a process; its output as text."""
    return run_command(*args, module="logkv.cli.compact", text=True, env=env)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def assert_one_clean_error(done: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    """An expected error: the exit code, one line on stderr that says ``words``, no traceback."""
    assert done.returncode == code, done.stdout + done.stderr
    assert_one_error(done.stderr, words)


@dataclass
class Model:
    """What a test wrote: every record (seq, key, value or None for a delete, content type)."""

    records: list[tuple[int, str, bytes | None, str | None]] = field(default_factory=list)

    def state(self, until_seq: int | None = None) -> dict[str, tuple[bytes | None, str | None]]:
        state: dict[str, tuple[bytes | None, str | None]] = {}
        for seq, key, value, content_type in self.records:
            if until_seq is not None and seq > until_seq:
                break
            if value is None and content_type == "<delete>":
                state.pop(key, None)
            else:
                state[key] = (value, content_type)
        return state


def fill(store: Path, rounds: int = 6, model: Model | None = None) -> Model:
    """Overwrites, a delete, binary data and a stored None; small segments so the log rotates."""
    model = model if model is not None else Model()
    with Engine.open(store, segment_size=4096) as engine:

        def put(key: str, value: bytes | None, content_type: str | None) -> None:
            model.records.append((engine.set(key, value, content_type), key, value, content_type))

        put("text", "grüße".encode(), "text/plain; charset=utf-8")
        put("binary", BINARY, "application/octet-stream")
        put("nothing", None, "application/json")
        for r in range(rounds):
            for i in range(8):
                put(f"page/{i}", f"<p>round {r} page {i}</p>".encode() * 20, "text/html")
        engine.delete("page/3")
        model.records.append((engine.last_seq, "page/3", None, "<delete>"))
        put("text", b"second version", "text/plain")
    return model


def read_all(store: Path) -> dict[str, tuple[bytes | None, str | None]]:
    with Engine.open(store, readonly=True) as engine:
        found = {}
        for key in engine.keys(None):
            got = engine.get_with_type(key)
            assert got is not None
            found[key] = got
        return found


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def log_files_of(folder: Path) -> set[str]:
    """The names of ``folder``'s files but hint files (``*.hint``, ``*.hint.tmp``: derived data
    that a running writer adds in the background)."""
    return {name for name in files_of(folder) if ".hint" not in name}


@contextmanager
def writer_in_child(store: Path) -> Iterator[int]:
    """A child process that holds ``store``'s writer lock until the block ends; yields its pid."""
    code = (
        "import sys\nfrom logkv import Engine\n"
        "engine = Engine.open(sys.argv[1])\nprint('ready', flush=True)\nsys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(store)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        yield child.pid
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=60)


# ---------------------------------------------------------------------------------- stats


@pytest.mark.slow
def test_stats_as_a_table_and_as_json(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model = fill(store)
    with Engine.open(store, retention="archive") as engine:
        engine.compact()
        engine.set("after", b"compaction")
        expected = engine.stats()
    done = logkv("stats", store, "--json")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["keys"] == len(model.state()) + 1 == expected.keys
    assert figures["last_seq"] == expected.last_seq == len(model.records) + 1
    assert figures["live_bytes"] == expected.live_bytes
    assert figures["dead_bytes"] == expected.dead_bytes
    assert figures["disk_bytes"] == expected.disk_bytes
    assert figures["snapshot_covers"] == expected.snapshot_covers > 0
    assert figures["segments"] == expected.segments == 1
    assert figures["archive_segments"] == expected.snapshot_covers
    archive = store / "archive"
    assert figures["archive_bytes"] == sum(p.stat().st_size for p in archive.iterdir())
    assert figures["history_start"] == 1

    table = logkv("stats", store)
    assert table.returncode == 0, table.stderr
    rows = dict(line.split("  ", 1) for line in table.stdout.splitlines())
    assert rows["keys (live records)"].strip() == str(expected.keys)
    assert rows["last seq"].strip() == str(expected.last_seq)
    assert rows["snapshot covers"].strip() == f"segments 1..{expected.snapshot_covers}"
    assert rows["history from"].strip() == "seq 1 (complete)"


def test_stats_works_beside_a_live_writer(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with Engine.open(store) as writer:
        writer.set("a", b"1")
        writer.set("b", b"2")
        done = logkv("stats", store, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["keys"] == 2


@pytest.mark.slow
def test_missing_store_and_damaged_store_give_one_clear_line(tmp_path: Path) -> None:
    assert_one_clean_error(logkv("stats", tmp_path / "nope"), 2, "does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_clean_error(logkv("verify", tmp_path / "empty"), 2, "not a logkv store")
    store = tmp_path / "store"
    fill(store)
    first = sorted(store.glob("*.seg"))[0]
    data = bytearray(first.read_bytes())
    data[200] ^= 0xFF  # inside an early record of a segment that is not the last: corruption
    first.write_bytes(bytes(data))
    assert_one_clean_error(logkv("stats", store), 1, "corrupt data")


# ---------------------------------------------------------------------------------- verify


def test_verify_passes_on_a_sound_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model = fill(store)
    with Engine.open(store) as engine:
        engine.compact()  # retention delete: the chain starts from the snapshot's chain head
        engine.set("after", b"compaction")
    done = logkv("verify", store, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["problems"] == []
    assert report["keys_read"] == len(model.state()) + 1
    assert report["snapshot_records"] == len(model.state())
    table = logkv("verify", store)
    assert table.returncode == 0
    assert "result              OK" in table.stdout


@pytest.mark.slow
def test_verify_reports_the_first_broken_link_of_a_tampered_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model = fill(store)
    victim_seq = next(seq for seq, key, *_ in model.records if key == "page/5")
    lines = json_lines(logkv("dump", store, "--json").stdout)
    victim = next(line for line in lines if line["seq"] == victim_seq)
    path = store / victim["file"]
    data = bytearray(path.read_bytes())
    start = victim["offset"]
    length = FRAME_HEADER_SIZE + int.from_bytes(data[start + 8 : start + 12], "little")
    body = data[start + FRAME_HEADER_SIZE : start + length]
    at = body.rindex(b"page 5")
    data[start + FRAME_HEADER_SIZE + at + 5] = ord("6")  # the record now claims page 6 ...
    crc = checksum(data[start + 8 : start + length])  # ... with a forged, matching CRC
    data[start + 4 : start + 8] = crc.to_bytes(4, "little")
    path.write_bytes(bytes(data))

    done = logkv("verify", store)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    problems = [line for line in done.stdout.splitlines() if "problem:" in line]
    assert len(problems) == 1, done.stdout
    assert f"hash chain broken at sequence {victim_seq} (the first broken link)" in problems[0]
    assert f"offset {start}" in problems[0]
    assert "DAMAGED" in done.stdout
    assert "first broken link" in done.stderr
    report = json.loads(logkv("verify", store, "--json").stdout)
    assert report["ok"] is False and len(report["problems"]) == 1


# ---------------------------------------------------------------------------------- history


@pytest.mark.slow
def test_history_of_a_key_with_and_without_values(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model = fill(store)
    expected = [(seq, value) for seq, key, value, _ in model.records if key == "page/3"]
    done = logkv("history", store, "page/3", "--json")
    assert done.returncode == 0, done.stderr
    changes = json_lines(done.stdout)
    assert [c["seq"] for c in changes] == [seq for seq, _ in expected]
    assert [c["op"] for c in changes] == ["set"] * (len(expected) - 1) + ["delete"]
    assert all("value" not in c for c in changes)
    assert changes[0]["size"] == len(expected[0][1] or b"")
    assert changes[0]["content_type"] == "text/html"
    assert changes[-1]["size"] is None

    with_values = json_lines(logkv("history", store, "page/3", "--json", "--values").stdout)
    assert [c.get("value") for c in with_values[:-1]] == [
        (v or b"").decode() for _, v in expected[:-1]
    ]
    binary = json_lines(logkv("history", store, "binary", "--json", "--values").stdout)
    assert binary[0]["value_encoding"] == "base64"
    assert base64.b64decode(binary[0]["value"]) == BINARY

    table = logkv("history", store, "text", "--values")
    assert table.returncode == 0
    rows = table.stdout.splitlines()
    assert rows[0] == f"History of 'text' in {store}: 2 change(s)"
    assert "value" in rows[1] and "content type" in rows[1]
    assert "grüße" in rows[3] and "second version" in rows[4]


def test_history_reaches_across_a_compaction_with_retention_archive(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model = fill(store)
    with Engine.open(store, retention="archive") as engine:
        engine.compact()
        seq = engine.set("page/1", b"after compaction", "text/plain")
    model.records.append((seq, "page/1", b"after compaction", "text/plain"))
    changes = json_lines(logkv("history", store, "page/1", "--json", "--values").stdout)
    assert [c["seq"] for c in changes] == [s for s, key, *_ in model.records if key == "page/1"]
    assert {c["source"] for c in changes[:-1]} == {"archive"}
    assert changes[-1]["source"] == "log" and changes[-1]["value"] == "after compaction"


def test_history_says_where_it_starts_after_retention_delete(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model = fill(store)
    with Engine.open(store) as engine:
        engine.compact()
        start = engine.last_seq + 1
        engine.set("page/1", b"after compaction")
    done = logkv("history", store, "page/1", "--json")
    assert done.returncode == 0
    assert f"starts at seq {start:,}" in done.stderr
    changes = json_lines(done.stdout)
    last_before = max(s for s, key, *_ in model.records if key == "page/1")
    assert [(c["seq"], c["source"]) for c in changes] == [
        (last_before, "snapshot"),
        (start, "log"),
    ]


# ---------------------------------------------------------------------------------- replay


def test_replay_to_a_sequence_number_rebuilds_that_state(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model = fill(store)
    with Engine.open(store, retention="archive") as engine:
        engine.compact()  # the archive keeps the history replayable
    middle = len(model.records) // 2
    done = logkv("replay", store, "--until", str(middle), "--to", tmp_path / "then")
    assert done.returncode == 0, done.stderr
    assert read_all(tmp_path / "then") == model.state(middle)
    assert model.state(middle) != model.state()

    refused = logkv("replay", store, "--until", "3", "--to", tmp_path / "then")
    assert_one_clean_error(refused, 2, "not an empty folder")


@pytest.mark.slow
def test_replay_to_a_time_rebuilds_that_state(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model = fill(store)
    records = json_lines(logkv("dump", store, "--json").stdout)
    moment = records[len(records) // 3]["timestamp"]  # ISO 8601 with +00:00
    included = max(r["seq"] for r in records if r["timestamp"] <= moment)
    as_z = moment.replace("+00:00", "Z")
    done = logkv("replay", store, "--until", as_z, "--to", tmp_path / "then", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["keys"] == len(model.state(included))
    assert read_all(tmp_path / "then") == model.state(included)


@pytest.mark.slow
def test_replay_before_a_deleting_compaction_is_a_clear_gap(tmp_path: Path) -> None:
    store = tmp_path / "store"
    fill(store)
    with Engine.open(store) as engine:
        engine.compact()
    done = logkv("replay", store, "--until", "5", "--to", tmp_path / "then")
    assert_one_clean_error(done, 2, "compacted away")
    assert not (tmp_path / "then").exists()
    for until in ("yesterday", "\u00b2", "\u0663"):  # superscript two, Arabic-Indic three
        bad = logkv("replay", store, "--until", until, "--to", tmp_path / "then")
        assert_one_clean_error(bad, 2, "neither a sequence number nor an ISO 8601 time")


# ---------------------------------------------------------------------------------- dump


def test_dump_as_json_lines_and_as_a_table(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model = fill(store)
    done = logkv("dump", store, "--json", "--values")
    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stdout)
    assert [line["seq"] for line in lines] == [seq for seq, *_ in model.records]
    assert lines[0]["value"] == "grüße" and lines[0]["file"] == "00000001.seg"
    assert lines[2]["value"] is None and lines[2]["size"] == 0
    table = logkv("dump", store)
    assert table.returncode == 0
    title, *rows = table.stdout.splitlines()
    assert title == f"{store}: a logkv key-value store (no META.json)"
    assert rows[0].split() == ["seq", "time", "(UTC)", "op", "key", "size", "content", "type",
                               "file", "offset"]  # fmt: skip
    assert len(rows) == 2 + len(model.records)
    assert rows[-1].split()[2:4] == ["set", "text"]


# ---------------------------------------------------------------------------------- compact


def test_compact_dry_run_changes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    fill(store, rounds=12)
    before = files_of(store)
    done = compact(store, "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert files_of(store) == before
    (only,) = report["stores"]
    assert report["dry_run"] is True and only["status"] == "would compact"
    log_files = {n: b for n, b in before.items() if n not in ("LOCK", "SYNCED")}
    assert only["bytes_before"] == sum(len(b) for b in log_files.values())
    assert only["dead_bytes"] > only["live_bytes"] > 0
    assert only["live_bytes"] < only["bytes_after"] < only["bytes_before"]
    table = compact(store, "--dry-run")
    assert table.returncode == 0
    assert "Dry run (nothing was changed)" in table.stdout and "would compact" in table.stdout
    assert files_of(store) == before


@pytest.mark.slow
def test_compact_shrinks_the_store_and_keeps_its_data(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model = fill(store, rounds=12)
    data_before = read_all(store)
    assert data_before == model.state()
    estimate = json.loads(compact(store, "--dry-run", "--json").stdout)["stores"][0]
    done = compact(store, "--json", "--progress")
    assert done.returncode == 0, done.stderr
    assert "compacting " in done.stderr and "records" in done.stderr  # forced on a pipe
    (result,) = json.loads(done.stdout)["stores"]
    assert result["status"] == "compacted"
    assert result["bytes_after"] < result["bytes_before"]
    assert result["records"] == len(model.state())
    assert result["retired_files"] > 1
    disk = sum(p.stat().st_size for p in store.iterdir() if p.suffix in (".seg", ".snap"))
    assert disk == result["bytes_after"]
    assert abs(estimate["bytes_after"] - result["bytes_after"]) < result["bytes_after"] // 4
    assert read_all(store) == data_before
    assert not (store / "archive").exists()  # retention delete by default

    again = compact(store)
    assert again.returncode == 0
    assert "nothing to compact" in again.stdout


@pytest.mark.slow
def test_compact_takes_the_retention_from_the_environment(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model = fill(store)
    done = compact(store, "--quiet", env={"LOGKV_RETENTION": "archive"})
    assert done.returncode == 0, done.stderr
    assert "Retention archive." in done.stdout
    assert sorted(p.name for p in (store / "archive").iterdir())
    history = json_lines(logkv("history", store, "page/0", "--json").stdout)
    assert len(history) == sum(1 for _, key, *_ in model.records if key == "page/0")
    bad = compact(store, env={"LOGKV_RETENTION": "forever"})
    assert_one_clean_error(bad, 2, "LOGKV_RETENTION")


@pytest.mark.slow
def test_compact_a_storage_folder_with_two_stores(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    stores = [storage / "key_value_stores" / name for name in ("alpha", "beta")]
    data = {}
    for store in stores:
        fill(store)
        data[store] = read_all(store)
    (storage / "request_queues" / "default").mkdir(parents=True)  # not a store: left alone
    done = compact(storage, "--json", "--retention", "archive")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [s["path"] for s in report["stores"]] == [
        "key_value_stores/alpha",
        "key_value_stores/beta",
    ]
    assert all(s["status"] == "compacted" for s in report["stores"])
    # Retention archive moves the log to archive/: counted, nothing is claimed as reclaimed
    # that only moved there.
    assert report["total"]["reclaimed"] == sum(s["reclaimed"] for s in report["stores"])
    assert report["total"]["archived"] == sum(s["archived"] for s in report["stores"]) > 0
    assert report["total"]["bytes_after"] == sum(
        p.stat().st_size
        for store in stores
        for p in store.rglob("*")
        if p.suffix == ".seg" or p.suffix == ".snap"
    )
    for store in stores:
        assert read_all(store) == data[store]
        assert (store / "archive").is_dir()
    table = compact(storage)
    assert "total (2 stores)" in table.stdout


@pytest.mark.slow
def test_compact_skips_a_store_locked_by_a_running_writer(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    locked, free = storage / "locked", storage / "free"
    fill(locked)
    fill(free)
    locked_files = log_files_of(locked)
    with writer_in_child(locked) as pid:
        done = compact(storage)
        assert done.returncode == 3
        assert "Traceback" not in done.stderr
        assert f"locked: locked by a running writer (process {pid}); not compacted" in done.stderr
        assert "locked" in done.stdout and "compacted" in done.stdout
        assert log_files_of(locked) == locked_files
        assert not list(free.glob("00000001.seg"))  # the other store was compacted
        alone = compact(locked, "--json")
        assert alone.returncode == 3
        assert json.loads(alone.stdout)["stores"][0]["status"] == "locked"
        assert compact(locked, "--dry-run").returncode == 0  # read-only: fine beside a writer


@pytest.mark.slow
def test_help_explains_the_retention_choices() -> None:
    done = compact("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "--retention {delete,archive}" in text
    assert "delete remove them: the smallest disk footprint" in text
    assert "history before the snapshot is gone" in text
    assert "archive move them to the store's archive/ folder" in text
    assert "'logkv replay' still reach back" in text
    assert "$LOGKV_RETENTION" in text
    top = logkv("--help")
    assert top.returncode == 0
    for command in ("stats", "verify", "history", "replay", "dump"):
        assert command in top.stdout


@pytest.mark.parametrize("args", [["--retention", "forever"], ["--min-dead-ratio", "2"]])
def test_bad_arguments_exit_2(tmp_path: Path, args: list[str]) -> None:
    done = compact(tmp_path, *args)
    assert done.returncode == 2
    assert "usage:" in done.stderr


@pytest.mark.slow
def test_compact_skips_stores_with_few_dead_bytes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with Engine.open(store) as engine:
        for i in range(20):
            engine.set(f"key/{i}", b"live" * 10)
        engine.set("key/0", b"overwritten once")
    before = files_of(store)
    done = compact(store, "--min-dead-ratio", "0.5", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stores"][0]["status"] == "skipped (few dead bytes)"
    assert files_of(store) == before
    done = compact(store, "--min-dead-ratio", "0.01", "--json")
    assert json.loads(done.stdout)["stores"][0]["status"] == "compacted"


def test_compact_finds_every_store_whatever_its_name(tmp_path: Path) -> None:
    """Stores are recognised by their files, not their names: stores named like a store's own
    subfolders (``archive``, ``public``), a hidden alias (``.cache``) and a symlinked store
    are all compacted; a store's own ``archive/`` is never taken for a store."""
    storage = tmp_path / "storage"
    kvs = storage / "key_value_stores"
    names = ["archive", "public", ".cache", "shop", TRASH_DIR]
    data = {}
    for name in names:
        fill(kvs / name)
        data[name] = read_all(kvs / name)
    fill(tmp_path / "elsewhere")
    (kvs / "linked").symlink_to(tmp_path / "elsewhere")
    fill(storage / TRASH_DIR / "dropped-1a2b")  # a store being dropped is no store to compact
    done = compact(storage, "--json", "--retention", "archive")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    expected = sorted(f"key_value_stores/{name}" for name in [*names, "linked"])
    assert [s["path"] for s in report["stores"]] == expected
    assert all(s["status"] == "compacted" for s in report["stores"])
    for name in names:
        assert read_all(kvs / name) == data[name]
    again = compact(storage, "--json")  # the stores' own archive/ folders are not stores
    assert [s["path"] for s in json.loads(again.stdout)["stores"]] == expected


@pytest.mark.slow
def test_single_store_commands_name_the_stores_of_a_storage_folder(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    fill(storage / "key_value_stores" / ".cache")
    for command in ("stats", "verify", "dump"):
        done = logkv(command, storage)
        assert_one_clean_error(done, 2, "key_value_stores/.cache")


# ------------------------------------------------------------------------ hostile arguments


def test_a_key_that_is_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    store = tmp_path / "store"
    fill(store, rounds=1)
    done = logkv("history", os.fsencode(store), b"\xff")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "argument key" in done.stderr and "UTF-8" in done.stderr


@pytest.mark.slow
def test_a_store_path_that_is_not_utf8_is_printed_escaped(tmp_path: Path) -> None:
    """A folder name of arbitrary bytes reaches the command as surrogate escapes; the output
    shows them escaped (even where stdout is strict UTF-8), and ``--json`` stays valid JSON
    that gives the path back."""
    store = Path(os.fsdecode(os.fsencode(tmp_path) + b"/st\xff"))
    fill(store, rounds=1)
    strict = {"PYTHONIOENCODING": "utf-8:strict"}
    for args in (["stats"], ["verify"], ["dump"], ["stats", "--json"], ["history", "text"]):
        done = logkv(args[0], os.fsencode(store), *args[1:], env=strict)
        assert done.returncode == 0, (args, done.stderr)
        assert "Traceback" not in done.stderr
        if args == ["stats", "--json"]:
            assert json.loads(done.stdout)["store"] == str(store)


HOSTILE = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40),
    st.text(st.sampled_from(["\udcff", "\udc80", "\x00", "/", ".", "-", "a", "\n"]), max_size=12),
    st.text(st.sampled_from("ab\udcff"), min_size=300, max_size=5000),
)
#: Exit codes the commands document (and argparse's 0 for --help, 2 for a usage error).
DOCUMENTED = {int(code) for code in ExitCode}


def _exit_code(main: Any, argv: list[str]) -> int:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse: --help, --version or a usage error
        code = 0 if stop.code is None else stop.code
    assert isinstance(code, int)
    return code


def _hostile_commands(store: Path, fresh: Path, text: str) -> list[tuple[Any, list[str]]]:
    out = str(fresh / text.replace("/", "_").replace("\x00", "_")[:200])
    return [
        (logkv_cli.main, ["stats", text]),
        (logkv_cli.main, ["verify", text, "--json"]),
        (logkv_cli.main, ["dump", text]),
        (logkv_cli.main, ["history", str(store), text]),
        (logkv_cli.main, ["history", str(store), text, "--json", "--values"]),
        (logkv_cli.main, ["history", text, "text"]),
        (logkv_cli.main, ["replay", str(store), "--until", text, "--to", out + "-u"]),
        (logkv_cli.main, ["replay", str(store), "--until", "5", "--to", out + "-r"]),
        (logkv_cli.main, ["replay", text, "--until", "5", "--to", out + "-s"]),
        (logkv_cli.main, ["export", str(store), out + "-e"]),
        (logkv_cli.main, ["export", text, out + "-x"]),
        (logkv_cli.main, ["import", text, out + "-i"]),
        (logkv_cli.main, [text]),
        (logkv_cli.main, ["get", str(store), text]),
        (logkv_cli.main, ["get", text, "text", "--json"]),
        (logkv_cli.main, ["keys", str(store), "--prefix", text, "--start-after", text]),
        (logkv_cli.main, ["keys", str(fresh), "--store", text]),
        (logkv_cli.main, ["rm", str(store), text + "\x00"]),
        (logkv_cli.main, ["set", text, "key", "value"]),
        (logkv_cli.main, ["dump", str(store), "--seq", text, "--key", "text"]),
        (logkv_cli.main, ["dump", str(store), "--since", text]),
        (compact_cli.main, [text, "--dry-run"]),
        (compact_cli.main, [str(store), "--retention", text]),
        (compact_cli.main, [str(store), "--min-dead-ratio", text, "--dry-run"]),
    ]


@pytest.mark.slow
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=HOSTILE)
def test_hostile_arguments_never_end_in_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    """Keys, store paths, targets and options of arbitrary text (lone surrogates, NUL, very
    long): every command ends with a documented exit code, never an unexpected exception."""
    store = tmp_path / "store"
    if not store.exists():
        fill(store, rounds=1)
    fresh = Path(tempfile.mkdtemp(dir=tmp_path))
    for main, argv in _hostile_commands(store, fresh, text):
        code = _exit_code(main, argv)
        captured = capsys.readouterr()
        assert code in DOCUMENTED, (argv, code, captured.err)
        assert "Traceback" not in captured.out + captured.err


# ------------------------------------------------------------------------ missing history


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _store_missing_its_first_segment(store: Path) -> tuple[str, str]:
    fill(store)
    (store / "00000001.seg").unlink()
    return "page/0", "5"


def _store_missing_a_middle_segment(store: Path) -> tuple[str, str]:
    fill(store)
    (store / "00000003.seg").unlink()
    return "page/0", "5"


def _store_missing_its_newest_segment(store: Path) -> tuple[str, str]:
    with Engine.open(store, segment_size=4096) as engine:
        for i in range(60):
            engine.set(f"k{i % 7}", b"v" * 300)
        engine.set("newest", b"only in the last segment")
    *_, last = sorted(store.glob("*.seg"))
    last.unlink()  # the synced mark names it: acknowledged records are missing
    return "newest", "61"


def _store_whose_snapshot_meta_is_damaged(store: Path) -> tuple[str, str]:
    with Engine.open(store, segment_size=4096) as engine:
        for i in range(1, 206):
            engine.set(f"k{i:04d}", b"v" * 100)
        engine.compact()  # retention delete: the snapshot alone holds seq 1..205
        engine.set("after", b"x")
    [snapshot] = store.glob("*.snap")
    meta_offset = int.from_bytes(snapshot.read_bytes()[-16:-8], "little")
    _flip(snapshot, meta_offset + 8 + 4)
    return "k0001", "205"


@pytest.mark.parametrize(
    "damage",
    [
        _store_missing_its_first_segment,
        pytest.param(_store_missing_a_middle_segment, marks=pytest.mark.slow),
        pytest.param(_store_missing_its_newest_segment, marks=pytest.mark.slow),
        pytest.param(_store_whose_snapshot_meta_is_damaged, marks=pytest.mark.slow),
    ],
    ids=["first-segment", "middle-segment", "newest-segment", "snapshot-meta"],
)
def test_every_audit_reports_missing_history_as_damage(tmp_path: Path, damage: Any) -> None:
    """History with a hole no snapshot explains is damage (exit 1), never a short answer."""
    store = tmp_path / "store"
    key, until = damage(store)
    target = tmp_path / "then"
    audits = {
        "replay": ["replay", store, "--until", until, "--to", target],
        "history": ["history", store, key],
        "stats": ["stats", store],
        "verify": ["verify", store],
        "dump": ["dump", store],
        "dump --history": ["dump", store, "--history", "--json"],
    }
    for name, args in audits.items():
        done = logkv(*args)
        assert done.returncode == 1, (name, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, name
    assert not target.exists()


@pytest.mark.slow
def test_a_gap_in_the_archive_is_history_not_retained(tmp_path: Path) -> None:
    """Archived segments lost before the snapshot: the snapshot still holds the state, so the
    history starts after the gap (exit 2 before it), as after a deleting compaction."""
    store = tmp_path / "store"
    model = fill(store)
    with Engine.open(store, retention="archive") as engine:
        engine.compact()
        start = engine.last_seq + 1
        engine.set("page/1", b"after compaction")
    (store / "archive" / "00000002.seg").unlink()
    done = logkv("replay", store, "--until", "5", "--to", tmp_path / "then")
    assert_one_clean_error(done, 2, "not retained")
    done = logkv("history", store, "page/1", "--json")
    assert done.returncode == 0, done.stderr
    assert f"starts at seq {start:,}" in done.stderr
    changes = [(c["seq"], c["source"]) for c in json_lines(done.stdout)]
    written = [s for s, key, *_ in model.records if key == "page/1"] + [start]
    assert [seq for seq, _ in changes] == written[len(written) - len(changes) :]
    assert len(changes) < len(written)  # nothing from before the gap
    assert changes[-1] == (start, "log")
    stats = json.loads(logkv("stats", store, "--json").stdout)
    assert stats["history_start"] == start


# ------------------------------------------------------------------------ verify beside a writer


def _churn(engine: Engine, round_: int) -> None:
    for i in range(300):
        engine.set(f"page/{i % 40}", f"round {round_} write {i}".encode() * 8, "text/plain")


@pytest.mark.parametrize("retention", ["delete", "archive"])
@pytest.mark.parametrize("racy_point", ["open", 1, 2, 3, 4, 5])
def test_verify_beside_a_compacting_writer_is_never_damage(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    retention: str,
    racy_point: str | int,
) -> None:
    """A writer that writes and compacts while verify reads (after verify opened the index,
    or after its Nth listing of the log): verify answers for one consistent view, exit 0."""
    store = tmp_path / "store"
    writer = Engine.open(store, segment_size=4096, retention=retention)
    try:
        _churn(writer, 0)
        writer.compact()
        _churn(writer, 1)
        rounds = iter(range(2, 100))

        def compaction() -> None:
            _churn(writer, next(rounds))
            writer.compact()
            _churn(writer, next(rounds))

        if racy_point == "open":
            real_open = audit.Engine.open

            def open_then_compact(path: Path, **options: Any) -> Engine:
                engine = real_open(path, **options)
                if options.get("readonly"):
                    monkeypatch.setattr(audit.Engine, "open", real_open)
                    compaction()
                return engine

            monkeypatch.setattr(audit.Engine, "open", open_then_compact)
        else:
            real_listing = history.log_segments
            calls = iter(range(1, 1000))

            def listing_then_compact(folder: Path) -> list[tuple[int, Path]]:
                listed = real_listing(folder)
                if next(calls) == racy_point:
                    compaction()
                return listed

            monkeypatch.setattr(history, "log_segments", listing_then_compact)
        code = logkv_cli.main(["verify", str(store), "--json"])
        out = capsys.readouterr()
        assert code == ExitCode.OK, out.out + out.err
        assert json.loads(out.out)["ok"]
        if racy_point == "open":
            assert next(rounds) > 2  # the compaction ran
    finally:
        writer.close()


def test_verify_says_changed_when_every_attempt_races_a_compaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    writer = Engine.open(store, segment_size=4096)
    try:
        _churn(writer, 0)
        rounds = iter(range(1, 100))
        real_open = audit.Engine.open

        def open_then_compact(path: Path, **options: Any) -> Engine:
            engine = real_open(path, **options)
            _churn(writer, next(rounds))
            writer.compact()  # retention delete: the log the index was read from is gone
            return engine

        monkeypatch.setattr(audit.Engine, "open", open_then_compact)
        code = logkv_cli.main(["verify", str(store)])
        out = capsys.readouterr()
        assert code == ExitCode.CHANGED == 5, out.err
        assert "changed while it was verified" in out.err and "run verify again" in out.err
        assert "Traceback" not in out.err
        assert next(rounds) == audit.VERIFY_ATTEMPTS + 1
    finally:
        writer.close()


def test_dump_beside_a_compaction_says_the_store_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Segments a writer's compaction retires after the dump listed them: exit 5 (run again),
    not 'damaged' and not an I/O failure."""
    store = tmp_path / "store"
    writer = Engine.open(store, segment_size=4096)
    try:
        _churn(writer, 0)
        real_plan = dump_module.plan

        def plan_then_compact(target: Path, history: bool) -> Any:
            chosen = real_plan(target, history)
            writer.compact()  # retention delete: the listed segments are gone
            return chosen

        monkeypatch.setattr(dump_module, "plan", plan_then_compact)
        code = logkv_cli.main(["dump", str(store), "--json"])
        out = capsys.readouterr()
        assert code == ExitCode.CHANGED, out.err
        assert "changed while it was dumped" in out.err
        kinds = {line.get("error") for line in json_lines(out.out)}
        assert "retired" in kinds and kinds <= {None, "retired"}
    finally:
        writer.close()
