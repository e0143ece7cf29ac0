"""The peer benchmark's figures (:class:`Results`), as a Markdown report and a PNG chart."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullFormatter

from .harness import Run, mib, results_file, section, table, verdict
from .machine import version_of
from .peer_stores import DURABILITY, Peer, dbm_module

RAW: Final = "raw write loop"
#: The sizes of the large-value rows (a run measures those it has values of).
VALUE_SIZES: Final = (1 << 20, 16 << 20, 256 << 20)


def value_workload(size: int) -> str:
    """The name of the large-value workload of ``size`` bytes (its set and get rows add the
    operation: ``"1 MiB value set"``)."""
    return f"{size >> 20} MiB value"


#: Workloads measured per operation, in table order: (key, label, unit of one operation).
WORKLOADS: Final = (
    ("set", "small JSON set (new key)", "set"),
    ("get", "point get (random key)", "get"),
    ("iterate", "ordered iteration, per key", "key"),
    ("overwrite", "hot-key overwrite", "set"),
    ("doc set", "1 KB JSON document set (new key)", "set"),
    ("doc get", "1 KB JSON document get (random key)", "get"),
    *(
        (f"{value_workload(size)} {op}", f"{value_workload(size)} {op}", op)
        for size in VALUE_SIZES
        for op in ("set", "get")
    ),
)
#: The large-value rates of the issue's targets: 1 MiB values, per second, at the default
#: durability.
VALUE_TARGETS: Final = {"1 MiB value set": 1_500, "1 MiB value get": 10_000}
COLOURS: Final = {
    "none": "#b0b0b0",
    "on commit/close": "#e0a040",
    "process": "#4a7fc1",
    "fsync": "#2e8b57",
}


@dataclass
class Results:
    """Everything one run measured."""

    settings_text: str
    peers: list[Peer] = field(default_factory=list)
    #: peer -> workload -> seconds per operation (best round)
    per_op: dict[str, dict[str, float]] = field(default_factory=dict)
    #: peer -> (allocated bytes, file bytes) after the set and overwrite workloads
    disk: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: (peer, keys) -> {"open": s, "get": s, "rss": bytes}
    reopen: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    reopen_disk: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    #: (peer, store size, prefix label) -> seconds to list the keys under the prefix
    prefix: dict[tuple[str, int, str], float] = field(default_factory=dict)
    #: (peer, writers) -> acknowledged synced writes per second
    durable: dict[tuple[str, int], float] = field(default_factory=dict)
    #: piece of logkv's work -> seconds per record
    parts: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: When the run started (the chart's title shows it).
    date: str = ""

    def keep(self, peer: str, workload: str, seconds: float) -> None:
        """Record ``seconds`` per operation unless an earlier round was faster."""
        best = self.per_op.setdefault(peer, {})
        best[workload] = min(seconds, best.get(workload, seconds))

    def keep_part(self, name: str, seconds: float) -> None:
        """Record a piece of logkv's time (total seconds) unless an earlier round was faster."""
        self.parts[name] = min(seconds, self.parts.get(name, seconds))

    def durability_of(self, name: str) -> str:
        """The default durability class of peer ``name``."""
        return next(p.durability for p in self.peers if p.name == name)


# ---------------------------------------------------------------------------------- formatting


def per_op_text(seconds: float) -> str:
    """Time per operation, readable."""
    micro = seconds * 1e6
    if micro >= 10_000:
        return f"{micro / 1000:,.1f} ms"
    return (
        f"{micro:,.2f} µs"
        if micro < 10
        else f"{micro:,.1f} µs"
        if micro < 100
        else f"{micro:,.0f} µs"
    )


# ---------------------------------------------------------------------------------- targets


