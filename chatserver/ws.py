"""The chat endpoint: handshake checks, identity and resume, the receive loop
and command dispatch. Domain errors become ``error`` events here, at the edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import secrets
import struct
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from . import expiry
from .accounts import Account, Identity
from .connection import Connection, pin_kernel_send_buffer
from .directory import SessionRecord
from .errors import CommandError, Unavailable
from .guard import CRASHES
from .hub import CLOSE_BANNED, Hub
from .keys import ADDRESSES, HUB, SETTINGS, TOKENS
from .limits import TokenBucket, host_allowed, origin_allowed
from .pages import index_page
from .policy import check_join
from .protocol import (
    DEFAULT_ROOM,
    HELP_TEXT,
    MAX_HISTORY_LIMIT,
    SUBPROTOCOL,
    AccountCommand,
    AnyCommand,
    ErrorEvent,
    Event,
    History,
    HistoryEvent,
    Join,
    Leave,
    Limits,
    MessageEvent,
    Nick,
    Ping,
    PongEvent,
    Quit,
    Refresh,
    Rendered,
    Rooms,
    RoomsEvent,
    SendMessage,
    SystemEvent,
    User,
    WelcomeEvent,
    Who,
    WhoEvent,
    close_reason,
    default_name,
    parse_json_command,
    parse_text_command,
    parse_uint,
    validate_name,
    validate_room,
)
from .replay import replay
from .session import Cursor, hash_token, new_token, parse_last
from .settings import Settings
from .signin import (
    CLOSE_UNAUTHORIZED,
    SignedIn,
    SignInRefused,
    account_command,
    account_taken_away,
    check_resumed,
    read_credentials,
    session_current,
    sign_in,
)

log = logging.getLogger(__name__)

CLOSE_TRY_AGAIN = 1013  # RFC 6455 registry: Try Again Later


def client_address(request: web.Request, settings: Settings) -> str:
    if settings.trusted_proxy:
        # The rightmost entry is the one our proxy appended; everything to its
        # left came from the client and can be forged.
        forwarded = request.headers.get("X-Forwarded-For", "")
        nearest = forwarded.rsplit(",", 1)[-1].strip()
        if nearest:
            return nearest
    return request.remote or "unknown"


async def chat_socket(request: web.Request) -> web.StreamResponse:
    """Upgrade to a chat WebSocket after the Origin and per-address checks.

    This coroutine waits in ``receive()`` itself for the socket's whole life:
    every coroutine frame kept alive per connection is memory per connection.
    """
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return await index_page(request)
    settings, hub = request.app[SETTINGS], request.app[HUB]
    _check_handshake(request, settings, hub)
    address = client_address(request, settings)
    addresses = request.app[ADDRESSES]
    if not addresses.try_acquire(address):
        raise web.HTTPTooManyRequests(text="too many connections from your address\n")
    ws = _new_socket(settings)
    conn: Connection | None = None
    reason = "quit"
    try:
        await ws.prepare(request)
        try:
            conn = await _open(request, ws, hub, address)
        except Unavailable as exc:
            # Local sockets stay up during an outage; new ones are told to retry.
            log.info("refusing a connection: %s", exc.message)
            await ws.close(code=CLOSE_TRY_AGAIN, message=close_reason(exc.message))
            return ws
        while conn is not None and not conn.closed:
            msg = await ws.receive()
            conn.last_seen = time.monotonic()
            leave = await _guarded_frame(conn, ws, hub, msg)
            if leave is not None:
                reason = leave
                break
    except ConnectionError:
        reason = "error"
    finally:
        addresses.release(address)
        if ws.prepared and (conn is None or conn.closing is None):
            _count_close(hub, ws)  # hub.close counts the closes the server starts
        if conn is not None:
            hub.disconnect(conn, reason)
            if conn.closing is not None:
                # Returning would tear the socket down under the close frame.
                await asyncio.shield(conn.closing)
    return ws


def _count_close(hub: Hub, ws: web.WebSocketResponse) -> None:
    # Still open here means aiohttp closes it with 1000 once the handler returns.
    code = (ws.close_code or WSCloseCode.ABNORMAL_CLOSURE) if ws.closed else WSCloseCode.OK
    hub.close_codes[code] += 1


def _check_handshake(request: web.Request, settings: Settings, hub: Hub) -> None:
    if not host_allowed(request.headers.get("Host"), settings.host, settings.allowed_hosts):
        raise web.HTTPForbidden(text="Host not allowed (see --allowed-hosts)\n")
    if not origin_allowed(request.headers.get("Origin"), request.host, settings.allowed_origins):
        raise web.HTTPForbidden(text="Origin not allowed\n")
    if hub.shutting_down:
        raise web.HTTPServiceUnavailable(text="server shutting down\n")


def _new_socket(settings: Settings) -> web.WebSocketResponse:
    return web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        autoping=False,  # pongs must reach us: they are the heartbeat's proof of life
        autoclose=False,  # we answer close frames, so a forbidden code gets 1002
        compress=False,  # zlib state per connection dwarfs the rest (docs/operations.md)
        max_msg_size=settings.max_message_bytes,
        timeout=5.0,
    )


@dataclass
class _Identity:
    user: User
    token: str
    rooms: list[str]
    resumed: bool
    notices: list[Event] = field(default_factory=list)
    kind: Identity = "guest"
    allowed: list[str] | None = None  # a token's rooms (None: any)
    subject: str | None = None  # a token's sub
    token_expires: float | None = None  # a token's exp: the session ends then
    generation: int = 0  # a registered session's account credential generation


async def _identify(request: web.Request, hub: Hub, signed: SignedIn | None) -> _Identity:
    """A resumed identity from a valid ``session`` token, or a new one; signed-in
    credentials decide who the user is (a session of another user is not resumed)."""
    query = request.query
    token = query.get("session", "")
    record = await hub.directory.load_session(hash_token(token)) if token else None
    if record is not None and record.expires < time.time():
        record = None
    # Read once: whether the session is current and how it resumes both ask.
    account = await hub.directory.account(record.name) if record is not None else None
    if record is not None and not session_current(record, account):
        record = None
    if signed is not None and (record is None or record.user_id != signed.user_id):
        identity = await _new_identity(
            hub, query.get("room", DEFAULT_ROOM), signed.name, signed.user_id
        )
        identity.kind, identity.allowed = signed.identity, signed.allowed_rooms
        identity.subject, identity.token_expires = signed.subject, signed.expires
        identity.generation = signed.generation
        identity.rooms = _allowed(identity.rooms, signed.allowed_rooms)
        return identity
    resumed = (
        await _resumed_identity(hub, token, record, account, signed) if record is not None else None
    )
    if hub.settings.auth == "token" and (resumed is None or resumed.kind != "token"):
        raise SignInRefused("this chat needs a token from its site")
    if resumed is not None:
        return resumed
    identity = await _new_identity(hub, query.get("room", DEFAULT_ROOM), query.get("name"))
    if token:
        identity.notices.append(
            SystemEvent(text="Your session has expired or is unknown; you are a new user.")
        )
    return identity


async def _resumed_identity(
    hub: Hub, token: str, record: SessionRecord, account: Account | None, signed: SignedIn | None
) -> _Identity:
    """The session of ``record``; ``signed``: credentials of the same user came
    too (a token user's new token then sets the session's end)."""
    user = User(record.user_id, record.name)
    notices: list[Event] = []
    renewed = signed is not None and signed.expires is not None
    kind, name_mine = check_resumed(hub.settings, record, account, renewed)
    if not name_mine or not await hub.directory.name_free(record.name, record.user_id):
        user = User(record.user_id, default_name(record.user_id))
        code = "name_taken" if name_mine else "name_registered"
        notices.append(ErrorEvent(code=code, message=f"{record.name!r} is taken now"))
    rooms = record.rooms or [DEFAULT_ROOM]
    identity = _Identity(user, token, rooms, True, notices, kind, record.allowed)
    identity.subject, identity.token_expires = record.subject, record.token_expires
    identity.generation = record.generation
    if renewed and signed is not None:
        # The new token's rooms replace the old one's, as a refresh's do.
        identity.subject, identity.token_expires = signed.subject, signed.expires
        identity.allowed = signed.allowed_rooms
        identity.rooms = _allowed(rooms, signed.allowed_rooms)
    return identity


def _allowed(rooms: list[str], allowed: list[str] | None) -> list[str]:
    """The rooms of ``rooms`` a token allows; none of them: the first room it
    allows, rather than a lobby it forbids (its rooms are valid: tokens.py)."""
    if allowed is None:
        return rooms
    return [room for room in rooms if room in allowed] or allowed[:1]


async def _new_identity(
    hub: Hub, room: str, requested: str | None, user_id: int | None = None
) -> _Identity:
    if user_id is None:
        user_id = await hub.directory.new_user_id()
    identity = _Identity(User(user_id, default_name(user_id)), new_token(), [DEFAULT_ROOM], False)
    try:
        identity.rooms = [validate_room(room)]
    except CommandError as exc:
        identity.notices.append(ErrorEvent(code=exc.code, message=exc.message))
    if requested is not None:
        try:
            validate_name(requested, user_id)
            await hub.accounts.ensure_free(requested, user_id)
            if not await hub.directory.name_free(requested, user_id):
                raise CommandError("name_taken", f"the name {requested!r} is taken")
            identity.user = User(user_id, requested)
        except CommandError as exc:
            identity.notices.append(ErrorEvent(code=exc.code, message=exc.message))
    return identity


async def _open(
    request: web.Request, ws: web.WebSocketResponse, hub: Hub, address: str
) -> Connection | None:
    """Identify, check bans, register, welcome, join rooms and replay."""
    transport = request.transport
    if transport is None:  # the peer went away during the handshake
        return None
    if hub.settings.outbound_buffer_bytes:
        pin_kernel_send_buffer(transport)
    try:
        creds = await read_credentials(request, ws, hub.settings)
        signed = await sign_in(hub, request.app[TOKENS], creds, address)
        identity = await _identify(request, hub, signed)
    except SignInRefused as exc:
        log.info("refusing a connection from %s: %s", address, exc.reason)
        await ws.close(code=CLOSE_UNAUTHORIZED, message=close_reason(exc.reason))
        return None
    user = identity.user
    ban = hub.restrictions.find_ban(user.name, address, user.id, identity.subject)
    if ban is not None:
        await ws.close(code=CLOSE_BANNED, message=close_reason(ban.close_reason()))
        return None
    conn = await _connection(hub, identity, ws, transport, address)
    last, history = _replay_request(request, identity)
    if last or history:
        conn.held = []
    await hub.add(conn)
    # A ban that reached this node while the directory calls of the connect ran
    # was enforced on the live connections before this one was among them (say,
    # a resume on one node while an operator bans the user on another).
    if hub.enforce_ban(conn) or await _account_gone(conn, hub, signed):
        return conn
    expiry.schedule(conn, hub)
    try:
        await _greet(conn, hub, identity, last, history)
    except Unavailable:
        hub.disconnect(conn, "error")
        raise
    return conn


async def _connection(
    hub: Hub,
    identity: _Identity,
    ws: web.WebSocketResponse,
    transport: asyncio.Transport,
    address: str,
) -> Connection:
    settings = hub.settings
    conn = Connection(
        conn_id=await hub.directory.new_conn_id(),
        user=identity.user,
        ws=ws,
        transport=transport,
        dialect="json" if ws.ws_protocol == SUBPROTOCOL else "text",
        remote=address,
        outbox=hub.outbox,
        limit=settings.outbound_buffer_bytes,
        bucket=TokenBucket(settings.rate_limit, settings.rate_burst),
        on_overflow=hub.overflow,
    )
    conn.session = hash_token(identity.token)
    conn.identity, conn.allowed_rooms = identity.kind, identity.allowed
    conn.generation = identity.generation
    if identity.kind == "token":
        conn.subject, conn.token_expires = identity.subject, identity.token_expires
    return conn


async def _account_gone(conn: Connection, hub: Hub, signed: SignedIn | None) -> bool:
    """Close ``conn`` (4401) if its account was locked or reset while it signed in."""
    password_hash = signed.password_hash if signed is not None else ""
    reason = await account_taken_away(hub, conn, password_hash)
    if not reason:
        return False
    log.info("refusing connection %s from %s: %s", conn.conn_id, conn.remote, reason)
    conn.session = ""  # nothing to resume: its tokens ended with the lock or reset
    hub.disconnect(conn, "kicked", reason)
    hub.close(conn, CLOSE_UNAUTHORIZED, reason)
    return True


async def _greet(
    conn: Connection,
    hub: Hub,
    identity: _Identity,
    last: dict[str, Cursor],
    history: int,
) -> None:
    """Welcome a registered connection, join its rooms and replay what it asked for."""
    await hub.persist_session(conn, identity.rooms)
    conn.enqueue(await _welcome(conn, identity, hub))
    for notice in identity.notices:
        conn.send(Rendered(notice))
    reason = "resume" if identity.resumed else "connect"
    for room in identity.rooms:
        try:
            hub.join(conn, room, reason)
        except CommandError as exc:
            _error(conn, exc.code, exc.message)
    if last or history:
        await replay(conn, hub, last, history)


def _replay_request(request: web.Request, identity: _Identity) -> tuple[dict[str, Cursor], int]:
    last: dict[str, Cursor] = {}
    history = 0
    try:
        # An expired or lost session (a Redis that lost its data) still replays
        # the rooms the client is in now, so it learns what it missed or lost.
        if identity.resumed or request.query.get("session"):
            last = parse_last(request.query.get("last", ""))
        wanted = parse_uint(request.query.get("history", "0"))
        if wanted is None:
            raise CommandError("bad_request", "history must be a number of messages")
        history = min(wanted, MAX_HISTORY_LIMIT)
    except CommandError as exc:
        identity.notices.append(ErrorEvent(code=exc.code, message=exc.message))
    return last, history


async def _welcome(conn: Connection, identity: _Identity, hub: Hub) -> bytes:
    settings = hub.settings
    heads = await hub.room_log.heads(identity.rooms)
    for room, head in heads.items():
        hub.broker.track(room, head.epoch, head.last_id)
    event = WelcomeEvent(
        user=conn.user,
        identity=conn.identity,
        rooms=list(identity.rooms),
        session=identity.token,
        resumed=identity.resumed,
        heartbeat=settings.heartbeat,
        limits=Limits(settings.max_message_bytes, settings.rate_limit, settings.rate_burst),
        last_ids={room: head.last_id for room, head in heads.items()},
        epochs={room: head.epoch for room, head in heads.items()},
        expires=conn.token_expires,
    )
    rendered = Rendered(event)
    return rendered.json_frame() if conn.is_json else rendered.text_frame(None)


# ---------------------------------------------------------------------- receiving


async def _guarded_frame(
    conn: Connection, ws: web.WebSocketResponse, hub: Hub, msg: aiohttp.WSMessage
) -> str | None:
    """:func:`_on_frame`, with any exception no handler expected turned into an
    ``internal_error`` event and one rate-limited log line (chatserver.guard)."""
    try:
        return await _on_frame(conn, ws, hub, msg)
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception as exc:
        CRASHES.report(exc, f"a {msg.type.name.lower()} frame from connection {conn.conn_id}")
        _error(conn, "internal_error", "the server could not handle that frame")
        return None


async def _on_frame(
    conn: Connection, ws: web.WebSocketResponse, hub: Hub, msg: aiohttp.WSMessage
) -> str | None:
    """Handle one received frame; a leave reason ends the connection."""
    if msg.type in RATED_FRAMES and not _within_rate(conn, hub, msg.type in DATA_FRAMES):
        return "error" if conn.closed else None
    if msg.type is WSMsgType.PONG:  # a pong only proves liveness (last_seen)
        return None
    if msg.type is WSMsgType.TEXT:
        return None if await _on_text(conn, hub, msg.data) else "quit"
    if msg.type is WSMsgType.PING:
        with contextlib.suppress(ConnectionError):
            await ws.pong(msg.data)
        return None
    if msg.type is WSMsgType.BINARY:
        _error(conn, "binary_unsupported", "binary frames are not supported; send text")
        return None
    if msg.type is WSMsgType.CLOSE:
        await _answer_close(ws, msg.data)
    # ERROR (e.g. 1009 for an oversized frame), or CLOSE, CLOSING, CLOSED.
    return "error" if msg.type is WSMsgType.ERROR else "quit"


# RFC 6455 section 7.4.1: these are reserved for reporting, never sent in a frame.
NEVER_ON_THE_WIRE = frozenset({1005, 1006, 1015})


async def _answer_close(ws: web.WebSocketResponse, code: int) -> None:
    """Reply to a peer's close frame: 1002 for a code that must not be sent, else 1000."""
    bad = code < 1000 or code in NEVER_ON_THE_WIRE
    reply = WSCloseCode.PROTOCOL_ERROR if bad else WSCloseCode.OK
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.close(code=reply, message=b"invalid close code" if bad else b"")


