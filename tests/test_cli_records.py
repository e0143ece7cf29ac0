"""The record commands (``get``, ``keys``, ``set``, ``rm``, ``edit``), the one ``logkv``
command's shape (global options anywhere, ``python -m logkv``, ``--store``, hints for Crawlee
folders), dump's filters, content types as given, and compaction's honest figures.

Most run ``logkv``'s ``main`` in this process (fast); the ones that need a real process (the
value on stdout byte for byte, a live writer, ``$EDITOR``, a missing extra) run subprocesses
and are marked slow.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, assert_one_error, run_command
from test_cli import BINARY, files_of, fill, writer_in_child

from logkv import Engine
from logkv.cli import ExitCode
from logkv.cli import main as logkv_cli
from logkv.cli.render import iso_timestamp
from logkv.format import FRAME_HEADER_SIZE
from logkv.history import key_history
from logkv.names import StorageType
from logkv.storage_clients._meta import StoreMeta, new_store_id, write_meta

#: Keys a user can make but no terminal shows as they are.
HOSTILE_KEYS = [
    "line\nbreak",
    "esc\x1b[31mred",
    "tab\tand\rreturn",
    "[bold]markup[/bold]",
    "k" * 1024,
]


def logkv(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """Run ``logkv ARGV`` in this process: (exit status, stdout, stderr)."""
    code = logkv_cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def small_store(path: Path) -> Path:
    with Engine.open(path) as engine:
        engine.set("doc", b'{"n": 1}', "application/json")
        engine.set("page", b"<p>hi</p>", "text/html; x-logkv-value=bytes")  # imported bytes
        engine.set("bin", BINARY, "application/octet-stream")
        engine.set("none", None, "application/json")
        for key in HOSTILE_KEYS:
            engine.set(key, key.encode(), "text/plain")
    return path


# ---------------------------------------------------------------------------------- one CLI


def test_global_options_before_or_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = small_store(tmp_path / "s")
    before = logkv(capsys, "--json", "stats", store)
    after = logkv(capsys, "stats", store, "--json")
    assert before[0] == after[0] == 0
    assert json.loads(before[1])["keys"] == json.loads(after[1])["keys"] == 9
    assert logkv(capsys, "-q", "keys", store)[1] == logkv(capsys, "keys", store, "-q")[1]
    code, _, err = logkv(capsys, "-q", "stats", store, "--progress")
    assert code == ExitCode.USAGE
    assert_one_error(err, "contradict")


def test_a_storage_folder_with_store_and_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = tmp_path / "storage"
    small_store(storage / "key_value_stores" / "shop")
    with Engine.open(storage / "datasets" / "items") as engine:
        engine.set("000000000000", b'{"a": 1}', "application/json")
    code, _, err = logkv(capsys, "get", storage, "doc")
    assert code == ExitCode.USAGE
    assert_one_error(err, "--store NAME")
    code, out, _ = logkv(capsys, "get", storage, "doc", "--store", "shop", "--json")
    assert code == 0 and json.loads(out)["content_type"] == "application/json"
    code, out, _ = logkv(capsys, "keys", storage, "--store", "items", "--kind", "dataset")
    assert (code, out) == (0, "000000000000\n")
    code, out, _ = logkv(capsys, "stats", storage, "--store", "items", "--kind", "dataset")
    assert code == 0 and "dataset" in out
    code, _, err = logkv(capsys, "keys", storage, "--store", "nope")
    assert code == ExitCode.USAGE
    assert_one_error(err, "it has: shop")
    code, _, err = logkv(capsys, "keys", storage, "--store", "../x")
    assert code == ExitCode.USAGE
    code, out, _ = logkv(capsys, "compact", storage, "--store", "shop", "--dry-run", "--json")
    assert code == 0 and len(json.loads(out)["stores"]) == 1


def test_a_crawlee_folder_gets_a_hint_to_import_or_migrate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = tmp_path / "crawlee"
    default = storage / "key_value_stores" / "default"
    default.mkdir(parents=True)
    (default / "__metadata__.json").write_text('{"id": "abc", "name": null}')
    for argv in (["stats", storage], ["keys", storage], ["compact", storage, "--dry-run"]):
        code, _, err = logkv(capsys, *argv)
        assert code == ExitCode.USAGE, argv
        assert_one_error(err, f"logkv migrate {storage}")
    code, _, err = logkv(capsys, "verify", default)
    assert code == ExitCode.USAGE
    assert_one_error(err, f"logkv import {default} NEW_DIR")


@pytest.mark.slow
def test_python_dash_m_logkv_and_logkv_compact_alias(tmp_path: Path) -> None:
    store = small_store(tmp_path / "s")
    done = run_command("keys", store, "--prefix", "d", code=0)
    assert done.stdout == b"doc\n"
    alias = run_command(store, "--dry-run", "--json", module="logkv.cli.compact", code=0)
    assert json.loads(alias.stdout)["total"]["stores"] == 1


# ---------------------------------------------------------------------------------- reads


def test_get_and_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = small_store(tmp_path / "s")
    out_file = tmp_path / "out.bin"
    code, out, _ = logkv(capsys, "get", store, "bin", "-o", out_file)
    assert (code, out) == (0, "")
    assert out_file.read_bytes() == BINARY
    code, out, _ = logkv(capsys, "get", store, "page", "--json")
    meta = json.loads(out)
    assert meta["content_type"] == "text/html"  # as given, never the internal marker
    assert (meta["size"], meta["none"]) == (9, False)
    code, out, _ = logkv(capsys, "get", store, "none", "--json")
    assert json.loads(out)["none"] is True
    code, _, err = logkv(capsys, "get", store, "absent")
    assert code == ExitCode.USAGE
    assert_one_error(err, "no key 'absent'")

    code, out, _ = logkv(capsys, "keys", store)
    lines = out.splitlines()
    assert len(lines) == 4 + len(HOSTILE_KEYS)  # one line per key: control characters escaped
    assert "line\\nbreak" in lines and "esc\\x1b[31mred" in lines and "k" * 1024 in lines
    code, out, _ = logkv(capsys, "keys", store, "--json")
    listed = [json.loads(line) for line in out.splitlines()]
    assert [x["key"] for x in listed] == sorted(["doc", "page", "bin", "none", *HOSTILE_KEYS])
    assert {x["content_type"] for x in listed if x["key"] == "page"} == {"text/html"}
    code, out, _ = logkv(capsys, "keys", store, "--start-after", "doc", "--limit", "2")
    assert out.splitlines() == ["esc\\x1b[31mred", "k" * 1024]
    code, _, err = logkv(capsys, "keys", store, "--limit", "-1")
    assert code == ExitCode.USAGE


def test_keys_long_lists_each_keys_last_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = small_store(tmp_path / "s")
    with Engine.open(store) as engine:
        engine.set("doc", b'{"n": 2}', "application/json")  # a later change of one key
        keys = list(engine.keys())
    history = {}
    for key in keys:
        last = key_history(store, key)[-1].record
        history[key] = (last.seq, last.timestamp_us)
    code, out, _ = logkv(capsys, "keys", store, "--long", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["key"] for r in rows] == sorted(history)
    by_key = {r["key"]: r for r in rows}
    assert by_key["doc"]["seq"] == history["doc"][0] == 5 + len(HOSTILE_KEYS)
    assert by_key["page"]["content_type"] == "text/html"  # as given
    assert (by_key["bin"]["size"], by_key["none"]["size"]) == (len(BINARY), 0)
    for key, (seq, timestamp_us) in history.items():
        assert by_key[key]["seq"] == seq
        assert by_key[key]["timestamp"] == iso_timestamp(timestamp_us)
    assert set(rows[0]) == {"key", "content_type", "size", "seq", "timestamp"}

    code, out, _ = logkv(capsys, "keys", store, "-l", "--prefix", "d")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["key", "content", "type", "size", "seq", "changed"]
    assert lines[2].split()[:4] == ["doc", "application/json", "8", "bytes"]
    assert lines[2].split()[4:] == [str(by_key["doc"]["seq"]), by_key["doc"]["timestamp"]]
    code, out, _ = logkv(capsys, "keys", store, "--long", "--prefix", "zz")
    assert code == 0 and out.splitlines()[0].split()[0] == "key" and len(out.splitlines()) == 2


@pytest.mark.parametrize("storage", ["dataset", "request_queue"])
def test_record_writes_refuse_datasets_and_request_queues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], storage: StorageType
) -> None:
    store = event_log_store(tmp_path / "s", storage)
    before = files_of(store)
    writes: list[list[str | Path]] = [
        ["set", store, "000000000000", "{}"],
        ["rm", store, "000000000000"],
        ["edit", store, "000000000000"],
    ]
    for argv in writes:
        code, out, err = logkv(capsys, *argv)
        assert (code, out) == (ExitCode.USAGE, ""), argv
        assert_one_error(err, "not a key-value store")
    assert files_of(store) == before
    code, out, _ = logkv(capsys, "get", store, "000000000000")  # reads stay open
    assert (code, out) == (0, '{"a": 1}')


def event_log_store(path: Path, storage: StorageType) -> Path:
    """A store whose META.json says it is a dataset or a request queue, with one record."""
    with Engine.open(path) as engine:
        engine.set("000000000000", b'{"a": 1}', "application/json")
    now = time.time()
    meta = StoreMeta(id=new_store_id(), name="x", alias=None, kind="named", created_at=now,
                     accessed_at=now, modified_at=now, storage=storage)  # fmt: skip
    write_meta(path, meta)
    return path


@pytest.mark.slow
def test_get_prints_the_value_byte_for_byte_even_with_progress(tmp_path: Path) -> None:
    store = small_store(tmp_path / "s")
    done = run_command("get", store, "bin", "--progress", code=0)
    assert done.stdout == BINARY
    done = run_command("get", store, "line\nbreak")
    assert done.stdout == b"line\nbreak"


@pytest.mark.slow
def test_get_of_a_damaged_record_is_damage(tmp_path: Path) -> None:
    store = tmp_path / "s"
    with Engine.open(store) as engine:
        engine.set("a", b"A" * 100, "text/plain")
        entry = engine.entry("a")
    assert entry is not None
    segment = next(store.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[entry.offset + FRAME_HEADER_SIZE + 50] ^= 0xFF
    segment.write_bytes(bytes(data))
    done = run_command("get", store, "a", code=ExitCode.DAMAGED)
    assert done.stdout == b""
    assert_one_error(done.stderr.decode(), "checksum")


# ---------------------------------------------------------------------------------- writes


def test_set_and_rm(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    store = small_store(tmp_path / "s")
    code, out, _ = logkv(capsys, "set", store, "doc", '{"n": 2}', "--json")
    assert code == 0 and json.loads(out)["content_type"] == "application/json"  # kept
    code, _, err = logkv(capsys, "set", store, "doc", "{not json")
    assert code == ExitCode.USAGE
    assert_one_error(err, "not valid")
    code, _, err = logkv(capsys, "set", store, "new", "x", "--content-type",
                         "text/plain; x-logkv-value=bytes")  # fmt: skip
    assert code == ExitCode.USAGE
    source = tmp_path / "page.html"
    source.write_bytes(b"<h1>\xff</h1>")  # not UTF-8: text/html would not read back
    code, _, err = logkv(capsys, "set", store, "file", f"@{source}")
    assert code == ExitCode.USAGE
    assert_one_error(err, "--content-type application/octet-stream")
    source.write_bytes("<h1>é</h1>".encode())
    assert logkv(capsys, "set", store, "file", f"@{source}")[0] == 0
    assert logkv(capsys, "set", store, "at", "@@home")[0] == 0
    for key in HOSTILE_KEYS:
        assert logkv(capsys, "set", store, key, "v2")[0] == 0
    with Engine.open(store, readonly=True) as engine:
        assert engine.get_with_type("doc") == (b'{"n": 2}', "application/json")
        assert engine.get_with_type("file") == ("<h1>é</h1>".encode(), "text/html")
        assert engine.get_with_type("at") == (b"@home", "text/plain; charset=utf-8")
        assert all(engine.get(key) == b"v2" for key in HOSTILE_KEYS)
    code, out, _ = logkv(capsys, "rm", store, "line\nbreak")
    assert code == 0 and "line\\nbreak" in out  # shown escaped
    code, _, err = logkv(capsys, "rm", store, "line\nbreak")
    assert code == ExitCode.USAGE
    with Engine.open(store, readonly=True) as engine:
        assert "line\nbreak" not in engine


@pytest.mark.slow
def test_set_reads_stdin(tmp_path: Path) -> None:
    store = small_store(tmp_path / "s")
    run_command("set", store, "blob", "-", stdin=BINARY, code=0)
    with Engine.open(store, readonly=True) as engine:
        assert engine.get_with_type("blob") == (BINARY, "application/octet-stream")


@pytest.mark.slow
def test_writes_refuse_a_store_held_by_a_live_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = small_store(tmp_path / "s")
    with writer_in_child(store) as pid:
        for argv in (["set", store, "doc", "{}"], ["rm", store, "doc"], ["edit", store, "doc"]):
            code, _, err = logkv(capsys, *argv)
            assert code == ExitCode.LOCKED, argv
            assert_one_error(err, f"process {pid}")
        code, out, _ = logkv(capsys, "get", store, "doc")  # reads work beside it
        assert (code, out) == (0, "") or code == 0
    with Engine.open(store, readonly=True) as engine:
        assert engine.get("doc") == b'{"n": 1}'


def _editor(tmp_path: Path, body: str) -> str:
    script = tmp_path / "editor.py"
    script.write_text(textwrap.dedent(body))
    return f"{sys.executable} {script}"


@pytest.mark.slow
def test_edit_with_a_scripted_editor(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    store = small_store(tmp_path / "s")
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", _editor(tmp_path, """
        import json, sys
        path = sys.argv[1]
        assert path.endswith(".json")
        data = json.load(open(path))
        data["n"] += 1
        open(path, "w").write(json.dumps(data))
    """))  # fmt: skip
    code, out, _ = logkv(capsys, "edit", store, "doc")
    assert code == 0 and "Wrote doc" in out
    with Engine.open(store, readonly=True) as engine:
        assert engine.get_with_type("doc") == (b'{"n": 2}', "application/json")
        seq = engine.last_seq

    monkeypatch.setenv("EDITOR", _editor(tmp_path, "import sys\n"))  # saves nothing
    code, out, _ = logkv(capsys, "edit", store, HOSTILE_KEYS[1])
    assert code == 0 and "unchanged" in out

    monkeypatch.setenv("EDITOR", _editor(tmp_path, """
        import sys
        open(sys.argv[1], "w").write("{broken")
    """))  # fmt: skip
    code, _, err = logkv(capsys, "edit", store, "doc")
    assert code == ExitCode.USAGE
    assert_one_error(err, "the edited copy is kept in")

    # Meanwhile (while the editor runs, no lock held), a writer changes the record.
    monkeypatch.setenv("EDITOR", _editor(tmp_path, f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from logkv import Engine
        with Engine.open({str(store)!r}) as engine:
            engine.set("doc", b'{{"n": 100}}', "application/json")
        open(sys.argv[1], "w").write('{{"n": 3}}')
    """))  # fmt: skip
    code, _, err = logkv(capsys, "edit", store, "doc")
    assert code == ExitCode.CHANGED
    assert_one_error(err, "was rewritten")
    with Engine.open(store, readonly=True) as engine:
        assert engine.get("doc") == b'{"n": 100}'  # the other writer's value stands
        assert engine.last_seq == seq + 1

    monkeypatch.setenv("EDITOR", _editor(tmp_path, "import sys\nsys.exit(3)\n"))
    code, _, err = logkv(capsys, "edit", store, "doc")
    assert code == ExitCode.FAILED
    assert_one_error(err, "status 3")


