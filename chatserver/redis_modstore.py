"""The moderation store in Redis: bans, mutes and the audit log of all nodes.

Active bans and mutes are hashes of id -> JSON; a lifted one moves to a
``lifted`` hash. The audit log is a hash of id -> JSON with a sorted set of
ids for paging. Ids come from ``INCR``; each change and its audit entry are
written in one ``MULTI``/``EXEC`` transaction, so neither lands alone.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, TypeVar

from redis.asyncio.client import Pipeline

from .modstore import RECENT_AUDIT, Active, AuditEntry, Ban, Mute
from .redis_link import RedisLink

_Item = TypeVar("_Item", Ban, Mute)

_KINDS = {"ban": "bans", "mute": "mutes"}


class RedisModerationStore:
    """Bans, mutes and audit log shared by every node."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _key(self, *parts: str) -> str:
        return self.link.key("moderation", *parts)

    async def active(self) -> Active:
        def build(pipe: Pipeline) -> None:
            pipe.hgetall(self._key("bans"))
            pipe.hgetall(self._key("mutes"))
            pipe.zrevrange(self._key("audit", "ids"), 0, RECENT_AUDIT - 1)

        bans_raw, mutes_raw, audit_ids = await self.link.pipeline("read moderation", build)
        now = time.time()
        bans = [b for b in (Ban(**json.loads(v)) for v in bans_raw.values()) if b.active(now)]
        mutes = [m for m in (Mute(**json.loads(v)) for v in mutes_raw.values()) if m.active(now)]
        audit = await self._entries(audit_ids)
        return Active(bans, mutes, audit[::-1])

    async def add_ban(self, ban: Ban, audit: AuditEntry) -> tuple[Ban, AuditEntry]:
        return await self._add("bans", ban, audit)

    async def add_mute(self, mute: Mute, audit: AuditEntry) -> tuple[Mute, AuditEntry]:
        return await self._add("mutes", mute, audit)

    async def _add(self, table: str, item: _Item, audit: AuditEntry) -> tuple[_Item, AuditEntry]:
        """Store a ban or mute under fresh ids, with its audit entry, at once."""
        item_id, audit_id = await self._ids(table)
        stored = dataclasses.replace(item, id=item_id)
        entry = dataclasses.replace(audit, id=audit_id)
        what = table[:-1]  # "ban", "mute": what a failure names
        await self._write(
            what, entry, lambda pipe: pipe.hset(self._key(table), str(item_id), _json(stored))
        )
        return stored, entry

    async def lift(self, kind: str, item_id: int, actor: str, audit: AuditEntry) -> AuditEntry:
        table = _KINDS[kind]
        (audit_id,) = await self._ids()
        entry = dataclasses.replace(audit, id=audit_id)
        lifted = json.dumps({"lifted": time.time(), "lifted_by": actor})

        def change(pipe: Pipeline) -> None:
            pipe.hdel(self._key(table), str(item_id))
            pipe.hset(self._key(table, "lifted"), str(item_id), lifted)

        await self._write("lift", entry, change)
        return entry

    async def add_audit(self, audit: AuditEntry) -> AuditEntry:
        (audit_id,) = await self._ids()
        entry = dataclasses.replace(audit, id=audit_id)
        await self._write("audit", entry, lambda pipe: None)
        return entry

    async def audit_page(self, limit: int, before: int | None) -> tuple[list[AuditEntry], bool]:
        top = "+inf" if before is None else f"({before}"
        ids = await self.link.call(
            "read audit",
            self.link.redis.zrevrangebyscore(
                self._key("audit", "ids"), top, "-inf", start=0, num=limit + 1
            ),
        )
        entries = await self._entries(ids[:limit])
        return entries, len(ids) > limit

    async def _ids(self, table: str | None = None) -> list[int]:
        def build(pipe: Pipeline) -> None:
            if table is not None:
                pipe.incr(self._key(table, "next"))
            pipe.incr(self._key("audit", "next"))

        return [int(value) for value in await self.link.pipeline("new ids", build)]

    async def _write(self, what: str, entry: AuditEntry, change: Any) -> None:
        async with self.link.redis.pipeline(transaction=True) as pipe:
            change(pipe)
            pipe.hset(self._key("audit"), str(entry.id), _json(entry))
            pipe.zadd(self._key("audit", "ids"), {str(entry.id): entry.id})
            await self.link.call(what, pipe.execute())

    async def _entries(self, ids: list[Any]) -> list[AuditEntry]:
        if not ids:
            return []
        raw = await self.link.call("read audit", self.link.redis.hmget(self._key("audit"), ids))
        return [AuditEntry(**json.loads(item)) for item in raw if item is not None]


def _json(record: Ban | Mute | AuditEntry) -> str:
    return json.dumps(dataclasses.asdict(record))
