"""Resume tokens and the ``last`` cursor of a reconnecting client."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets

from .errors import CommandError
from .protocol import parse_uint, validate_room

MAX_CURSORS = 50
_EPOCH_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")


def new_token() -> str:
    """An unguessable resume token (256 bits); only its hash is stored."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Cursor:
    """The last message a client saw in a room, and the log epoch it belongs to
    (empty: the client did not say)."""

    last_id: int
    epoch: str = ""


def parse_last(value: str) -> dict[str, Cursor]:
    """Parse ``room:id,room:id@epoch`` (the last message id seen per room)."""
    cursors: dict[str, Cursor] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        room, sep, position = item.rpartition(":")
        last, at, epoch = position.partition("@")
        last_id = parse_uint(last)
        if (
            not sep
            or last_id is None
            or len(cursors) >= MAX_CURSORS
            or (bool(at) and not _EPOCH_RE.fullmatch(epoch))
        ):
            raise CommandError(
                "bad_request", f"bad 'last' cursor {item!r}: use room:id or room:id@epoch"
            )
        cursors[validate_room(room)] = Cursor(last_id, epoch)
    return cursors
