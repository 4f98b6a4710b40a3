"""The directory: who is who across the whole chat.

User ids, name claims (one holder per name, compared by ``name_key``),
sessions and their resume tokens (hashed), presence (who is in which room, on
which node) and the current holder of each session, so that a resume on any
node takes the session over from wherever it was (close 4001).

Writes that nobody waits for (presence, releasing a name, saving a session)
are plain calls that the implementation completes in the background, in
order; claims and reads are awaited. :class:`LocalDirectory` is the embedded
implementation (memory, sessions in SQLite); the Redis one lives in
``redis_engine.py``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import time
from typing import Protocol

from .accounts import Account, LoginLimiter, LoginLimits
from .batching import Batcher
from .database import WRITE_FAILURES, Database, add_missing_columns, in_transaction
from .health import Health
from .protocol import User, name_key

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, user_id INTEGER NOT NULL, name TEXT NOT NULL,
    rooms TEXT NOT NULL, expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    key TEXT PRIMARY KEY, name TEXT NOT NULL, user_id INTEGER NOT NULL,
    password_hash TEXT NOT NULL, locked INTEGER NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS subjects (sub TEXT PRIMARY KEY, user_id INTEGER NOT NULL);
"""
# Columns added to the sessions table after its first release (ALTERed in on open).
SESSION_COLUMNS = {
    "identity": "TEXT NOT NULL DEFAULT 'guest'",
    "allowed": "TEXT",
    "subject": "TEXT",
    "token_expires": "REAL",
    "generation": "INTEGER NOT NULL DEFAULT 0",
}
# Columns added to the accounts table after its first release.
ACCOUNT_COLUMNS = {"generation": "INTEGER NOT NULL DEFAULT 0"}


@dataclasses.dataclass(slots=True)
class SessionRecord:
    """What a resume token gives back: the identity and the rooms."""

    token_hash: str
    user_id: int
    name: str
    rooms: list[str]
    expires: float
    identity: str = "guest"  # guest, registered or token: a resume keeps it
    allowed: list[str] | None = None  # a token's rooms claim (None: any room)
    subject: str | None = None  # a token user's ``sub``
    token_expires: float | None = None  # a token user's ``exp``: no resume after it
    generation: int = 0  # the account's credential generation when saved (registered)


@dataclasses.dataclass(frozen=True, slots=True)
class ConnInfo:
    """Where a live connection is and whose it is: enough for an operator on any
    node to kick, mute or ban it."""

    conn_id: int
    node: str
    user_id: int
    name: str
    address: str
    identity: str = "guest"  # so that a ban of it can name its account
    subject: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    """One connection's presence in a room."""

    user: User
    node: str
    conn_id: int


