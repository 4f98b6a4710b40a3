"""The admin dashboard and admin API, mounted at ``/admin/`` by ``create_app``.

``setup_dashboard`` builds the sub-app (pages, push channel, forms, the
``/admin/api/`` sub-app, templates and static files) over the moderation that
``create_app`` built, and mounts it; a cleanup context starts the
dashboard's 1 s tick.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import WSCloseCode, web

import chatserver
from chatserver.engine import Engine
from chatserver.errors import SettingsError
from chatserver.keys import ENGINE, HEALTH, HUB, MODERATION, ROOM_LOG, SETTINGS
from chatserver.metrics import ChatCollector, new_registry

from .api import create_api
from .auth import AdminSessions, AttemptLimiter, Attempts, SessionStore
from .keys import LIMITER, LIVE, METRICS, OPERATORS, REGISTRY, SESSIONS
from .live import LiveHub
from .roles import Operators
from .rows import metric_counts
from .scrape import metrics_endpoint, trusted_networks
from .views import add_routes, dashboard_headers, jinja_filters

STATIC_DIR = Path(__file__).parent / "static"
CHAT_STATIC_DIR = Path(chatserver.__file__).parent / "static"


def setup_dashboard(app: web.Application) -> None:
    """Mount the admin sub-app on ``app``."""
    hub, moderation, settings = app[HUB], app[MODERATION], app[SETTINGS]
    operators = app[OPERATORS] = Operators.from_specs(settings.operators, settings.admin_token)
    sessions, limiter = _access_state(app[ENGINE], operators)
    app[SESSIONS] = sessions
    app[LIMITER] = limiter
    _setup_metrics(app)
    engine = app[ENGINE]
    app[LIVE] = LiveHub(hub, moderation, sessions, app[ROOM_LOG], app[HEALTH], engine.census)

    admin = web.Application()
    admin.on_response_prepare.append(dashboard_headers)
    add_routes(admin)
    admin.router.add_static("/static/", STATIC_DIR, name="static")
    aiohttp_jinja2.setup(
        admin,
        loader=jinja2.PackageLoader("dashboard", "templates"),
        autoescape=True,
        filters=jinja_filters(),
        undefined=jinja2.StrictUndefined,
    )
    admin.add_subapp("/api/", create_api())
    # Before the sub-app, whose prefix would otherwise swallow "/admin" too.
    app.router.add_get("/admin", _to_dashboard)
    # add_subapp freezes the sub-app: everything above must be done first.
    app.add_subapp("/admin/", admin)
    # The browser chat page at "/" loads its script and style from here.
    app.router.add_static("/static/", CHAT_STATIC_DIR, name="chat_static")
    app.cleanup_ctx.append(_moderation_ctx)
    app.on_shutdown.append(_close_dashboards)


def _access_state(engine: Engine, operators: Operators) -> tuple[AdminSessions, Attempts]:
    """Logins and failed attempts: in memory, or shared by all nodes in Redis mode."""
    if engine.link is None:
        return SessionStore(), AttemptLimiter()
    from .redis_auth import RedisAttemptLimiter, RedisSessionStore  # Redis mode only

    return RedisSessionStore(engine.link, operators), RedisAttemptLimiter(engine.link)


def _setup_metrics(app: web.Application) -> None:
    hub, settings = app[HUB], app[SETTINGS]
    try:
        trusted_networks(settings.metrics_addresses)
    except ValueError as exc:
        raise SettingsError(f"metrics_addresses: {exc}") from None
    broker_kind = "redis" if settings.redis_url else "memory"
    collector = ChatCollector(lambda: metric_counts(hub), app[ROOM_LOG], app[HEALTH], broker_kind)
    hub.listeners.append(collector.on_change)
    app[METRICS] = collector
    app[REGISTRY] = new_registry(collector)
    app.router.add_get("/metrics", metrics_endpoint, name="metrics")


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect("/admin/")


async def _moderation_ctx(app: web.Application) -> AsyncIterator[None]:
    # Registered after the core's contexts, so moderation is loaded here.
    live = app[LIVE]
    live.start()
    yield
    await live.stop()


async def _close_dashboards(app: web.Application) -> None:
    await app[LIVE].close_all(WSCloseCode.GOING_AWAY, "server shutting down")
