"""Durable state in SQLite: message history, resume sessions, and the tables
moderation adds (bans, mutes, audit log).

All SQLite work runs on one dedicated thread, never on the event loop.
Published events pass through :meth:`Store.submit`: the writer commits every
message of a batch in one transaction (group commit) and only then hands the
batch, in order, to ``publish``. So a message that anyone has seen is on disk
(WAL, ``synchronous=NORMAL`` survives a process crash), and ids never repeat
after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .protocol import Event, MessageEvent, User

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL, id INTEGER NOT NULL, user_id INTEGER NOT NULL,
    name TEXT NOT NULL, text TEXT NOT NULL, ts REAL NOT NULL,
    PRIMARY KEY (room, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_ts ON messages (ts);
CREATE TABLE IF NOT EXISTS rooms (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, user_id INTEGER NOT NULL, name TEXT NOT NULL,
    rooms TEXT NOT NULL, expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclasses.dataclass(slots=True)
class SessionRecord:
    """What a resume token gives back: the identity and the rooms."""

    token_hash: str
    user_id: int
    name: str
    rooms: list[str]
    expires: float


class Store:
    """SQLite on its own thread, with a batching writer for events and sessions."""

    def __init__(self, path: str, *, history: bool) -> None:
        self.path = path
        self.history = history
        # Where committed events go; create_app points it at the broker.
        self.publish: Callable[[Event], None] = lambda event: None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="chat-sqlite")
        self._db: sqlite3.Connection | None = None
        self._queue: list[Event] = []
        self._sessions: dict[str, SessionRecord] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer: asyncio.Task[None] | None = None
        self.room_last_ids: dict[str, int] = {}
        self.max_user_id = 0
        self.batches = 0

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        await self.run_sync(self._open_sync)
        self._writer = asyncio.create_task(self._write_loop(), name="chat-store-writer")

    def _open_sync(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        self.room_last_ids = dict(db.execute("SELECT name, last_id FROM rooms").fetchall())
        candidates = [
            "SELECT MAX(user_id) FROM sessions",
            "SELECT MAX(user_id) FROM messages",
            "SELECT value FROM meta WHERE key = 'max_user_id'",
        ]
        self.max_user_id = max((db.execute(sql).fetchone() or (0,))[0] or 0 for sql in candidates)
        self._db = db

    async def close(self) -> None:
        await self.flush()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self._db is not None:
            await self.run_sync(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def run_sync(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the SQLite thread (the only thread that touches the db)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the SQLite thread; for moderation and admin queries."""
        db = self._conn()
        return await self.run_sync(lambda: fn(db))

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    # ------------------------------------------------------------------ writing

    def submit(self, event: Event) -> None:
        """Publish ``event`` after everything submitted before it, storing messages first."""
        if not self._queue and not (self.history and isinstance(event, MessageEvent)):
            # Nothing to store and nothing queued ahead of it: deliver now.
            self.publish(event)
            return
        self._queue.append(event)
        self._kick()

    def save_session(self, record: SessionRecord) -> None:
        self._sessions[record.token_hash] = record
        self._kick()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed and published."""
        if self._writer is None or self._writer.done():
            return
        await self._idle.wait()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue or self._sessions:
                events, self._queue = self._queue, []
                sessions, self._sessions = self._sessions, {}
                await self._commit(events, sessions)
                for event in events:
                    self._publish_safely(event)
            self._idle.set()

    async def _commit(self, events: list[Event], sessions: dict[str, SessionRecord]) -> None:
        rows = [
            (e.room, e.id, e.user.id, e.user.name, e.text, e.ts)
            for e in events
            if isinstance(e, MessageEvent)
        ]
        if not self.history:
            rows = []
        try:
            await self.run_sync(lambda: self._commit_sync(rows, list(sessions.values())))
            self.batches += 1
            for room, msg_id, *_ in rows:
                self.room_last_ids[room] = max(self.room_last_ids.get(room, 0), msg_id)
        except sqlite3.Error:
            # Delivering unstored beats dropping: the messages were accepted.
            log.exception("could not store %d messages and %d sessions", len(rows), len(sessions))

    def _commit_sync(
        self, rows: list[tuple[str, int, int, str, str, float]], sessions: list[SessionRecord]
    ) -> None:
        db = self._conn()
        last_ids: dict[str, int] = {}
        for room, msg_id, *_ in rows:
            last_ids[room] = max(last_ids.get(room, 0), msg_id)
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.executemany(
                "INSERT INTO rooms VALUES (?, ?) ON CONFLICT (name) "
                "DO UPDATE SET last_id = MAX(last_id, excluded.last_id)",
                list(last_ids.items()),
            )
            db.executemany(
                "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?)",
                [
                    (s.token_hash, s.user_id, s.name, json.dumps(s.rooms), s.expires)
                    for s in sessions
                ],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _publish_safely(self, event: Event) -> None:
        try:
            self.publish(event)
        except Exception:
            log.exception("delivering %s failed", type(event).__name__)

    # ------------------------------------------------------------------ reading

    async def messages_after(self, room: str, after_id: int, limit: int) -> list[MessageEvent]:
        """Up to ``limit`` stored messages of ``room`` with id > ``after_id``, oldest first."""
        sql = (
            "SELECT id, user_id, name, text, ts FROM messages WHERE room = ? AND id > ? "
            "ORDER BY id LIMIT ?"
        )
        rows = await self.run(lambda db: db.execute(sql, (room, after_id, limit)).fetchall())
        return [_message(room, row) for row in rows]

    async def messages_before(
        self, room: str, before: int | None, limit: int
    ) -> tuple[list[MessageEvent], bool]:
        """The newest ``limit`` messages with id < ``before``, oldest first, and whether
        older ones exist."""
        sql = (
            "SELECT id, user_id, name, text, ts FROM messages WHERE room = ? AND id < ? "
            "ORDER BY id DESC LIMIT ?"
        )
        bound = before if before is not None else 2**62
        rows = await self.run(lambda db: db.execute(sql, (room, bound, limit + 1)).fetchall())
        more = len(rows) > limit
        return [_message(room, row) for row in reversed(rows[:limit])], more

    async def delete_message(self, room: str, msg_id: int) -> bool:
        """Remove one stored message; whether a row went (history keeps the id's gap)."""
        sql = "DELETE FROM messages WHERE room = ? AND id = ?"
        count = await self.run(lambda db: db.execute(sql, (room, msg_id)).rowcount)
        return bool(count)

    async def load_session(self, token_hash: str) -> SessionRecord | None:
        pending = self._sessions.get(token_hash)
        if pending is not None:
            return pending
        sql = "SELECT user_id, name, rooms, expires FROM sessions WHERE token_hash = ?"
        row = await self.run(lambda db: db.execute(sql, (token_hash,)).fetchone())
        if row is None:
            return None
        return SessionRecord(token_hash, row[0], row[1], json.loads(row[2]), row[3])

    # ------------------------------------------------------------------ retention

    async def prune(self, max_messages: int, max_age: float) -> int:
        """Apply retention (0 = no limit on that axis); return the rows deleted."""
        now = time.time()
        bounds = [
            (room, last_id - max_messages)
            for room, last_id in self.room_last_ids.items()
            if max_messages and last_id > max_messages
        ]

        def prune_sync(db: sqlite3.Connection) -> int:
            deleted = 0
            for room, bound in bounds:
                sql = "DELETE FROM messages WHERE room = ? AND id <= ?"
                deleted += db.execute(sql, (room, bound)).rowcount
            if max_age:
                deleted += db.execute(
                    "DELETE FROM messages WHERE ts < ?", (now - max_age,)
                ).rowcount
            db.execute("DELETE FROM sessions WHERE expires < ?", (now,))
            return deleted

        return await self.run(prune_sync)

    async def oldest_id(self, room: str) -> int | None:
        sql = "SELECT MIN(id) FROM messages WHERE room = ?"
        row = await self.run(lambda db: db.execute(sql, (room,)).fetchone())
        return None if row is None or row[0] is None else int(row[0])


def _message(room: str, row: tuple[int, int, str, str, float]) -> MessageEvent:
    msg_id, user_id, name, text, ts = row
    return MessageEvent(id=msg_id, room=room, user=User(user_id, name), text=text, ts=ts)
