"""Typed application keys of the dashboard (set on the main app, read via
``request.config_dict`` from the sub-app)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from chatserver.keys import MODERATION
from chatserver.metrics import ChatCollector

from .auth import AttemptLimiter, SessionStore
from .live import LiveHub
from .roles import Operators

SESSIONS = web.AppKey("admin_sessions", SessionStore)
LIMITER = web.AppKey("admin_attempt_limiter", AttemptLimiter)
LIVE = web.AppKey("admin_live", LiveHub)
OPERATORS = web.AppKey("admin_operators", Operators)
METRICS = web.AppKey("metrics_collector", ChatCollector)
REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)

__all__ = ["LIMITER", "LIVE", "METRICS", "MODERATION", "OPERATORS", "REGISTRY", "SESSIONS"]
