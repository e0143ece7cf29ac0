"""The web console in a real browser: headless Chromium (Debian's ``chromium`` package, driven
by Playwright for Python; never a downloaded browser) against ``logkv serve``'s application on
127.0.0.1, over the storage of a small Crawlee crawl on logkv.

It navigates the overview, filters and pages keys, opens a record, pages a timeline and diffs
two versions (the filter, the paging and the diff are drawn by the page's script from the JSON
API, without loading a page), checks what each page shows, and saves screenshots in
``artifacts/web/`` (or ``$LOGKV_TEST_ARTIFACTS/web``). A stored page with a ``<script>`` and an
``<img onerror>`` is previewed and must not run: no console message, no request, no title
change; nor may a hostile key drawn by the script. Skipped, with the reason, where
``/usr/bin/chromium`` is missing, except under CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_command

pytest.importorskip("starlette")
pytest.importorskip("crawlee")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from logkv import Engine  # noqa: E402
from logkv.web.app import create_app  # noqa: E402

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ARTIFACTS = Path(os.environ.get("LOGKV_TEST_ARTIFACTS", Path(__file__).parent.parent / "artifacts"))


def _need_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def crawled(tmp_path: Path, site: str) -> Path:
    storage = tmp_path / "storage"
    program = [sys.executable, Path(__file__).with_name("web_crawl.py")]
    run_command(storage, site, program=program, text=True, timeout=120, code=0)
    return storage


@pytest.fixture
def console(crawled: Path) -> Iterator[str]:
    """``logkv serve``'s application over the crawl, served by uvicorn on 127.0.0.1."""
    config = uvicorn.Config(create_app(crawled), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def browser_page() -> Iterator[Any]:
    _need_chromium()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            yield page
        finally:
            browser.close()


def shot(page: Any, name: str) -> None:
    folder = ARTIFACTS / "web"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def _pages_crawled(storage: Path) -> int:
    """How many pages the crawl stored: one per handled request (Crawlee's request limit lets
    requests already in flight finish, so a crawl capped at 12 may handle 13)."""
    with Engine.open(storage / "key_value_stores" / "pages", readonly=True) as pages:
        return len(pages)


def test_console_in_chromium(console: str, crawled: Path, browser_page: Any) -> None:
    page = browser_page
    crawled_pages = _pages_crawled(crawled)
    assert crawled_pages >= 12
    messages: list[str] = []
    requests: list[str] = []
    page.on("console", lambda message: messages.append(message.text))
    page.on("request", lambda request: requests.append(request.url))
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    navigations: list[str] = []  # documents loaded (a redraw from the API loads none)
    page.on("load", lambda loaded: navigations.append(loaded.url))

    # the overview: every store of the crawl, by kind
    page.goto(console + "/")
    expect = sync_api.expect
    expect(page.locator("h1")).to_contain_text("Storage")
    for text in ("Key-value stores", "Datasets", "Request queues", "pages", "products"):
        expect(page.locator("main")).to_contain_text(text)
    expect(page.locator("main")).to_contain_text(f"{crawled_pages} items")
    shot(page, "overview")

    # a store's keys, filtered by a prefix as it is typed: the script asks the JSON API and
    # redraws the list in place (the page is not loaded again)
    with page.expect_event("load"):  # counted in navigations before `loaded` is taken below
        page.get_by_role("link", name="pages", exact=True).click()
    expect(page.locator("table.keys tbody tr")).to_have_count(crawled_pages)
    loaded = len(navigations)
    with page.expect_response(lambda r: "/api/stores/key_value_stores/pages/keys" in r.url):
        page.get_by_label("Prefix").fill("p1")
    expect(page.locator("#matching")).to_contain_text("start with this prefix")
    keys = page.locator("table.keys td.key").all_inner_texts()
    assert keys and all(key.startswith("p1") for key in keys), keys
    expect(page.locator("#filter")).to_contain_text(f"{len(keys)} key(s) start with this prefix")
    assert page.url.endswith("?prefix=p1") and len(navigations) == loaded
    shot(page, "keys")

    # paging the keys through the API, two at a time
    page.goto(console + "/stores/key_value_stores/pages?limit=2")
    first_two = page.locator("table.keys td.key").all_inner_texts()
    assert len(first_two) == 2
    loaded = len(navigations)
    with page.expect_response(lambda r: "/api/" in r.url and "after=" in r.url):
        page.get_by_role("link", name="next page").click()
    expect(page.locator("#keys-pager")).to_contain_text("first page")
    next_two = page.locator("table.keys td.key").all_inner_texts()
    assert len(next_two) == 2 and next_two[0] > first_two[1], (first_two, next_two)
    assert len(navigations) == loaded

    # a record: JSON, collapsible
    page.goto(console + "/stores/key_value_stores/products")
    page.get_by_role("link", name="product-1").click()
    expect(page.locator(".tree")).to_contain_text('"Phone"')
    expect(page.locator(".tree")).to_contain_text("699")
    page.get_by_role("button", name="collapse all").click()
    expect(page.locator(".tree details").first).not_to_have_attribute("open", "")
    page.get_by_role("button", name="expand all").click()
    shot(page, "record")

    # its history, and a diff of the first and last versions, drawn from the API
    with page.expect_event("load"):
        page.get_by_role("link", name="history").click()
    expect(page.locator("table.timeline tbody tr")).to_have_count(3)
    page.locator("table.timeline tbody tr").nth(0).locator("input[name=a]").check()
    page.locator("table.timeline tbody tr").nth(2).locator("input[name=b]").check()
    loaded = len(navigations)
    with page.expect_response(lambda r: "/api/stores/key_value_stores/products/diff" in r.url):
        page.get_by_role("button", name="diff the two chosen versions").click()
    diff = page.locator("pre.diff")
    expect(diff).to_contain_text('-  "price": 799,')
    expect(diff).to_contain_text('+  "price": 699,')
    assert len(navigations) == loaded
    shot(page, "history")

    # the timeline a version at a time: choose a on the first page and b on the last
    page.goto(console + "/stores/key_value_stores/products/history?key=product-1&limit=1")
    expect(page.locator("table.timeline tbody tr")).to_have_count(1)
    page.locator("input[name=a]").check()
    loaded = len(navigations)
    for _ in range(2):
        with page.expect_response(lambda r: "/api/" in r.url and "/history?" in r.url):
            page.get_by_role("link", name="later").click()
    expect(page.locator("#history-pager")).not_to_contain_text("later")
    page.locator("input[name=b]").check()
    with page.expect_response(lambda r: "/diff?" in r.url):
        page.get_by_role("button", name="diff the two chosen versions").click()
    expect(page.locator("pre.diff")).to_contain_text('+  "price": 699,')
    assert len(navigations) == loaded

    # a hostile key is shown as text, in the server's page and as the script draws it
    page.goto(console + "/stores/key_value_stores/products?prefix=%3C")
    expect(page.locator("td.key")).to_contain_text("<script>console.log('EXECUTED')</script>")
    page.get_by_label("Prefix").fill("")
    with page.expect_response(lambda r: "/keys?" in r.url and "prefix=%3C" in r.url):
        page.get_by_label("Prefix").fill("<")
    expect(page.locator("td.key")).to_have_count(1)
    expect(page.locator("td.key")).to_contain_text("<script>console.log('EXECUTED')</script>")
    assert page.locator("table.keys script").count() == 0

    # a stored page with a script and an onerror image: previewed, never run
    page.goto(console + "/stores/key_value_stores/products")
    page.get_by_role("link", name="page-hostile").click()
    frame_element = page.locator("iframe.preview")
    expect(frame_element).to_have_attribute("sandbox", "")
    frame = page.frame_locator("iframe.preview")
    expect(frame.locator("h1")).to_have_text("stored page")
    page.wait_for_timeout(500)  # time for a script or an image error to have fired
    shot(page, "hostile-page")
    assert "EXECUTED" not in messages, messages
    assert not script_errors, script_errors
    assert not [url for url in requests if "pwned" in url or "onerror" in url]
    assert page.title() == "page-hostile · logkv console"
    inner = [f for f in page.frames if f != page.main_frame]
    assert len(inner) == 1 and inner[0].evaluate("document.title") == "stored page"
