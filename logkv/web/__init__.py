"""``logkv serve``: a read-only web console over a crawl's storage folder.

It shows every store of a storage folder (key-value stores, datasets, request queues), a
store's keys with a prefix filter and paging, a record rendered by its content type, a key's
history with diffs between versions, and the whole store as it was at a chosen time; a JSON
API under ``/api`` serves the same views (docs/API.md, "The web console").

Everything it opens is opened read-only, so it runs beside a live crawler and refreshes as
the writer appends; nothing it serves writes to a store. Stored values are hostile input: they
are escaped in every page, and HTML or SVG is only ever served from the raw endpoint under
``Content-Security-Policy: sandbox`` (see :mod:`logkv.web.security`).

The pieces: :mod:`~logkv.web.catalog` (which stores a folder holds, and names that cannot
leave it), :mod:`~logkv.web.opened` (read-only opens, shared and refreshed),
:mod:`~logkv.web.views` (what each page and API call shows, as plain data),
:mod:`~logkv.web.values` and :mod:`~logkv.web.diffs` (values by content type, capped diffs),
:mod:`~logkv.web.security`, :mod:`~logkv.web.app` (the Starlette application) and
:mod:`~logkv.web.cli` (the ``serve`` command). Only the last two and ``security`` import the
``web`` extra (Starlette, uvicorn, Jinja2).
"""
