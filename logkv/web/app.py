"""The console's Starlette application: pages, the JSON API under ``/api``, raw values.

Every endpoint is a plain function (Starlette runs it in a worker thread, so a slow read never
blocks the event loop) that asks :mod:`logkv.web.views` for its data: an API endpoint returns
it as JSON, a page renders it with a template. Errors become a short answer, never a server
error: 404 for an unknown store, key or version; 400 for a bad parameter; 409 for a store that
is damaged or whose history was compacted away; 503 when a writer's compaction kept racing a
read (reload).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from ..extras import require_extra

require_extra("starlette", "web", "logkv serve (the web console)")

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..cli.render import human_bytes
from ..content import extension_for, public_content_type
from ..errors import InvalidKeyError, LogKVError, StoreNotFoundError
from ..history import HistoryGap, StoreChangedError
from ..values import ValueStream
from . import views
from .catalog import StoreRef, UnknownStoreError, resolve
from .security import RAW_POLICY, Guard
from .values import PREVIEW_BYTES
from .views import Console

log = logging.getLogger(__name__)

HERE: Final = Path(__file__).parent
_HEADER_SAFE: Final = re.compile(r"^[\x20-\x7e]*$")

Endpoint = Callable[[Request], Response]


def create_app(
    storage_dir: str | Path,
    *,
    token: str | None = None,
    allowed_hosts: tuple[str, ...] = (),
) -> Starlette:
    """The console over ``storage_dir``. ``token``: required of every request (see
    :mod:`logkv.web.security`); ``allowed_hosts``: ``Host`` names to answer to besides the
    loopback ones (``*``: any)."""
    console = Console(Path(storage_dir))
    templates = _templates()

    def page(name: str, **context: Any) -> HTMLResponse:
        return HTMLResponse(templates.get_template(name).render(**context))

    def store_of(request: Request) -> StoreRef:
        return resolve(console.storage_dir, request.path_params["kind"],
                       request.path_params["name"])  # fmt: skip

    # ------------------------------------------------------------------ pages

    def overview_page(request: Request) -> Response:
        return page("overview.html", data=views.overview(console))

    def store_page(request: Request) -> Response:
        ref = store_of(request)
        q = request.query_params
        detail = views.store_detail(console, ref)
        keys = None
        if detail["status"] == "ok":
            keys = views.key_page(console, ref, q.get("prefix", ""), q.get("after") or None,
                                  views.page_size(q.get("limit"), views.KEYS_PAGE))  # fmt: skip
        return page("store.html", store=detail, data=keys)

    def record_page(request: Request) -> Response:
        ref = store_of(request)
        key = views.checked_key(request.query_params.get("key"))
        seq = views.whole_number(request.query_params.get("seq"), "seq")
        record = views.record_view(console, ref, key, seq)
        tree = views.record_tree(console, ref, key, seq) if record["view"] == "json" else None
        return page("record.html", data=record, tree=tree, cap=human_bytes(PREVIEW_BYTES))

    def history_page(request: Request) -> Response:
        ref = store_of(request)
        q = request.query_params
        key = views.checked_key(q.get("key"))
        offset = views.whole_number(q.get("offset"), "offset") or 0
        data = views.history_view(console, ref, key, offset,
                                  views.page_size(q.get("limit"), views.HISTORY_PAGE))  # fmt: skip
        a, b = views.whole_number(q.get("a"), "a"), views.whole_number(q.get("b"), "b")
        diff = None if a is None or b is None else views.diff_view(console, ref, key, a, b)
        return page("history.html", data=data, diff=diff)

    def state_page(request: Request) -> Response:
        ref = store_of(request)
        q = request.query_params
        data = None
        if q.get("at"):
            data = views.state_view(console, ref, q.get("at"), q.get("after") or None,
                                    views.page_size(q.get("limit"), views.KEYS_PAGE))  # fmt: skip
        return page("state.html", store=views.ref_json(ref), data=data)

    def verify_page(request: Request) -> Response:
        return page("verify.html", data=views.verify_view(console, store_of(request)))

    # ------------------------------------------------------------------ the JSON API

    def api_stores(request: Request) -> Response:
        return _json(views.overview(console))

    def api_store(request: Request) -> Response:
        return _json(views.store_detail(console, store_of(request)))

    def api_keys(request: Request) -> Response:
        q = request.query_params
        return _json(views.key_page(console, store_of(request), q.get("prefix", ""),
                                    q.get("after") or None,
                                    views.page_size(q.get("limit"), views.KEYS_PAGE)))  # fmt: skip

    def api_record(request: Request) -> Response:
        q = request.query_params
        return _json(views.record_view(console, store_of(request), views.checked_key(q.get("key")),
                                       views.whole_number(q.get("seq"), "seq")))  # fmt: skip

    def api_history(request: Request) -> Response:
        q = request.query_params
        return _json(views.history_view(
            console, store_of(request), views.checked_key(q.get("key")),
            views.whole_number(q.get("offset"), "offset") or 0,
            views.page_size(q.get("limit"), views.HISTORY_PAGE),
        ))  # fmt: skip

    def api_diff(request: Request) -> Response:
        q = request.query_params
        a, b = views.whole_number(q.get("a"), "a"), views.whole_number(q.get("b"), "b")
        if a is None or b is None:
            raise views.BadInputError("a diff needs the a and b parameters (two seqs)")
        return _json(views.diff_view(console, store_of(request), views.checked_key(q.get("key")),
                                     a, b))  # fmt: skip

    def api_state(request: Request) -> Response:
        q = request.query_params
        limit = views.page_size(q.get("limit"), views.KEYS_PAGE)
        return _json(views.state_view(console, store_of(request), q.get("at"),
                                      q.get("after") or None, limit))  # fmt: skip

    def api_verify(request: Request) -> Response:
        return _json(views.verify_view(console, store_of(request)))

    # ------------------------------------------------------------------ raw values

    def raw(request: Request) -> Response:
        ref = store_of(request)
        q = request.query_params
        key = views.checked_key(q.get("key"))
        seq = views.whole_number(q.get("seq"), "seq")
        stream = views.value_stream(console, ref, key, seq)
        return raw_response(stream, key, download=q.get("download") == "1")

    routes = [
        Route("/", overview_page),
        Route("/stores/{kind}/{name}", store_page),
        Route("/stores/{kind}/{name}/record", record_page),
        Route("/stores/{kind}/{name}/history", history_page),
        Route("/stores/{kind}/{name}/state", state_page),
        Route("/stores/{kind}/{name}/verify", verify_page),
        Route("/api/stores", api_stores),
        Route("/api/stores/{kind}/{name}", api_store),
        Route("/api/stores/{kind}/{name}/keys", api_keys),
        Route("/api/stores/{kind}/{name}/record", api_record),
        Route("/api/stores/{kind}/{name}/history", api_history),
        Route("/api/stores/{kind}/{name}/diff", api_diff),
        Route("/api/stores/{kind}/{name}/state", api_state),
        Route("/api/stores/{kind}/{name}/verify", api_verify),
        Route("/raw/{kind}/{name}", raw),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    def on_error(status: int) -> Callable[[Request, Exception], Response]:
        def handle(request: Request, exc: Exception) -> Response:
            message = str(exc) or type(exc).__name__
            if request.url.path.startswith(("/api/", "/raw/")):
                return _json({"error": message, "status": status}, status)
            return HTMLResponse(
                templates.get_template("error.html").render(status=status, message=message),
                status,
            )

        return handle

    def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("logkv console: unexpected error on %s", request.url.path)
        return on_error(500)(request, Exception("internal error (logged by the server)"))

    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, allowed_hosts=allowed_hosts, token=token)],
        exception_handlers={
            UnknownStoreError: on_error(404),
            views.NotFoundError: on_error(404),
            StoreNotFoundError: on_error(404),
            views.BadInputError: on_error(400),
            InvalidKeyError: on_error(400),
            HistoryGap: on_error(409),
            StoreChangedError: on_error(503),
            FileNotFoundError: on_error(503),
            LogKVError: on_error(409),
            OSError: on_error(503),
            Exception: unexpected,
        },
        lifespan=_closing(console),
    )
    app.state.console = console
    return app


def _closing(console: Console) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """The lifespan that closes every store the console opened when the server stops."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            console.opened.close()

    return lifespan


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def raw_response(stream: ValueStream, key: str, *, download: bool) -> Response:
    """A value as stored, streamed a chunk at a time as ``stream`` reads it (never whole in
    memory), under :data:`~logkv.web.security.RAW_POLICY` (a sandbox: stored HTML or SVG never
    runs as the console); ``download``: as an attachment. The stream is closed when the
    response ends or the client goes away."""
    shown = public_content_type(stream.content_type)
    if not _HEADER_SAFE.match(shown):  # a content type no header can carry as it is
        shown = "application/octet-stream"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:100].strip("._") or "value"
    name = f"{name}.{extension_for(stream.content_type)}"
    disposition = "attachment" if download else "inline"
    headers = {
        "content-security-policy": RAW_POLICY,
        "x-frame-options": "SAMEORIGIN",
        "content-disposition": f'{disposition}; filename="{name}"; '
        f"filename*=UTF-8''{quote(name)}",
        "content-length": str(stream.size or 0),
    }
    return StreamingResponse(_chunks(stream), media_type=shown, headers=headers,
                             background=BackgroundTask(stream.close))  # fmt: skip


def _chunks(stream: ValueStream) -> Iterator[bytes]:
    with stream:
        yield from stream


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = lambda text: quote(str(text), safe="")
    env.filters["bytes"] = lambda size: "" if size is None else human_bytes(int(size))
    env.filters["num"] = lambda n: "" if n is None else f"{n:,}"
    return env