def targets(results: Results) -> list[tuple[str, str, str, str]]:
    """``(target, measured, how, status)`` for each of the issue's targets that was measured."""
    rows: list[tuple[str, str, str, str]] = []
    ops = results.per_op
    logkv = ops.get("logkv", {})
    raw = ops.get(RAW, {})
    if "set" in logkv and "set" in raw:
        for name in ("logkv", "logkv Engine"):
            if name not in ops:
                continue
            ratio = raw["set"] / ops[name]["set"]
            json_ratio = raw["set json"] / ops[name]["set"]
            rows.append(
                (
                    f"`{'set_value' if name == 'logkv' else 'Engine.set'}` at default durability"
                    " ≥ 50 % of the raw framed-write limit",
                    f"{ratio:.0%} ({per_op_text(ops[name]['set'])} vs {per_op_text(raw['set'])});"
                    f" {json_ratio:.0%} of the raw loop that also encodes the JSON",
                    f"{name}, small JSON set",
                    verdict(ratio >= 0.5, loud=True),
                )
            )
        strong = DURABILITY.index("process")
        rivals = [
            p.name
            for p in results.peers
            if not p.name.startswith("logkv")
            and DURABILITY.index(p.durability) >= strong
            and "set" in ops.get(p.name, {})
        ]
        if rivals:
            slowest_gap = min(ops[r]["set"] / logkv["set"] for r in rivals)
            rows.append(
                (
                    "`set_value` ahead of every peer at the same or stronger durability",
                    ", ".join(f"{r} {ops[r]['set'] / logkv['set']:,.1f}x" for r in rivals),
                    "their time per set / logkv's",
                    verdict(slowest_gap > 1.0, loud=True),
                )
            )
    if "get" in logkv:
        compared = [n for n in ("diskcache", "sqlitedict", "crawlee file system") if n in ops]
        if compared:
            gaps = {n: ops[n]["get"] / logkv["get"] for n in compared}
            rows.append(
                (
                    "`get_value` ahead of diskcache, sqlitedict and Crawlee's file-system client"
                    " by ≥ 3x",
                    ", ".join(f"{n} {gap:,.1f}x" for n, gap in gaps.items()),
                    "their time per get / logkv's",
                    verdict(min(gaps.values()) >= 3.0, loud=True),
                )
            )
    rows += page_doc_targets(results)
    for name in ("logkv", "logkv Engine"):
        for workload, goal in VALUE_TARGETS.items():
            if workload in ops.get(name, {}):
                per_second = 1 / ops[name][workload]
                rows.append(
                    (
                        f"{workload.replace('value ', 'values: ')} ≥ {goal:,}/s at the default"
                        " durability",
                        f"{per_second:,.0f}/s ({per_op_text(ops[name][workload])})",
                        name,
                        verdict(per_second >= goal, loud=True),
                    )
                )
    many = max((w for _, w in results.durable), default=0)
    raw_sync = results.durable.get(("raw write + fdatasync", 1))
    if ("logkv", 1) in results.durable and raw_sync:
        ours = results.durable[("logkv", 1)]
        rows.append(
            (
                "`fsync` durability, one writer through `KeyValueStore` ≥ 0.9x the raw"
                " write + fdatasync loop",
                f"{ours:,.0f} vs {raw_sync:,.0f} writes/s ({ours / raw_sync:.2f}x)",
                "logkv 1 task; the loop writes a frame and syncs it",
                verdict(ours >= 0.9 * raw_sync, loud=True),
            )
        )
    if ("logkv", many) in results.durable and ("lmdb", many) in results.durable:
        ours, theirs = results.durable[("logkv", many)], results.durable[("lmdb", many)]
        rows.append(
            (
                f"`fsync` durability with {many} concurrent writers ahead of lmdb (sync on)",
                f"{ours:,.0f} vs {theirs:,.0f} writes/s ({ours / theirs:,.1f}x)",
                f"logkv {many} tasks, lmdb {many} threads",
                verdict(ours > theirs, loud=True),
            )
        )
    for (name, size), figures in sorted(results.reopen.items()):
        if name == "logkv (compacted)" and size >= 1_000_000:
            total = figures["open"] + figures["get"]
            rows.append(
                (
                    f"reopen of {size:,} keys (after compaction) ≤ 1.5 s",
                    f"{total:.2f} s (open {figures['open']:.2f} s + first get)",
                    "fresh interpreter",
                    verdict(total <= 1.5, loud=True),
                )
            )
            rows.append(
                (
                    "index memory per key reported",
                    f"{figures['rss'] / size:,.0f} B/key (anonymous memory the open added, key"
                    " strings included)",
                    "RssAnon growth / keys",
                    "reported",
                )
            )
    return rows


def page_doc_targets(results: Results) -> list[tuple[str, str, str, str]]:
    """The ~1 KB document targets: ``set_value`` and ``get_value`` against Crawlee's memory
    client, and ``set_value`` against the floor of a set measured in the same run."""
    ops = results.per_op
    logkv, memory = ops.get("logkv", {}), ops.get("crawlee memory", {})
    floor = ops.get(RAW, {}).get("doc set")
    rows: list[tuple[str, str, str, str]] = []
    for key, name, goal in (("doc set", "set_value", 0.7), ("doc get", "get_value", 0.8)):
        if key in logkv and key in memory:
            ratio = memory[key] / logkv[key]
            rows.append(
                (
                    f"`{name}` of a 1 KB JSON document ≥ {goal}x Crawlee's memory client",
                    f"{ratio:.2f}x ({per_op_text(logkv[key])} vs {per_op_text(memory[key])})",
                    "its time per operation / logkv's (logkv durable to the OS, Crawlee's"
                    " memory client keeps the object)",
                    verdict(ratio >= goal, loud=True),
                )
            )
    if "doc set" in logkv and floor is not None:
        share = floor / logkv["doc set"]
        rows.append(
            (
                "`set_value` of a 1 KB JSON document ≥ 60 % of the floor",
                f"{share:.0%} ({per_op_text(logkv['doc set'])} vs {per_op_text(floor)})",
                "floor: a loop of orjson.dumps + logkv's frame and chain + os.write",
                verdict(share >= 0.6, loud=True),
            )
        )
    return rows


