"""The shared-state parts of one node, embedded or Redis-backed.

:func:`build_engine` picks the implementations from the settings: without
``--redis-url`` everything lives in this process and one SQLite file, and
nothing about Redis is imported; with it, every part is the Redis one.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from .broker import Broker, MemoryBroker
from .census import Census, LocalCensus
from .database import Database
from .directory import Directory, LocalDirectory
from .errors import SettingsError
from .health import Health
from .modstore import ModerationStore, SqliteModerationStore
from .roomlog import RoomLog, SqliteRoomLog
from .settings import Settings

if TYPE_CHECKING:
    from .redis_link import RedisLink


@dataclasses.dataclass(frozen=True, slots=True)
class Engine:
    """The four seams of one node, and how to open and close what backs them."""

    room_log: RoomLog
    directory: Directory
    broker: Broker
    moderation_store: ModerationStore
    census: Census
    # Opened before the seams, closed after them (the SQLite file, the Redis client).
    backing: Callable[[], AsyncIterator[None]]
    periodic: Callable[[], Awaitable[int]]  # retention and expiry sweeps
    # Redis mode's connection, for other shared state (the dashboard's sessions).
    link: RedisLink | None = None


def node_name(settings: Settings) -> str:
    """This node's name: the setting, else host, process and a random part."""
    return settings.node_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


def build_engine(settings: Settings, health: Health) -> Engine:
    if settings.redis_url:
        try:
            from .redis_engine import build_redis_engine  # only Redis mode imports redis
        except ImportError as exc:
            raise SettingsError(
                f"Redis mode needs the redis extra: pip install 'chatserver[redis]' ({exc})"
            ) from None
        return build_redis_engine(settings, health, node_name(settings))
    return build_embedded_engine(settings, health)


def build_embedded_engine(settings: Settings, health: Health) -> Engine:
    db = Database(settings.db_path)
    broker = MemoryBroker(node_name(settings))
    room_log = SqliteRoomLog(db, history=settings.history, publish=broker.publish, health=health)
    directory = LocalDirectory(db, health, broker.node)

    async def backing() -> AsyncIterator[None]:
        await db.open()
        yield
        await db.close()

    async def periodic() -> int:
        deleted = await room_log.prune(settings.history_max_messages, settings.history_max_age)
        await directory.prune()
        return deleted

    modstore = SqliteModerationStore(db)
    return Engine(room_log, directory, broker, modstore, LocalCensus(), backing, periodic)
