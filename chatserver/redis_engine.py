"""Redis mode: every seam backed by one Redis, so N nodes act as one server.

Imported only when ``--redis-url`` is set; ``redis`` is the optional extra
``chatserver[redis]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from .engine import Engine
from .health import Health
from .redis_broker import RedisBroker
from .redis_census import RedisCensus
from .redis_directory import RedisDirectory
from .redis_link import RedisLink
from .redis_modstore import RedisModerationStore
from .redis_roomlog import RedisRoomLog
from .settings import Settings


def build_redis_engine(settings: Settings, health: Health, node: str) -> Engine:
    link = RedisLink(settings.redis_url, settings.redis_prefix, health)
    room_log = RedisRoomLog(link, history=settings.history, cap=settings.history_max_messages)
    broker = RedisBroker(link, node, room_log.after)
    directory = RedisDirectory(
        link, broker, ttl=settings.presence_ttl, session_ttl=settings.session_ttl
    )

    async def backing() -> AsyncIterator[None]:
        await link.open()
        yield
        await link.close()

    async def periodic() -> int:
        return await room_log.prune(settings.history_max_messages, settings.history_max_age)

    modstore = RedisModerationStore(link)
    census = RedisCensus(link, node)
    return Engine(room_log, directory, broker, modstore, census, backing, periodic, link)
