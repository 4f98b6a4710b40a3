"""Typed application keys of the dashboard (set on the main app, read via
``request.config_dict`` from the sub-app)."""

from __future__ import annotations

from aiohttp import web

from chatserver.keys import MODERATION

from .auth import AttemptLimiter, SessionStore
from .live import LiveHub

SESSIONS = web.AppKey("admin_sessions", SessionStore)
LIMITER = web.AppKey("admin_attempt_limiter", AttemptLimiter)
LIVE = web.AppKey("admin_live", LiveHub)

__all__ = ["LIMITER", "LIVE", "MODERATION", "SESSIONS"]