# Every frame a peer sends costs the server work, so each takes a token: a
# flood of binary frames, pings or pongs is refused and closed (1008) like a
# flood of messages. Only data frames get a ``rate_limited`` reply; answering
# every refused control frame would be an amplifier.
RATED_FRAMES = frozenset({WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.PONG})
DATA_FRAMES = frozenset({WSMsgType.TEXT, WSMsgType.BINARY})


def _within_rate(conn: Connection, hub: Hub, reply: bool) -> bool:
    """Take a token for one frame; past the rate refuse it, and close a flood with 1008."""
    if conn.bucket.take():
        return True
    if conn.bucket.abusive():
        hub.disconnect(conn, "error", "flooding")
        _close_flooder(conn)
    elif reply:
        _error(conn, "rate_limited", "slow down: too many messages")
    return False


FLOOD_LINGER = 0.5  # seconds a flooder's close frame gets to reach it before we hang up
FLOOD_REASON = b"rate limit exceeded repeatedly"
FLOOD_CLOSE_FRAME = struct.pack("!BBH", 0x88, 2 + len(FLOOD_REASON), 1008) + FLOOD_REASON


def _close_flooder(conn: Connection) -> None:
    """Send what is queued and a 1008 close frame, stop reading, hang up soon.

    Not ``ws.close()``: that waits for the peer's close reply by decoding every
    frame the flooder keeps sending, for the whole close timeout, which is
    what let a ping flood slow everyone else.
    """
    conn.flush()
    conn.closed = True
    transport = conn.transport
    if transport.is_closing():
        return
    transport.write(FLOOD_CLOSE_FRAME)
    transport.pause_reading()
    # chat_socket waits for this before returning, so aiohttp's own close
    # finds the transport gone instead of reading the flood.
    conn.closing = asyncio.create_task(_hang_up(transport))


