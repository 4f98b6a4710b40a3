"""The moderation store: bans, mutes and the audit log, kept durably.

The store gives every ban, mute and audit entry its id, and writes a change
together with its audit entry, atomically: an action whose write fails leaves
nothing behind (the caller changes its in-memory view only afterwards).
:class:`SqliteModerationStore` is the embedded implementation; the Redis one
lives in ``redis_engine.py``.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from .database import WRITE_FAILURES, Database, add_missing_columns, in_transaction
from .errors import Unavailable

T = TypeVar("T")

MAX_CLOSE_REASON_BYTES = 120  # a close frame's reason is at most 123 bytes
RECENT_AUDIT = 200

SCHEMA = """
CREATE TABLE IF NOT EXISTS bans (
    id INTEGER PRIMARY KEY, name TEXT, address TEXT, reason TEXT NOT NULL,
    actor TEXT NOT NULL, created REAL NOT NULL, until REAL,
    lifted REAL, lifted_by TEXT, subject TEXT, user_id INTEGER
);
CREATE TABLE IF NOT EXISTS mutes (
    id INTEGER PRIMARY KEY, user_id INTEGER, name TEXT, reason TEXT NOT NULL,
    actor TEXT NOT NULL, created REAL NOT NULL, until REAL,
    lifted REAL, lifted_by TEXT
);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL
);
"""

# Columns added to the bans table after its first release (ALTERed in on open,
# so a database written by an older server keeps its bans).
BAN_COLUMNS = {"subject": "TEXT", "user_id": "INTEGER"}

_ACTIVE_BANS = (
    "SELECT id, name, address, reason, actor, created, until, subject, user_id FROM bans "
    "WHERE lifted IS NULL AND (until IS NULL OR until > ?)"
)
_ACTIVE_MUTES = (
    "SELECT id, user_id, name, reason, actor, created, until FROM mutes "
    "WHERE lifted IS NULL AND (until IS NULL OR until > ?)"
)
_AUDIT_PAGE = (
    "SELECT id, ts, actor, action, target, reason, detail FROM audit_log "
    "WHERE id < ? ORDER BY id DESC LIMIT ?"
)


def format_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def fit_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8 without splitting a character."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - 3].decode("utf-8", "ignore") + "..."


def until_text(until: float | None) -> str:
    return "until lifted" if until is None else format_time(until)


@dataclasses.dataclass(slots=True)
class Ban:
    """A ban of a name (case-insensitive), an address or network, a site token's
    subject (the account of a token user) or a user id, or several of these."""

    id: int
    name: str | None
    address: str | None
    reason: str
    actor: str
    created: float
    until: float | None  # None: until lifted
    # A token's ``sub``, and the user id the directory maps it to: a resumed
    # session carries only the user id, a new token only the ``sub``.
    subject: str | None = None
    user_id: int | None = None

    def active(self, now: float) -> bool:
        return self.until is None or self.until > now

    def close_reason(self) -> str:
        """The close reason a refused client gets; it says until when."""
        when = "permanently" if self.until is None else f"until {format_time(self.until)}"
        return fit_utf8(f"banned {when}: {self.reason}", MAX_CLOSE_REASON_BYTES)

    def target(self) -> str:
        parts = []
        if self.name:
            parts.append(f"name={self.name}")
        if self.address:
            parts.append(f"address={self.address}")
        if self.subject:
            parts.append(f"subject={self.subject}")
        elif self.user_id is not None:
            parts.append(f"user_id={self.user_id}")
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "until_text": until_text(self.until)}


@dataclasses.dataclass(slots=True)
class Mute:
    """A mute of a user id, a name (case-insensitive), or both."""

    id: int
    user_id: int | None
    name: str | None
    reason: str
    actor: str
    created: float
    until: float | None

    def active(self, now: float) -> bool:
        return self.until is None or self.until > now

    def error_text(self) -> str:
        """What a muted user is told when they post; it says until when."""
        return f"you are muted {self._when()} ({self.reason})"

    def notice(self) -> str:
        """What a live user is told when muted."""
        return f"An operator muted you {self._when()} ({self.reason})."

    def _when(self) -> str:
        if self.until is None:
            return "until an operator unmutes you"
        return f"until {format_time(self.until)}"

    def target(self) -> str:
        parts = []
        if self.user_id is not None:
            parts.append(f"user_id={self.user_id}")
        if self.name:
            parts.append(f"name={self.name}")
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "until_text": until_text(self.until)}


@dataclasses.dataclass(slots=True, frozen=True)
class AuditEntry:
    """One operator action: who did what to whom, why and when."""

    id: int
    ts: float
    actor: str
    action: str
    target: str
    reason: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "time": format_time(self.ts)}


@dataclasses.dataclass(frozen=True, slots=True)
class Active:
    """What is in force now, and the newest audit entries (oldest first)."""

    bans: list[Ban]
    mutes: list[Mute]
    audit: list[AuditEntry]


class ModerationStore(Protocol):
    """Durable bans, mutes and audit log; ids are the store's."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def active(self) -> Active:
        """The bans and mutes in force and the recent audit entries."""

    async def add_ban(self, ban: Ban, audit: AuditEntry) -> tuple[Ban, AuditEntry]:
        """Store ``ban`` and its audit entry (their ids are ignored and assigned)."""

    async def add_mute(self, mute: Mute, audit: AuditEntry) -> tuple[Mute, AuditEntry]: ...

    async def lift(self, kind: str, item_id: int, actor: str, audit: AuditEntry) -> AuditEntry:
        """Mark ban or mute (``kind``) ``item_id`` lifted, with its audit entry."""

    async def add_audit(self, audit: AuditEntry) -> AuditEntry: ...

    async def audit_page(self, limit: int, before: int | None) -> tuple[list[AuditEntry], bool]:
        """The newest ``limit`` entries with id < ``before``, newest first, and whether
        older ones exist."""


