"""Who may do what, by how they are identified (``--auth``, restricted rooms,
a token's ``rooms`` claim). The hub asks before a join and before a message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import CommandError
from .protocol import name_key

if TYPE_CHECKING:
    from .connection import Connection
    from .settings import Settings


def check_join(conn: Connection, room: str, settings: Settings) -> None:
    """Refuse ``room`` to a guest when it is restricted, and to a token user
    when their token's ``rooms`` does not list it."""
    if conn.allowed_rooms is not None and room not in conn.allowed_rooms:
        raise CommandError("room_forbidden", f"your token does not let you join #{room}")
    if conn.identity == "guest" and room in settings.restricted_rooms:
        raise CommandError("login_required", f"#{room} is for registered users; /login first")


def check_post(conn: Connection, settings: Settings) -> None:
    """Under ``--auth registered`` guests read but do not talk."""
    if conn.identity == "guest" and settings.auth != "guests":
        raise CommandError("login_required", "guests can only read here; /register or /login")


def check_rename(conn: Connection, name: str) -> None:
    """A logged-in user keeps their registered name (its case may change): the
    name is the account, so a ban of that name is a ban of the account."""
    if conn.identity == "registered" and name_key(name) != name_key(conn.name):
        raise CommandError(
            "name_locked", f"you are logged in as {conn.name}; connect as a guest to use another"
        )
