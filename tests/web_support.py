"""What the web console's tests share: a storage folder with stores of every kind, and a client."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from logkv import Engine
from logkv.storage_clients._meta import StoreMeta, write_meta
from logkv.storage_layout import item_key, pending_key, request_key

HOSTILE_KEY = "<script>console.log('EXECUTED')</script>\"'&"
HOSTILE_PAGE = (
    b"<html><head><title>stored page</title></head><body><h1>stored page</h1>"
    b"<script>console.log('EXECUTED'); document.title = 'pwned'; fetch('/api/pwned');</script>"
    b"<img src=\"/nowhere.png\" onerror=\"console.log('EXECUTED'); fetch('/api/onerror')\">"
    b"</body></html>"
)
#: A 1x1 PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360f8cf00000301010018dd8db00000000049454e44ae426082"
)


def _meta(folder: Path, storage: str) -> None:
    now = time.time()
    write_meta(
        folder,
        StoreMeta(
            id=folder.name + "id",
            name=folder.name,
            alias=None,
            kind="named",
            created_at=now,
            accessed_at=now,
            modified_at=now,
            storage=storage,
        ),
    )  # type: ignore[arg-type]


def make_storage(root: Path) -> Path:
    """A storage folder: key-value store ``shop`` (JSON with history, text, HTML, an image, a
    None, a hostile key), dataset ``items`` and request queue ``queue``."""
    shop = root / "key_value_stores" / "shop"
    with Engine.open(shop) as engine:
        for version in range(1, 4):
            body = {"name": "Phone", "price": 700 + version, "tags": ["a", "b"][:version]}
            engine.set("product-1", json.dumps(body).encode(), "application/json; charset=utf-8")
        engine.set("notes", b"line one\nline two\n", "text/plain; charset=utf-8")
        engine.set("notes", b"line one\nline 2\nline three\n", "text/plain; charset=utf-8")
        engine.set("page-hostile", HOSTILE_PAGE, "text/html")
        engine.set("logo.png", PNG, "image/png")
        engine.set("nothing", None)
        engine.set(HOSTILE_KEY, b"<b>bold?</b>", "text/html")
        engine.set("gone", b"x", "text/plain")
        engine.delete("gone")
        for i in range(250):
            engine.set(f"item-{i:04d}", str(i).encode(), "text/plain")
    _meta(shop, "key_value_store")
    items = root / "datasets" / "items"
    with Engine.open(items) as engine:
        for i in range(3):
            engine.set(item_key(i), json.dumps({"i": i}).encode(), "application/json")
    _meta(items, "dataset")
    queue = root / "request_queues" / "queue"
    with Engine.open(queue) as engine:
        for i, h in enumerate(["aa", "bb"]):
            engine.set(
                request_key(h), json.dumps({"url": f"https://x/{h}"}).encode(), "application/json"
            )
            if i == 0:
                engine.set(pending_key(i, h), b"", "application/octet-stream")
    _meta(queue, "request_queue")
    return root


def client(root: Path, **options: object):  # type: ignore[no-untyped-def]
    """A Starlette test client of the console over ``root``, as a browser on 127.0.0.1."""
    from logkv.web.app import create_app  # noqa: PLC0415 (the web extra may be missing)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Starlette's notice about httpx, once per process
        from starlette.testclient import TestClient  # noqa: PLC0415 (see above)

        return TestClient(
            create_app(root, **options),
            base_url="http://127.0.0.1:8000",  # type: ignore[arg-type]
            follow_redirects=False,
        )