# ---------------------------------------------------------------------------------- report


def measured_workloads(results: Results) -> list[tuple[str, str, str]]:
    """The :data:`WORKLOADS` this run measured (a quick run has no 256 MiB values)."""
    return [w for w in WORKLOADS if any(w[0] in ops for ops in results.per_op.values())]


def render(results: Results, run: Run, chart: Path | None) -> str:
    """The results as a Markdown document (``chart``: the chart's file, shown under the
    summary)."""
    names = [p.name for p in results.peers]
    summary = (
        f"{results.settings_text}. Whole run {run.elapsed() / 60:.1f} min, one process"
        " (reopens in fresh interpreters), so the ratios hold."
    )
    if chart is not None:
        summary += f"\n\n![logkv against its peers]({chart.name})"
    body = section("Targets", table(("Target", "Measured", "How", "Status"), targets(results)))
    rows = [["durability", "none (a loop of write())", *map(results.durability_of, names)]]
    for key, label, _ in measured_workloads(results):
        raw = results.per_op.get(RAW, {})
        cells = [per_op_text(raw[key]) if key in raw else ""]
        cells += [
            per_op_text(results.per_op[n][key]) if key in results.per_op.get(n, {}) else ""
            for n in names
        ]
        rows.append([label, *cells])
    if len(rows) > 1:  # not a run of the durable writes alone
        body += section("Time per operation (best round)", table(("workload", RAW, *names), rows))
    raw_json = results.per_op.get(RAW, {}).get("set json")
    if raw_json is not None:
        body += [
            "",
            f"The raw loop that also `orjson.dumps` each value took {per_op_text(raw_json)} per"
            " record.",
        ]
    body += render_durable(results) + render_prefix(results)
    body += render_reopen(results) + render_disk(results)
    body += render_parts(results) + render_peers(results)
    return results_file(
        run,
        "logkv against its peers",
        summary,
        body,
        method=METHOD,
        notes=results.notes,
        machine=[("shelve", f"over {dbm_module()}")],
    )


def render_durable(results: Results) -> list[str]:
    """Synced writes per second, 1 and many writers."""
    if not results.durable:
        return []
    counts = sorted({w for _, w in results.durable})
    settings = {p.name: p.fsync_setting or "" for p in results.peers}
    rows = [
        [
            name,
            settings.get(name, "write() + fdatasync() per record"),
            *(
                f"{results.durable[(name, w)]:,.0f}/s" if (name, w) in results.durable else ""
                for w in counts
            ),
        ]
        for name in dict.fromkeys(n for n, _ in results.durable)
    ]
    header = ("store", "setting", *(f"{w} writer{'s' if w > 1 else ''}" for w in counts))
    lines = section("Durable writes (every write synced to disk)", table(header, rows))
    missing = [p.name for p in results.peers if p.fsync_setting is None]
    if missing:
        lines += ["", f"Not run (no setting that syncs every write): {', '.join(missing)}."]
    return lines


def render_prefix(results: Results) -> list[str]:
    """Prefix listings: time per listing of each prefix, per store size, and how each store
    lists (n/a: it cannot)."""
    if not results.prefix:
        return []
    sizes = sorted({size for _, size, _ in results.prefix})
    labels = list(dict.fromkeys(label for _, _, label in results.prefix))
    header = (
        "store",
        "how",
        *(f"{label}, {size:,} keys" for label in labels for size in sizes),
    )
    rows = []
    for peer in results.peers:
        cells = [
            per_op_text(results.prefix[(peer.name, size, label)])
            if (peer.name, size, label) in results.prefix
            else "n/a"
            if peer.prefix_listing == "n/a"
            else "not run"
            for label in labels
            for size in sizes
        ]
        rows.append([peer.name, peer.prefix_listing, *cells])
    lines = section(
        "Prefix listing (every key under a prefix, in key order; best round)", table(header, rows)
    )
    lines += [
        "",
        "Keys `site-NN/page-NNNNNNN` over 100 sites; the 1 % prefix is one site (`site-42/`), the"
        " 10-key prefix a run of pages on one site (`site-07/page-00001`), the same 10 keys at"
        " every store size: a range read costs O(log n + matches), so its time stays flat"
        " while a scan of every key grows with the store.",
    ]
    return lines