async def _hang_up(transport: asyncio.Transport) -> None:
    await asyncio.sleep(FLOOD_LINGER)
    transport.abort()


async def _on_text(conn: Connection, hub: Hub, data: str) -> bool:
    """Handle one text frame; False ends the connection."""
    conn.messages_in += 1
    conn.bytes_in += len(data)
    conn.last_activity = time.time()
    ref: str | int | None = None
    try:
        if conn.is_json:
            command = parse_json_command(data)
            ref = command.ref
        else:
            command = parse_text_command(data, conn.current_room)
        return await dispatch(conn, hub, command)
    except CommandError as exc:
        _error(conn, exc.code, exc.message, ref)
        return True


async def dispatch(conn: Connection, hub: Hub, command: AnyCommand) -> bool:
    """Apply one command; False ends the connection (``quit``)."""
    if isinstance(command, SendMessage):
        _post(conn, hub, command)
        return True
    # Anything else acts after this connection's messages are stored, so that
    # a nick, leave or history request cannot overtake them.
    if conn.last_append is not None and not conn.last_append.done():
        await asyncio.wait([conn.last_append])
    if isinstance(command, Nick):
        await hub.rename(conn, command.name)
    elif isinstance(command, Join):
        await _join(conn, hub, command)
    elif isinstance(command, Leave):
        hub.leave(conn, command.room or conn.current_room or "")
    elif isinstance(command, Who):
        room = _room_or_current(conn, command.room)
        if room not in conn.rooms:
            # Who is in a room is as private as the room: members, or who may join.
            check_join(conn, room, hub.settings)
        _send(conn, await _who(hub, room))
    elif isinstance(command, History):
        await _history(conn, hub, command)
    elif isinstance(command, AccountCommand):
        await account_command(conn, hub, command)
    elif isinstance(command, Refresh):
        await expiry.refresh(conn, hub, command)
    elif isinstance(command, Quit):
        hub.disconnect(conn, "quit")
        hub.close(conn, WSCloseCode.OK, "bye")
        return False
    else:
        _misc(conn, command)
    return True


