"""The room log: message ids, stored history and replay.

``append`` gives a message the room's next id, stores it and publishes it, in
that order, and returns only then: the sender's echo is its acknowledgement,
so nothing is echoed or delivered that is not stored. A log that cannot store
raises :class:`~chatserver.errors.Unavailable` and allocates no id.

Each room's ids count from 1 within an *epoch*, a token that changes when the
log loses its data (a deleted database file, a Redis that lost its keys); a
resume cursor from another epoch is reported as lost instead of replayed as
if it still meant something.

:class:`SqliteRoomLog` is the embedded implementation; the Redis one lives in
``redis_engine.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from .batching import Batcher
from .database import WRITE_FAILURES, Database, in_transaction
from .errors import Unavailable
from .health import Health
from .protocol import MessageEvent, User

log = logging.getLogger(__name__)

Publish = Callable[[MessageEvent], None]

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL, id INTEGER NOT NULL, user_id INTEGER NOT NULL,
    name TEXT NOT NULL, text TEXT NOT NULL, ts REAL NOT NULL,
    PRIMARY KEY (room, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_ts ON messages (ts);
CREATE TABLE IF NOT EXISTS rooms (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta_text (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Head:
    """Where a room's log stands: its epoch and newest id (0: none yet)."""

    epoch: str
    last_id: int


