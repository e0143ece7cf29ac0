"""Every ``logkv`` command run as a real process (``python -m logkv``, and the
``logkv-compact`` alias once) over each kind of folder a user hands it: a plain store, a
storage folder with ``--store``, a store held by a live writer process, a damaged store and a
Crawlee folder. Each checks the output, ``--json`` and the exit status, and that an expected
error is one clean line (no traceback).

The folders are built once for the module; the commands that only read run concurrently.
Processes start slowly (about a second each on a loaded machine), so the module is slow.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_one_error, run_command
from test_cli import BINARY, Model, files_of, fill, writer_in_child
from test_import_export import new_crawlee_folder, write_record

from logkv import Engine
from logkv.cli import ExitCode
from logkv.history import iter_log
from logkv.names import StorageType
from logkv.storage_clients._meta import StoreMeta, new_store_id, write_meta

pytestmark = pytest.mark.slow

#: Processes run at once (the machine's cores are shared; more only queue).
WORKERS = 4

Argv = Sequence[str | Path]


@dataclass(frozen=True)
class Done:
    """One finished command: its exit status, stdout (bytes and text) and stderr."""

    argv: list[str]
    code: int
    raw: bytes
    err: str

    @property
    def out(self) -> str:
        return self.raw.decode("utf-8", "replace")

    def json(self) -> Any:
        assert self.code == 0, self.explain()
        return json.loads(self.raw)

    def lines(self) -> list[Any]:
        assert self.code == 0, self.explain()
        return [json.loads(line) for line in self.raw.splitlines()]

    def explain(self) -> str:
        return f"{self.argv}: exit {self.code}\n{self.out}\n{self.err}"

    def ok(self) -> Done:
        assert self.code == 0 and "Traceback" not in self.err, self.explain()
        return self

    def refused(self, code: int, words: str) -> Done:
        """An expected error: ``code``, one error line on stderr saying ``words``."""
        assert self.code == code, self.explain()
        assert_one_error(self.err, words, self.explain())
        return self


def command(
    argv: Argv,
    env: dict[str, str] | None = None,
    program: Sequence[str] = (),
    stdin: bytes | None = None,
) -> Done:
    """Run ``python -m logkv ARGV`` (or ``program ARGV``, reading ``stdin``) as its users do."""
    done = run_command(*argv, program=program, env=env, stdin=stdin)
    err = done.stderr.decode("utf-8", "replace")
    return Done([str(a) for a in argv], done.returncode, done.stdout, err)


def commands(*argvs: Argv) -> list[Done]:
    """Run independent commands concurrently; their results in the order given."""
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(command, argvs))


# ---------------------------------------------------------------------------------- folders


@dataclass(frozen=True)
class Folders:
    """What the module's tests run the commands on (never written but through copies)."""

    plain: Path
    model: Model
    storage: Path
    damaged: Path
    crawlee: Path
    scratch: Path

    def copy(self, folder: Path, name: str) -> Path:
        """A fresh copy of ``folder`` to write to."""
        target = self.scratch / name
        shutil.copytree(folder, target)
        return target


def _event_log(path: Path, storage: StorageType) -> None:
    with Engine.open(path) as engine:
        for i in range(3):
            engine.set(f"{i:012d}", json.dumps({"item": i}).encode(), "application/json")
    meta = StoreMeta(id=new_store_id(), name=path.name, alias=None, kind="named",
                     created_at=0.0, accessed_at=0.0, modified_at=0.0, storage=storage)  # fmt: skip
    write_meta(path, meta)


def _damage(store: Path, key: str) -> None:
    """Flip one byte inside the value of ``key``'s record."""
    with Engine.open(store, readonly=True) as engine:
        entry = engine.entry(key)
    assert entry is not None and entry.file_id > 0
    segment = store / f"{entry.file_id:08d}.seg"
    data = bytearray(segment.read_bytes())
    data[entry.offset + entry.head + 10] ^= 0xFF
    segment.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Folders:
    root = tmp_path_factory.mktemp("cli")
    plain = root / "plain"
    model = fill(plain)
    storage = root / "storage"
    fill(storage / "key_value_stores" / "shop")
    _event_log(storage / "datasets" / "items", "dataset")
    _event_log(storage / "request_queues" / "queue", "request_queue")
    damaged = root / "damaged"
    fill(damaged)
    _damage(damaged, "binary")
    crawlee = root / "crawlee"
    default = new_crawlee_folder(crawlee / "key_value_stores" / "default", None)
    write_record(default, "INPUT", b'{"start": "https://example.com"}', "application/json")
    write_record(default, "page", b"<p>hi</p>", "text/html")
    scratch = root / "scratch"
    scratch.mkdir()
    return Folders(plain, model, storage, damaged, crawlee, scratch)


