"""A token user's session lasts as long as the site's token: at ``exp`` plus
the leeway the connection is closed 4401 "token expired", unless the client
sent a newer token of the same user first (``refresh``), whose ``exp`` and
``rooms`` then apply (its ``name`` does not: a rename is a ``nick``).

Only token users have a deadline, so only they cost a timer; a closed
connection's timer is cancelled at once (it would keep the connection alive in
memory until ``exp``).
"""

from __future__ import annotations

import asyncio
import logging
import time

from .connection import Connection
from .errors import CommandError
from .hub import Hub
from .protocol import Refresh, RefreshedEvent, Rendered
from .signin import CLOSE_UNAUTHORIZED
from .tokens import TokenError

log = logging.getLogger(__name__)

EXPIRED = "token expired"


def schedule(conn: Connection, hub: Hub) -> None:
    """(Re)arm the close at ``conn.token_expires`` plus the leeway."""
    conn.cancel_expiry()
    if conn.token_expires is None:
        return
    delay = max(0.0, conn.token_expires + hub.settings.token_leeway - time.time())
    conn.expiry = asyncio.get_running_loop().call_later(delay, _expire, conn, hub)


def _expire(conn: Connection, hub: Hub) -> None:
    conn.expiry = None
    if conn.closed:
        return
    log.info("closing connection %s (user %s): its token expired", conn.conn_id, conn.user.id)
    hub.disconnect(conn, "quit", EXPIRED)
    hub.close(conn, CLOSE_UNAUTHORIZED, EXPIRED)


async def refresh(conn: Connection, hub: Hub, command: Refresh) -> None:
    """Accept a newer token of this connection's own user and move its deadline."""
    if conn.identity != "token" or hub.tokens is None:
        raise CommandError("token_mismatch", "only a connection that came with a token refreshes")
    try:
        claims = hub.tokens.verify(command.token)
    except TokenError as exc:
        log.info("refused a refresh token from %s: %s", conn.remote, exc.reason)
        raise CommandError("token_invalid", exc.reason) from None
    # By user id, not by the sub on the connection: a session resumed from an
    # older record may not know its sub, and the directory maps sub -> user id.
    if await hub.directory.subject_user(claims.subject) != conn.user.id:
        raise CommandError("token_mismatch", "that token is for another user")
    conn.subject, conn.token_expires = claims.subject, claims.expires
    _apply_rooms(conn, hub, claims.rooms)
    schedule(conn, hub)
    hub.save_session(conn)  # a resume keeps the new deadline
    conn.send(Rendered(RefreshedEvent(expires=claims.expires)))


def _apply_rooms(conn: Connection, hub: Hub, rooms: list[str] | None) -> None:
    """The new token's ``rooms`` replace the old one's: what the site no longer
    allows must not outlive the token that allowed it."""
    conn.allowed_rooms = rooms
    if rooms is None:
        return
    for room in [room for room in conn.rooms if room not in rooms]:
        hub.leave(conn, room)
