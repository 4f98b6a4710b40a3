"""One chat connection and its bounded outbound buffer.

Fan-out never awaits: an event is appended to each member's pending list and
the :class:`Outbox` writes every dirty connection once at the end of the loop
tick, so what one tick produces for a connection leaves in one ``write``.
When a peer does not read, its transport buffer grows; past
``outbound_buffer_bytes`` the connection is handed to ``on_overflow`` (close
4000) instead of slowing anyone else down.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from typing import Literal

from aiohttp import web

from .limits import TokenBucket
from .protocol import MessageEvent, Rendered, User

Dialect = Literal["text", "json"]

# Live events held while a replay runs; a room busy enough to exceed this
# during one replay makes the client a slow consumer (close 4000, resume again).
MAX_HELD_EVENTS = 10_000


# The kernel's share of a connection's unsent data. Left alone, Linux autotunes
# the send buffer up to 4 MiB per socket (net.ipv4.tcp_wmem), which would hide a
# stalled reader from --outbound-buffer-bytes for megabytes and multiply memory
# per connection; pinned, a peer's unsent data stays within the limit plus this
# (the kernel doubles the value for its bookkeeping).
KERNEL_SEND_BUFFER = 64 * 1024


def pin_kernel_send_buffer(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)


class Outbox:
    """Writes all connections that got frames during this loop tick, once each."""

    __slots__ = ("_dirty", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[Connection] = []
        self._scheduled = False

    def mark(self, conn: Connection) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()


class Connection:
    """A live WebSocket peer: identity, rooms, counters and outbound buffer."""

    __slots__ = (
        "allowed_rooms",
        "bucket",
        "bytes_in",
        "bytes_out",
        "closed",
        "closing",
        "conn_id",
        "connected_at",
        "current_room",
        "dialect",
        "expiry",
        "generation",
        "held",
        "identity",
        "is_json",
        "last_activity",
        "last_append",
        "last_seen",
        "limit",
        "messages_in",
        "messages_out",
        "on_overflow",
        "outbox",
        "pending",
        "pending_bytes",
        "remote",
        "replayed",
        "rooms",
        "scheduled",
        "session",
        "subject",
        "token_expires",
        "transport",
        "user",
        "ws",
    )

    def __init__(
        self,
        *,
        conn_id: int,
        user: User,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        dialect: Dialect,
        remote: str,
        outbox: Outbox,
        limit: int,
        bucket: TokenBucket,
        on_overflow: Callable[[Connection], None],
    ) -> None:
        self.conn_id = conn_id
        self.user = user
        self.ws = ws
        self.transport = transport
        self.dialect: Dialect = dialect
        self.is_json = dialect == "json"
        self.remote = remote
        self.outbox = outbox
        self.limit = limit
        self.bucket = bucket
        self.on_overflow = on_overflow
        self.rooms: list[str] = []  # in join order; the last one is current
        self.current_room: str | None = None
        self.session = ""
        # How the server knows this user (guest, registered, token) and the
        # rooms a token allows (None: any); see policy.py.
        self.identity = "guest"
        self.allowed_rooms: list[str] | None = None
        # A registered session's account credential generation (accounts.py):
        # a reset, lock or password change elsewhere makes it stale.
        self.generation = 0
        # A token user's site id (``sub``) and the token's ``exp``: the session
        # ends then unless the client sends a newer token (chatserver/expiry.py).
        self.subject: str | None = None
        self.token_expires: float | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.scheduled = False
        self.closed = False
        self.closing: asyncio.Task[None] | None = None  # the hub's close, if one runs
        # While a resume replays missed messages, live events wait here.
        self.held: list[Rendered] | None = None
        # After a replay: per room the newest id it sent. In Redis mode the node
        # may still be filling a gap in its subscription and deliver those ids
        # live once more; they are dropped until a newer id arrives.
        self.replayed: dict[str, int] | None = None
        # The newest message still being stored: later commands wait for it.
        self.last_append: asyncio.Future[MessageEvent] | None = None
        now = time.time()
        self.connected_at = now
        self.last_activity = now
        self.last_seen = time.monotonic()
        self.messages_in = self.messages_out = 0
        self.bytes_in = self.bytes_out = 0

    @property
    def name(self) -> str:
        return self.user.name

    def cancel_expiry(self) -> None:
        """Stop the token-expiry timer, if one runs (chatserver/expiry.py)."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None

    def send(self, rendered: Rendered) -> None:
        """Queue one broadcast event in this connection's dialect (hot path)."""
        if self.held is not None:
            self.held.append(rendered)
            if len(self.held) > MAX_HELD_EVENTS:
                self.held = None
                self.on_overflow(self)
            return
        if self.replayed is not None and self._replayed_already(rendered.event):
            return
        if self.is_json:
            self.enqueue(rendered.json_frame())
        else:
            self.enqueue(rendered.text_frame(self.current_room))

    def _replayed_already(self, event: object) -> bool:
        """Whether ``event`` is a message the replay sent (then it is dropped)."""
        assert self.replayed is not None
        if not isinstance(event, MessageEvent) or event.room not in self.replayed:
            return False
        if event.id <= self.replayed[event.room]:
            return True
        del self.replayed[event.room]  # live and in order from here
        if not self.replayed:
            self.replayed = None
        return False

    def enqueue(self, frame: bytes) -> None:
        if self.closed:
            return
        self.pending.append(frame)
        self.pending_bytes += len(frame)
        if not self.scheduled:
            self.scheduled = True
            self.outbox.mark(self)

    def flush(self) -> None:
        self.scheduled = False
        if self.closed or not self.pending:
            self.pending.clear()
            self.pending_bytes = 0
            return
        data = self.pending[0] if len(self.pending) == 1 else b"".join(self.pending)
        self.messages_out += len(self.pending)
        self.bytes_out += self.pending_bytes
        self.pending.clear()
        self.pending_bytes = 0
        if self.transport.is_closing():
            return
        self.transport.write(data)
        if self.limit and self.transport.get_write_buffer_size() > self.limit:
            self.on_overflow(self)

    def buffer_fill(self) -> int:
        """Bytes waiting to be sent: pending this tick plus the transport buffer."""
        if self.transport.is_closing():
            return self.pending_bytes
        return self.pending_bytes + self.transport.get_write_buffer_size()
