"""Replication to S3-compatible object storage: what it costs the writer, how far the bucket
lags, how fast a store comes back, and what the bucket holds and is asked.

Against a local S3 protocol server (moto) started in a process of its own on 127.0.0.1, so that
the server's work does not count as the writer's:

- writer throughput (``Engine.set`` of ~200-byte values, as fast as one thread goes) with
  replication off and on, after a warm-up, in turn first over rounds (best of each); target
  on/off >= 0.9;
- replication lag under a writer paced at 10,000 writes/s with the default 1 s interval: for a
  sample of records, the time from the write until the slot holding it is committed; p50 and
  p99, target p99 <= 1.5 s;
- requests to the bucket per minute at that steady state (and while idle);
- the latency of a write under the ``replica_sync`` durability level (one writer);
- bytes in the bucket against bytes on disk, for that store;
- restore of a store of 1,000,000 keys (compacted: one snapshot, then a tail of segments) into a
  new folder: time, and the keys checked.

Run from the repository root: ``python -m benchmarks.bench_replica`` (full, ~10 min; writes
results/replica.md) or ``--quick`` (~1 min; prints only).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

from logkv import Engine
from logkv.replica import Bucket, Replica, restore, store_bucket
from logkv.replica.url import parse_replica_url

from .harness import (
    REPO_ROOT,
    Report,
    Run,
    Script,
    check,
    mib,
    ms,
    per_second,
    percentile,
    positive_int,
    results_file,
    section,
)
from .machine import disk_usage

SCRIPT = Script(
    module="bench_replica",
    description=__doc__.split("\n\n")[0],
    default_out=REPO_ROOT / "benchmarks" / "results" / "replica.md",
)
VALUE = b"v" * 200
INTERVAL = 1.0


class CountingBucket(Bucket):
    """A :class:`Bucket` that counts the requests it makes, by kind."""

    def __init__(self, bucket: Bucket) -> None:
        super().__init__(bucket.store, bucket.root, bucket.describe)
        self.requests: Counter[str] = Counter()

    def put_new(self, name: str, data: bytes) -> None:
        self.requests["PUT"] += 1
        super().put_new(name, data)

    def get(self, name: str) -> bytes:
        self.requests["GET"] += 1
        return super().get(name)

    def list_after(self, folder: str, after: str | None = None) -> list[str]:
        self.requests["LIST"] += 1
        return super().list_after(folder, after)

    def delete(self, names: list[str]) -> None:
        self.requests["DELETE"] += 1
        super().delete(names)

    def total(self) -> int:
        return sum(self.requests.values())


# ---------------------------------------------------------------------------------- the server


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server in its own process on 127.0.0.1, set as this process's endpoint (the
    ``AWS_*`` variables); yields the endpoint."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = f"from moto.server import main; main(['-H', '127.0.0.1', '-p', '{port}'])"
    server = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.1)
        os.environ.update(  # what obstore reads: this process's clients use the server
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_REGION="us-east-1",
        )
        yield endpoint
    finally:
        server.terminate()
        server.wait(10)


def new_root(endpoint: str) -> str:
    """A new bucket on the server; the replica root ``s3://BUCKET/bench``."""
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")).close()
    return f"s3://{bucket}/bench"


def bucket_for(root: str, name: str) -> CountingBucket:
    return CountingBucket(store_bucket(parse_replica_url(root), f"stores/{name}", allow_http=True))


def bucket_bytes(bucket: Bucket) -> int:
    import obstore  # noqa: PLC0415

    return sum(
        meta["size"]
        for chunk in obstore.list(bucket.store, bucket.root + "/", chunk_size=1000)
        for meta in chunk
    )


# ---------------------------------------------------------------------------------- measuring


def write_burst(engine: Engine, count: int, offset: int) -> float:
    """``count`` sets as fast as one thread goes; seconds taken."""
    started = time.perf_counter()
    for i in range(offset, offset + count):
        engine.set(f"k{i:09d}", VALUE)
    return time.perf_counter() - started


