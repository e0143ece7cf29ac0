"""Shared fixtures and helpers: a store folder per test, an opener that closes what it opened, a
local web site for the crawler tests, and the one way the tests run a command as a process."""

from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, overload

import pytest

from logkv import Configuration, Durability, Engine
from logkv.configuration import ENVIRONMENT

OpenEngine = Callable[..., Engine]
#: One argument of a command: text, bytes (a file name that is not UTF-8) or a path.
Arg = str | bytes | os.PathLike[str]

#: The repository root: where the commands the tests run start.
ROOT = Path(__file__).resolve().parent.parent
#: How long a test waits for a child process it started to end after it was killed.
CHILD_PATIENCE = 60.0
#: How long a test waits for a command it runs to finish.
COMMAND_PATIENCE = 180.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked ``slow`` run first, each group in its own order: the parallel workers
    start the longest tests at once and share the short ones at the end, rather than one worker
    starting a minutes-long test when the others are nearly done."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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


@overload
def run_command(
    *args: Arg,
    module: str = ...,
    program: Sequence[Arg] = ...,
    text: Literal[True],
    stdin: str | None = ...,
    env: Mapping[str, str] | None = ...,
    timeout: float = ...,
    code: int | None = ...,
    cwd: Path = ...,
) -> subprocess.CompletedProcess[str]: ...


@overload
def run_command(
    *args: Arg,
    module: str = ...,
    program: Sequence[Arg] = ...,
    text: Literal[False] = ...,
    stdin: bytes | None = ...,
    env: Mapping[str, str] | None = ...,
    timeout: float = ...,
    code: int | None = ...,
    cwd: Path = ...,
) -> subprocess.CompletedProcess[bytes]: ...


