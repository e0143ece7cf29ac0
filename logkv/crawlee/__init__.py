"""logkv as a Crawlee storage client (install the extra ``logkv[crawlee]``).

::

    from crawlee import service_locator
    from logkv.crawlee import LogKvStorageClient

    service_locator.set_storage_client(LogKvStorageClient())

or, for one store, ``await KeyValueStore.open(name="pages", storage_client=LogKvStorageClient())``.

Every Crawlee key-value store is then a logkv store in
``{storage_dir}/key_value_stores/{name|alias|default}/``, which logkv's command line tools read.
Every dataset is a logkv store in ``{storage_dir}/datasets/{name|alias|default}/``, one record
per item (:mod:`logkv.crawlee._dataset`). Every request queue is a logkv store in
``{storage_dir}/request_queues/{name|alias|default}/``, a record per request and a key per
pending request (:mod:`logkv.crawlee._request_queue`). With ``native_datasets=False`` or
``native_request_queues=False`` they are delegated to another Crawlee storage client, Crawlee's
file-system client unless ``LogKvStorageClient(delegate=...)`` names another.

Opening follows Crawlee's rules, ``purge_on_start`` included: an unnamed store is emptied at
every open that reaches the storage client (the first in a process, and each after Crawlee's
instance cache was cleared), as by Crawlee's file-system client, where logkv's own
``KeyValueStore`` purges once per process (:class:`logkv.registry.PurgeRule`).
``LogKvStorageClient(readonly=True)`` reads stores a crawler is writing, and never purges them.

Values are serialised by Crawlee's rules, with two of logkv's (see :mod:`logkv.crawlee._values`):
text is written and read in the charset its content type names, where Crawlee always uses
UTF-8, and a charset that is unknown or not a text encoding raises ``ValueError``; JSON values
nested deeper than ``logkv.content.MAX_NESTING_DEPTH`` (128) levels raise ``TypeError``.
"""

from ..extras import require_extra

require_extra("crawlee", "crawlee", "logkv.crawlee")

from ._client import LogKvKeyValueStoreClient  # noqa: E402 (after the check of the extra)
from ._dataset import LogKvDatasetClient  # noqa: E402
from ._request_queue import LogKvRequestQueueClient  # noqa: E402
from ._storage_client import LogKvStorageClient  # noqa: E402

__all__ = [
    "LogKvDatasetClient",
    "LogKvKeyValueStoreClient",
    "LogKvRequestQueueClient",
    "LogKvStorageClient",
]