def render_reopen(results: Results) -> list[str]:
    """Reopen times, memory and disk per store size."""
    if not results.reopen:
        return []
    rows = [
        (
            name,
            f"{size:,}",
            f"{figures['open'] + figures['get']:.3f} s",
            f"{mib(figures['rss'])} ({figures['rss'] / size:,.0f} B/key)",
            mib(results.reopen_disk.get((name, size), (0, 0))[0]),
        )
        for (name, size), figures in sorted(
            results.reopen.items(), key=lambda item: (item[0][1], item[0][0])
        )
    ]
    header = ("store", "keys", "open + first get", "memory the open added", "disk")
    return section("Reopen (fresh interpreter: open + one get)", table(header, rows))


def render_disk(results: Results) -> list[str]:
    """Disk used after the set and overwrite workloads."""
    if not results.disk:
        return []
    rows = [(n, mib(a), mib(b)) for n, (a, b) in results.disk.items()]
    return section(
        "Disk used after the small JSON sets, overwrites and large values (round 1)",
        table(("store", "allocated (du)", "file bytes"), rows),
    )


def render_parts(results: Results) -> list[str]:
    """Where logkv's time goes."""
    if not results.parts:
        return []
    rows = []
    raw = results.per_op.get(RAW, {})
    if "set" in raw:
        rows.append(
            (
                "small JSON: raw loop: msgpack body + length/CRC-32C header + os.write",
                per_op_text(raw["set"]),
            )
        )
    if "doc set" in raw:
        rows.append(
            (
                "1 KB doc: floor: orjson.dumps + logkv's frame and chain + os.write",
                per_op_text(raw["doc set"]),
            )
        )
    rows += [(name, per_op_text(seconds)) for name, seconds in results.parts.items()]
    return section("Where logkv's time goes (per record)", table(("piece", "time"), rows))


def render_peers(results: Results) -> list[str]:
    """What each peer is, in which version, at which durability."""
    rows = [
        (
            peer.name,
            platform.python_version()
            if peer.distribution == "python"
            else version_of(peer.distribution),
            f"**{peer.durability}**: {peer.durability_note}",
            peer.serializer,
            peer.order,
        )
        for peer in results.peers
    ]
    header = ("store", "version", "a write, when the call returns", "values", "key order")
    return section("The peers, at their defaults", table(header, rows))


METHOD: Final = (
    "Every peer gets the same Python values: small JSON documents (~130 bytes: a URL, a status,"
    " a title, a price, three tags, a flag) under distinct keys `page-NNNNNNN` written in shuffled"
    " order, and large values of random bytes (1, 16 and 256 MiB; the run's summary says how"
    " many of each). Each is driven the way its users drive it: the"
    " async `KeyValueStore`s (logkv, Crawlee) with `await`, the others with plain calls.",
    "Rounds: each round opens a fresh store per peer, in turn, and runs every workload once; the"
    " best round of each figure is kept (the most repeatable figure on a shared machine)."
    " Crawlee's file-system client runs one round.",
    "The raw write loop packs the same 6-field msgpack body logkv writes (seq, timestamp, op, key,"
    " content type, value), puts an 8-byte header (length, CRC-32C) in front of it and"
    " `os.write`s it to an `O_APPEND` file, with values JSON-encoded beforehand: the fastest a"
    " Python writer of framed records can go here, one system call per record.",
    "The 1 KB JSON documents (a URL, a 200-character title, a price, three tags, a"
    " 600-character body) go under keys `doc-NNNNNNN`, set in shuffled order, then got in"
    " another. Their raw-loop figure is the floor of a set: `orjson.dumps`, logkv's own"
    " frame (`logkv.format.encode_record`: body, checksum, chain on the record before) and"
    " one `os.write` per document, with no index and no checks.",
    "Ordered iteration lists every key in key order: natively where the store keeps an order,"
    " else `sorted()` of its keys; the list is checked.",
    "Reopen: the store is filled (lmdb and diskcache in one transaction, the rest one set at a"
    " time), closed, then opened in a fresh interpreter, which gets one key and checks it; the"
    " time is open + that get, the memory the growth of anonymous resident memory (RssAnon,"
    " so file maps do not count). logkv is reopened from its log, then compacted and reopened"
    " from its snapshot.",
    "Durable writes: every write is synced before it returns (each store's setting is in the"
    " table); 1 writer, then many concurrent writers (tasks for the async store, threads for"
    " the rest) write distinct small records for the given time; the rate counts acknowledged"
    " writes, and the last write of every writer is read back. These run first, on a quiet disk;"
    " in each round, each peer's runs follow an `os.sync()` and a run of the raw write +"
    " fdatasync loop, so that the loop and the store see the disk in about the same state (the"
    " best of the rounds is shown; the notes give logkv's round-by-round ratios).",
    "Disk: `du`-style allocated bytes (and file bytes) of the store's folder after round 1.",
)