def _misc(conn: Connection, command: AnyCommand) -> None:
    if isinstance(command, Ping):
        _send(conn, PongEvent())
    elif isinstance(command, Rooms):
        _send(conn, RoomsEvent(rooms=list(conn.rooms), current=conn.current_room))
    else:
        _send(conn, SystemEvent(text=HELP_TEXT))


async def _join(conn: Connection, hub: Hub, command: Join) -> None:
    room = hub.join(conn, command.room)
    if conn.is_json:
        _send(conn, await _who(hub, room))
    if command.history:
        await _history(conn, hub, History(room=room, limit=command.history))


async def _history(conn: Connection, hub: Hub, command: History) -> None:
    if not hub.settings.history:
        raise CommandError("history_unavailable", "history is turned off on this server")
    room = _room_or_current(conn, command.room)
    if room not in conn.rooms:
        raise CommandError("not_in_room", f"join #{room} to read its history")
    if not 1 <= command.limit <= MAX_HISTORY_LIMIT:
        raise CommandError("bad_request", f"limit must be 1..{MAX_HISTORY_LIMIT}")
    messages, more = await hub.room_log.before(room, command.before, command.limit)
    _send(conn, HistoryEvent(room=room, messages=messages, more=more))


async def _who(hub: Hub, room: str) -> WhoEvent:
    users = await hub.who(room)
    head = (await hub.room_log.heads([room]))[room]
    hub.broker.track(room, head.epoch, head.last_id)
    return WhoEvent(room=room, users=users, last_id=head.last_id, epoch=head.epoch)


