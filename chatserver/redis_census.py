"""The census in Redis: ``PREFIX:census:NODE`` holds each node's latest
snapshot (JSON) with a short expiry, ``PREFIX:census:nodes`` lists the nodes
that published, and ``PREFIX:census:wanted`` exists while someone looks."""

from __future__ import annotations

import json

from .census import SNAPSHOT_INTERVAL, Snapshot
from .redis_link import RedisLink

WANTED_FOR = 15  # seconds nodes keep publishing after the last look
SNAPSHOT_TTL = int(SNAPSHOT_INTERVAL * 5)  # a node that stops publishing drops out


class RedisCensus:
    """Every node's snapshot, through Redis."""

    def __init__(self, link: RedisLink, node: str) -> None:
        self.link = link
        self.node = node

    async def want(self) -> bool:
        key = self.link.key("census", "wanted")
        fresh, _ = await self.link.pipeline(
            "census",
            lambda pipe: (pipe.set(key, 1, nx=True, ex=WANTED_FOR), pipe.expire(key, WANTED_FOR)),
        )
        return bool(fresh)

    async def wanted(self) -> bool:
        return bool(
            await self.link.call(
                "census", self.link.redis.exists(self.link.key("census", "wanted"))
            )
        )

    def publish(self, snapshot: Snapshot) -> None:
        key, nodes, data = (
            self.link.key("census", self.node),
            self.link.key("census", "nodes"),
            json.dumps(snapshot),
        )
        self.link.later(
            "census",
            lambda pipe: (pipe.set(key, data, ex=SNAPSHOT_TTL), pipe.sadd(nodes, self.node)),
        )

    async def others(self) -> list[Snapshot]:
        nodes_key = self.link.key("census", "nodes")
        nodes = [
            n.decode() for n in await self.link.call("census", self.link.redis.smembers(nodes_key))
        ]
        others = [node for node in nodes if node != self.node]
        if not others:
            return []
        raw = await self.link.call(
            "census", self.link.redis.mget([self.link.key("census", node) for node in others])
        )
        gone = [node for node, item in zip(others, raw, strict=True) if item is None]
        if gone:
            self.link.later("census", lambda pipe: pipe.srem(nodes_key, *gone))
        return [json.loads(item) for item in raw if item is not None]
