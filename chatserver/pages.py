"""Plain HTTP pages of the chat server: the browser chat page and ``/healthz``."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from . import __version__
from .keys import HEALTH, HUB


async def index_page(request: web.Request) -> web.StreamResponse:
    """``/`` without an upgrade: the browser chat page."""
    page = resources.files("chatserver").joinpath("static/index.html")
    if page.is_file():
        return web.Response(text=page.read_text("utf-8"), content_type="text/html")
    return web.Response(text="Chat server: connect a WebSocket client to /ws\n")


async def healthz(request: web.Request) -> web.Response:
    """200 when this node can store and publish; 503 naming what cannot."""
    hub, health = request.app[HUB], request.app[HEALTH]
    return web.json_response(
        {
            "status": "ok" if health.ok else "unavailable",
            "problems": health.problems(),
            "version": __version__,
            "node": hub.node,
            "connections": len(hub.connections),
            "rooms": len(hub.rooms),
            "shutting_down": hub.shutting_down,
        },
        status=200 if health.ok else 503,
    )
