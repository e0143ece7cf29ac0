"""The console's guard: every request passes here before any page or value is served.

- **Host check** (DNS rebinding): a request whose ``Host`` is not one of the allowed names
  (the loopback names, the bound address, and any added with ``--allow-host``) gets 400, so a
  foreign site whose name was pointed at 127.0.0.1 cannot read the console.
- **Token**: when the console has one (always, when it listens beyond the loopback address),
  each request must carry it: ``Authorization: Bearer TOKEN``, or the ``logkv_token`` cookie,
  which a request with ``?token=TOKEN`` sets (``HttpOnly``, ``SameSite=Strict``) before a
  redirect to the same address without it. Anything else gets 401.
- **Headers**: every response gets ``X-Content-Type-Options: nosniff``, no caching, no
  referrer, and, unless it set its own, the console's strict Content-Security-Policy (scripts,
  styles, images and frames from the console itself only; no inline script) and
  ``X-Frame-Options: DENY``. Raw values set ``Content-Security-Policy: sandbox`` themselves
  (:data:`RAW_POLICY`): a stored page never runs in the console's origin.
- ``Server-Timing: app;dur=MS``: the time the server took until the response started.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable
from http.cookies import SimpleCookie
from typing import Final
from urllib.parse import parse_qsl, quote, urlencode

from ..extras import require_extra

require_extra("starlette", "web", "logkv serve (the web console)")

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The Content-Security-Policy of the console's own pages.
CONSOLE_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "frame-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
#: The Content-Security-Policy of a raw value: a sandbox without scripts (an opaque origin,
#: no forms, no popups), nothing fetched from anywhere, framed only by the console.
RAW_POLICY: Final = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"
)
#: The cookie that carries the token after ``?token=``.
TOKEN_COOKIE: Final = "logkv_token"
#: Host names every console answers to.
LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "localhost", "::1"})

_ALWAYS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


def host_name(header: str) -> str:
    """The name part of a ``Host`` header, lower-cased: ``[::1]:8000`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else ""
    name, _, port = header.rpartition(":")
    return name if name and port.isdigit() else header


def is_loopback(host: str) -> bool:
    """True for an address or name that only this machine reaches."""
    return host in LOOPBACK_NAMES or host.startswith("127.")


class Guard:
    """ASGI middleware: the host check, the token, and the headers (see the module)."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str], token: str | None) -> None:
        self.app = app
        self.allowed = frozenset(h.lower() for h in allowed_hosts) | LOOPBACK_NAMES
        self.any_host = "*" in self.allowed
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}

        async def send_guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_headers(message.get("headers", []), started)
            await send(message)

        if not self.any_host and host_name(headers.get("host", "")) not in self.allowed:
            await _plain(send_guarded, 400, "this console does not answer to that Host name "
                         "(use --allow-host to add one)")  # fmt: skip
            return
        if self.token is not None:
            query = scope.get("query_string", b"").decode("latin-1")
            pairs = parse_qsl(query, keep_blank_values=True)
            given = [v for k, v in pairs if k == "token"]
            if given:
                if not self._matches(given[0]):
                    await _plain(send_guarded, 401, "wrong token")
                    return
                rest = urlencode([(k, v) for k, v in pairs if k != "token"])
                # one leading slash: "//host" would send the browser to another site
                where = "/" + quote(scope["path"].lstrip("/")) + (f"?{rest}" if rest else "")
                await _redirect_with_cookie(send_guarded, where, given[0])
                return
            if not self._authorized(headers):
                await _plain(send_guarded, 401, "this console needs its token: open the address "
                             "logkv serve printed (?token=...), or send 'Authorization: Bearer "
                             "TOKEN'")  # fmt: skip
                return
        await self.app(scope, receive, send_guarded)

    def _matches(self, candidate: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def _authorized(self, headers: dict[str, str]) -> bool:
        bearer = headers.get("authorization", "")
        if bearer.lower().startswith("bearer ") and self._matches(bearer[7:].strip()):
            return True
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header: no token in it
            return False
        morsel = cookie.get(TOKEN_COOKIE)
        return morsel is not None and self._matches(morsel.value)


def _with_headers(headers: list[tuple[bytes, bytes]], started: float) -> list[tuple[bytes, bytes]]:
    have = {k.lower() for k, _ in headers}
    out = [*headers, *(h for h in _ALWAYS if h[0] not in have)]
    if b"content-security-policy" not in have:
        out.append((b"content-security-policy", CONSOLE_POLICY.encode()))
    if b"x-frame-options" not in have:
        out.append((b"x-frame-options", b"DENY"))
    elapsed = (time.perf_counter() - started) * 1000
    out.append((b"server-timing", f"app;dur={elapsed:.2f}".encode()))
    return out


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode() + b"\n"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _redirect_with_cookie(send: Send, where: str, token: str) -> None:
    cookie = SimpleCookie()
    cookie[TOKEN_COOKIE] = token
    morsel = cookie[TOKEN_COOKIE]
    morsel["httponly"] = True
    morsel["samesite"] = "Strict"
    morsel["path"] = "/"
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", where.encode("latin-1", "replace")),
                (b"set-cookie", morsel.OutputString().encode("latin-1")),
                (b"content-length", b"0"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
