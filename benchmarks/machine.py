"""What the benchmarks run on and what they take up: facts about the machine and the installed
software for the results' *Machine* table, and the memory and disk a store or process uses.

Everything is read from ``/proc`` (Linux), the installed distributions and git; where a fact
cannot be read it is reported as unknown rather than stopping the run.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import logkv

#: Libraries whose versions every *Machine* table lists: logkv's own dependencies.
LIBRARIES = ("msgpack", "sortedcontainers", "crc32c", "blake3")


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cores() -> str:
    """Logical cores, and how many of them this process may use."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    return f"{os.cpu_count()} logical ({usable} usable by this process)"


def filesystem_of(path: Path) -> str:
    """The type of the file system ``path`` lives on (from ``/proc/mounts``)."""
    best, fs_type = "", "unknown"
    target = str(path.resolve())
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) < 3:
                    continue
                point = parts[1]
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) > len(best):
                    best, fs_type = point, parts[2]
    except OSError:
        pass
    return fs_type


def logkv_revision() -> str:
    """The git commit of the measured ``logkv`` package, and whether ``logkv/`` has local edits."""
    package = Path(logkv.__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(package), *args], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", ".")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {head}, " + ("with uncommitted changes in logkv/" if dirty else "logkv/ clean")


def load_average() -> str:
    """Load averages and CPU/IO pressure: how busy the machine was (other work skews figures)."""
    text = "load " + " / ".join(f"{load:.2f}" for load in os.getloadavg())
    stalls = []
    for resource in ("cpu", "io"):
        try:
            with open(f"/proc/pressure/{resource}", encoding="ascii") as pressure:
                fields = dict(item.split("=") for item in pressure.readline().split()[1:])
            stalls.append(f"{resource} {fields['avg60']}%")
        except (OSError, KeyError, ValueError):
            continue
    if stalls:
        text += "; stalled (PSI some, 60 s): " + ", ".join(stalls)
    return text


def version_of(distribution: str) -> str:
    """The installed version of ``distribution``, or ``?``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "?"


def utc_now() -> str:
    """The date and time, to the minute, in UTC."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def facts(store_dir: Path) -> list[tuple[str, str]]:
    """The machine and software the figures are measured on, stores living in ``store_dir``."""
    return [
        ("CPU", cpu_model()),
        ("Cores", cores()),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("File system of the stores", filesystem_of(store_dir)),
        ("Libraries", ", ".join(f"{name} {version_of(name)}" for name in LIBRARIES)),
        ("logkv", logkv_revision()),
    ]


# ---------------------------------------------------------------------------------- footprint


def rss_anon() -> int | None:
    """Anonymous resident memory of this process in bytes (Linux), or None if unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def dirty_bytes() -> int | None:
    """Dirty and under-writeback page cache in bytes (``/proc/meminfo``), or None if unknown."""
    total = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith(("Dirty:", "Writeback:")):
                    total += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return total


def disk_usage(folder: Path) -> tuple[int, int]:
    """``(allocated bytes, file bytes)`` of everything under ``folder`` (as ``du``, ``du -b``)."""
    allocated = apparent = 0
    for path in folder.rglob("*"):
        info = path.lstat()
        allocated += info.st_blocks * 512
        apparent += info.st_size if path.is_file() else 0
    return allocated, apparent
