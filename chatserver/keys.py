"""Typed application keys: the only way app-wide objects are shared."""

from __future__ import annotations

from aiohttp import web

from .broker import Broker
from .directory import Directory
from .engine import Engine
from .health import Health
from .hub import Hub
from .limits import AddressCounter
from .moderation import Moderation, Restrictions
from .modstore import ModerationStore
from .roomlog import RoomLog
from .settings import Settings
from .tokens import TokenVerifier

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", Engine)
HEALTH = web.AppKey("health", Health)
HUB = web.AppKey("hub", Hub)
# Protocols (several implementations): typed by annotation, not by a class.
ROOM_LOG: web.AppKey[RoomLog] = web.AppKey("room_log")
DIRECTORY: web.AppKey[Directory] = web.AppKey("directory")
BROKER: web.AppKey[Broker] = web.AppKey("broker")
MODERATION_STORE: web.AppKey[ModerationStore] = web.AppKey("moderation_store")
RESTRICTIONS = web.AppKey("restrictions", Restrictions)
MODERATION = web.AppKey("moderation", Moderation)
ADDRESSES = web.AppKey("addresses", AddressCounter)
TOKENS: web.AppKey[TokenVerifier | None] = web.AppKey("tokens")
