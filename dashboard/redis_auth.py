"""Dashboard sessions and failed-attempt counts in Redis, shared by every node,
so an operator behind a round-robin balancer stays logged in and a guesser
cannot spread attempts over the nodes.

A session is ``PREFIX:admin:session:SHA256(sid)`` (the cookie's id itself is
never stored) holding its CSRF token, operator name, address and times, with
an expiry of the idle timeout that each use renews; the absolute lifetime is
checked on read. The operator is looked up by name in this node's
configuration, so removing an operator ends their sessions everywhere.
Failed attempts are a counter per address with a fixed window.
"""

from __future__ import annotations

import hashlib
import json
import time

from chatserver.redis_link import RedisLink

from .auth import (
    LOGIN_BURST,
    LOGIN_REFILL,
    MAX_TOKEN_CHARS,
    SESSION_IDLE,
    AdminSession,
    Operator,
    new_session,
)
from .roles import Operators

WINDOW = LOGIN_BURST * LOGIN_REFILL  # seconds: a full bucket's worth of attempts


class RedisSessionStore:
    """Admin sessions shared through Redis."""

    def __init__(self, link: RedisLink, operators: Operators) -> None:
        self.link = link
        self.operators = operators

    def _key(self, sid: str) -> str:
        return self.link.key("admin", "session", hashlib.sha256(sid.encode()).hexdigest())

    async def create(self, address: str, operator: Operator) -> AdminSession:
        session = new_session(address, operator)
        await self.save(session)
        return session

    async def save(self, session: AdminSession) -> None:
        data = json.dumps(
            {
                "csrf": session.csrf,
                "address": session.address,
                "created": session.created,
                "last_seen": session.last_seen,
                "operator": session.operator.name,
                "flash": session.flash,
            }
        )
        await self.link.call(
            "save admin session",
            self.link.redis.set(self._key(session.sid), data, ex=int(SESSION_IDLE)),
        )

    async def get(self, sid: str, touch: bool = True) -> AdminSession | None:
        if not sid or len(sid) > MAX_TOKEN_CHARS:
            return None
        raw = await self.link.call("read admin session", self.link.redis.get(self._key(sid)))
        if raw is None:
            return None
        data = json.loads(raw)
        operator = self.operators.named(data["operator"])
        if operator is None:
            return None
        session = AdminSession(
            sid, data["csrf"], data["address"], data["created"], data["last_seen"], operator,
            data.get("flash", ""),
        )  # fmt: skip
        now = time.time()
        if session.expired(now):
            await self.drop(sid)
            return None
        if touch:
            session.last_seen = now
            await self.save(session)
        return session

    async def alive(self, session: AdminSession) -> bool:
        return await self.get(session.sid, touch=False) is not None

    async def drop(self, sid: str) -> None:
        await self.link.call("drop admin session", self.link.redis.delete(self._key(sid)))


class RedisAttemptLimiter:
    """At most LOGIN_BURST failures per address per window, counted in Redis."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link

    def _key(self, address: str) -> str:
        return self.link.key("admin", "attempts", address)

    async def retry_after(self, address: str) -> float:
        key = self._key(address)
        count, ttl = await self.link.pipeline(
            "read attempts", lambda pipe: (pipe.get(key), pipe.ttl(key))
        )
        if count is None or int(count) < LOGIN_BURST:
            return 0.0
        return float(max(int(ttl), 1))

    async def hit(self, address: str) -> None:
        key = self._key(address)
        await self.link.pipeline(
            "count attempt", lambda pipe: (pipe.incr(key), pipe.expire(key, int(WINDOW), nx=True))
        )
