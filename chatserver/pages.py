"""Plain HTTP pages of the chat server: the browser chat page and ``/healthz``."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from . import __version__
from .keys import HUB


async def index_page(request: web.Request) -> web.StreamResponse:
    """``/`` without an upgrade: the browser chat page."""
    page = resources.files("chatserver").joinpath("static/index.html")
    if page.is_file():
        return web.Response(text=page.read_text("utf-8"), content_type="text/html")
    return web.Response(text="Chat server: connect a WebSocket client to /ws\n")


async def healthz(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "connections": len(hub.connections),
            "rooms": len(hub.rooms),
            "shutting_down": hub.shutting_down,
        }
    )