def _post(conn: Connection, hub: Hub, command: SendMessage) -> None:
    """Queue a message for storing without waiting: the receive loop reads on,
    and a failure reaches the sender as an error event with its ref."""
    stored = hub.post(conn, command.room, command.text, _message_key(conn, command))
    conn.last_append = stored
    stored.add_done_callback(lambda done: _report_failure(conn, done, command.ref))


def _report_failure(
    conn: Connection, done: asyncio.Future[MessageEvent], ref: str | int | None
) -> None:
    if conn.last_append is done:
        conn.last_append = None
    if done.cancelled():
        return
    error = done.exception()
    if isinstance(error, CommandError):
        _error(conn, error.code, error.message, ref)
    elif error is not None:
        log.error("storing a message failed: %r", error)
        _error(conn, "internal_error", "the message could not be stored", ref)


# Server-made idempotency keys need to be unique across the cluster, not
# unguessable: a random prefix per process and a counter, instead of an
# os.urandom call for every message.
_KEY_PREFIX = secrets.token_hex(8)
_key_serial = itertools.count(1)


def _message_key(conn: Connection, command: SendMessage) -> str:
    """The idempotency key of a message: the client's ``ref`` if it gave one, else
    one made here (a retry inside the Redis client must not store a copy)."""
    if command.ref is not None:
        # With the text: a client that reuses refs for new messages loses none.
        digest = hashlib.sha256(command.text.encode("utf-8", "replace")).hexdigest()[:16]
        return f"{conn.user.id}:{command.ref}:{digest}"
    return f"{_KEY_PREFIX}:{next(_key_serial)}"


def _room_or_current(conn: Connection, room: str | None) -> str:
    if room:
        return validate_room(room)
    if conn.current_room is None:
        raise CommandError("not_in_room", "you are in no room; /join one")
    return conn.current_room


def _send(conn: Connection, event: Event) -> None:
    conn.send(Rendered(event))


def _error(conn: Connection, code: str, message: str, ref: str | int | None = None) -> None:
    conn.send(Rendered(ErrorEvent(code=code, message=message, ref=ref)))
