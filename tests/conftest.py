"""Shared fixtures: a store folder per test and an opener that closes what it opened."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
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