class RoomLog(Protocol):
    """Ordered, stored, published messages per room."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def append(self, room: str, user: User, text: str, key: str) -> asyncio.Future[MessageEvent]:
        """Store and publish a message with the room's next id; ``key`` makes a retry
        of the same message (same key) return the first one instead of a copy.

        Returns at once with a future, so a connection's messages queue up in
        order while its receive loop reads on (one tick's worth of messages is
        then committed and delivered together); the future is done once the
        message is stored and published."""

    async def after(self, room: str, last: int, limit: int) -> list[MessageEvent]:
        """Up to ``limit`` stored messages with id > ``last``, oldest first."""

    async def before(
        self, room: str, before: int | None, limit: int
    ) -> tuple[list[MessageEvent], bool]:
        """The newest ``limit`` messages with id < ``before``, oldest first, and
        whether older ones exist."""

    async def heads(self, rooms: Iterable[str]) -> dict[str, Head]:
        """The epoch and newest id of each room."""

    async def first_id(self, room: str) -> int | None:
        """The oldest id still stored (None: nothing stored)."""

    async def delete(self, room: str, msg_id: int) -> bool:
        """Remove one stored message (an operator's delete); whether it was there.
        Its id is not reused: history keeps the gap."""

    async def prune(self, max_messages: int, max_age: float) -> int:
        """Apply retention (0: no limit on that axis); the number of messages removed."""


@dataclasses.dataclass(slots=True)
class _Pending:
    room: str
    user: User
    text: str
    ts: float
    done: asyncio.Future[MessageEvent]


class SqliteRoomLog:
    """The room log in the embedded SQLite file, with group commit.

    Messages waiting while a commit runs are committed together in the next
    transaction; ids are given in the writer, just before the commit, so a
    failed commit leaves no hole in the ids.
    """

    def __init__(self, db: Database, *, history: bool, publish: Publish, health: Health) -> None:
        self.db = db
        self.history = history
        self.publish = publish
        self.health = health
        self.epoch = ""
        self.last_ids: dict[str, int] = {}
        self.batches = 0
        self._batcher: Batcher[_Pending] = Batcher(self._write, "chat-roomlog-writer")

    async def open(self) -> None:
        self.epoch, self.last_ids = await self.db.run(self._open_sync)
        self._batcher.start()

    def _open_sync(self, db: sqlite3.Connection) -> tuple[str, dict[str, int]]:
        db.executescript(SCHEMA)
        db.execute("INSERT OR IGNORE INTO meta_text VALUES ('epoch', ?)", (secrets.token_hex(8),))
        epoch = db.execute("SELECT value FROM meta_text WHERE key = 'epoch'").fetchone()[0]
        last_ids = dict(db.execute("SELECT name, last_id FROM rooms").fetchall())
        return str(epoch), last_ids

    async def close(self) -> None:
        await self._batcher.close()

    # ------------------------------------------------------------------ writing

    def append(
        self, room: str, user: User, text: str, key: str = ""
    ) -> asyncio.Future[MessageEvent]:
        # One process, one writer: a retry cannot run the write twice, so the
        # idempotency key only matters to the Redis log.
        done: asyncio.Future[MessageEvent] = asyncio.get_running_loop().create_future()
        self._batcher.add(_Pending(room, user, text, time.time(), done))
        return done

    async def _write(self, batch: list[_Pending]) -> None:
        last_ids = dict(self.last_ids)
        events: list[MessageEvent] = []
        for item in batch:
            msg_id = last_ids[item.room] = last_ids.get(item.room, 0) + 1
            events.append(
                MessageEvent(id=msg_id, room=item.room, user=item.user, text=item.text, ts=item.ts)
            )
        if self.history:
            try:
                await self.db.run(lambda db: in_transaction(db, lambda db: _insert(db, events)))
            except WRITE_FAILURES as exc:
                self.health.down("store", f"cannot write messages: {exc}")
                error = Unavailable("store", "the message could not be stored; try again later")
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(error)
                return
            self.health.up("store")
        self.batches += 1
        self.last_ids = last_ids
        for item, event in zip(batch, events, strict=True):
            try:
                self.publish(event)
            except Exception:
                log.exception("delivering message %s/%s failed", event.room, event.id)
            if not item.done.done():
                item.done.set_result(event)

    # ------------------------------------------------------------------ reading

    async def after(self, room: str, last: int, limit: int) -> list[MessageEvent]:
        sql = (
            "SELECT id, user_id, name, text, ts FROM messages WHERE room = ? AND id > ? "
            "ORDER BY id LIMIT ?"
        )
        rows = await self.db.run(lambda db: db.execute(sql, (room, last, limit)).fetchall())
        return [_message(room, row) for row in rows]

    async def before(
        self, room: str, before: int | None, limit: int
    ) -> tuple[list[MessageEvent], bool]:
        sql = (
            "SELECT id, user_id, name, text, ts FROM messages WHERE room = ? AND id < ? "
            "ORDER BY id DESC LIMIT ?"
        )
        bound = before if before is not None else 2**62
        rows = await self.db.run(lambda db: db.execute(sql, (room, bound, limit + 1)).fetchall())
        more = len(rows) > limit
        return [_message(room, row) for row in reversed(rows[:limit])], more

    async def heads(self, rooms: Iterable[str]) -> dict[str, Head]:
        return {room: Head(self.epoch, self.last_ids.get(room, 0)) for room in rooms}

    async def first_id(self, room: str) -> int | None:
        sql = "SELECT MIN(id) FROM messages WHERE room = ?"
        row = await self.db.run(lambda db: db.execute(sql, (room,)).fetchone())
        return None if row is None or row[0] is None else int(row[0])

    async def delete(self, room: str, msg_id: int) -> bool:
        await self._batcher.flush()  # a message still in the write queue is deleted too
        sql = "DELETE FROM messages WHERE room = ? AND id = ?"
        count = await self.db.run(lambda db: db.execute(sql, (room, msg_id)).rowcount)
        return bool(count)

    async def prune(self, max_messages: int, max_age: float) -> int:
        now = time.time()
        bounds = [
            (room, last_id - max_messages)
            for room, last_id in self.last_ids.items()
            if max_messages and last_id > max_messages
        ]

        def prune_sync(db: sqlite3.Connection) -> int:
            deleted = 0
            for room, bound in bounds:
                sql = "DELETE FROM messages WHERE room = ? AND id <= ?"
                deleted += db.execute(sql, (room, bound)).rowcount
            if max_age:
                sql = "DELETE FROM messages WHERE ts < ?"
                deleted += db.execute(sql, (now - max_age,)).rowcount
            return deleted

        return await self.db.run(prune_sync)


def _insert(db: sqlite3.Connection, events: list[MessageEvent]) -> None:
    # Plain INSERT: a repeated (room, id) is a bug to surface, never an overwrite.
    db.executemany(
        "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)",
        [(e.room, e.id, e.user.id, e.user.name, e.text, e.ts) for e in events],
    )
    last_ids: dict[str, int] = {}
    for event in events:
        last_ids[event.room] = event.id
    db.executemany(
        "INSERT INTO rooms VALUES (?, ?) ON CONFLICT (name) "
        "DO UPDATE SET last_id = MAX(last_id, excluded.last_id)",
        list(last_ids.items()),
    )


def _message(room: str, row: tuple[int, int, str, str, float]) -> MessageEvent:
    msg_id, user_id, name, text, ts = row
    return MessageEvent(id=msg_id, room=room, user=User(user_id, name), text=text, ts=ts)