@pytest.fixture(scope="module")
def locked(folders: Folders) -> Iterator[tuple[Path, int]]:
    """A copy of the plain store held by a live writer process, and that process's pid."""
    store = folders.copy(folders.plain, "locked")
    with writer_in_child(store) as pid:
        yield store, pid


# ---------------------------------------------------------------------------------- a plain store


def test_every_read_of_a_plain_store(folders: Folders) -> None:
    store, state = folders.plain, folders.model.state()
    last = folders.model.records[-1][0]
    (get, get_json, get_none, absent, keys, keys_json, keys_long, stats, verify, history,
     history_json, dump, dump_live, dry_run, serve) = commands(
        ["get", store, "binary"],
        ["get", store, "text", "--json"],
        ["get", store, "nothing"],
        ["get", store, "absent"],
        ["keys", store, "--prefix", "page/"],
        ["keys", store, "--json"],
        ["keys", store, "--long", "--json"],
        ["stats", store, "--json"],
        ["--json", "verify", store],
        ["history", store, "page/0"],
        ["history", store, "page/0", "--json", "--values"],
        ["dump", store, "--json"],
        ["dump", store, "--live", "--json", "--values"],
        ["compact", store, "--dry-run", "--json"],
        ["serve", "--help"],
    )  # fmt: skip
    assert get.ok().raw == BINARY
    meta = get_json.json()
    assert (meta["key"], meta["content_type"], meta["size"]) == ("text", "text/plain", 14)
    assert get_none.ok().raw == b"" and "holds None" in get_none.err
    absent.refused(ExitCode.USAGE, "no key 'absent'")
    assert keys.ok().out.split() == sorted(k for k in state if k.startswith("page/"))
    assert [line["key"] for line in keys_json.lines()] == sorted(state)
    long_rows = keys_long.lines()
    assert {r["key"]: r["size"] for r in long_rows} == {
        k: len(v or b"") for k, (v, _) in state.items()
    }
    assert max(r["seq"] for r in long_rows) == last
    figures = stats.json()
    assert (figures["keys"], figures["last_seq"], figures["storage"]) == (
        len(state), last, "key_value_store"
    )  # fmt: skip
    checked = verify.json()
    assert (checked["ok"], checked["records"], checked["problems"]) == (True, last, [])
    page0 = [r for r in folders.model.records if r[1] == "page/0"]
    table = history.ok().out.splitlines()
    assert len([line for line in table if "page/0" in line or " set " in line]) >= len(page0)
    changes = history_json.lines()
    assert [c["seq"] for c in changes] == [r[0] for r in page0]
    assert changes[-1]["value"] == page0[-1][2].decode()  # type: ignore[union-attr]
    records = dump.lines()
    assert [r["seq"] for r in records if "seq" in r] == list(range(1, last + 1))
    live = {r["key"]: r for r in dump_live.lines() if "key" in r}
    assert sorted(live) == sorted(state)
    plan = dry_run.json()
    assert plan["total"]["stores"] == 1
    assert "usage:" in serve.ok().out and "serve" in serve.out


def test_the_reads_wrote_nothing(folders: Folders) -> None:
    before = files_of(folders.plain)
    commands(["stats", folders.plain], ["verify", folders.plain], ["dump", folders.plain])
    assert files_of(folders.plain) == before