def throughput(folder: Path, root: str, records: int, rounds: int) -> tuple[float, float]:
    """Best writes/s with replication off and on; each round runs both, in turn first."""
    off: list[float] = []
    on: list[float] = []

    def without(name: str) -> None:
        with Engine.open(folder / name) as engine:
            off.append(records / write_burst(engine, records, 0))

    def with_replica(name: str) -> None:
        replica = Replica.claim(bucket_for(root, name), folder / name, INTERVAL)
        with Engine.open(folder / name) as engine:
            replica.start(engine)
            on.append(records / write_burst(engine, records, 0))
            replica.flush(120)
        replica.close(30)

    without("warm-up")
    off.clear()
    for round_ in range(rounds):
        order = (without, with_replica) if round_ % 2 == 0 else (with_replica, without)
        for measure_one in order:
            measure_one(f"{measure_one.__name__}-{round_}")
    return max(off), max(on)


def paced_lag(
    folder: Path, root: str, rate: int, seconds: float
) -> tuple[list[float], int, CountingBucket, Replica, int]:
    """A writer paced at ``rate`` writes/s for ``seconds``; a watcher notes when the committed
    seq passes each sampled record. Returns the lags (s), the writes done, the bucket, the
    replica (closed) and the disk bytes of the store."""
    bucket = bucket_for(root, "lag")
    replica = Replica.claim(bucket, folder / "lag", INTERVAL)
    sampled: list[tuple[int, float]] = []  # (seq, when written)
    lags: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        index = 0
        while not (stop.is_set() and index == len(sampled)):
            committed = replica.committed_seq
            now = time.perf_counter()
            while index < len(sampled) and sampled[index][0] <= committed:
                lags.append(now - sampled[index][1])
                index += 1
            time.sleep(0.005)

    with Engine.open(folder / "lag") as engine:
        replica.start(engine)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        requests_before = bucket.total()
        started = time.perf_counter()
        written = 0
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * rate)
            while written < due:
                engine.set(f"k{written:09d}", VALUE)
                written += 1
                if written % 100 == 0:
                    sampled.append((engine.last_seq, time.perf_counter()))
            time.sleep(0.001)
        duration = time.perf_counter() - started
        steady_requests = bucket.total() - requests_before
        replica.flush(120)
        stop.set()
        watcher.join(30)
        idle_before = bucket.total()
        time.sleep(3 * INTERVAL)
        idle = bucket.total() - idle_before
        disk = disk_usage(folder / "lag")[1]
    replica.close(30)
    check(len(lags) == len(sampled), "every sampled record was committed")
    bucket.requests["steady_per_min"] = round(steady_requests / duration * 60)
    bucket.requests["idle_per_min"] = round(idle / (3 * INTERVAL) * 60)
    return sorted(lags), written, bucket, replica, disk


def _set(event: threading.Event, _: BaseException | None) -> None:
    event.set()


def sync_latency(folder: Path, root: str, writes: int) -> list[float]:
    """Seconds from each write until it is committed in the bucket, one writer waiting for each
    (the ``replica_sync`` durability level: the shipper ships at once for a waiting writer)."""
    replica = Replica.claim(bucket_for(root, "sync"), folder / "sync", INTERVAL)
    latencies = []
    with Engine.open(folder / "sync") as engine:
        replica.start(engine)
        for i in range(writes):
            committed = threading.Event()
            started = time.perf_counter()
            engine.set(f"k{i:09d}", VALUE)
            replica.when_committed(engine.last_seq, partial(_set, committed))
            check(committed.wait(60), "a waiting write was committed")
            latencies.append(time.perf_counter() - started)
    replica.close(30)
    return sorted(latencies)


