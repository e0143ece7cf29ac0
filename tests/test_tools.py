"""``logkv dump --json`` and the demo, run as their users run them: as subprocesses."""

from __future__ import annotations

import base64
import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import run_command

from logkv import Engine
from logkv.format import FRAME_HEADER_SIZE, RECORD_MAGIC, Op, checksum, encode_record

ROOT = Path(__file__).resolve().parent.parent
BINARY = bytes(range(256)) * 20


def dump_json(store: Path, *options: str) -> tuple[int, list[dict[str, Any]], str]:
    """``logkv dump --json``: its exit status, its JSON lines and its stderr."""
    done = run_command("dump", str(store), "--json", *options, module="logkv.cli.main", text=True)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return done.returncode, lines, done.stderr


def fill(store: Path) -> None:
    """A store whose log rotates, with text, binary, None values, an overwrite and a delete."""
    with Engine.open(store, segment_size=4096) as engine:
        engine.set("text", "grüße, world".encode(), "text/plain; charset=utf-8")
        engine.set("binary", BINARY, "application/octet-stream")
        engine.set("nothing", None, "application/json")
        for i in range(30):
            engine.set(f"page/{i:02d}", f"<p>{i}</p>".encode() * 40, "text/html")
        engine.set("text", b"second version")
        engine.delete("page/03")


def test_dump_json_lists_every_record_in_order(tmp_path: Path) -> None:
    store = tmp_path / "store"
    fill(store)
    code, lines, stderr = dump_json(store, "--values")
    assert code == 0, stderr
    assert not [line for line in lines if "error" in line]
    assert [line["seq"] for line in lines] == list(range(1, 36))
    assert len({line["segment"] for line in lines}) > 1  # several segments, in order
    assert [line["segment"] for line in lines] == sorted(line["segment"] for line in lines)
    first, binary, nothing = lines[0], lines[1], lines[2]
    assert first == {
        "file": "00000001.seg",
        "segment": 1,
        "offset": 16,
        "seq": 1,
        "timestamp": first["timestamp"],
        "op": "set",
        "key": "text",
        "content_type": "text/plain; charset=utf-8",
        "size": len("grüße, world".encode()),
        "value": "grüße, world",
        "value_encoding": "utf-8",
    }
    assert datetime.fromisoformat(first["timestamp"]).utcoffset() is not None
    assert binary["value_encoding"] == "base64"
    assert base64.b64decode(binary["value"]) == BINARY
    assert binary["size"] == len(BINARY)
    assert (nothing["value"], nothing["size"], nothing["content_type"]) == (
        None,
        0,
        "application/json",
    )
    assert lines[-2]["value"] == "second version"
    assert lines[-1] == {
        "file": f"{lines[-1]['segment']:08d}.seg",
        "segment": lines[-1]["segment"],
        "offset": lines[-1]["offset"],
        "seq": 35,
        "timestamp": lines[-1]["timestamp"],
        "op": "delete",
        "key": "page/03",
        "content_type": None,
        "size": None,
    }


def test_dump_json_without_values_prints_no_values(tmp_path: Path) -> None:
    store = tmp_path / "store"
    fill(store)
    code, lines, _ = dump_json(store)
    assert code == 0
    assert len(lines) == 35
    assert all("value" not in line for line in lines)


def test_dump_json_reads_a_compacted_store_as_an_open_does(tmp_path: Path) -> None:
    store = tmp_path / "store"
    fill(store)
    with Engine.open(store, segment_size=4096) as engine:
        engine.compact()
        engine.set("after", b"compaction")
        live = sorted(engine.keys())
        last_seq = engine.last_seq
    code, lines, stderr = dump_json(store, "--values")
    assert code == 0, stderr
    assert not [line for line in lines if "error" in line]
    in_snapshot = [line for line in lines if line["file"].endswith(".snap")]
    after = [line for line in lines if line["file"].endswith(".seg")]
    assert [line["key"] for line in in_snapshot] == sorted(set(live) - {"after"})  # key order
    assert all(line["segment"] is None for line in in_snapshot)
    assert [(line["key"], line["value"], line["seq"]) for line in after] == [
        ("after", "compaction", last_seq)
    ]
    text = next(line for line in in_snapshot if line["key"] == "text")
    assert text["value"] == "second version"  # the live version, not the overwritten one


