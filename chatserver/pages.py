"""Plain HTTP pages of the chat server: the browser chat page and ``/healthz``."""

from __future__ import annotations

import html
from importlib import resources
from typing import Final

from aiohttp import web

from . import __version__
from .keys import HEALTH, HUB, SETTINGS

# The page's script reads the --auth policy here, to offer what this chat allows.
AUTH_META: Final = '<meta name="chat-auth" content="guests">'


async def index_page(request: web.Request) -> web.StreamResponse:
    """``/`` without an upgrade: the browser chat page, told the ``--auth`` policy."""
    page = resources.files("chatserver").joinpath("static/index.html")
    if page.is_file():
        policy = html.escape(request.app[SETTINGS].auth, quote=True)
        text = page.read_text("utf-8").replace(
            AUTH_META, f'<meta name="chat-auth" content="{policy}">', 1
        )
        return web.Response(text=text, content_type="text/html")
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
