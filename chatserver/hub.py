"""This node's live connections, their rooms, and fan-out.

Commands change state here and produce events. Messages go to the room log
(which stores them, then publishes them); every other event goes to the
broker. Both come back to every node's :meth:`Hub.deliver`, which hands each
local member the same pre-rendered bytes. Nothing in the delivery path awaits.
Names, sessions and presence across nodes belong to the directory; the hub
keeps only what it needs to deliver and to find its own connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Literal, Protocol

from aiohttp import WSCloseCode

from .accounts import Accounts
from .broker import AnyControl, Broker, CloseUser, KickConnection, ModerationChanged, TakeOver
from .connection import Connection, Outbox
from .directory import ConnInfo, Directory, Member, SessionRecord
from .errors import CommandError
from .modstore import Ban
from .policy import check_join, check_post, check_rename
from .protocol import (
    DeleteEvent,
    Event,
    JoinEvent,
    LeaveEvent,
    MessageEvent,
    NickEvent,
    Rendered,
    SystemEvent,
    User,
    check_reserved,
    close_reason,
    event_room,
    name_key,
)
from .roomlog import RoomLog
from .settings import Settings
from .tokens import TokenVerifier

log = logging.getLogger(__name__)

CLOSE_POLL_INTERVAL = 0.05  # seconds, while a closing peer drains its backlog
CLOSE_SLOW = 4000
CLOSE_TAKEN_OVER = 4001
CLOSE_KICKED = 4500
CLOSE_BANNED = 4501

ConnectionChange = Literal["connect", "disconnect", "update"]
Listener = Callable[[ConnectionChange, Connection], None]


class Restrictions(Protocol):
    """What the hub asks of moderation on its hot paths (see ``moderation.py``)."""

    def find_ban(
        self, name: str, address: str, user_id: int | None = None, subject: str | None = None
    ) -> Ban | None:
        """The ban in force for ``name``, ``address``, the user id or the token
        subject, if any."""

    def mute_reason(self, user_id: int, name: str) -> str | None:
        """The error text if this user is muted now, else None."""

    async def reload(self) -> None:
        """Read the active bans and mutes again (another node changed them)."""


class Room:
    __slots__ = ("created", "members", "messages_in", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        # A dict keeps join order, so `who` lists members in the order they came.
        self.members: dict[Connection, None] = {}
        self.messages_in = 0
        self.created = time.time()


class Hub:
    """The live connections of this node and the operations on them."""

    def __init__(
        self,
        settings: Settings,
        room_log: RoomLog,
        directory: Directory,
        broker: Broker,
        restrictions: Restrictions,
        tokens: TokenVerifier | None = None,
    ) -> None:
        self.settings = settings
        self.room_log = room_log
        self.directory = directory
        self.broker = broker
        self.restrictions = restrictions
        self.node = broker.node
        self.connections: dict[int, Connection] = {}
        self.rooms: dict[str, Room] = {}
        self.names: dict[str, Connection] = {}  # this node's connections by name_key
        self.users: dict[int, Connection] = {}
        self.listeners: list[Listener] = []
        self.started = time.time()
        self.messages_in = 0
        self.deliveries = 0
        self.close_codes: Counter[int] = Counter()  # chat sockets closed, by code (metrics)
        self.shutting_down = False
        self._closing: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.outbox: Outbox
        self.accounts = Accounts(directory, settings.login_attempts)
        self.tokens = tokens  # the site's token key, if it has one
        broker.subscribe(self.deliver, self.on_control)

    def start(self) -> None:
        """Bind to the running loop (called at startup)."""
        self.outbox = Outbox(asyncio.get_running_loop())

    # ------------------------------------------------------------------ identity

    async def add(self, conn: Connection) -> None:
        """Register a new live connection; a second one of the same user takes over."""
        if not await self.directory.claim_name(conn.name, conn.user.id, conn.conn_id):
            raise CommandError("name_taken", f"the name {conn.name!r} is taken")
        self._take_over(conn.user.id, conn.conn_id)
        await self.directory.take_session(conn.user.id, conn.conn_id)
        self.connections[conn.conn_id] = conn
        self.directory.register(self.info(conn))
        self.users[conn.user.id] = conn
        self.names[name_key(conn.name)] = conn
        self._notify("connect", conn)

    def _take_over(self, user_id: int, conn_id: int) -> None:
        previous = self.users.get(user_id)
        if previous is not None and previous.conn_id != conn_id:
            self.disconnect(previous, "quit", "resumed elsewhere")
            self.close(previous, CLOSE_TAKEN_OVER, "session resumed by another connection")

    async def rename(self, conn: Connection, name: str) -> None:
        """Change a connection's name and tell every room it is in."""
        check_reserved(name, conn.user.id)  # the name's shape was checked by protocol
        if name == conn.name:
            return
        check_rename(conn, name)
        await self.accounts.ensure_free(name, conn.user.id)
        if not await self.directory.claim_name(name, conn.user.id, conn.conn_id):
            raise CommandError("name_taken", f"the name {name!r} is taken")
        if conn.closed:
            self.directory.release_name(name, conn.user.id, conn.conn_id)
            return
        old = conn.name
        if name_key(old) != name_key(name):
            self.directory.release_name(old, conn.user.id, conn.conn_id)
            self.names.pop(name_key(old), None)
        self._set_presence(conn, joined=False)
        conn.user = User(conn.user.id, name)
        self.names[name_key(name)] = conn
        self._set_presence(conn, joined=True)
        self.directory.register(self.info(conn))
        self.broker.publish(
            NickEvent(user=conn.user, old=old, rooms=list(conn.rooms), ts=time.time())
        )
        self.save_session(conn)
        self._notify("update", conn)
        if self.ban_of(conn) is not None:
            # After the nick notice has gone out: the new name is banned.
            asyncio.get_running_loop().call_soon(self.enforce_bans)

    async def become(self, conn: Connection, user: User) -> None:
        """Make ``conn`` the connection of another user (a login): claim their
        name, take their session over, and tell the rooms the new name."""
        if user.id == conn.user.id:
            return
        if not await self.directory.claim_name(user.name, user.id, conn.conn_id):
            raise CommandError("name_taken", f"the name {user.name!r} is taken")
        self._take_over(user.id, conn.conn_id)
        await self.directory.take_session(user.id, conn.conn_id)
        old = conn.user
        self.directory.release_name(old.name, old.id, conn.conn_id)
        if self.names.get(name_key(old.name)) is conn:
            del self.names[name_key(old.name)]
        if self.users.get(old.id) is conn:
            del self.users[old.id]
        self._set_presence(conn, joined=False)
        conn.user = user
        self.users[user.id] = conn
        self.names[name_key(user.name)] = conn
        self._set_presence(conn, joined=True)
        self.directory.register(self.info(conn))  # operators find it under its new name
        self.broker.publish(
            NickEvent(user=user, old=old.name, rooms=list(conn.rooms), ts=time.time())
        )
        self.save_session(conn)
        self._notify("update", conn)
        if self.restrictions.find_ban(user.name, conn.remote, user.id):
            asyncio.get_running_loop().call_soon(self.enforce_bans)

    def _set_presence(self, conn: Connection, *, joined: bool) -> None:
        for room in conn.rooms:
            member = Member(conn.user, self.node, conn.conn_id)
            if joined:
                self.directory.joined(room, member)
            else:
                self.directory.left(room, member)

    # ------------------------------------------------------------------ rooms

    def join(self, conn: Connection, room_name: str, reason: str = "join") -> str:
        """Add ``conn`` to ``room_name`` (a canonical name, as protocol makes them)."""
        if room_name in conn.rooms:
            conn.current_room = room_name
            return room_name
        check_join(conn, room_name, self.settings)
        limit = self.settings.max_rooms_per_connection
        if limit and len(conn.rooms) >= limit:
            raise CommandError("too_many_rooms", f"you can be in at most {limit} rooms")
        room = self.rooms.get(room_name)
        if room is None:
            room = self.rooms[room_name] = Room(room_name)
        room.members[conn] = None
        conn.rooms.append(room_name)
        conn.current_room = room_name
        self.directory.joined(room_name, Member(conn.user, self.node, conn.conn_id))
        if self._presence(room):
            self.broker.publish(
                JoinEvent(room=room_name, user=conn.user, ts=time.time(), reason=reason)
            )
        self.save_session(conn)
        self._notify("update", conn)
        return room_name

    def leave(self, conn: Connection, room_name: str) -> None:
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
        self.directory.left(room_name, Member(conn.user, self.node, conn.conn_id))
        event = LeaveEvent(
            room=room_name, user=conn.user, reason=reason, detail=detail, ts=time.time()
        )
        if not self.shutting_down and self._presence(room, leaving=True):
            self.broker.publish(event)
        if not room.members:
            del self.rooms[room_name]

    def _presence(self, room: Room, leaving: bool = False) -> bool:
        """Join/leave notices are off in rooms above the threshold (an auditorium):
        a reconnect storm of N clients would otherwise cost N² deliveries."""
        threshold = self.settings.presence_threshold
        size = len(room.members) + (1 if leaving else 0)
        return not threshold or size <= threshold

    async def who(self, room_name: str) -> list[User]:
        """Everyone in the room, on every node."""
        return await self.directory.who(room_name)

    # ------------------------------------------------------------------ messages

    def post(
        self, conn: Connection, room_name: str | None, text: str, key: str
    ) -> asyncio.Future[MessageEvent]:
        """Check a message and hand it to the room log; the future is done once it
        is stored and published (the sender's echo follows)."""
        room_name = room_name or conn.current_room
        if room_name is None or room_name not in conn.rooms:
            raise CommandError("not_in_room", f"you are not in #{room_name or '(no room)'}")
        check_post(conn, self.settings)
        muted = self.restrictions.mute_reason(conn.user.id, conn.name)
        if muted is not None:
            raise CommandError("muted", muted)
        self.messages_in += 1
        room = self.rooms.get(room_name)
        if room is not None:
            room.messages_in += 1
        return self.room_log.append(room_name, conn.user, text, key)

    def announce(self, text: str, room_name: str | None = None) -> None:
        """A system message to one room or to everyone, on every node."""
        self.broker.publish(SystemEvent(text=text, room=room_name or None))

    def delete(self, room_name: str, msg_id: int) -> None:
        """Tell ``room_name``'s members (on every node) that message ``msg_id`` is gone."""
        self.broker.publish(DeleteEvent(room=room_name, id=msg_id))

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

    # ------------------------------------------------------------------ control

    def on_control(self, command: AnyControl) -> None:
        """A command from some node (this one included) for this node's connections."""
        if isinstance(command, KickConnection):
            conn = self.connections.get(command.conn_id)
            if conn is not None:
                reason = "banned" if command.code == CLOSE_BANNED else "kicked"
                self.disconnect(conn, reason, command.detail)
                self.close(conn, command.code, command.reason)
        elif isinstance(command, TakeOver):
            self._take_over(command.user_id, command.conn_id)
        elif isinstance(command, ModerationChanged):
            self._spawn(self._moderation_changed(command))
        elif isinstance(command, CloseUser):
            conn = self.users.get(command.user_id)
            if conn is not None:
                conn.session = ""  # its resume token ends with it: nothing to save
                self.disconnect(conn, "kicked", command.reason)
                self.close(conn, command.code, command.reason)

    async def _moderation_changed(self, command: ModerationChanged) -> None:
        await self.restrictions.reload()
        if command.notice:
            target = self.users.get(command.notice_user) if command.notice_user else None
            if target is None and command.notice_name:
                target = self.by_name(command.notice_name)
            if target is not None:
                target.send(Rendered(SystemEvent(text=command.notice)))
        if command.what == "bans":
            self.enforce_bans()

    def enforce_bans(self) -> int:
        """Close this node's connections that a ban now covers; how many."""
        return sum(self.enforce_ban(conn) for conn in list(self.connections.values()))

    def enforce_ban(self, conn: Connection) -> bool:
        """Close ``conn`` (4501) if a ban covers it now; whether it did."""
        ban = self.ban_of(conn)
        if ban is None or conn.closed:
            return False
        self.ban_kick(conn, ban.close_reason(), ban.reason)
        return True

    def ban_of(self, conn: Connection) -> Ban | None:
        """The ban in force for ``conn``'s name, address, user or token subject."""
        return self.restrictions.find_ban(conn.name, conn.remote, conn.user.id, conn.subject)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ leaving

    def disconnect(self, conn: Connection, reason: str, detail: str | None = None) -> None:
        """Remove a connection from all state and tell its rooms why (idempotent)."""
        conn.cancel_expiry()
        if self.connections.pop(conn.conn_id, None) is None:
            return
        self.directory.unregister(conn.conn_id)
        rooms = list(conn.rooms)
        for room_name in rooms:
            self._remove_member(conn, room_name, reason, detail)
        conn.rooms.clear()
        if self.users.get(conn.user.id) is conn:
            del self.users[conn.user.id]
        self.directory.release_name(conn.name, conn.user.id, conn.conn_id)
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
        self.close_codes[code] += 1
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
        for task in list(self._tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        if self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.shutdown_timeout or 5.0):
                    await asyncio.gather(*self._closing, return_exceptions=True)

    # ------------------------------------------------------------------ sessions

    def save_session(self, conn: Connection, rooms: list[str] | None = None) -> None:
        if conn.session:
            self.directory.save_session(self._session_record(conn, rooms))

    async def persist_session(self, conn: Connection, rooms: list[str]) -> None:
        """Save the session (with the rooms it is joining) now, for every node,
        before its token is handed out."""
        if conn.session:
            await self.directory.persist_session(self._session_record(conn, list(rooms)))

    def _session_record(self, conn: Connection, rooms: list[str] | None) -> SessionRecord:
        return SessionRecord(
            token_hash=conn.session,
            user_id=conn.user.id,
            name=conn.name,
            rooms=list(conn.rooms) if rooms is None else rooms,
            expires=time.time() + self.settings.session_ttl,
            identity=conn.identity,
            allowed=conn.allowed_rooms,
            subject=conn.subject,
            token_expires=conn.token_expires,
            generation=conn.generation,
        )

    # ------------------------------------------------------------------ observers

    def identity_changed(self, conn: Connection) -> None:
        """``conn`` registered or dropped its name: save it and tell observers."""
        self.save_session(conn)
        self._notify("update", conn)

    def _notify(self, change: ConnectionChange, conn: Connection) -> None:
        for listener in self.listeners:
            try:
                listener(change, conn)
            except Exception:
                log.exception("connection listener failed")

    def info(self, conn: Connection) -> ConnInfo:
        return ConnInfo(
            conn.conn_id,
            self.node,
            conn.user.id,
            conn.name,
            conn.remote,
            conn.identity,
            conn.subject,
        )

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
