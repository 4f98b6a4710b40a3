"""Checks run before the server listens, and the start-up banner's words.

A bad ``--db`` path must be one clear line and exit status 2, not a traceback
from deep inside SQLite or a misleading "cannot listen" later.
"""

from __future__ import annotations

import os
from pathlib import Path

from yarl import URL

from .errors import SettingsError

SQLITE_HEADER = b"SQLite format 3\x00"


def check_db_path(path: str) -> None:
    """Raise SettingsError unless SQLite can create or open ``path`` for writing."""
    if path == ":memory:":
        return
    target = Path(path).expanduser()
    if target.is_dir():
        raise SettingsError(f"--db {path} is a directory; name a file, e.g. {target / 'chat.db'}")
    if target.exists():
        _check_existing_file(path, target)
        return
    ancestor = _nearest_existing(target.parent)
    if not ancestor.is_dir():
        raise SettingsError(f"--db {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise SettingsError(f"--db {path}: cannot create files in {ancestor} (permission denied)")


def _check_existing_file(path: str, target: Path) -> None:
    if not target.is_file():
        raise SettingsError(f"--db {path} is not a regular file")
    if not os.access(target, os.R_OK | os.W_OK):
        raise SettingsError(f"--db {path} is not readable and writable (permission denied)")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        # SQLite writes its -wal and -shm files next to the database.
        raise SettingsError(f"--db {path}: its directory {target.parent} is not writable")
    with target.open("rb") as fh:
        header = fh.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        raise SettingsError(f"--db {path} is not an SQLite database")


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (as anything)."""
    while not path.exists() and path != path.parent:
        # A file in the middle of the path ends the walk too: /dev/null/x.
        if path.parent.exists() or path.parent.is_symlink():
            return path.parent
        path = path.parent
    return path


def mask_password(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for printing a Redis URL)."""
    try:
        parsed = URL(url)
    except ValueError:
        return "(unparsable URL)"
    if parsed.password is None:
        return url
    return str(parsed.with_password("***"))