def run_command(
    *args: Arg,
    module: str = "logkv",
    program: Sequence[Arg] = (),
    text: bool = False,
    stdin: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = COMMAND_PATIENCE,
    code: int | None = None,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str] | subprocess.CompletedProcess[bytes]:
    """Run ``python -m MODULE ARGS`` (or ``PROGRAM ARGS``) from the repository root (or from
    ``cwd``), as its users run it, and wait for it to end.

    Its stdout and stderr are captured, as bytes or, with ``text``, as text; ``stdin`` is what
    it reads (else nothing); ``env`` is added to this process's environment. With ``code``,
    the exit status must be that one (the command, its status and its output otherwise).
    From the repository root, ``python -m`` and ``python -c`` import this logkv."""
    command = [*(program or (sys.executable, "-m", module)), *args]
    if stdin is None:
        stdin = "" if text else b""  # nothing to read: the end of its input at once
    done = subprocess.run(
        command,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=text,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if code is not None:
        assert done.returncode == code, (
            f"{command}: exit {done.returncode}, not {code}\n{done.stdout!r}\n{done.stderr!r}"
        )
    return done


def assert_one_error(err: str, words: str, explain: str | None = None) -> None:
    """An expected error as a command reports it on stderr (``err``): no traceback, and one
    line with ``: error:`` that says ``words``. ``explain`` is shown if not (else ``err``)."""
    about = err if explain is None else explain
    assert "Traceback" not in err, about
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, about
    assert words in errors[0], about


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


@pytest.fixture
async def sides(tmp_path: Path, crawlee_storage: type) -> AsyncIterator[dict[str, Any]]:
    """Crawlee's file-system storage client and logkv's side by side, each in a storage
    directory of its own, opening the test module's ``crawlee_storage`` (``Dataset`` or
    ``RequestQueue``): ``crawlee_sides.Side`` by the client's name."""
    from crawlee_sides import serve_sides  # noqa: PLC0415 (the crawlee extra)

    async for made in serve_sides(tmp_path, crawlee_storage):
        yield made


@pytest.fixture
async def lone(tmp_path: Path, crawlee_storage: type) -> AsyncIterator[Any]:
    """logkv's storage clients alone over one storage directory, opening the test module's
    ``crawlee_storage``: a ``crawlee_sides.Lone``."""
    from crawlee_sides import Lone  # noqa: PLC0415 (the crawlee extra)

    async for made in Lone.serving(tmp_path, crawlee_storage):
        yield made


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


class Site(ThreadingHTTPServer):
    """The server of :class:`Pages`: a crawler killed mid-request is no error of the site."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exception(), ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture
def site() -> Iterator[str]:
    """A local web site on the loopback interface (:class:`Pages`), stopped after the test."""
    server = Site(("127.0.0.1", 0), Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- object storage (replication)


class S3Target:
    """A fresh replica root for one test: ``root`` (``s3://BUCKET/PREFIX``) and the ``AWS_*``
    variables that reach it (already set in this process; pass ``env`` to children)."""

    def __init__(self, root: str, env: dict[str, str]) -> None:
        self.root = root
        self.env = env


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str | None]:
    """A local S3 protocol server (moto) for the session, on 127.0.0.1; None when
    ``LOGKV_TEST_S3_URL`` points the tests at another endpoint instead."""
    if os.environ.get("LOGKV_TEST_S3_URL"):
        yield None
        return
    server_module = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str | None, monkeypatch: pytest.MonkeyPatch) -> S3Target:
    """A replica root of its own for the test: a new bucket on the local server, or a new
    prefix under ``LOGKV_TEST_S3_URL`` (whose endpoint and credentials come from the usual
    ``AWS_*`` variables)."""
    pytest.importorskip("obstore")
    unique = uuid.uuid4().hex[:12]
    external = os.environ.get("LOGKV_TEST_S3_URL")
    if s3_endpoint is None and external:
        return S3Target(f"{external.rstrip('/')}/logkv-test-{unique}", {})
    bucket = f"logkv-{unique}"
    request = urllib.request.Request(f"{s3_endpoint}/{bucket}", method="PUT")
    with urllib.request.urlopen(request) as response:
        assert response.status == 200
    env = {
        "AWS_ENDPOINT_URL": str(s3_endpoint),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "LOGKV_REPLICA_ALLOW_HTTP": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return S3Target(f"s3://{bucket}/crawl", env)


# ---------------------------------------------------------------- the web console


@pytest.fixture
def web_storage(tmp_path: Path) -> Path:
    """A storage folder with a store of every kind (``web_support.make_storage``)."""
    from web_support import make_storage  # noqa: PLC0415 (the web tests' own helpers)

    return make_storage(tmp_path / "storage")


@pytest.fixture
def web_api(web_storage: Path) -> Iterator[Any]:
    """A test client of the web console over ``web_storage``; its stores closed after."""
    from web_support import client  # noqa: PLC0415 (needs the web extra)

    with client(web_storage) as api:
        yield api


# ---------------------------------------------------------------- group commit


class HeldSyncs:
    """``os.fdatasync`` that records which thread called it, can hold the first call until
    :attr:`release` is set, and can fail every call with EIO (group-commit tests)."""

    def __init__(self, *, hold_first: bool = False, fail: bool = False) -> None:
        self.threads: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail = fail
        self._guard = threading.Lock()
        self._real = os.fdatasync

    def __call__(self, fd: int) -> None:
        with self._guard:
            self.threads.append(threading.get_ident())
        self.entered.set()
        assert self.release.wait(10.0), "a held fdatasync was never released"
        if self.fail:
            raise OSError(errno.EIO, "simulated EIO")
        self._real(fd)


@pytest.fixture
def held_syncs(monkeypatch: pytest.MonkeyPatch) -> Callable[..., HeldSyncs]:
    """Install a :class:`HeldSyncs` as ``os.fdatasync`` (keyword arguments as its own)."""

    def install(*, hold_first: bool = False, fail: bool = False) -> HeldSyncs:
        syncs = HeldSyncs(hold_first=hold_first, fail=fail)
        monkeypatch.setattr(os, "fdatasync", syncs)
        return syncs

    return install


def fsync_configuration(folder: Path) -> Configuration:
    """Stores under ``folder`` with ``durability="fsync"``, no purge, no upkeep during a test."""
    return Configuration(
        storage_dir=str(folder),
        purge_on_start=False,
        persist_state_interval=timedelta(hours=1),
        durability=Durability.FSYNC,
    )