# ---------------------------------------------------------------------------------- chart


def write_chart(results: Results, path: Path) -> None:
    """A PNG of the headline figures: one panel per workload, a bar per store, coloured by what
    a write survives; the raw write() loop (or write + fdatasync loop) as a dashed line."""
    durability = {p.name: p.durability for p in results.peers}
    durability["logkv (compacted)"] = "process"
    panels: list[Panel] = []
    for key, label, unit in measured_workloads(results):
        values = {n: 1 / ops[key] for n, ops in results.per_op.items() if key in ops and n != RAW}
        raw_ops = results.per_op.get(RAW, {})
        limit = 1 / raw_ops[key] if key in raw_ops else None
        panels.append(Panel(label, values, f"{unit}s/s (more is better)", limit, durability))
    many = max((w for _, w in results.durable), default=0)
    if many:
        synced = {n: r for (n, w), r in results.durable.items() if w == many}
        raw = synced.pop("raw write + fdatasync", None) or results.durable.get(
            ("raw write + fdatasync", 1)
        )
        panels.append(
            Panel(
                f"durable writes, {many} writers",
                synced,
                "writes/s (more is better); all synced",
                raw,
                dict.fromkeys(synced, "fsync"),
                "write+fdatasync loop",
            )
        )
    biggest = max((s for _, s in results.reopen), default=0)
    if biggest:
        values = {n: f["open"] + f["get"] for (n, s), f in results.reopen.items() if s == biggest}
        panels.append(
            Panel(
                f"reopen {biggest:,} keys",
                values,
                "seconds: open + first get (less is better)",
                None,
                durability,
                short=_seconds,
            )
        )
    columns = 4
    rows = (len(panels) + columns - 1) // columns
    figure = Figure(figsize=(20, 4.4 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis, panel in zip(axes.flat, panels, strict=False):
        panel.draw(axis)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    handles = [Rectangle((0, 0), 1, 1, color=COLOURS[d]) for d in DURABILITY]
    figure.legend(
        handles, [f"a write survives: {d}" for d in DURABILITY], loc="lower center", ncol=4
    )
    figure.suptitle(f"logkv against its peers (log scales; {results.date})", fontsize=14)
    figure.tight_layout(rect=(0, 0.04, 1, 0.96))
    figure.savefig(path, dpi=80)


def _seconds(value: float) -> str:
    """Seconds, short."""
    return (
        f"{value:.2f} s"
        if value >= 1
        else f"{value * 1000:.0f} ms"
        if value >= 0.01
        else (f"{value * 1000:.1f} ms")
    )


def _short(value: float) -> str:
    """A bar's figure, short."""
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e3:
        return f"{value / 1e3:.0f}k" if value >= 1e4 else f"{value / 1e3:.1f}k"
    if value >= 10:
        return f"{value:.0f}"
    return f"{value:.2g}" if value >= 0.01 else f"{value * 1e3:.1f}m"


@dataclass
class Panel:
    """One chart panel: a bar per store."""

    title: str
    values: dict[str, float]
    unit: str
    limit: float | None
    durability: dict[str, str]
    limit_label: str = "raw write() loop"
    short: Callable[[float], str] = _short

    def draw(self, axis: Any) -> None:
        """Draw the bars, their figures and the limit line on ``axis``."""
        names = list(self.values)
        figures = [self.values[n] for n in names]
        colours = [COLOURS[self.durability.get(n, "none")] for n in names]
        bars = axis.barh(names, figures, color=colours)
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.invert_yaxis()
        axis.set_title(self.title, fontsize=12)
        axis.set_xlabel(self.unit, fontsize=9)
        axis.tick_params(labelsize=9)
        axis.bar_label(bars, labels=[self.short(v) for v in figures], fontsize=8, padding=2)
        top = max([*figures, self.limit or 0])
        axis.set_xlim(min(figures) / 3, top * 6)
        if self.limit is not None:
            axis.axvline(self.limit, color="black", linestyle="--", linewidth=1)
            axis.text(self.limit, len(names) - 0.6, f" {self.limit_label}", fontsize=8)
