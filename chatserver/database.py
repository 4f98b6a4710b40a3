"""The embedded mode's SQLite file, on one dedicated thread.

Every embedded store (room log, directory, moderation store) shares this one
connection. All SQLite work runs on the thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import fcntl
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TypeVar

from .errors import StartupError

T = TypeVar("T")

# SQLite's errors that mean "the file cannot take writes now" (disk full,
# read-only, I/O error) rather than a bug in a statement.
WRITE_FAILURES = (sqlite3.OperationalError, sqlite3.DatabaseError)


class Database:
    """One SQLite connection in WAL mode, reached through :meth:`run`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="chat-sqlite")
        self._db: sqlite3.Connection | None = None
        self._lock: IO[bytes] | None = None

    async def open(self) -> None:
        await self.run_sync(self._open_sync)

    def _open_sync(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._lock = _lock_file(self.path + ".lock")
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self.run_sync(self._db.close)
            self._db = None
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None
        self._executor.shutdown(wait=True)

    async def run_sync(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the SQLite thread (the only thread that touches the db)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the SQLite thread."""
        db = self._conn()
        return await self.run_sync(lambda: fn(db))

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` inside BEGIN/COMMIT on the SQLite thread."""
        return await self.run(lambda db: in_transaction(db, fn))

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("database is not open")
        return self._db


def _lock_file(path: str) -> IO[bytes]:
    """Hold an exclusive lock beside the database for this process's lifetime.

    Two embedded servers on one file would hand out the same ids; the second
    is refused at start instead (several processes need Redis mode).
    """
    handle = open(path, "ab")  # noqa: SIM115 (held open until close())
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StartupError(
            f"the database {path[: -len('.lock')]} is in use by another chatserver; "
            "run several processes with --redis-url instead"
        ) from None
    return handle


def in_transaction(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn(db)`` between BEGIN and COMMIT; rolled back if it raises."""
    db.execute("BEGIN")
    try:
        result = fn(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


def add_missing_columns(db: sqlite3.Connection, table: str, columns: dict[str, str]) -> None:
    """Migrate a table made by an older version: add each of ``columns``
    (name: SQL type and default) that it lacks."""
    present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    for column, kind in columns.items():
        if column not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
