"""``create_app(settings)``: the one place that wires the object graph."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from dashboard import setup_dashboard

from .broker import MemoryBroker
from .heartbeat import run_heartbeats
from .hub import Hub
from .keys import ADDRESSES, HUB, SETTINGS, STORE
from .limits import AddressCounter
from .pages import healthz
from .settings import Settings
from .store import Store
from .ws import chat_socket

log = logging.getLogger(__name__)
RETENTION_INTERVAL = 60.0


def create_app(settings: Settings) -> web.Application:
    """Build the chat application (and its admin sub-app) for ``settings``."""
    app = web.Application()
    # A signal, not a middleware: a middleware's frame would stay alive for the
    # whole life of every WebSocket, costing memory per connection.
    app.on_response_prepare.append(security_headers)
    app[SETTINGS] = settings
    store = Store(settings.db_path, history=settings.history)
    hub = Hub(settings, store)
    broker = MemoryBroker(hub.deliver)
    store.publish = broker.publish
    app[STORE] = store
    app[HUB] = hub
    app[ADDRESSES] = AddressCounter(settings.max_connections_per_ip)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_background_ctx)
    app.on_shutdown.append(_close_sockets)
    # "/" serves both: WebSocket upgrades go straight to the chat socket
    # (no wrapping handler frame per connection), plain GETs get the page.
    app.router.add_get("/", chat_socket)
    app.router.add_get("/ws", chat_socket)
    app.router.add_get("/healthz", healthz)
    setup_dashboard(app)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store, hub = app[STORE], app[HUB]
    await store.open()
    hub.on_store_open()
    yield
    await store.close()


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, hub = app[SETTINGS], app[HUB]
    tasks = [asyncio.create_task(_retention(app), name="chat-retention")]
    if settings.heartbeat:
        tasks.append(asyncio.create_task(run_heartbeats(hub, settings.heartbeat)))
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def apply_retention(app: web.Application) -> int:
    """One retention sweep with the configured limits; the number of messages deleted."""
    settings = app[SETTINGS]
    return await app[STORE].prune(settings.history_max_messages, settings.history_max_age)


async def _retention(app: web.Application) -> None:
    while True:
        try:
            deleted = await apply_retention(app)
            if deleted:
                log.info("retention removed %d old messages", deleted)
        except Exception:
            log.exception("retention sweep failed")
        await asyncio.sleep(RETENTION_INTERVAL)


async def _close_sockets(app: web.Application) -> None:
    await app[HUB].shutdown()


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Defaults for every HTTP response; pages may set their own stricter ones."""
    if not isinstance(response, web.WebSocketResponse):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
            "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        )