# ---------------------------------------------------------------------------------- dump


def _dump(capsys: pytest.CaptureFixture[str], store: Path, *options: str) -> list[dict[str, Any]]:
    code, out, err = logkv(capsys, "dump", store, "--json", *options)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_dump_filters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s"
    model = fill(store, rounds=3)
    every = _dump(capsys, store)
    assert len(every) == len(model.records)
    assert [r["seq"] for r in _dump(capsys, store, "--key", "text")] == [
        seq for seq, key, _, _ in model.records if key == "text"
    ]
    assert {r["key"] for r in _dump(capsys, store, "--prefix", "page/")} == {
        f"page/{i}" for i in range(8)
    }
    assert [r["seq"] for r in _dump(capsys, store, "--seq", "5..7")] == [5, 6, 7]
    assert [r["seq"] for r in _dump(capsys, store, "--seq", "..2")] == [1, 2]
    assert [r["seq"] for r in _dump(capsys, store, "--seq", "9")] == [9]
    middle = every[len(every) // 2]["timestamp"]
    since = _dump(capsys, store, "--since", middle)
    until = _dump(capsys, store, "--until", middle)
    assert len(since) + len(until) == len(every) + 1  # the middle record in both
    live = _dump(capsys, store, "--live")
    state = model.state()
    assert {r["key"] for r in live} == set(state)
    assert all(r["op"] == "set" for r in live)
    current = {key: seq for seq, key, _, _ in model.records}
    assert {r["key"]: r["seq"] for r in live} == {k: current[k] for k in state}
    for bad in (
        ["--seq", "7..5"],
        ["--seq", "x"],
        ["--since", "yesterday"],
        ["--live", "--history"],
    ):
        code, _, err = logkv(capsys, "dump", store, *bad)
        assert code == ExitCode.USAGE, bad
        assert_one_error(err, "")


def test_content_types_are_shown_as_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = small_store(tmp_path / "s")
    (line,) = _dump(capsys, store, "--key", "page")
    assert line["content_type"] == "text/html"
    _, out, _ = logkv(capsys, "history", store, "page", "--json")
    assert json.loads(out)["content_type"] == "text/html"
    for argv in (["dump", store], ["history", store, "page"]):
        _, out, _ = logkv(capsys, *argv)
        assert "x-logkv-value" not in out


# ---------------------------------------------------------------------------------- compact


def test_compaction_counts_the_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s"
    fill(store, rounds=6)
    code, out, _ = logkv(capsys, "compact", store, "--retention", "archive", "--json")
    assert code == 0
    (done,) = json.loads(out)["stores"]
    disk = sum(p.stat().st_size for p in store.rglob("*") if p.suffix in (".seg", ".snap"))
    assert done["bytes_after"] == disk  # the archive counted: nothing claimed that moved
    assert done["archived"] > 0
    assert done["reclaimed"] == done["bytes_before"] - done["bytes_after"]
    code, out, _ = logkv(capsys, "compact", store, "--dry-run")
    assert "Nothing to reclaim" in out and "total (1 store)" in out
    code, out, _ = logkv(capsys, "compact", store)
    assert "total (1 store)" in out and "stores)" not in out


def test_an_empty_store_has_nothing_to_reclaim_in_a_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "s"
    with Engine.open(store) as engine:
        for i in range(10):
            engine.set(f"k{i}", b"v", "text/plain")  # no overwrite: no dead bytes
    code, out, _ = logkv(capsys, "compact", store, "--dry-run")
    assert code == 0 and "nothing to reclaim" in out and "Nothing to reclaim" in out


# ---------------------------------------------------------------------------------- import, extras


def test_importing_a_crawlee_store_twice_gives_a_new_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "crawlee"
    source.mkdir()
    (source / "__metadata__.json").write_text(json.dumps({"id": "AbC123", "name": "pages"}))
    (source / "a").write_bytes(b"x")
    (source / "a.__metadata__.json").write_text(
        json.dumps({"key": "a", "content_type": "text/plain", "size": 1})
    )
    kvs = tmp_path / "storage" / "key_value_stores"
    code, out, _ = logkv(capsys, "import", source, kvs / "pages", "--json")
    assert code == 0 and json.loads(out)["store_id"] == "AbC123"
    code, out, _ = logkv(capsys, "import", source, kvs / "pages-copy", "--json")
    second = json.loads(out)
    assert code == 0 and second["store_id"] != "AbC123"
    assert second["original_id"] == "AbC123"
    assert second["id_taken_by"] == str(kvs / "pages")
    meta = json.loads((kvs / "pages-copy" / "META.json").read_text())
    assert meta["id"] == second["store_id"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "library", "extra"),
    [
        ("logkv.crawlee", "crawlee", "crawlee"),
        ("logkv.replica", "obstore", "s3"),
        ("logkv.web.app", "starlette", "web"),
    ],
)
def test_a_missing_extra_is_named(module: str, library: str, extra: str) -> None:
    code = f"import sys; sys.modules[{library!r}] = None; import {module}"
    done = run_command(program=[sys.executable, "-c", code], text=True)
    assert done.returncode != 0
    assert f"pip install 'logkv[{extra}]'" in done.stderr


@pytest.mark.slow
async def test_get_and_keys_read_a_bucket_copy(
    s3: Any, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    pytest.importorskip("obstore")
    pytest.importorskip("crawlee")
    from test_replica_audit import written_store  # noqa: PLC0415 (needs the extras)

    folder, url = await written_store(s3, tmp_path)
    for argv in (["get", "k007"], ["get", "k007", "--json"], ["keys", "--prefix", "k00"]):
        local = logkv_cli.main([argv[0], str(folder), *argv[1:]]), capsysbinary.readouterr()
        remote = logkv_cli.main([argv[0], url, *argv[1:]]), capsysbinary.readouterr()
        assert local[0] == remote[0] == 0, (argv, remote)
        assert remote[1].out == local[1].out.replace(str(folder).encode(), url.encode()), argv
    assert logkv_cli.main(["set", url, "k", "v"]) == ExitCode.USAGE  # writes are local only
