"""Typed application keys of the dashboard (set on the main app, read via
``request.config_dict`` from the sub-app)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from chatserver.keys import MODERATION
from chatserver.metrics import ChatCollector

from .auth import AdminSessions, Attempts
from .live import LiveHub
from .roles import Operators

# Protocols (memory or Redis): typed by annotation.
SESSIONS: web.AppKey[AdminSessions] = web.AppKey("admin_sessions")
LIMITER: web.AppKey[Attempts] = web.AppKey("admin_attempt_limiter")
LIVE = web.AppKey("admin_live", LiveHub)
OPERATORS = web.AppKey("admin_operators", Operators)
METRICS = web.AppKey("metrics_collector", ChatCollector)
REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)

__all__ = ["LIMITER", "LIVE", "METRICS", "MODERATION", "OPERATORS", "REGISTRY", "SESSIONS"]
