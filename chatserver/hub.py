"""Connections, names, rooms, presence and fan-out: the chat state of one node.

Commands change state here and produce events; events go out through
``emit`` (the store, which persists messages, then the broker) and come back
to every node's :meth:`Hub.deliver`, which hands each member the same
pre-rendered bytes. Nothing in the delivery path awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Literal, Protocol

from aiohttp import WSCloseCode

from .connection import Connection, Outbox
from .errors import CommandError
from .protocol import (
    Event,
    JoinEvent,
    LeaveEvent,
    MessageEvent,
    NickEvent,
    Rendered,
    SystemEvent,
    User,
    close_reason,
    event_room,
    name_key,
    validate_name,
    validate_room,
    validate_text,
)
from .settings import Settings
from .store import SessionRecord, Store

log = logging.getLogger(__name__)

CLOSE_POLL_INTERVAL = 0.05  # seconds, while a closing peer drains its backlog
CLOSE_SLOW = 4000
CLOSE_TAKEN_OVER = 4001
CLOSE_KICKED = 4500
CLOSE_BANNED = 4501

ConnectionChange = Literal["connect", "disconnect", "update"]
Listener = Callable[[ConnectionChange, Connection], None]


class Moderation(Protocol):
    """What the hub asks of moderation on its hot paths (see ``moderation.py``)."""

    def ban_reason(self, name: str, address: str) -> str | None:
        """The close reason if ``name`` or ``address`` is banned now, else None."""

    def mute_reason(self, user_id: int, name: str) -> str | None:
        """The error text if this user is muted now, else None."""


class NoModeration:
    def ban_reason(self, name: str, address: str) -> str | None:
        return None

    def mute_reason(self, user_id: int, name: str) -> str | None:
        return None


class Room:
    __slots__ = ("created", "members", "messages_in", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        # A dict keeps join order, so `who` lists members in the order they came.
        self.members: dict[Connection, None] = {}
        self.messages_in = 0
        self.created = time.time()


class Hub:
    """The chat state of this node and the operations on it."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.emit: Callable[[Event], None] = store.submit
        self.moderation: Moderation = NoModeration()
        self.connections: dict[int, Connection] = {}
        self.rooms: dict[str, Room] = {}
        self.names: dict[str, Connection] = {}
        self.users: dict[int, Connection] = {}
        self.last_ids: dict[str, int] = {}
        self.listeners: list[Listener] = []
        self.started = time.time()
        self.messages_in = 0
        self.deliveries = 0
        self.shutting_down = False
        self._next_conn_id = 0
        self._next_user_id = 0
        self._closing: set[asyncio.Task[None]] = set()
        self.outbox: Outbox

    def on_store_open(self) -> None:
        """Continue ids where the stored ones end (called at startup, in the loop)."""
        self.outbox = Outbox(asyncio.get_running_loop())
        self.last_ids = dict(self.store.room_last_ids)
        self._next_user_id = self.store.max_user_id

    # ------------------------------------------------------------------ identity

    def new_conn_id(self) -> int:
        self._next_conn_id += 1
        return self._next_conn_id

    def new_user_id(self) -> int:
        self._next_user_id += 1
        return self._next_user_id

    def name_free(self, name: str, conn: Connection | None = None) -> bool:
        holder = self.names.get(name_key(name))
        return holder is None or holder is conn

    def add(self, conn: Connection) -> None:
        """Register a new live connection; a second one of the same user takes over."""
        previous = self.users.get(conn.user.id)
        if previous is not None:
            self.disconnect(previous, "quit", "resumed elsewhere")
            self.close(previous, CLOSE_TAKEN_OVER, "session resumed by another connection")
        if not self.name_free(conn.name):
            raise CommandError("name_taken", f"the name {conn.name!r} is taken")
        self.connections[conn.conn_id] = conn
        self.users[conn.user.id] = conn
        self.names[name_key(conn.name)] = conn
        self._notify("connect", conn)

    def rename(self, conn: Connection, name: str) -> None:
        """Change a connection's name and tell every room it is in."""
        validate_name(name, conn.user.id)
        if name == conn.name:
            return
        if not self.name_free(name, conn):
            raise CommandError("name_taken", f"the name {name!r} is taken")
        old = conn.name
        del self.names[name_key(old)]
        conn.user = User(conn.user.id, name)
        self.names[name_key(name)] = conn
        self.emit(NickEvent(user=conn.user, old=old, rooms=list(conn.rooms), ts=time.time()))
        self.save_session(conn)
        self._notify("update", conn)

    # ------------------------------------------------------------------ rooms

    def join(self, conn: Connection, room_name: str, reason: str = "join") -> str:
        room_name = validate_room(room_name)
        if room_name in conn.rooms:
            conn.current_room = room_name
            return room_name
        limit = self.settings.max_rooms_per_connection
        if limit and len(conn.rooms) >= limit:
            raise CommandError("too_many_rooms", f"you can be in at most {limit} rooms")
        room = self.rooms.get(room_name)
        if room is None:
            room = self.rooms[room_name] = Room(room_name)
        room.members[conn] = None
        conn.rooms.append(room_name)
        conn.current_room = room_name
        if self._presence(room):
            self.emit(JoinEvent(room=room_name, user=conn.user, ts=time.time(), reason=reason))
        self.save_session(conn)
        self._notify("update", conn)
        return room_name

    def leave(self, conn: Connection, room_name: str) -> None:
        room_name = validate_room(room_name)
        if room_name not in conn.rooms:
            raise CommandError("not_in_room", f"you are not in #{room_name}")
        self._remove_member(conn, room_name, "leave", None)
        conn.current_room = conn.rooms[-1] if conn.rooms else None
        self.save_session(conn)
        self._notify("update", conn)

    def _remove_member(
        self, conn: Connection, room_name: str, reason: str, detail: str | None
    ) -> None:
        conn.rooms.remove(room_name)
        room = self.rooms[room_name]
        del room.members[conn]
        event = LeaveEvent(
            room=room_name, user=conn.user, reason=reason, detail=detail, ts=time.time()
        )
        if not self.shutting_down and self._presence(room, leaving=True):
            self.emit(event)
        if not room.members:
            del self.rooms[room_name]

    def _presence(self, room: Room, leaving: bool = False) -> bool:
        """Join/leave notices are off in rooms above the threshold (an auditorium):
        a reconnect storm of N clients would otherwise cost N² deliveries."""
        threshold = self.settings.presence_threshold
        size = len(room.members) + (1 if leaving else 0)
        return not threshold or size <= threshold

    def who(self, room_name: str) -> list[User]:
        room = self.rooms.get(validate_room(room_name))
        return [] if room is None else [member.user for member in room.members]

    # ------------------------------------------------------------------ messages

    def post(self, conn: Connection, room_name: str | None, text: str) -> None:
        room_name = validate_room(room_name) if room_name else conn.current_room
        if room_name is None or room_name not in conn.rooms:
            raise CommandError("not_in_room", f"you are not in #{room_name or '(no room)'}")
        validate_text(text)
        muted = self.moderation.mute_reason(conn.user.id, conn.name)
        if muted is not None:
            raise CommandError("muted", muted)
        msg_id = self.last_ids.get(room_name, 0) + 1
        self.last_ids[room_name] = msg_id
        self.rooms[room_name].messages_in += 1
        self.messages_in += 1
        self.emit(
            MessageEvent(id=msg_id, room=room_name, user=conn.user, text=text, ts=time.time())
        )

    def announce(self, text: str, room_name: str | None = None) -> None:
        """A system message to one room or to everyone."""
        room = validate_room(room_name) if room_name else None
        self.emit(SystemEvent(text=text, room=room))

    # ------------------------------------------------------------------ delivery

    def deliver(self, event: Event) -> None:
        """Hand one published event to every local recipient (no awaits)."""
        rendered = Rendered(event)
        recipients = self._recipients(event)
        for conn in recipients:
            conn.send(rendered)
        self.deliveries += len(recipients)
        actor = self._actor(event)
        if actor is not None and actor not in recipients:
            actor.send(rendered)
            self.deliveries += 1

    def _actor(self, event: Event) -> Connection | None:
        """The connection whose own action this is: it sees the outcome even if
        its membership changed before delivery (a /leave right after posting,
        a nick change outside any room)."""
        if isinstance(event, MessageEvent | JoinEvent | NickEvent) or (
            isinstance(event, LeaveEvent) and event.reason == "leave"
        ):
            return self.users.get(event.user.id)
        return None

    def _recipients(self, event: Event) -> dict[Connection, None]:
        if isinstance(event, NickEvent):
            union: dict[Connection, None] = {}
            for name in event.rooms:
                room = self.rooms.get(name)
                if room is not None:
                    union.update(room.members)
            return union
        room_name = event_room(event)
        if room_name is None:
            return dict.fromkeys(self.connections.values())
        room = self.rooms.get(room_name)
        return {} if room is None else room.members

    # ------------------------------------------------------------------ leaving

    def disconnect(self, conn: Connection, reason: str, detail: str | None = None) -> None:
        """Remove a connection from all state and tell its rooms why (idempotent)."""
        if self.connections.pop(conn.conn_id, None) is None:
            return
        rooms = list(conn.rooms)
        for room_name in rooms:
            self._remove_member(conn, room_name, reason, detail)
        conn.rooms.clear()
        if self.users.get(conn.user.id) is conn:
            del self.users[conn.user.id]
        if self.names.get(name_key(conn.name)) is conn:
            del self.names[name_key(conn.name)]
        conn.held = None
        # Kicked and banned users do not get their rooms back by resuming.
        self.save_session(conn, rooms=[] if reason in {"kicked", "banned"} else rooms)
        self._notify("disconnect", conn)

    def close(self, conn: Connection, code: int, reason: str) -> None:
        """Close a connection's socket in the background (bounded in time)."""
        if conn.closed:
            return
        if code != CLOSE_SLOW:
            # Replies already queued (an error, a "bye") go out before the close
            # frame; a slow consumer's would only grow a buffer nobody reads.
            conn.flush()
            if conn.closed:  # the flush found the buffer full and closed it (4000)
                return
        conn.closed = True
        task = conn.closing = asyncio.create_task(self._close(conn, code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, conn: Connection, code: int, reason: str) -> None:
        transport = conn.transport
        try:
            async with asyncio.timeout(self.settings.shutdown_timeout or 5.0):
                await conn.ws.close(code=code, message=close_reason(reason))
                # close() can return with the close frame still queued behind
                # a slow peer's backlog: give the peer until the deadline to read it.
                while _unsent(transport):  # noqa: ASYNC110 (transports have no "drained" event)
                    await asyncio.sleep(CLOSE_POLL_INTERVAL)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            # A peer that never reads would keep its buffer forever: drop it.
            if _unsent(transport) or not transport.is_closing():
                transport.abort()

    def kick(self, conn: Connection, reason: str) -> None:
        self.disconnect(conn, "kicked", reason)
        self.close(conn, CLOSE_KICKED, reason or "kicked by an operator")

    def ban_kick(self, conn: Connection, close_reason: str, detail: str) -> None:
        self.disconnect(conn, "banned", detail)
        self.close(conn, CLOSE_BANNED, close_reason)

    def overflow(self, conn: Connection) -> None:
        """A slow consumer: close 4000 so everyone else keeps receiving."""
        log.info("closing slow consumer %s (%s): buffer full", conn.conn_id, conn.name)
        self.disconnect(conn, "slow")
        self.close(conn, CLOSE_SLOW, "slow consumer: outbound buffer full")

    async def shutdown(self) -> None:
        """Close every connection with 1001 and wait (bounded) for the closes."""
        self.shutting_down = True
        # Copy: disconnect() changes the dict while we walk it.
        for conn in list(self.connections.values()):
            self.disconnect(conn, "shutdown")
            self.close(conn, WSCloseCode.GOING_AWAY, "server shutting down")
        await self.wait_closed()

    async def wait_closed(self) -> None:
        if self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.shutdown_timeout or 5.0):
                    await asyncio.gather(*self._closing, return_exceptions=True)

    # ------------------------------------------------------------------ sessions

    def save_session(self, conn: Connection, rooms: list[str] | None = None) -> None:
        if not conn.session:
            return
        record = SessionRecord(
            token_hash=conn.session,
            user_id=conn.user.id,
            name=conn.name,
            rooms=list(conn.rooms) if rooms is None else rooms,
            expires=time.time() + self.settings.session_ttl,
        )
        self.store.save_session(record)

    # ------------------------------------------------------------------ observers

    def _notify(self, change: ConnectionChange, conn: Connection) -> None:
        for listener in self.listeners:
            try:
                listener(change, conn)
            except Exception:
                log.exception("connection listener failed")

    def find(self, conn_id: int) -> Connection | None:
        return self.connections.get(conn_id)

    def by_name(self, name: str) -> Connection | None:
        return self.names.get(name_key(name))

    def members(self, room_name: str) -> Iterable[Connection]:
        room = self.rooms.get(room_name)
        return () if room is None else tuple(room.members)


def _unsent(transport: asyncio.Transport) -> int:
    """Bytes still waiting in the transport (0 once the connection is gone)."""
    try:
        return transport.get_write_buffer_size()
    except (AttributeError, RuntimeError):
        return 0
