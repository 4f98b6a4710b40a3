"""The room log in Redis: one Lua script per message (``lua/append.lua``).

Per room, a meta hash holds the epoch and the newest id and a stream holds
the messages, with stream ids ``<message id>-1`` so a range of message ids is
a range of stream ids. The script gives the next id, appends to the stream
(capped at ``--history-max-messages``), remembers the idempotency key and
publishes ``id|epoch|body`` on the messages channel, all at once: every node
sees every room's messages in id order, and a gap in what a node receives is
filled from the stream (see ``redis_broker.py``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterable
from typing import Any

import msgspec
from redis.asyncio.client import Pipeline

from .protocol import MessageEvent, User
from .redis_link import RedisLink
from .roomlog import Head

IDEMPOTENCY_TTL = 300  # seconds a message key remembers its first append
PRUNE_BATCH = 500


class Body(msgspec.Struct, array_like=True, frozen=True):
    """A stored message without its id (the id is the stream entry's)."""

    room: str
    user_id: int
    name: str
    text: str
    ts: float


_encode = msgspec.json.Encoder().encode
_decode_body = msgspec.json.Decoder(Body).decode


def body_of(room: str, user: User, text: str, ts: float) -> bytes:
    return _encode(Body(room, user.id, user.name, text, ts))


def message_of(msg_id: int, data: bytes) -> MessageEvent:
    body = _decode_body(data)
    return MessageEvent(
        id=msg_id, room=body.room, user=User(body.user_id, body.name), text=body.text, ts=body.ts
    )


def parse_publication(data: bytes) -> tuple[int, str, MessageEvent]:
    """``id|epoch|body`` as published by the append script."""
    raw_id, epoch, body = data.split(b"|", 2)
    msg_id = int(raw_id)
    return msg_id, epoch.decode(), message_of(msg_id, body)


class RedisRoomLog:
    """Messages, ids and epochs of every room, in Redis."""

    def __init__(self, link: RedisLink, *, history: bool, cap: int) -> None:
        self.link = link
        self.history = history
        self.cap = cap
        self.channel = link.key("messages")

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def append(self, room: str, user: User, text: str, key: str) -> asyncio.Future[MessageEvent]:
        ts = time.time()
        body = body_of(room, user, text, ts)
        keys = [
            self.link.room_key(room, "meta"),
            self.link.room_key(room, "stream"),
            self.link.room_key(room, f"key:{key}"),
        ]
        cap = self.cap if self.history else -1
        args: list[str | bytes | int] = [
            self.channel,
            body,
            secrets.token_hex(8),
            cap,
            IDEMPOTENCY_TTL,
        ]

        def queue(pipe: Pipeline) -> None:
            self.link.evalsha(pipe, "append", keys, args)

        done: asyncio.Future[MessageEvent] = asyncio.get_running_loop().create_future()
        event = MessageEvent(id=0, room=room, user=user, text=text, ts=ts)
        self.link.submit("append", queue).add_done_callback(
            lambda result: self._appended(result, event, done)
        )
        return done

    def _appended(
        self,
        result: asyncio.Future[list[Any]],
        event: MessageEvent,
        done: asyncio.Future[MessageEvent],
    ) -> None:
        error = result.exception()
        if error is not None:
            done.set_exception(error)
            return
        ((msg_id, _epoch, duplicate),) = result.result()
        if not duplicate and int(msg_id) == 1:
            # The set of rooms with a log, for retention; written once per epoch.
            rooms, room = self.link.key("rooms"), event.room
            self.link.later("append", lambda pipe: pipe.sadd(rooms, room))
        done.set_result(msgspec.structs.replace(event, id=int(msg_id)))

    async def after(self, room: str, last: int, limit: int) -> list[MessageEvent]:
        stream = self.link.room_key(room, "stream")
        entries = await self.link.call(
            "read history", self.link.redis.xrange(stream, f"{last + 1}-0", "+", count=limit)
        )
        return [_entry(entry) for entry in entries]

    async def before(
        self, room: str, before: int | None, limit: int
    ) -> tuple[list[MessageEvent], bool]:
        stream = self.link.room_key(room, "stream")
        top = "+" if before is None else f"({before}-0"
        if before is not None and before <= 1:
            return [], False
        entries = await self.link.call(
            "read history", self.link.redis.xrevrange(stream, top, "-", count=limit + 1)
        )
        messages = [_entry(entry) for entry in entries[:limit]]
        return messages[::-1], len(entries) > limit

    async def heads(self, rooms: Iterable[str]) -> dict[str, Head]:
        names = list(dict.fromkeys(rooms))

        def build(pipe: Pipeline) -> None:
            for room in names:
                meta = self.link.room_key(room, "meta")
                # A room's epoch exists from the first time anyone asks for it,
                # so that a cursor handed out now can be checked later.
                pipe.hsetnx(meta, "epoch", secrets.token_hex(8))
                pipe.hmget(meta, ["epoch", "top"])

        results = await self.link.pipeline("read room heads", build)
        heads: dict[str, Head] = {}
        for room, (epoch, top) in zip(names, results[1::2], strict=True):
            heads[room] = Head(_text(epoch), int(top or 0))
        return heads

    async def first_id(self, room: str) -> int | None:
        stream = self.link.room_key(room, "stream")
        entries = await self.link.call("read history", self.link.redis.xrange(stream, count=1))
        return _entry(entries[0]).id if entries else None

    async def delete(self, room: str, msg_id: int) -> bool:
        stream = self.link.room_key(room, "stream")
        removed = await self.link.call("delete", self.link.redis.xdel(stream, f"{msg_id}-1"))
        return bool(removed)

    async def prune(self, max_messages: int, max_age: float) -> int:
        """Age retention (the count is capped on every append): trim each room's
        stream up to its first message younger than ``max_age``."""
        if not max_age or not self.history:
            return 0
        rooms = await self.link.call("prune", self.link.redis.smembers(self.link.key("rooms")))
        cutoff = time.time() - max_age
        deleted = 0
        for raw in rooms:
            deleted += await self._prune_room(_text(raw), cutoff)
        return deleted

    async def _prune_room(self, room: str, cutoff: float) -> int:
        stream = self.link.room_key(room, "stream")
        entries = await self.link.call(
            "prune", self.link.redis.xrange(stream, "-", "+", count=PRUNE_BATCH)
        )
        keep = next((e for e in entries if message_of(0, e[1][b"b"]).ts >= cutoff), None)
        if keep is None and len(entries) < PRUNE_BATCH:
            bound = "+"  # everything is older: trim it all
        elif keep is None:
            bound = _text(entries[-1][0])  # the next sweep goes on from here
        else:
            bound = _text(keep[0])
        if bound == "+":
            return int(await self.link.call("prune", self.link.redis.xtrim(stream, maxlen=0)))
        return int(await self.link.call("prune", self.link.redis.xtrim(stream, minid=bound)))


def _entry(entry: Any) -> MessageEvent:
    stream_id, fields = entry
    return message_of(int(_text(stream_id).split("-", 1)[0]), fields[b"b"])


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
