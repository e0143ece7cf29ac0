"""The web console's JSON API and pages, in process (Starlette's test client): what each view
shows, paging, history and diffs, the state at a time, a writer appending beside it, and
damaged or foreign stores shown as such, never as a server error."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3

pytest.importorskip("starlette")
pytest.importorskip("jinja2")

from web_support import HOSTILE_KEY, client

from logkv import Engine
from logkv.cli.main import main as logkv_main

SHOP = "/api/stores/key_value_stores/shop"


def get(api: Any, url: str, status: int = 200, **params: Any) -> Any:
    response = api.get(url, params=params)
    assert response.status_code == status, response.text
    return (
        response.json()
        if response.headers["content-type"].startswith("application/json")
        else response.text
    )


def test_overview_lists_every_kind_with_figures(web_api: Any) -> None:
    data = get(web_api, "/api/stores")
    stores = {(s["kind"], s["name"]): s for s in data["stores"]}
    assert set(stores) == {
        ("key_value_stores", "shop"),
        ("datasets", "items"),
        ("request_queues", "queue"),
    }
    shop = stores["key_value_stores", "shop"]
    assert shop["status"] == "ok" and shop["keys"] == 256 and shop["last_seq"] > 256
    assert shop["dead_bytes"] > 0 and shop["disk_bytes"] > 0 and shop["last_write"]
    assert stores["datasets", "items"]["items"] == 3
    assert stores["request_queues", "queue"]["requests"] == {"pending": 1, "handled": 1, "total": 2}
    assert "Storage" in get(web_api, "/")


def test_keys_page_through_a_prefix_exactly(web_api: Any) -> None:
    seen: list[str] = []
    after = None
    while True:
        params = {"prefix": "item-", "limit": 100, **({"after": after} if after else {})}
        page = get(web_api, f"{SHOP}/keys", **params)
        assert page["matching"] == 250
        seen += [row["key"] for row in page["keys"]]
        after = page["next"]
        if after is None:
            break
    assert seen == [f"item-{i:04d}" for i in range(250)]
    row = get(web_api, f"{SHOP}/keys", prefix="product")["keys"][0]
    assert row["key"] == "product-1" and row["seq"] == 3 and row["modified"]
    assert row["content_type"].startswith("application/json")
    assert get(web_api, f"{SHOP}/keys", prefix="zzz")["keys"] == []
    get(web_api, f"{SHOP}/keys", 400, limit="0")
    get(web_api, f"{SHOP}/keys", 400, limit="many")


def test_record_views_by_content_type(web_api: Any) -> None:
    record = get(web_api, f"{SHOP}/record", key="product-1")
    assert record["view"] == "json" and json.loads(record["text"])["price"] == 703
    assert get(web_api, f"{SHOP}/record", key="notes")["view"] == "text"
    assert get(web_api, f"{SHOP}/record", key="logo.png")["view"] == "image"
    assert get(web_api, f"{SHOP}/record", key="page-hostile")["view"] == "page"
    assert get(web_api, f"{SHOP}/record", key="nothing")["view"] == "none"
    old = get(web_api, f"{SHOP}/record", key="product-1", seq=1)
    assert json.loads(old["text"])["price"] == 701 and not old["current"]
    get(web_api, f"{SHOP}/record", 404, key="gone")
    get(web_api, f"{SHOP}/record", 404, key="product-1", seq=999)
    get(web_api, f"{SHOP}/record", 400, key="")
    get(web_api, f"{SHOP}/record", 400)
    page = get(web_api, "/stores/key_value_stores/shop/record", key="product-1")
    assert "<details" in page and "&#34;Phone&#34;" in page


def test_history_paging_and_diffs(web_api: Any) -> None:
    history = get(web_api, f"{SHOP}/history", key="product-1")
    assert [c["seq"] for c in history["changes"]] == [1, 2, 3] and history["starts_at"] == 1
    assert (
        get(web_api, f"{SHOP}/history", key="product-1", offset=1, limit=1)["changes"][0]["seq"]
        == 2
    )
    diff = get(web_api, f"{SHOP}/diff", key="product-1", a=1, b=3)
    assert '-  "price": 701,' in diff["lines"] and '+  "price": 703,' in diff["lines"]
    text = get(web_api, f"{SHOP}/diff", key="notes", a=4, b=5)
    assert "-line two" in text["lines"] and "+line three" in text["lines"]
    gone = get(web_api, f"{SHOP}/history", key="gone")["changes"]
    assert [c["op"] for c in gone] == ["set", "delete"]
    assert get(web_api, f"{SHOP}/diff", key="gone", a=gone[0]["seq"], b=gone[1]["seq"])["lines"]
    get(web_api, f"{SHOP}/diff", 404, key="product-1", a=1, b=99)
    get(web_api, f"{SHOP}/diff", 400, key="product-1", a=1)
    page = get(web_api, "/stores/key_value_stores/shop/history", key="product-1", a=1, b=2)
    assert 'class="diff"' in page and "&#34;price&#34;: 702" in page


def test_state_at_a_seq_and_a_time(web_api: Any) -> None:
    state = get(web_api, f"{SHOP}/state", at="2")
    assert state["keys_then"] == 1 and state["keys"][0]["seq"] == 2
    everything = get(web_api, f"{SHOP}/state", at="2999-01-01T00:00:00Z", limit=1000)
    assert everything["keys_then"] == 256
    assert get(web_api, f"{SHOP}/state", at="1970-01-01")["keys_then"] == 0
    get(web_api, f"{SHOP}/state", 400, at="yesterday")
    get(web_api, f"{SHOP}/state", 400)


def test_follows_a_live_writer(web_storage: Path, web_api: Any) -> None:
    path = web_storage / "key_value_stores" / "shop"
    assert get(web_api, f"{SHOP}/keys", prefix="new-")["matching"] == 0
    with Engine.open(path) as writer:
        writer.set("new-1", b"fresh", "text/plain")
        summary = get(web_api, SHOP)
        assert summary["writer_pid"] == os.getpid()
        assert get(web_api, f"{SHOP}/keys", prefix="new-")["matching"] == 1
        writer.set("new-1", b"fresher", "text/plain")
        writer.compact()
        writer.set("new-2", b"after the compaction", "text/plain")
        assert [r["key"] for r in get(web_api, f"{SHOP}/keys", prefix="new-")["keys"]] == [
            "new-1",
            "new-2",
        ]
        assert get(web_api, f"{SHOP}/record", key="new-1")["text"] == "fresher"
    assert get(web_api, SHOP)["writer_pid"] is None


def test_verify(web_api: Any) -> None:
    result = get(web_api, f"{SHOP}/verify")
    assert result["ok"] is True and result["keys_read"] == 256
    listed = {s["name"]: s for s in get(web_api, "/api/stores")["stores"]}
    assert listed["shop"]["verify"]["ok"] is True


def _flip_byte_in_the_middle(store: Path) -> None:
    segment = sorted(store.glob("*.seg"))[0]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))


def test_damaged_and_foreign_stores_are_shown_never_a_server_error(
    web_storage: Path, web_api: Any
) -> None:
    _flip_byte_in_the_middle(web_storage / "key_value_stores" / "shop")
    garbage = web_storage / "key_value_stores" / "garbage"
    garbage.mkdir()
    (garbage / "00000001.seg").write_bytes(os.urandom(300))
    (web_storage / "datasets" / "items" / "META.json").write_text("{not json")
    listed = {s["name"]: s for s in get(web_api, "/api/stores")["stores"]}
    assert listed["shop"]["status"] == "damaged" and "offset" in listed["shop"]["error"]
    assert listed["garbage"]["status"] == "damaged" and listed["garbage"]["error"]
    assert "META.json unreadable" in listed["items"]["holds"]
    assert "damaged" in get(web_api, "/")
    assert "damaged" in get(web_api, "/stores/key_value_stores/shop")
    assert get(web_api, SHOP)["status"] == "damaged"
    get(web_api, f"{SHOP}/keys", 409)
    assert get(web_api, f"{SHOP}/verify")["ok"] is False
    assert "problems" in get(web_api, "/stores/key_value_stores/shop/verify").lower()


def test_unknown_stores_are_404(web_api: Any) -> None:
    get(web_api, "/api/stores/key_value_stores/nope", 404)
    get(web_api, "/api/stores/elsewhere/shop", 404)
    assert get(web_api, "/stores/datasets/shop", 404)


def test_raw_download_is_an_attachment(web_api: Any) -> None:
    response = web_api.get(
        "/raw/key_value_stores/shop", params={"key": "logo.png", "download": "1"}
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.content.startswith(b"\x89PNG")
    old = web_api.get("/raw/key_value_stores/shop", params={"key": "product-1", "seq": "1"})
    assert json.loads(old.content)["price"] == 701


def test_hostile_key_in_the_json_api(web_api: Any) -> None:
    rows = get(web_api, f"{SHOP}/keys", prefix="<")["keys"]
    assert [r["key"] for r in rows] == [HOSTILE_KEY]
    assert get(web_api, f"{SHOP}/record", key=HOSTILE_KEY)["key"] == HOSTILE_KEY


def test_serve_without_the_extra_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ImportError
    (tmp_path / "key_value_stores").mkdir()
    assert logkv_main(["serve", str(tmp_path)]) == 2
    assert "pip install 'logkv[web]'" in capsys.readouterr().err


def test_serve_refuses_a_store_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Engine.open(tmp_path / "store") as engine:
        engine.set("k", b"v")
    assert logkv_main(["serve", str(tmp_path / "store")]) == 2
    assert "storage folder" in capsys.readouterr().err


@pytest.mark.slow
def test_a_log_cut_short_anywhere_is_never_a_server_error(
    web_storage: Path, tmp_path: Path
) -> None:
    """A log cut at any point (a crash mid-append, a copy cut short) is shown as what it is.
    Each cut is a fresh console: files never shrink under an open store (the engine's rule;
    a writer's open only cuts bytes past the last record)."""
    segment = sorted((web_storage / "key_value_stores" / "shop").glob("*.seg"))[0]
    data = segment.read_bytes()
    for n, cut in enumerate((len(data) - 1, len(data) - 40, len(data) * 2 // 3, 20, 0)):
        copy = tmp_path / f"cut-{n}"
        shutil.copytree(web_storage, copy)
        (copy / "key_value_stores" / "shop" / segment.name).write_bytes(data[:cut])
        with client(copy) as web_api:
            for url in ("/api/stores", SHOP, "/", "/stores/key_value_stores/shop"):
                response = web_api.get(url)
                assert response.status_code == 200, (cut, url, response.text)
            assert get(web_api, SHOP)["status"] in ("ok", "damaged"), cut
            assert web_api.get(f"{SHOP}/keys").status_code in (200, 409), cut


@pytest.mark.slow
def test_serve_on_port_0_prints_the_port_it_bound(web_storage: Path) -> None:
    httpx = pytest.importorskip("httpx")
    server = subprocess.Popen(
        [sys.executable, "-m", "logkv", "serve", str(web_storage), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/$", line.strip())
        assert match is not None, line + (server.stderr.read() if server.poll() else "")
        port = int(match.group(1))
        assert port != 0
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/stores", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert answer.status_code == 200
        assert {s["name"] for s in answer.json()["stores"]} >= {"shop"}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serve_names_a_port_it_cannot_bind(
    web_storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert logkv_main(["serve", str(web_storage), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1 port {port}" in capsys.readouterr().err


async def _download(app: Any, path: str, query: str) -> tuple[dict[str, str], int, str]:
    """Request ``path`` of the ASGI ``app`` and read the body as it comes, keeping none of
    it: the headers, the bytes received and their BLAKE3 digest."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000")], "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    headers: dict[str, str] = {}
    received = [0]
    digest = blake3()

    asked, done = [False], asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not asked[0]:
            asked[0] = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()  # the client stays until the whole body came
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers.update((k.decode(), v.decode()) for k, v in message["headers"])
        elif message["type"] == "http.response.body":
            received[0] += len(message.get("body", b""))
            digest.update(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    await app(scope, receive, send)
    return headers, received[0], digest.hexdigest()


@pytest.mark.slow
def test_a_big_streamed_value_downloads_in_bounded_memory(tmp_path: Path) -> None:
    """A 96 MiB streamed value, now and as an old version, is sent a chunk at a time: the
    console never holds more than a few chunks of it."""
    from logkv.web.app import create_app  # noqa: PLC0415

    size, piece = 96 << 20, bytes(range(256)) * 4096  # 1 MiB
    folder = tmp_path / "key_value_stores" / "big"
    with Engine.open(folder) as engine:
        first = engine.set_stream("blob", (piece for _ in range(size // len(piece))), "video/mp4")
        engine.set("blob", b"small now", "text/plain")
    expected = blake3(piece * (size // len(piece))).hexdigest()
    app = create_app(tmp_path)
    tracemalloc.start()
    try:
        headers, received, digest = asyncio.run(
            _download(app, "/raw/key_value_stores/big", f"key=blob&seq={first}&download=1")
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (received, digest) == (size, expected)
    assert headers["content-length"] == str(size)
    assert headers["content-disposition"].startswith("attachment;")
    assert headers["content-security-policy"].startswith("sandbox")
    assert headers["content-type"] == "video/mp4"
    assert peak < 16 << 20, f"peak {peak:,} bytes for a {size:,}-byte value"
