"""``create_app(settings)``: the one place that wires the object graph."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from dashboard import setup_dashboard

from .engine import build_engine
from .health import Health
from .heartbeat import run_heartbeats
from .hub import Hub
from .keys import (
    ADDRESSES,
    BROKER,
    DIRECTORY,
    ENGINE,
    HEALTH,
    HUB,
    MODERATION,
    MODERATION_STORE,
    RESTRICTIONS,
    ROOM_LOG,
    SETTINGS,
    TOKENS,
)
from .limits import AddressCounter
from .moderation import Moderation, Restrictions
from .pages import healthz
from .settings import Settings
from .tokens import build_verifier
from .ws import chat_socket

log = logging.getLogger(__name__)
RETENTION_INTERVAL = 60.0


def create_app(settings: Settings) -> web.Application:
    """Build the chat application (and its admin sub-app) for ``settings``."""
    app = web.Application()
    # A signal, not a middleware: a middleware's frame would stay alive for the
    # whole life of every WebSocket, costing memory per connection.
    app.on_response_prepare.append(security_headers)
    health = Health()
    engine = build_engine(settings, health)
    restrictions = Restrictions(engine.moderation_store)
    tokens = build_verifier(settings)
    hub = Hub(settings, engine.room_log, engine.directory, engine.broker, restrictions, tokens)
    app[SETTINGS] = settings
    app[HEALTH] = health
    app[ENGINE] = engine
    app[ROOM_LOG] = engine.room_log
    app[DIRECTORY] = engine.directory
    app[BROKER] = engine.broker
    app[MODERATION_STORE] = engine.moderation_store
    app[RESTRICTIONS] = restrictions
    app[HUB] = hub
    app[TOKENS] = tokens
    app[MODERATION] = Moderation(hub, restrictions, engine.moderation_store, engine.broker)
    app[ADDRESSES] = AddressCounter(settings.max_connections_per_ip)
    # In order: what backs the seams, each seam, then the hub and the timers.
    app.cleanup_ctx.append(lambda app: engine.backing())
    app.cleanup_ctx.append(_room_log_ctx)
    app.cleanup_ctx.append(_directory_ctx)
    app.cleanup_ctx.append(_moderation_store_ctx)
    app.cleanup_ctx.append(_broker_ctx)
    app.cleanup_ctx.append(_hub_ctx)
    app.cleanup_ctx.append(_background_ctx)
    app.on_shutdown.append(_close_sockets)
    # "/" serves both: WebSocket upgrades go straight to the chat socket
    # (no wrapping handler frame per connection), plain GETs get the page.
    app.router.add_get("/", chat_socket)
    app.router.add_get("/ws", chat_socket)
    app.router.add_get("/healthz", healthz)
    setup_dashboard(app)
    return app


async def _room_log_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[ROOM_LOG].open()
    yield
    await app[ROOM_LOG].close()


async def _directory_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[DIRECTORY].open()
    yield
    await app[DIRECTORY].close()


async def _moderation_store_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[MODERATION_STORE].open()
    await app[RESTRICTIONS].reload()
    restrictions = app[RESTRICTIONS]
    log.info(
        "moderation: %d active bans, %d active mutes",
        len(restrictions.bans),
        len(restrictions.mutes),
    )
    yield
    await app[MODERATION_STORE].close()


async def _broker_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[BROKER].open()
    yield
    await app[BROKER].close()


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    app[HUB].start()
    yield


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
    return await app[ENGINE].periodic()


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
