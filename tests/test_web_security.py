"""The web console's guard against hostile input and hostile sites: Host names (DNS
rebinding), the token, names that try to leave the storage folder, keys and values with markup,
the headers on every response, raw values served sandboxed, and no write to any store."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("jinja2")

from web_support import HOSTILE_KEY, client

from logkv import Engine
from logkv.web.cli import serve_settings
from logkv.web.security import host_name

PAGES = [
    "/",
    "/stores/key_value_stores/shop",
    "/stores/key_value_stores/shop/record?key=product-1",
    "/stores/key_value_stores/shop/history?key=product-1&a=1&b=2",
    "/stores/key_value_stores/shop/state?at=3",
    "/api/stores",
    "/api/stores/key_value_stores/shop/keys",
    "/static/console.css",
    "/stores/key_value_stores/nope",
]


@pytest.mark.parametrize(
    "host", ["evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "", "10.0.0.1:8000"]
)
def test_a_foreign_host_name_is_refused(web_api: Any, host: str) -> None:
    response = web_api.get("/api/stores", headers={"host": host})
    assert response.status_code == 400
    assert "stores" not in response.text


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "LOCALHOST:1", "[::1]:8000"])
def test_loopback_host_names_are_served(web_api: Any, host: str) -> None:
    assert web_api.get("/api/stores", headers={"host": host}).status_code == 200


def test_host_name_parsing() -> None:
    assert host_name("[::1]:80") == "::1"
    assert host_name("Example.COM:8000") == "example.com"
    assert host_name("localhost") == "localhost"


def test_allowed_hosts_are_added(web_storage: Path) -> None:
    with client(web_storage, allowed_hosts=("console.lan",)) as c:
        assert c.get("/api/stores", headers={"host": "console.lan:8000"}).status_code == 200
        assert c.get("/api/stores", headers={"host": "other.lan"}).status_code == 400


def test_token_is_required_and_kept_in_a_cookie(web_storage: Path) -> None:
    with client(web_storage, token="s3cret-token") as c:
        assert c.get("/api/stores").status_code == 401
        assert c.get("/static/console.css").status_code == 401
        assert c.get("/api/stores", params={"token": "wrong"}).status_code == 401
        assert c.get("/api/stores", headers={"authorization": "Bearer wrong"}).status_code == 401
        ok = c.get("/api/stores", headers={"authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200
        first = c.get(
            "/stores/key_value_stores/shop", params={"token": "s3cret-token", "prefix": "item"}
        )
        assert first.status_code == 303
        assert first.headers["location"] == "/stores/key_value_stores/shop?prefix=item"
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert c.get("/api/stores").status_code == 200  # the client kept the cookie
        c.cookies.clear()
        assert c.get("/api/stores").status_code == 401


def test_token_redirect_stays_on_the_console(web_storage: Path) -> None:
    with client(web_storage, token="t") as c:
        response = c.get("/%2Fevil.example/x", params={"token": "t"})  # path //evil.example/x
        assert response.status_code == 303
        assert response.headers["location"].startswith("/evil.example")


def test_a_bind_beyond_loopback_gets_a_token() -> None:
    token, _ = serve_settings("0.0.0.0", None, [])
    assert token and len(token) >= 24
    assert serve_settings("127.0.0.1", None, []) == (None, ("127.0.0.1",))
    assert serve_settings("192.168.1.5", "given", ["console.lan"])[0] == "given"
    assert "console.lan" in serve_settings("192.168.1.5", "given", ["console.lan"])[1]


@pytest.mark.parametrize(
    "url",
    [
        "/api/stores/key_value_stores/%2e%2e",
        "/api/stores/key_value_stores/..%2F..%2Fetc/keys",
        "/api/stores/../key_value_stores/shop/keys",
        "/api/stores/key_value_stores/.logkv-trash/keys",
        "/api/stores/%2e%2e/key_value_stores/keys",
        "/raw/key_value_stores/%2e%2e?key=x",
        "/api/stores/key_value_stores/shop%00/keys",
        "/api/stores/key_value_stores/linked/keys",
        "/static/../app.py",
        "/static/%2e%2e/app.py",
    ],
)
def test_names_cannot_leave_the_storage_folder(web_storage: Path, web_api: Any, url: str) -> None:
    outside = web_storage.parent / "outside"
    with Engine.open(outside) as engine:
        engine.set("secret", b"from outside")
    (web_storage / "key_value_stores" / "linked").symlink_to(outside)
    response = web_api.get(url)
    assert response.status_code in (400, 404), (url, response.status_code)
    assert "from outside" not in response.text and "import" not in response.text
    names = {s["name"] for s in web_api.get("/api/stores").json()["stores"]}
    assert "linked" not in names


def test_hostile_keys_are_escaped_in_every_page(web_api: Any) -> None:
    pages = [
        web_api.get("/stores/key_value_stores/shop", params={"prefix": "<"}).text,
        web_api.get("/stores/key_value_stores/shop/record", params={"key": HOSTILE_KEY}).text,
        web_api.get("/stores/key_value_stores/shop/history", params={"key": HOSTILE_KEY}).text,
        web_api.get("/stores/key_value_stores/shop", params={"prefix": "<script>\"'"}).text,
        web_api.get("/stores/key_value_stores/<script>").text,
    ]
    for page in pages:
        assert "<script>console" not in page and '<script>"' not in page
        # the only script is the console's own, from its static folder
        assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/console.js" defer>']
    assert "&lt;script&gt;console.log(&#39;EXECUTED&#39;)&lt;/script&gt;" in pages[1]
    assert "%3Cscript%3E" in pages[0]  # in links, the key is URL-encoded
    record = web_api.get(
        "/stores/key_value_stores/shop/record", params={"key": "page-hostile"}
    ).text
    assert "&lt;script&gt;console.log" in record  # the stored page's source, escaped
    assert "<script>console.log" not in record


def test_every_response_carries_the_headers(web_api: Any) -> None:
    for url in PAGES:
        response = web_api.get(url)
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff", url
        assert headers["cache-control"] == "no-store"
        policy = headers["content-security-policy"]
        assert "default-src 'none'" in policy and "'unsafe-inline'" not in policy, url
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert headers["x-frame-options"] == "DENY"
        assert headers["server-timing"].startswith("app;dur=")


@pytest.mark.parametrize("key", ["page-hostile", HOSTILE_KEY, "logo.png", "product-1"])
def test_raw_values_are_served_sandboxed(web_api: Any, key: str) -> None:
    for download in ("0", "1"):
        response = web_api.get(
            "/raw/key_value_stores/shop", params={"key": key, "download": download}
        )
        assert response.status_code == 200
        policy = response.headers["content-security-policy"]
        assert policy.split(";")[0] == "sandbox" and "allow-scripts" not in policy
        assert "default-src 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "SAMEORIGIN"
        disposition = response.headers["content-disposition"]
        assert disposition.startswith("attachment;" if download == "1" else "inline;")
        assert '"' not in disposition.split("filename=")[1].strip('"').split('";')[0]


def test_stored_pages_are_previewed_in_a_sandboxed_frame(web_api: Any) -> None:
    page = web_api.get("/stores/key_value_stores/shop/record", params={"key": "page-hostile"}).text
    frames = re.findall(r"<iframe[^>]*>", page)
    assert len(frames) == 1 and " sandbox " in frames[0] and "allow-" not in frames[0]
    assert 'src="/raw/key_value_stores/shop?key=page-hostile"' in frames[0]


def test_a_content_type_that_no_header_can_carry_is_served_as_bytes(
    web_storage: Path, web_api: Any
) -> None:
    with Engine.open(web_storage / "key_value_stores" / "shop") as engine:
        engine.set("crlf", b"<b>x</b>", "text/html\r\nSet-Cookie: a=b")
    response = web_api.get("/raw/key_value_stores/shop", params={"key": "crlf"})
    assert response.headers["content-type"] == "application/octet-stream"
    assert "set-cookie" not in response.headers


def _fingerprint(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_nothing_the_console_serves_writes(web_storage: Path, web_api: Any) -> None:
    before = _fingerprint(web_storage)
    for url in PAGES:
        web_api.get(url)
    web_api.get("/api/stores/key_value_stores/shop/verify")
    web_api.get("/raw/key_value_stores/shop", params={"key": "logo.png", "download": "1"})
    for method in ("post", "put", "delete", "patch"):
        assert getattr(web_api, method)("/api/stores/key_value_stores/shop/keys").status_code == 405
    assert _fingerprint(web_storage) == before


@pytest.mark.parametrize(
    "url",
    [
        "/api/stores/key_value_stores/shop/record?key=" + "k" * 1025,
        "/api/stores/key_value_stores/shop/record?key=",
        "/api/stores/key_value_stores/shop/record?key=product-1&seq=-1",
        "/api/stores/key_value_stores/shop/record?key=product-1&seq=%C2%B2",
        "/api/stores/key_value_stores/shop/keys?limit=1000000",
        "/api/stores/key_value_stores/shop/keys?limit=%00",
        "/api/stores/key_value_stores/shop/history?key=product-1&offset=x",
        "/api/stores/key_value_stores/shop/diff?key=product-1&a=1&b=",
        "/api/stores/key_value_stores/shop/state?at=%FF%FE",
        "/stores/key_value_stores/shop/record?key=%FF",
        "/stores/key_value_stores/shop/history?key=product-1&a=1&b=x",
    ],
)
def test_bad_parameters_are_400_or_404_never_500(web_api: Any, url: str) -> None:
    response = web_api.get(url)
    assert response.status_code in (400, 404), (url, response.status_code, response.text)
    assert "Traceback" not in response.text
