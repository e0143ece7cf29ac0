"""A store replicated into obstore's in-memory object store, for the replica tests: the bucket
over such a store, and a writable open that replicates into it. Import it only once obstore is
known to be installed (``pytest.importorskip("obstore")``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from logkv import Engine
from logkv.replica import Bucket, Replica, RetentionPolicy, restore

#: Where in the in-memory store the replica lives.
ROOT = "crawl/key_value_stores/pages"


def bucket_of(store: Any) -> Bucket:
    """The bucket at ``ROOT`` of an in-memory object store."""
    return Bucket(store, ROOT, f"memory://{ROOT}")


def open_replicated(
    folder: Path, bucket: Bucket, retention: RetentionPolicy | None = None, **options: Any
) -> tuple[Engine, Replica]:
    """What a writable open with a replica does: claim (with ``retention``), restore a missing
    folder, open (tiny segments, and ``options``), start shipping."""
    replica = Replica.claim(bucket, folder, 0.02, retention)
    if not folder.exists() and replica.folded.files:
        restore(bucket, folder, folded=replica.folded)
    engine = Engine.open(folder, segment_size=4096, **options)
    try:
        replica.start(engine)
    except BaseException:
        engine.close()
        raise
    return engine, replica
