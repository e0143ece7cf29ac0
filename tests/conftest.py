"""Shared fixtures: a store folder per test, an opener that closes what it opened, and a local web
site for the crawler tests."""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from logkv import Engine
from logkv.configuration import ENVIRONMENT

OpenEngine = Callable[..., Engine]


#: How long a test waits for a child process it started to end after it was killed.
CHILD_PATIENCE = 60.0


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """A list for the child processes a test starts; those still running at the end are
    killed and reaped, whatever happened."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(CHILD_PATIENCE)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A store folder that does not exist yet (the engine creates it)."""
    return tmp_path / "store"


@pytest.fixture
def open_engine(store_path: Path) -> Iterator[OpenEngine]:
    """``open_engine(**options)`` opens ``store_path`` (or ``path=...``); closed at teardown."""
    opened: list[Engine] = []

    def opener(path: Path | None = None, **options: Any) -> Engine:
        engine = Engine.open(path if path is not None else store_path, **options)
        opened.append(engine)
        return engine

    yield opener
    for engine in reversed(opened):
        engine.close()


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``CRAWLEE_*`` setting from the environment reaches the test's configurations."""
    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def storage_dir(tmp_path: Path) -> Path:
    """A storage directory that does not exist yet."""
    return tmp_path / "storage"


class Pages(BaseHTTPRequestHandler):
    """Serves a small HTML page for every GET: its path, padding, and for ``/p{i}`` links to
    ``/p{2i+1}`` and ``/p{2i+2}`` (an endless binary tree of pages: crawlers stop at a bound)."""

    def do_GET(self) -> None:
        number = re.fullmatch(r"/p(\d+)", self.path)
        links = ""
        if number is not None:
            i = int(number.group(1))
            links = f'<a href="/p{2 * i + 1}">left</a> <a href="/p{2 * i + 2}">right</a>'
        body = f"<html><body>{self.path} {'x' * 500} {links}</body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def site() -> Iterator[str]:
    """A local web site on the loopback interface (:class:`Pages`), stopped after the test."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
