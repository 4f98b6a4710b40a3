"""Resume tokens and the ``last`` cursor of a reconnecting client."""

from __future__ import annotations

import hashlib
import secrets

from .errors import CommandError
from .protocol import parse_uint, validate_room

MAX_CURSORS = 50


def new_token() -> str:
    """An unguessable resume token (256 bits); only its hash is stored."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def parse_last(value: str) -> dict[str, int]:
    """Parse ``room:id,room:id`` (the last message id seen per room)."""
    cursors: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        room, sep, last = item.rpartition(":")
        last_id = parse_uint(last)
        if not sep or last_id is None or len(cursors) >= MAX_CURSORS:
            raise CommandError("bad_request", f"bad 'last' cursor {item!r}: use room:id,room:id")
        cursors[validate_room(room)] = last_id
    return cursors
