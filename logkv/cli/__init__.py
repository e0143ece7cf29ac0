"""The command-line tool ``logkv`` (also ``python -m logkv``).

:mod:`logkv.cli.main` parses the command line and holds the audits (``stats``, ``verify``,
``history``, ``replay``, ``dump``); :mod:`logkv.cli.records` reads and fixes single records
(``get``, ``keys``, ``set``, ``rm``, ``edit``); :mod:`logkv.cli.compact` compacts one store or
every store under a storage folder (``logkv compact``, also ``logkv-compact``). Every command
prints aligned tables by default (rich, :mod:`logkv.cli.render`) and JSON with ``--json``, draws
progress on stderr (:mod:`logkv.cli.progress`), and ends with one of the :class:`ExitCode`
statuses.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit statuses of the logkv commands (the same meaning in every command)."""

    #: Everything asked for was done and nothing wrong was found.
    OK = 0
    #: The store is damaged: corrupt data, a broken hash chain, or an index that does not match
    #: the log (``verify`` lists every problem; ``dump`` marks them with error lines).
    DAMAGED = 1
    #: The request cannot be carried out as asked: bad arguments, no store at the path, history
    #: compacted away (retention delete), or a replay target that is not empty.
    USAGE = 2
    #: A store is locked by a running writer (``logkv-compact`` compacts the other stores).
    LOCKED = 3
    #: Something else failed, such as an I/O error (permissions, a full disk).
    FAILED = 4
    #: The store changed while it was checked (a live writer compacted it each time the
    #: command read it); nothing was found wrong: run the command again.
    CHANGED = 5


__all__ = ["ExitCode"]