class SqliteModerationStore:
    """Bans, mutes and audit log in the embedded SQLite file."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self) -> None:
        await self.db.run(_open_sync)

    async def close(self) -> None:
        return None

    async def active(self) -> Active:
        now = time.time()

        def load(db: sqlite3.Connection) -> Active:
            bans = [Ban(*row) for row in db.execute(_ACTIVE_BANS, (now,))]
            mutes = [Mute(*row) for row in db.execute(_ACTIVE_MUTES, (now,))]
            audit = [AuditEntry(*row) for row in db.execute(_AUDIT_PAGE, (2**62, RECENT_AUDIT))]
            return Active(bans, mutes, audit[::-1])

        return await self.db.run(load)

    async def add_ban(self, ban: Ban, audit: AuditEntry) -> tuple[Ban, AuditEntry]:
        def write(db: sqlite3.Connection) -> tuple[Ban, AuditEntry]:
            cursor = db.execute(
                "INSERT INTO bans (name, address, reason, actor, created, until, subject, user_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ban.name,
                    ban.address,
                    ban.reason,
                    ban.actor,
                    ban.created,
                    ban.until,
                    ban.subject,
                    ban.user_id,
                ),
            )
            stored = dataclasses.replace(ban, id=int(cursor.lastrowid or 0))
            return stored, _insert_audit(db, audit)

        return await self._write(write)

    async def add_mute(self, mute: Mute, audit: AuditEntry) -> tuple[Mute, AuditEntry]:
        def write(db: sqlite3.Connection) -> tuple[Mute, AuditEntry]:
            cursor = db.execute(
                "INSERT INTO mutes (user_id, name, reason, actor, created, until) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (mute.user_id, mute.name, mute.reason, mute.actor, mute.created, mute.until),
            )
            stored = dataclasses.replace(mute, id=int(cursor.lastrowid or 0))
            return stored, _insert_audit(db, audit)

        return await self._write(write)

    async def lift(self, kind: str, item_id: int, actor: str, audit: AuditEntry) -> AuditEntry:
        table = {"ban": "bans", "mute": "mutes"}[kind]

        def write(db: sqlite3.Connection) -> AuditEntry:
            db.execute(
                f"UPDATE {table} SET lifted = ?, lifted_by = ? WHERE id = ?",  # noqa: S608 (fixed names)
                (time.time(), actor, item_id),
            )
            return _insert_audit(db, audit)

        return await self._write(write)

    async def add_audit(self, audit: AuditEntry) -> AuditEntry:
        return await self._write(lambda db: _insert_audit(db, audit))

    async def audit_page(self, limit: int, before: int | None) -> tuple[list[AuditEntry], bool]:
        bound = before if before is not None else 2**62
        rows = await self.db.run(lambda db: db.execute(_AUDIT_PAGE, (bound, limit + 1)).fetchall())
        return [AuditEntry(*row) for row in rows[:limit]], len(rows) > limit

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await self.db.run(lambda db: in_transaction(db, fn))
        except WRITE_FAILURES as exc:
            raise Unavailable("store", f"the change could not be stored: {exc}") from None


def _open_sync(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)
    add_missing_columns(db, "bans", BAN_COLUMNS)


def _insert_audit(db: sqlite3.Connection, audit: AuditEntry) -> AuditEntry:
    cursor = db.execute(
        "INSERT INTO audit_log (ts, actor, action, target, reason, detail) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (audit.ts, audit.actor, audit.action, audit.target, audit.reason, audit.detail),
    )
    return dataclasses.replace(audit, id=int(cursor.lastrowid or 0))