def test_dump_json_history_replays_archived_segments_with_an_unbroken_chain(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    fill(store)
    with Engine.open(store, segment_size=4096, retention="archive") as engine:
        engine.compact()
        engine.set("after", b"compaction")
    assert (store / "archive").is_dir()
    code, lines, stderr = dump_json(store, "--history")
    assert code == 0, stderr
    assert not [line for line in lines if "error" in line]
    assert [line["seq"] for line in lines] == list(range(1, 37))
    assert lines[0]["file"] == "archive/00000001.seg"
    assert lines[-1]["key"] == "after" and not lines[-1]["file"].startswith("archive/")


@pytest.mark.slow
def test_dump_json_history_reports_deleted_segments_as_a_gap_not_damage(tmp_path: Path) -> None:
    store = tmp_path / "store"
    fill(store)
    with Engine.open(store, segment_size=4096) as engine:
        engine.compact(retention="archive")  # segments 1..A go to archive/
        for i in range(30):
            engine.set(f"later/{i:02d}", b"y" * 300)
        engine.compact(retention="delete")  # segments A+1..B are gone for good
        for i in range(30):
            engine.set(f"latest/{i:02d}", b"y" * 300)
        engine.compact(retention="archive")  # segments B+1..C go to archive/ too
        engine.set("last", b"z")
    code, lines, stderr = dump_json(store, "--history")
    assert code == 0, stderr
    problems = [line for line in lines if "error" in line]
    assert [p["error"] for p in problems] == ["history_gap"]
    code, lines, stderr = dump_json(store)  # as an open reads it: snapshot + later segments
    assert code == 0, stderr
    assert not [line for line in lines if "error" in line]


def test_dump_json_reads_a_store_locked_by_a_live_writer(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with Engine.open(store) as writer:
        writer.set("a", b"1")
        writer.set("b", b"2")
        code, lines, stderr = dump_json(store, "--values")
        writer.set("c", b"3")
        assert code == 0, stderr
        assert [(line["key"], line["value"]) for line in lines] == [("a", "1"), ("b", "2")]


@pytest.mark.slow
def test_dump_json_reports_corruption_and_keeps_going(tmp_path: Path) -> None:
    store = tmp_path / "store"
    fill(store)
    _, good, _ = dump_json(store)
    victim = next(line for line in good if line["key"] == "page/05")
    path = store / f"{victim['segment']:08d}.seg"
    data = bytearray(path.read_bytes())
    data[victim["offset"] + 20] ^= 0xFF  # a bit flip inside the body: the CRC must catch it
    path.write_bytes(bytes(data))
    code, lines, stderr = dump_json(store)
    assert code == 1
    assert "corrupt" in stderr
    errors = [line for line in lines if "error" in line]
    assert len(errors) == 1
    assert errors[0]["error"] == "corruption"
    assert errors[0]["path"] == str(path)
    assert errors[0]["offset"] == victim["offset"]
    assert errors[0]["reason"] == "checksum mismatch"
    records = [line for line in lines if "error" not in line]
    assert [r["seq"] for r in records] == [g["seq"] for g in good if g["seq"] != victim["seq"]]


@pytest.mark.slow
def test_dump_json_detects_a_tampered_record_through_the_hash_chain(tmp_path: Path) -> None:
    store = tmp_path / "store"
    fill(store)
    _, good, _ = dump_json(store)
    victim = next(line for line in good if line["key"] == "page/07")
    path = store / f"{victim['segment']:08d}.seg"
    data = bytearray(path.read_bytes())
    start = victim["offset"]
    length = FRAME_HEADER_SIZE + int.from_bytes(data[start + 8 : start + 12], "little")
    body = data[start + FRAME_HEADER_SIZE : start + length]
    at = body.rindex(b"<p>7</p>")
    data[start + FRAME_HEADER_SIZE + at + 3] = ord("8")  # the page now claims to be page 8 ...
    crc = checksum(data[start + 8 : start + length])  # ... and its CRC was forged to match
    data[start + 4 : start + 8] = crc.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    code, lines, _ = dump_json(store, "--values")
    assert code == 1
    errors = [line for line in lines if "error" in line]
    assert [(e["error"], e["path"], e["offset"]) for e in errors] == [
        ("chain_break", str(path), start)
    ]
    forged = next(line for line in lines if line.get("key") == "page/07")
    assert forged["value"].endswith("<p>8</p>")  # the CRC alone would have let it pass


def test_a_frame_whose_value_is_not_last_is_rejected(tmp_path: Path) -> None:
    # A well-checksummed frame with a seventh body element would put bytes after the value,
    # and an index that takes the value as the frame's last bytes would return wrong data.
    store = tmp_path / "store"
    with Engine.open(store) as engine:
        engine.set("a", b"1")
    body = msgpack.packb([2, 0, 1, "b", None, b"value", "extra"])
    tail = len(body).to_bytes(4, "little") + bytes(16) + body
    frame = RECORD_MAGIC + checksum(tail).to_bytes(4, "little") + tail
    with open(store / "00000001.seg", "ab") as file:
        file.write(frame)
    with Engine.open(store) as engine:
        engine.set("c", b"3")  # the bad frame was the torn tail: cut off, then written past
    code, lines, _ = dump_json(store)
    assert code == 0
    assert [line["key"] for line in lines] == ["a", "c"]


def test_dump_json_reports_a_torn_tail_without_failing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    fill(store)
    with Engine.open(store, segment_size=4096) as engine:
        engine.set("cut", b"x" * 500)
        entry = engine.entry("cut")
    assert entry is not None
    number, frame_start = entry[0], entry[1]
    last = store / f"{number:08d}.seg"
    assert last == sorted(store.glob("*.seg"))[-1]
    (store / "SYNCED").unlink()  # the writer never closed cleanly ...
    with open(last, "r+b") as file:  # ... it died half-way through the append
        file.truncate(frame_start + 100)
    code, lines, _ = dump_json(store)
    assert code == 0
    assert lines[-1]["error"] == "torn_tail"
    assert (lines[-1]["offset"], lines[-1]["end"]) == (frame_start, frame_start + 100)
    assert len(lines) == 36


def test_dump_json_and_open_agree_on_a_torn_record_whose_value_holds_frames(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    inner = b"".join(
        encode_record(i + 1, 0, Op.SET, f"inner/{i}", None, b"x" * 100) for i in range(5)
    )
    with Engine.open(store) as engine:
        engine.set("a", b"1")
        engine.set("copy-of-a-log", b"prefix" + inner)
        entry = engine.entry("copy-of-a-log")
    assert entry is not None
    segment = store / "00000001.seg"
    (store / "SYNCED").unlink()  # the writer was killed mid-append: it never closed cleanly
    cut = entry[1] + entry[2] + 6 + 400  # past two whole inner frames, inside the third
    os.truncate(segment, cut)
    code, lines, _ = dump_json(store)
    assert code == 0
    assert [line.get("key", line.get("error")) for line in lines] == ["a", "torn_tail"]
    assert (lines[-1]["offset"], lines[-1]["end"]) == (entry[1], cut)
    with Engine.open(store, readonly=True) as engine:  # the open draws the same line
        assert sorted(engine.keys()) == ["a"]
        assert engine.report.torn_tail is not None
        assert engine.report.torn_tail.start == entry[1]


def test_dump_json_on_a_missing_store_fails_cleanly(tmp_path: Path) -> None:
    done = run_command("dump", str(tmp_path / "nope"), "--json", module="logkv.cli.main", text=True)
    assert done.returncode == 2
    assert "does not exist" in done.stderr


def test_demo_survives_kill_9_compacts_and_says_so(tmp_path: Path) -> None:
    # Run from an empty folder with its own temp folder: the demo must write nowhere else and
    # leave nothing behind.
    cwd, temp = tmp_path / "cwd", tmp_path / "temp"
    cwd.mkdir()
    temp.mkdir()
    env = {"TMPDIR": str(temp), "PYTHONPATH": str(ROOT)}  # from cwd, python -m needs the path
    done = run_command(module="logkv.demo", cwd=cwd, env=env, text=True, timeout=120, code=0)
    out = done.stdout
    assert "LOST" not in out and "FAILED" not in out and "UNEXPECTED" not in out
    acked = re.search(r"Crawler process \d+ .*KeyValueStore.*\n +(\d+) writes acknowledged", out)
    assert acked is not None, out
    writes = int(acked.group(1))
    assert writes >= 600  # the child is killed only after 600 acknowledged writes
    assert "Sent kill -9 mid-run" in out
    assert "torn tail:" in out
    assert "reopened with KeyValueStore.open" in out
    # Step 3 and step 6 (after compaction): every key holds its last acknowledged value.
    holding = re.findall(r"keys holding their last acknowledged value: (\d+)/(\d+)", out)
    assert len(holding) == 2 and all(good == total for good, total in holding), out
    assert re.search(r"CRAWLER_STATE = \{\"fetched\": \d+", out)
    # Step 4: compaction with retention archive gave back the space of the overwritten records.
    assert 'await kvs.compact(retention="archive")' in out
    sizes = re.search(r"data files in the store folder: ([\d.]+) (KiB|MiB) -> ([\d.]+) KiB", out)
    assert sizes is not None, out
    before = float(sizes.group(1)) * (1024 if sizes.group(2) == "MiB" else 1)
    assert float(sizes.group(3)) < before
    assert re.search(r"\d+ segments \([\d.]+ (KiB|MiB)\) moved to archive/", out)
    # Step 5: the product's history, from the archive, sets and deletes (it sells out).
    history = re.findall(r"^ +\d+  [\d:.]+ +(set|delete) +(\d+|-)  (\S+)$", out, re.MULTILINE)
    assert len(history) >= 4, out
    assert {op for op, _, _ in history} == {"set", "delete"}
    assert all(where.startswith("archive/") for _, _, where in history)
    assert f"holds all {writes} acknowledged writes" in out
    # Step 6: paging.
    assert "after 'pages/item-002.html': pages/item-003.html" in out
    assert "exact: sorted, no duplicates, none missed" in out
    assert f"OK: all {writes} acknowledged writes survived kill -9 and compaction." in out
    assert list(cwd.iterdir()) == [] and list(temp.iterdir()) == []