def restore_time(folder: Path, root: str, keys: int) -> tuple[float, int]:
    """Build a store of ``keys`` keys, compacted, with a tail after the snapshot; replicate it;
    time its restore into a new folder. Returns seconds and the bytes restored."""
    bucket = bucket_for(root, "big")
    replica = Replica.claim(bucket, folder / "big", INTERVAL)
    with Engine.open(folder / "big") as engine:
        replica.start(engine)
        for i in range(keys):
            engine.set(f"k{i:09d}", VALUE)
        engine.compact()
        for i in range(0, keys, 100):  # a tail of overwrites after the snapshot
            engine.set(f"k{i:09d}", b"tail")
        replica.flush(600)
    replica.close(60)
    started = time.perf_counter()
    result = restore(bucket, folder / "restored")
    seconds = time.perf_counter() - started
    with Engine.open(folder / "restored", readonly=True) as restored:
        check(len(restored) == keys, f"the restored store has {len(restored)} keys, not {keys}")
        check(restored.get("k000000000") == b"tail", "the tail after the snapshot came back")
    return seconds, result.bytes


def measure(args: argparse.Namespace, run: Run) -> str:
    records = args.records or (50_000 if run.quick else 500_000)
    rounds = 2 if run.quick else 3
    lag_seconds = args.lag_seconds or (10.0 if run.quick else 60.0)
    keys = args.restore_keys or (100_000 if run.quick else 1_000_000)
    report = Report()
    with moto_server() as endpoint, run.scratch() as folder:
        root = new_root(endpoint)
        print(f"throughput: {records:,} writes x {rounds} rounds, off and on", flush=True)
        off, on = throughput(folder / "throughput", root, records, rounds)
        report.add("writes/s, replication off", per_second(off, "writes/s"))
        report.add("writes/s, replication on", per_second(on, "writes/s"))
        report.add("on / off", f"{on / off:.2f}", ">= 0.9", on / off >= 0.9)

        print(f"lag: 10,000 writes/s for {lag_seconds:g} s", flush=True)
        lags, written, bucket, _, disk = paced_lag(folder, root, 10_000, lag_seconds)
        report.add("writes during the lag run", f"{written:,} ({written / lag_seconds:,.0f}/s)")
        report.add("lag p50", ms(percentile(lags, 0.5)))
        report.add(
            "lag p99", ms(percentile(lags, 0.99)), "<= 1,500 ms", percentile(lags, 0.99) <= 1.5
        )
        report.add("lag max", ms(lags[-1] if lags else 0.0))
        report.add("requests/min, steady writing", f"{bucket.requests['steady_per_min']:,}")
        report.add("requests/min, idle", f"{bucket.requests['idle_per_min']:,}")
        in_bucket = bucket_bytes(bucket)
        report.add("bytes in the bucket / on disk", f"{mib(in_bucket)} / {mib(disk)} "
                   f"({in_bucket / max(disk, 1):.2f}x)")  # fmt: skip

        sync_writes = 50 if run.quick else 500
        print(f"replica_sync: {sync_writes} writes, each waiting for its commit", flush=True)
        waits = sync_latency(folder, root, sync_writes)
        report.add("replica_sync write latency p50", ms(percentile(waits, 0.5)))
        report.add("replica_sync write latency p99", ms(percentile(waits, 0.99)))

        print(f"restore: a store of {keys:,} keys", flush=True)
        seconds, restored = restore_time(folder, root, keys)
        report.add(f"restore of {keys:,} keys", f"{seconds:.2f} s ({mib(restored)})")
    summary = (
        "Replication of a store to a local moto server (its own process): the writer's cost, "
        "the lag of the bucket copy, requests and bytes, and a restore."
    )
    return results_file(
        run,
        "Replication to object storage",
        summary,
        section("Results", report.table()),
        method=[
            "The moto server runs in a process of its own on 127.0.0.1; it is slower than a real "
            "endpoint per request and shares the machine's cores with the writer.",
            "Lag: every 100th record's write time against the first time (polled every 5 ms) "
            "the committed seq reached it.",
            "Requests are counted in the writer's process, by kind (PUT, GET, LIST, DELETE).",
        ],
        notes=report.notes,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = SCRIPT.parser()
    parser.add_argument("--records", type=positive_int, default=None, help="writes per round")
    parser.add_argument("--lag-seconds", type=float, default=None, help="length of the lag run")
    parser.add_argument(
        "--restore-keys", type=positive_int, default=None, help="keys of the restored store"
    )
    return SCRIPT.main(argv, parser, measure)


if __name__ == "__main__":
    raise SystemExit(main())
