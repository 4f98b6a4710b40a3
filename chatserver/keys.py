"""Typed application keys: the only way app-wide objects are shared."""

from __future__ import annotations

from aiohttp import web

from .hub import Hub
from .limits import AddressCounter
from .settings import Settings
from .store import Store

SETTINGS = web.AppKey("settings", Settings)
HUB = web.AppKey("hub", Hub)
STORE = web.AppKey("store", Store)
ADDRESSES = web.AppKey("addresses", AddressCounter)