def test_replay_matches_the_original_record_by_record(folders: Folders) -> None:
    store = folders.plain
    until = folders.model.records[len(folders.model.records) // 2][0]
    target = folders.scratch / "replayed"
    past = folders.scratch / "never"
    last = folders.model.records[-1][0]
    done, too_far = commands(
        ["replay", store, "--until", str(until), "--to", target, "--json"],
        ["replay", store, "--until", str(last + 1000), "--to", past],
    )
    done.ok()
    too_far.refused(ExitCode.USAGE, str(last + 1000))
    assert not past.exists()
    original = [(r.record, r.chain) for r in iter_log(store) if r.record.seq <= until]
    copied = [(r.record, r.chain) for r in iter_log(target)]
    assert len(copied) == until
    for mine, theirs in zip(copied, original, strict=True):
        assert mine == theirs  # the same seq, time, key, value, content type and chain value
    assert (target / "PROVENANCE.json").is_file()
    verify, get = commands(["verify", target, "--json"], ["get", target, "text"])
    assert verify.json()["ok"] is True
    expected = folders.model.state(until)["text"][0]
    assert get.ok().raw == expected


# ---------------------------------------------------------------------------------- writes


EDITOR = """\
import pathlib, sys
path = pathlib.Path(sys.argv[1])
path.write_bytes(path.read_bytes().replace(b"round", b"ROUND"))
"""


def test_set_rm_and_edit_with_a_scripted_editor(folders: Folders) -> None:
    store = folders.copy(folders.plain, "writes")
    script = folders.scratch / "editor.py"
    script.write_text(EDITOR)
    editor = {"EDITOR": f"{sys.executable} {script}", "VISUAL": ""}
    breaker = folders.scratch / "breaker.py"
    breaker.write_text("import sys\nopen(sys.argv[1], 'w').write('{not json')\n")

    done = command(["set", store, "conf", '{"depth": 3}', "--content-type", "application/json",
                    "--json"])  # fmt: skip
    assert done.json()["content_type"] == "application/json"
    command(["set", store, "conf", "{oops"]).refused(ExitCode.USAGE, "not valid")
    assert "Set new in" in command(["set", store, "new", "text value"]).ok().out
    assert command(["rm", store, "page/1", "--json"]).json()["key"] == "page/1"
    command(["rm", store, "page/1"]).refused(ExitCode.USAGE, "no key 'page/1'")

    edited = command(["edit", store, "page/0", "--json"], env=editor).json()
    assert edited["changed"] is True
    same = command(["edit", store, "conf"], env={"EDITOR": "true", "VISUAL": ""}).ok()
    assert "unchanged" in same.out
    bad = command(["edit", store, "conf"], env={"EDITOR": f"{sys.executable} {breaker}",
                                                "VISUAL": ""})  # fmt: skip
    bad.refused(ExitCode.USAGE, "not valid for its content type")
    command(["edit", store, "absent"], env=editor).refused(ExitCode.USAGE, "no key 'absent'")

    page0, conf, gone, check = commands(
        ["get", store, "page/0"], ["get", store, "conf"], ["get", store, "page/1"],
        ["verify", store, "--json"],
    )  # fmt: skip
    assert page0.ok().raw.startswith(b"<p>ROUND ")
    assert conf.ok().raw == b'{"depth": 3}'
    gone.refused(ExitCode.USAGE, "no key")
    assert check.json()["ok"] is True


def test_set_reads_stdin(folders: Folders) -> None:
    store = folders.copy(folders.plain, "stdin")
    done = command(["set", store, "raw", "-", "--json"], stdin=BINARY)
    assert done.json()["size"] == len(BINARY)
    assert command(["get", store, "raw"]).ok().raw == BINARY


# ---------------------------------------------------------------------------------- storage folder


def test_a_storage_folder_with_store(folders: Folders) -> None:
    storage = folders.storage
    shop = ["--store", "shop"]
    (bare, get, keys, stats, verify, history, dump, items, queue, dry_run, nope) = commands(
        ["keys", storage],
        ["get", storage, "binary", *shop],
        ["keys", storage, *shop, "--long"],
        ["stats", storage, *shop, "--json"],
        ["verify", storage, *shop],
        ["history", storage, "text", *shop, "--json"],
        ["dump", storage, *shop, "--key", "text", "--json"],
        ["stats", storage, "--store", "items", "--kind", "dataset", "--json"],
        ["keys", storage, "--store", "queue", "--kind", "queue"],
        ["compact", storage, "--dry-run", "--json"],
        ["get", storage, "x", "--store", "nope"],
    )  # fmt: skip
    bare.refused(ExitCode.USAGE, "--store NAME")
    assert get.ok().raw == BINARY
    assert keys.ok().out.splitlines()[0].split()[:2] == ["key", "content"]
    assert stats.json()["storage"] == "key_value_store"
    assert "OK" in verify.ok().out
    assert [c["op"] for c in history.lines()] == ["set", "set"]
    assert len([r for r in dump.lines() if r.get("key") == "text"]) == 2
    assert items.json()["items"] == 3
    assert len(queue.ok().out.split()) == 3
    assert dry_run.json()["total"]["stores"] == 3
    nope.refused(ExitCode.USAGE, "it has: shop")


def test_writes_through_a_storage_folder(folders: Folders) -> None:
    storage = folders.copy(folders.storage, "storage-writes")
    shop = ["--store", "shop"]
    command(["set", storage, "k", "v", *shop]).ok()
    command(["rm", storage, "page/2", *shop]).ok()
    assert command(["get", storage, "k", *shop]).ok().raw == b"v"
    event_logs: list[Argv] = [
        ["set", storage, "000000000000", "{}", "--store", "items", "--kind", "dataset"],
        ["rm", storage, "000000000000", "--store", "queue", "--kind", "queue"],
    ]
    for argv in event_logs:
        command(argv).refused(ExitCode.USAGE, "not a key-value store")


# ---------------------------------------------------------------------------------- locked


def test_a_store_held_by_a_live_writer(folders: Folders, locked: tuple[Path, int]) -> None:
    store, pid = locked
    editor = {"EDITOR": "true", "VISUAL": ""}
    (get, keys, stats, verify, history, dump, set_, rm) = commands(
        ["get", store, "binary"],
        ["keys", store, "--long", "--json"],
        ["stats", store, "--json"],
        ["verify", store, "--json"],
        ["history", store, "text"],
        ["dump", store, "--live"],
        ["set", store, "k", "v"],
        ["rm", store, "text"],
    )
    assert get.ok().raw == BINARY
    assert len(keys.lines()) == len(folders.model.state())
    assert stats.json()["keys"] == len(folders.model.state())
    assert verify.json()["ok"] is True
    history.ok()
    dump.ok()
    for refused in (set_, rm, command(["edit", store, "text"], env=editor)):
        refused.refused(ExitCode.LOCKED, f"process {pid}")
    compacted = command(["compact", store, "--json"]).refused(ExitCode.LOCKED, f"process {pid}")
    assert json.loads(compacted.raw)["stores"][0]["status"] == "locked"
    assert command(["get", store, "text"]).ok().raw == b"second version"


# ---------------------------------------------------------------------------------- damaged


def test_a_damaged_store(folders: Folders) -> None:
    store = folders.damaged
    target = folders.scratch / "from-damaged"
    argvs: list[Argv] = [
        ["verify", store],
        ["verify", store, "--json"],
        ["stats", store],
        ["keys", store],
        ["get", store, "binary"],
        ["history", store, "binary"],
        ["dump", store],
        ["replay", store, "--until", "5", "--to", target],
        ["compact", store],
        ["set", store, "k", "v"],
    ]
    before = files_of(store)
    results = commands(*argvs)
    for done in results:
        assert done.code == ExitCode.DAMAGED, done.explain()
        assert "Traceback" not in done.err, done.explain()
        assert "checksum mismatch" in done.err or "corrupt" in done.err, done.explain()
    report = results[1]
    assert json.loads(report.raw)["ok"] is False
    assert not target.exists()
    assert files_of(store) == before


# ---------------------------------------------------------------------------------- Crawlee


def test_a_crawlee_folder_gets_a_hint_then_imports_and_migrates(folders: Folders) -> None:
    crawlee = folders.crawlee
    default = crawlee / "key_value_stores" / "default"
    hints = commands(
        ["stats", crawlee], ["keys", crawlee], ["compact", crawlee, "--dry-run"],
        ["get", default, "INPUT"], ["verify", default], ["set", default, "k", "v"],
        ["keys", crawlee, "--store", "default"],
    )  # fmt: skip
    for done in hints[:3]:
        done.refused(ExitCode.USAGE, f"logkv migrate {crawlee}")
    for done in hints[3:]:
        done.refused(ExitCode.USAGE, "logkv import")
    imported = folders.scratch / "imported"
    migrated = folders.copy(crawlee, "migrated")
    done, dry = commands(["import", default, imported, "--json"],
                         ["migrate", migrated, "--dry-run"])  # fmt: skip
    done.ok()
    assert "key_value_store default" in dry.ok().out
    moved = command(["migrate", migrated, "--json"]).json()
    assert moved["records"] == 2
    (from_import, from_migrate, back) = commands(
        ["get", imported, "INPUT"],
        ["keys", migrated, "--store", "default", "--json"],
        ["export", imported, folders.scratch / "exported"],
    )
    assert from_import.ok().raw == b'{"start": "https://example.com"}'
    assert [x["key"] for x in from_migrate.lines()] == ["INPUT", "page"]
    back.ok()
    assert (folders.scratch / "exported" / "page").read_bytes() == b"<p>hi</p>"


# ---------------------------------------------------------------------------------- the alias


def test_the_logkv_compact_alias(folders: Folders) -> None:
    store = folders.copy(folders.plain, "alias")
    script = Path(sys.executable).with_name("logkv-compact")
    program = [str(script)] if script.exists() else [sys.executable, "-m", "logkv.cli.compact"]
    done = command([store, "--json"], program=program)
    report = done.json()
    assert report["stores"][0]["status"] == "compacted", done.explain()
    check = command(["verify", store, "--json"]).json()
    assert check["ok"] is True
    assert command(["get", store, "text"]).ok().raw == b"second version"
    help_text = command(["--help"], program=program).ok().out
    assert "retention" in help_text
