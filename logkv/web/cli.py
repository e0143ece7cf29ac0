"""``logkv serve STORAGE_DIR``: start the read-only web console (the ``web`` extra).

Binds to 127.0.0.1 by default. Any other address needs a token (``--token`` or
``LOGKV_WEB_TOKEN``; without one a random token is made), which the printed address carries
once as ``?token=``; the console then keeps it in a cookie. API clients send
``Authorization: Bearer TOKEN``. This module imports the web extra only when the command runs,
so that ``logkv`` works without it and says how to install it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
from pathlib import Path
from typing import Any, Final

from ..cli import ExitCode
from ..cli.common import CommandError
from ..storage_layout import STORAGE_DIRS

#: The environment variable that holds the token when ``--token`` is not given.
TOKEN_VARIABLE: Final = "LOGKV_WEB_TOKEN"
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8000
INSTALL_HINT: Final = "pip install 'logkv[web]'"


def add_command(commands: Any, epilog: str) -> None:
    """Register ``serve`` among the ``logkv`` subcommands."""
    text = (
        "Start a read-only web console over a storage folder (its key-value stores, datasets "
        "and request queues): keys, records, a key's history with diffs, the store at a time. "
        f"Needs the web extra ({INSTALL_HINT})."
    )
    sub = commands.add_parser(
        "serve", help=text, description=text, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub.add_argument(
        "storage_dir",
        type=Path,
        metavar="STORAGE_DIR",
        help="the storage folder (holding key_value_stores/, datasets/, ...)",
    )
    sub.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}; any other needs a token)",
    )
    sub.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port (default {DEFAULT_PORT}; 0: any free port)",
    )
    sub.add_argument(
        "--token",
        default=None,
        help=f"the token every request must carry (default: ${TOKEN_VARIABLE}; "
        "made up when listening beyond 127.0.0.1 without one)",
    )
    sub.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                     help="a Host name to answer to besides localhost and the address "
                     "listened on (repeatable; '*' for any)")  # fmt: skip
    sub.set_defaults(handler=cmd_serve)


def serve_settings(
    host: str, token: str | None, extra_hosts: list[str]
) -> tuple[str | None, tuple[str, ...]]:
    """The token to require (one is made up when ``host`` is not a loopback address and none
    is given) and the Host names to answer to."""
    from .security import is_loopback  # noqa: PLC0415 (the web extra)

    if token == "":
        token = None
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    hosts = set(extra_hosts)
    if host not in ("0.0.0.0", "::", ""):
        hosts.add(host)
    if not is_loopback(host):
        hosts.update({socket.gethostname(), socket.getfqdn()})
    return token, tuple(sorted(hosts))


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the console until interrupted."""
    try:
        import uvicorn  # noqa: PLC0415 (the web extra)

        from .app import create_app  # noqa: PLC0415
    except ImportError as exc:
        raise CommandError(
            f"logkv serve needs the web extra ({exc.name} is missing): {INSTALL_HINT}",
            ExitCode.USAGE,
        ) from None
    folder: Path = args.storage_dir
    if not folder.is_dir():
        raise CommandError(f"{folder} is not a folder", ExitCode.USAGE)
    if not any((folder / kind).is_dir() for kind in STORAGE_DIRS.values()):
        raise CommandError(
            f"{folder} holds no {', '.join(STORAGE_DIRS.values())} folder: give the storage "
            "folder (CRAWLEE_STORAGE_DIR), not a store folder",
            ExitCode.USAGE,
        )
    token, hosts = serve_settings(args.host, args.token or os.environ.get(TOKEN_VARIABLE),
                                  args.allow_host)  # fmt: skip
    app = create_app(folder, token=token, allowed_hosts=hosts)
    listener = listen(args.host, args.port)
    port = listener.getsockname()[1]  # the port bound: --port 0 picks a free one
    host = socket.gethostname() if args.host in ("0.0.0.0", "::") else args.host
    shown = f"[{host}]" if ":" in host else host
    address = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"logkv console for {folder} (read-only): {address}", flush=True)
    config = uvicorn.Config(app, log_level="warning", server_header=False, proxy_headers=False)
    with listener:
        uvicorn.Server(config).run(sockets=[listener])
    return ExitCode.OK


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host`` and ``port`` (0: a free port), bound before the address is
    printed so that the address names the port actually bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except (OSError, OverflowError) as exc:
        listener.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CommandError(
            f"cannot listen on {host} port {port}: {reason}", ExitCode.USAGE
        ) from None
    return listener