class Directory(Protocol):
    """Identities, names, sessions and presence for every node."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def new_user_id(self) -> int: ...

    async def new_conn_id(self) -> int:
        """A connection id unique among all nodes."""

    async def claim_name(self, name: str, user_id: int, conn_id: int) -> bool:
        """Take ``name`` for connection ``conn_id`` of ``user_id``; False if another
        user holds it (another connection of the same user hands it over)."""

    def release_name(self, name: str, user_id: int, conn_id: int) -> None:
        """Give ``name`` up if connection ``conn_id`` still holds it."""

    async def name_free(self, name: str, user_id: int) -> bool:
        """Whether ``user_id`` could take ``name`` now (free, or already theirs)."""

    async def load_session(self, token_hash: str) -> SessionRecord | None: ...

    def save_session(self, record: SessionRecord) -> None: ...

    async def persist_session(self, record: SessionRecord) -> None:
        """Save ``record`` so that every node can load it once this returns (a
        welcome's token must resume anywhere, however soon)."""

    async def take_session(self, user_id: int, conn_id: int) -> None:
        """Make ``conn_id`` the holder of ``user_id``'s session; a holder on another
        node is told to close (4001)."""

    def register(self, info: ConnInfo) -> None:
        """A connection is live on this node (again, after a rename)."""

    def unregister(self, conn_id: int) -> None: ...

    async def locate(self, conn_id: int) -> ConnInfo | None:
        """Where connection ``conn_id`` is live (None: nowhere known)."""

    async def find_user(self, user_id: int | None, name: str | None) -> ConnInfo | None:
        """The live connection of a user (by id, else by name) on any node."""

    def joined(self, room: str, member: Member) -> None: ...

    def left(self, room: str, member: Member) -> None: ...

    async def who(self, room: str) -> list[User]:
        """Everyone in ``room`` on every node, in join order."""

    async def flush(self) -> None:
        """Wait until the background writes made so far are done."""

    async def account(self, name: str) -> Account | None:
        """The account registered under ``name`` (compared by ``name_key``)."""

    async def create_account(self, account: Account) -> bool:
        """Store a new account; False if its name is registered already."""

    async def save_account(self, account: Account) -> None:
        """Store a changed account (its password hash or lock)."""

    async def delete_account(self, name: str) -> None: ...

    async def subject_user(self, subject: str) -> int:
        """The user id of a site's user (a token's ``sub``), made on first sight."""

    async def end_sessions(self, user_id: int, keep: str = "") -> None:
        """Forget every resume token of ``user_id`` but the one hashed ``keep``."""

    def login_limits(self, limit: int, scope: str) -> LoginLimits:
        """Where password attempts of ``scope`` (login, register) are counted
        (``limit`` per name per window)."""


class LocalDirectory:
    """One node: names and presence in memory, sessions in the SQLite file."""

    def __init__(self, db: Database, health: Health, node: str) -> None:
        self.db = db
        self.health = health
        self.node = node
        self.live: dict[int, ConnInfo] = {}
        self.names: dict[str, tuple[int, int]] = {}  # name_key -> (user id, conn id)
        self.rooms: dict[str, dict[int, User]] = {}
        self._max_user_id = 0
        self._conn_ids = 0
        # Records not written yet, newest per token (loads read them first).
        self._sessions: dict[str, SessionRecord] = {}
        self._batcher: Batcher[str] = Batcher(self._write, "chat-session-writer")

    async def open(self) -> None:
        self._max_user_id = await self.db.run(_open_sync)
        self._batcher.start()

    async def close(self) -> None:
        await self._batcher.close()

    async def new_user_id(self) -> int:
        self._max_user_id += 1
        return self._max_user_id

    async def new_conn_id(self) -> int:
        self._conn_ids += 1
        return self._conn_ids

    async def claim_name(self, name: str, user_id: int, conn_id: int) -> bool:
        key = name_key(name)
        holder = self.names.get(key)
        if holder is not None and holder[0] != user_id:
            return False
        self.names[key] = (user_id, conn_id)
        return True

    def release_name(self, name: str, user_id: int, conn_id: int) -> None:
        key = name_key(name)
        if self.names.get(key) == (user_id, conn_id):
            del self.names[key]

    async def name_free(self, name: str, user_id: int) -> bool:
        holder = self.names.get(name_key(name))
        return holder is None or holder[0] == user_id

    async def take_session(self, user_id: int, conn_id: int) -> None:
        # One node: the hub closes the previous holder itself.
        return None

    def register(self, info: ConnInfo) -> None:
        self.live[info.conn_id] = info

    def unregister(self, conn_id: int) -> None:
        self.live.pop(conn_id, None)

    async def locate(self, conn_id: int) -> ConnInfo | None:
        return self.live.get(conn_id)

    async def find_user(self, user_id: int | None, name: str | None) -> ConnInfo | None:
        for info in self.live.values():
            if info.user_id == user_id or (name and name_key(info.name) == name_key(name)):
                return info
        return None

    def joined(self, room: str, member: Member) -> None:
        self.rooms.setdefault(room, {})[member.conn_id] = member.user

    def left(self, room: str, member: Member) -> None:
        members = self.rooms.get(room)
        if members is not None:
            members.pop(member.conn_id, None)
            if not members:
                del self.rooms[room]

    async def who(self, room: str) -> list[User]:
        return list(self.rooms.get(room, {}).values())

    # ------------------------------------------------------------------ sessions

    async def load_session(self, token_hash: str) -> SessionRecord | None:
        pending = self._sessions.get(token_hash)
        if pending is not None:
            return pending
        sql = (
            "SELECT user_id, name, rooms, expires, identity, allowed, subject, token_expires, "
            "generation FROM sessions WHERE token_hash = ?"
        )
        row = await self.db.run(lambda db: db.execute(sql, (token_hash,)).fetchone())
        if row is None:
            return None
        allowed = None if row[5] is None else json.loads(row[5])
        rooms = json.loads(row[2])
        return SessionRecord(
            token_hash, row[0], row[1], rooms, row[3], row[4], allowed, row[6], row[7], row[8]
        )

    def save_session(self, record: SessionRecord) -> None:
        self._sessions[record.token_hash] = record
        self._batcher.add(record.token_hash)

    async def persist_session(self, record: SessionRecord) -> None:
        # One process: a pending record is already what load_session reads.
        self.save_session(record)

    async def flush(self) -> None:
        await self._batcher.flush()

    async def _write(self, tokens: list[str]) -> None:
        records = [self._sessions[t] for t in dict.fromkeys(tokens) if t in self._sessions]
        if not records:
            return
        rows = [
            (
                s.token_hash,
                s.user_id,
                s.name,
                json.dumps(s.rooms),
                s.expires,
                s.identity,
                None if s.allowed is None else json.dumps(s.allowed),
                s.subject,
                s.token_expires,
                s.generation,
            )
            for s in records
        ]
        top = max(s.user_id for s in records)

        def write(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT OR REPLACE INTO sessions (token_hash, user_id, name, rooms, expires, "
                "identity, allowed, subject, token_expires, generation) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.execute(
                "INSERT INTO meta VALUES ('max_user_id', ?) ON CONFLICT (key) "
                "DO UPDATE SET value = MAX(value, excluded.value)",
                (top,),
            )

        try:
            await self.db.run(lambda db: in_transaction(db, write))
        except WRITE_FAILURES as exc:
            # A lost session costs its user a resume, not a message: keep chatting.
            self.health.down("store", f"cannot write sessions: {exc}")
        for record in records:  # written (or lost); a newer save stays pending
            if self._sessions.get(record.token_hash) is record:
                del self._sessions[record.token_hash]

    # ------------------------------------------------------------------ accounts

    async def account(self, name: str) -> Account | None:
        sql = (
            "SELECT key, name, user_id, password_hash, locked, created, generation "
            "FROM accounts WHERE key = ?"
        )
        key = name_key(name)
        row = await self.db.run(lambda db: db.execute(sql, (key,)).fetchone())
        if row is None:
            return None
        return Account(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6])

    async def create_account(self, account: Account) -> bool:
        row = _account_row(account)
        sql = "INSERT OR IGNORE INTO accounts " + _ACCOUNT_INSERT
        created: int = await self.db.run(lambda db: db.execute(sql, row).rowcount)
        return created == 1

    async def save_account(self, account: Account) -> None:
        row = _account_row(account)
        sql = "REPLACE INTO accounts " + _ACCOUNT_INSERT
        await self.db.run(lambda db: db.execute(sql, row))

    async def delete_account(self, name: str) -> None:
        key = name_key(name)
        await self.db.run(lambda db: db.execute("DELETE FROM accounts WHERE key = ?", (key,)))

    async def subject_user(self, subject: str) -> int:
        def read(db: sqlite3.Connection) -> int | None:
            row = db.execute("SELECT user_id FROM subjects WHERE sub = ?", (subject,)).fetchone()
            return None if row is None else int(row[0])

        known = await self.db.run(read)
        if known is not None:
            return known
        user_id = await self.new_user_id()
        sql = "INSERT OR IGNORE INTO subjects VALUES (?, ?)"
        await self.db.run(lambda db: db.execute(sql, (subject, user_id)))
        return await self.db.run(read) or user_id

    async def end_sessions(self, user_id: int, keep: str = "") -> None:
        await self.flush()  # a pending save must not bring one back
        sql = "DELETE FROM sessions WHERE user_id = ? AND token_hash != ?"
        await self.db.run(lambda db: db.execute(sql, (user_id, keep)))

    def login_limits(self, limit: int, scope: str) -> LoginLimits:
        return LoginLimiter(limit)  # one instance per scope: nothing shared to keep apart

    async def prune(self) -> None:
        """Forget expired sessions."""
        now = time.time()
        await self.db.run(lambda db: db.execute("DELETE FROM sessions WHERE expires < ?", (now,)))


def _open_sync(db: sqlite3.Connection) -> int:
    db.executescript(SCHEMA)
    add_missing_columns(db, "sessions", SESSION_COLUMNS)
    add_missing_columns(db, "accounts", ACCOUNT_COLUMNS)
    # The room log's table (opened first) counts too: messages carry user ids.
    sources = [
        "SELECT MAX(user_id) FROM accounts",
        "SELECT MAX(user_id) FROM subjects",
        "SELECT MAX(user_id) FROM sessions",
        "SELECT value FROM meta WHERE key = 'max_user_id'",
        "SELECT MAX(user_id) FROM messages",
    ]
    return max((db.execute(sql).fetchone() or (0,))[0] or 0 for sql in sources)


_ACCOUNT_INSERT = (
    "(key, name, user_id, password_hash, locked, created, generation) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _account_row(account: Account) -> tuple[str, str, int, str, int, float, int]:
    return (
        account.key,
        account.name,
        account.user_id,
        account.password_hash,
        int(account.locked),
        account.created,
        account.generation,
    )
