"""Command line: ``chatserver [flags]`` runs the server; ``chatserver admin ...``
talks to a running server's admin API."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import signal
import sqlite3
import sys
from collections.abc import Sequence

from aiohttp import web

from .accesslog import ACCESS_LOG_CLASS
from .admission import Admission, AdmittingSite, raise_open_file_limit
from .app import create_app
from .errors import ChatError, SettingsError
from .keys import HUB
from .preflight import check_db_path, mask_password
from .settings import Settings, parse_args

log = logging.getLogger("chatserver")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["admin"]:
        from .admin_cli import main as admin_main

        return admin_main(args[1:])
    try:
        settings = parse_args(args)
        if not settings.redis_url:  # Redis mode keeps nothing in --db
            check_db_path(settings.db_path)
    except SettingsError as exc:
        print(f"chatserver: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not settings.admin_token and not settings.operators:
        settings = dataclasses.replace(settings, admin_token=secrets.token_urlsafe(24))
        print(f"Admin token (generated for this run): {settings.admin_token}", flush=True)
    _install_uvloop()
    try:
        asyncio.run(serve(settings))
    except ListenError as exc:
        print(f"chatserver: {exc}", file=sys.stderr)
        return 1
    except ChatError as exc:
        print(f"chatserver: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        # The pre-flight check passed, yet SQLite refused the file (corrupt, locked, ...).
        print(f"chatserver: cannot use --db {settings.db_path}: {exc}", file=sys.stderr)
        return 2
    return 0


class ListenError(Exception):
    """The listening socket could not be opened (address in use, no permission, ...)."""


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # optional: not on every platform
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM, then close every client with 1001 and exit."""
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        shutdown_timeout=settings.shutdown_timeout,
        handle_signals=False,
        access_log_class=ACCESS_LOG_CLASS,
    )
    await runner.setup()
    raise_open_file_limit()
    admission = Admission(settings)
    log.info(
        "connection cap %s, request timeout %s s", admission.cap or "off", settings.request_timeout
    )
    site = AdmittingSite(runner, admission, settings.host, settings.port)
    # Handlers first: whoever reads the start line may signal us at once.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        why = exc.strerror or str(exc)
        raise ListenError(f"cannot listen on {settings.host}:{settings.port}: {why}") from None
    host, port = runner.addresses[0][:2]
    print(banner(settings, _display_host(host), port, app[HUB].node), flush=True)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()


def banner(settings: Settings, host: str, port: int, node: str) -> str:
    """What start-up prints: where to connect, and what it opened."""
    lines = [
        f"Server started on ws://{host}:{port}",
        f"  Chat socket:  ws://{host}:{port}/ws",
        f"  Browser page: http://{host}:{port}/",
        f"  Dashboard:    http://{host}:{port}/admin/",
    ]
    if settings.redis_url:
        lines.append(f"  Redis:        {mask_password(settings.redis_url)} (node {node})")
    else:
        lines.append(f"  Database:     {_shown_db(settings.db_path)}")
    tokens = "HMAC" if settings.token_secret else "public key" if settings.token_public_key else ""
    if settings.auth != "guests" or tokens:
        # Which sign-in is on, never the secret itself.
        lines.append(f"  Sign-in:      --auth {settings.auth}; site tokens: {tokens or 'off'}")
    return "\n".join(lines)


def _shown_db(path: str) -> str:
    return path if path == ":memory:" else os.path.abspath(os.path.expanduser(path))


def _display_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


if __name__ == "__main__":
    sys.exit(main())
