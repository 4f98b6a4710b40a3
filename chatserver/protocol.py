"""Wire shapes of both dialects: parsing client frames into typed commands,
validating names, rooms and text, and rendering server events once per dialect.

The JSON dialect (``chat.v1``) uses msgspec tagged structs, so parsing and
validation are one step and a wrong field gets a precise message. The text
dialect keeps the seed's lines (``User 1: hello``).
"""

from __future__ import annotations

import re
import struct
import time
from typing import Annotated, Final

import msgspec

from .errors import CommandError
from .inputs import MAX_INT, MIN_INT, check_json_depth
from .text import check_line, describe, name_skeleton, refused_char, reserved_user_id

SUBPROTOCOL: Final = "chat.v1"
MAX_NAME_CHARS: Final = 32
MAX_REF_CHARS: Final = 64
MAX_HISTORY_LIMIT: Final = 500
DEFAULT_ROOM: Final = "lobby"

# Numbers a client sends: in range where parsed, so none reaches SQLite too big.
Id = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)]
Ref = Annotated[int, msgspec.Meta(ge=MIN_INT, le=MAX_INT)]

# --------------------------------------------------------------------------- commands


class Command(msgspec.Struct, tag_field="type", kw_only=True, frozen=True):
    """A client command; ``ref`` is echoed in an error it causes."""

    ref: str | Ref | None = None


class SendMessage(Command, tag="message", frozen=True):
    text: str
    room: str | None = None


class Nick(Command, tag="nick", frozen=True):
    name: str


class Join(Command, tag="join", frozen=True):
    room: str
    history: Count = 0


class Leave(Command, tag="leave", frozen=True):
    room: str | None = None


class Who(Command, tag="who", frozen=True):
    room: str | None = None


class History(Command, tag="history", frozen=True):
    room: str | None = None
    before: Id | None = None
    limit: Count = 50


class Ping(Command, tag="ping", frozen=True):
    pass


class Quit(Command, tag="quit", frozen=True):
    pass


class Rooms(Command, tag="rooms", frozen=True):
    pass


class Help(Command, tag="help", frozen=True):
    pass


class Register(Command, tag="register", frozen=True):
    """Register the name this connection holds, with a password."""

    password: str


class Login(Command, tag="login", frozen=True):
    name: str
    password: str


class ChangePassword(Command, tag="password", frozen=True):
    old: str
    new: str


class Unregister(Command, tag="unregister", frozen=True):
    password: str


class Refresh(Command, tag="refresh", frozen=True):
    """A newer connection token of the same user: the session lasts until its ``exp``."""

    token: str


AccountCommand = Register | Login | ChangePassword | Unregister
AnyCommand = (
    SendMessage
    | Nick
    | Join
    | Leave
    | Who
    | History
    | Ping
    | Quit
    | Rooms
    | Help
    | AccountCommand
    | Refresh
)


class Auth(msgspec.Struct, tag_field="type", tag="auth", frozen=True):
    """The optional first ``chat.v1`` frame: a site's token, or a name and
    password (credentials out of the URL, so out of access logs)."""

    token: str | None = None
    name: str | None = None
    password: str | None = None


_decoder: Final = msgspec.json.Decoder(AnyCommand)


def parse_json_command(data: str | bytes) -> AnyCommand:
    """Decode one ``chat.v1`` frame; raise CommandError with a wire code on failure."""
    check_json_depth(data)
    try:
        command: AnyCommand = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise CommandError("bad_request", _friendly(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise CommandError("bad_json", f"not a JSON object: {exc}") from None
    if isinstance(command.ref, str) and len(command.ref) > MAX_REF_CHARS:
        raise CommandError("bad_request", f"ref is longer than {MAX_REF_CHARS} characters")
    return validated(command)


def validated(command: AnyCommand) -> AnyCommand:
    """``command`` with its fields checked and rooms in canonical form: what the
    hub receives needs no further validation."""
    room = getattr(command, "room", None)
    if isinstance(command, SendMessage):
        validate_text(command.text)
    elif isinstance(command, Nick):
        check_name(command.name)
    if room:
        return msgspec.structs.replace(command, room=validate_room(room))
    return command


def _friendly(message: str) -> str:
    if message.startswith("Invalid value") and "$.type" in message:
        return "unknown command type: " + message.split("'")[1] if "'" in message else message
    return message


_TEXT_COMMANDS: Final = {
    "nick", "join", "leave", "who", "history", "quit", "rooms", "help", "me",
    "register", "login", "password", "unregister", "refresh",
}  # fmt: skip


def parse_text_command(line: str, current_room: str | None) -> AnyCommand:
    """Turn one text-dialect line into a checked command (``/nick x`` or a message)."""
    return validated(_text_command(line, current_room))


def _text_command(line: str, current_room: str | None) -> AnyCommand:
    if not line.startswith("/") or line.startswith("//"):
        text = line[1:] if line.startswith("//") else line
        return SendMessage(text=text, room=current_room)
    verb, _, raw = line[1:].partition(" ")
    verb, rest = verb.lower(), raw.strip()
    if verb not in _TEXT_COMMANDS:
        raise CommandError("bad_request", f"unknown command /{verb}; type /help")
    if verb == "me":
        return SendMessage(text="/me " + rest, room=current_room)
    if verb == "nick":
        if not rest:
            raise CommandError("bad_request", "usage: /nick NAME")
        return Nick(name=rest)
    if verb == "join":
        if not rest:
            raise CommandError("bad_request", "usage: /join ROOM")
        return Join(room=rest)
    if verb == "history":
        return History(room=current_room, limit=_int_arg(rest, 20))
    if verb in {"register", "login", "password", "unregister"}:
        return _account_command(verb, raw)
    if verb == "refresh":
        if not rest:
            raise CommandError("bad_request", "usage: /refresh TOKEN")
        return Refresh(token=rest)
    simple: dict[str, AnyCommand] = {
        "leave": Leave(room=rest or current_room),
        "who": Who(room=rest or current_room),
        "quit": Quit(),
        "rooms": Rooms(),
        "help": Help(),
    }
    return simple[verb]


_ACCOUNT_USAGE: Final = {
    "register": "/register PASSWORD",
    "login": "/login NAME PASSWORD",
    "password": "/password OLD NEW",
    "unregister": "/unregister PASSWORD",
}


def _account_command(verb: str, raw: str) -> AnyCommand:
    """A password is the rest of the line after the one space that ends the word
    before it, spaces and all: ``/register PASSWORD``, ``/unregister PASSWORD``,
    ``/login NAME PASSWORD``, ``/password OLD NEW``. NAME and OLD end at the
    first space after them (an old password with a space is changed with the
    ``chat.v1`` ``password`` command); spaces before them are skipped."""
    if verb in {"register", "unregister"}:
        if not raw:
            raise CommandError("bad_request", "usage: " + _ACCOUNT_USAGE[verb])
        return Register(password=raw) if verb == "register" else Unregister(password=raw)
    first, _, second = raw.lstrip(" ").partition(" ")
    if not first or not second:
        raise CommandError("bad_request", "usage: " + _ACCOUNT_USAGE[verb])
    if verb == "login":
        return Login(name=first, password=second)
    return ChangePassword(old=first, new=second)


def _int_arg(text: str, default: int) -> int:
    if not text:
        return default
    number = parse_uint(text)
    if number is None:
        raise CommandError("bad_request", f"not a number: {text}")
    return number


MAX_UINT_DIGITS: Final = 18  # every such number fits SQLite's 64-bit integers


def parse_uint(text: str) -> int | None:
    """``text`` as a non-negative integer if it is 1 to 18 ASCII digits, else None.

    Every number that arrives as text goes through here: ``str.isdigit()`` alone
    admits digits such as "²" that ``int()`` refuses, and ``int()`` refuses more
    than 4,300 digits; either would escape as a ValueError instead of an error reply.
    """
    if 0 < len(text) <= MAX_UINT_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None


# --------------------------------------------------------------------------- validation

_ROOM_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}")


def name_key(name: str) -> str:
    """The identity of a name: two names with one key look alike (chatserver.text)."""
    return name_skeleton(name)


def validate_name(name: str, user_id: int) -> str:
    """Return ``name`` if a user with ``user_id`` may take it, else raise."""
    check_name(name)
    check_reserved(name, user_id)
    return name


def check_name(name: str) -> str:
    """``name`` if it is a well-formed name (anyone's to claim, but ``User N``)."""
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise CommandError("name_invalid", f"a name has 1 to {MAX_NAME_CHARS} characters")
    if name != name.strip():
        raise CommandError("name_invalid", "a name cannot start or end with a space")
    if name[0] in "/#":
        raise CommandError("name_invalid", "a name cannot start with / or #")
    ch = refused_char(name, name=True)
    if ch is not None:
        raise CommandError("name_invalid", f"a name cannot contain {describe(ch)}")
    return name


def check_reserved(name: str, user_id: int) -> None:
    """``User N`` (or a look-alike) is user N's alone."""
    reserved = reserved_user_id(name)
    if reserved is not None and reserved != user_id:
        raise CommandError("name_taken", "names like 'User N' are reserved")


def validate_room(room: str) -> str:
    """Return the canonical room name (leading ``#`` dropped) or raise."""
    canonical = room[1:] if room.startswith("#") else room
    if not _ROOM_RE.fullmatch(canonical):
        raise CommandError(
            "room_invalid",
            "a room name has 1 to 32 letters, digits, '_', '-' or '.', starting "
            "with a letter or digit",
        )
    return canonical


def validate_text(text: str) -> str:
    if not text.strip():
        raise CommandError("text_invalid", "empty message")
    return check_line(text, "a message", "text_invalid")


MAX_CLOSE_REASON_BYTES: Final = 123  # RFC 6455: a control frame payload is at most 125 bytes


def close_reason(text: str) -> bytes:
    """``text`` as a close-frame reason, cut on a character boundary."""
    return text.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore").encode()


def default_name(user_id: int) -> str:
    return f"User {user_id}"


# --------------------------------------------------------------------------- events


class User(msgspec.Struct, frozen=True):
    id: int
    name: str


class Event(msgspec.Struct, tag_field="type", kw_only=True, frozen=True, omit_defaults=True):
    """A server event; subclasses are the wire ``type``s."""


class MessageEvent(Event, tag="message", frozen=True):
    id: int
    room: str
    user: User
    text: str
    ts: float


class JoinEvent(Event, tag="join", frozen=True):
    room: str
    user: User
    ts: float
    reason: str  # "connect", "join" or "resume"


class LeaveEvent(Event, tag="leave", frozen=True):
    room: str
    user: User
    reason: str
    ts: float
    detail: str | None = None


class NickEvent(Event, tag="nick", frozen=True):
    user: User
    old: str
    rooms: list[str]
    ts: float


class SystemEvent(Event, tag="system", frozen=True):
    text: str
    room: str | None = None


class DeleteEvent(Event, tag="delete", frozen=True):
    """An operator removed message ``id`` of ``room``: clients hide or mark it."""

    room: str
    id: int


class Limits(msgspec.Struct, frozen=True):
    max_message_bytes: int
    rate_limit: float
    rate_burst: int


class WelcomeEvent(Event, tag="welcome", frozen=True):
    user: User
    identity: str  # guest, registered or token: how the server knows this user
    rooms: list[str]
    session: str
    resumed: bool
    heartbeat: float
    limits: Limits
    # The newest message id per room at welcome time: a resume cursor for rooms
    # where the client has not seen a message yet.
    last_ids: dict[str, int]
    # Each room's log epoch: ids count within it (see docs/protocol.md, resume).
    epochs: dict[str, str] = {}
    # A token user's token exp (Unix time): the session ends then, plus the
    # leeway, unless the client sends ``refresh`` with a newer token.
    expires: float | None = None


class IdentifiedEvent(Event, tag="identified", frozen=True):
    """This connection's identity changed (register, login, unregister); a
    login also gives a new resume token."""

    user: User
    identity: str
    session: str = ""


class RefreshedEvent(Event, tag="refreshed", frozen=True):
    """A ``refresh`` was accepted: the session now lasts until ``expires``."""

    expires: float  # the new token's exp (Unix time); the leeway comes on top


class WhoEvent(Event, tag="who", frozen=True):
    room: str
    users: list[User]
    last_id: int  # the room's newest message id (a resume cursor after a join)
    epoch: str = ""


class HistoryEvent(Event, tag="history", frozen=True):
    room: str
    messages: list[MessageEvent]
    more: bool


class RoomRecovery(msgspec.Struct, frozen=True, omit_defaults=True):
    recovered: int
    lost: int
    # The log's epoch changed since the client's cursor (the log lost its data):
    # ``lost`` counts the ids the client had, and what it gets is the new epoch's.
    epoch_changed: bool = False
    epoch: str = ""  # the new epoch, when it changed


class ResumedEvent(Event, tag="resumed", frozen=True):
    rooms: dict[str, RoomRecovery]


class ErrorEvent(Event, tag="error", frozen=True):
    code: str
    message: str
    ref: str | int | None = None


class PongEvent(Event, tag="pong", frozen=True):
    pass


class RoomsEvent(Event, tag="rooms", frozen=True):
    rooms: list[str]
    current: str | None = None


_encoder: Final = msgspec.json.Encoder()


def encode_json(event: Event) -> bytes:
    return _encoder.encode(event)


# --------------------------------------------------------------------------- text lines

HELP_TEXT: Final = (
    "Commands: /nick NAME, /join ROOM, /leave [ROOM], /who [ROOM], /history [N], "
    "/rooms, /me ACTION, /quit; names: /register PASSWORD, /login NAME PASSWORD, "
    "/password OLD NEW, /unregister PASSWORD. Anything else is a message to your current room."
)

_LEAVE_LINES: Final = {
    "quit": "{name} has disconnected.",
    "leave": "{name} has left #{room}.",
    "kicked": "{name} was kicked ({detail}).",
    "banned": "{name} was banned ({detail}).",
}


def _message_line(event: MessageEvent) -> str:
    if event.text.startswith("/me "):
        return f"* {event.user.name} {event.text[4:]}"
    return f"{event.user.name}: {event.text}"


def render_text(event: Event) -> str:
    """The human-readable line of an event (without any room prefix)."""
    if isinstance(event, MessageEvent):
        return _message_line(event)
    if isinstance(event, JoinEvent):
        if event.reason == "join":
            return f"{event.user.name} has joined #{event.room}."
        verb = "reconnected" if event.reason == "resume" else "connected"
        return f"{event.user.name} has {verb}."
    if isinstance(event, LeaveEvent):
        template = _LEAVE_LINES.get(event.reason, "{name} has disconnected ({reason}).")
        return template.format(
            name=event.user.name, room=event.room, reason=event.reason, detail=event.detail or ""
        )
    if isinstance(event, NickEvent):
        return f"{event.old} is now known as {event.user.name}."
    return _render_direct(event)


_IDENTITY_LINES: Final = {
    "guest": " You are a guest (not registered).",
    "registered": " You are logged in (registered).",
    "token": " You are logged in (token).",
}


def _render_direct(event: Event) -> str:
    if isinstance(event, SystemEvent):
        return f"*** {event.text}"
    if isinstance(event, DeleteEvent):
        return f"*** An operator removed message {event.id}."
    if isinstance(event, ErrorEvent):
        return f"Error: {event.message} ({event.code})"
    if isinstance(event, WelcomeEvent):
        rooms = ", ".join("#" + room for room in event.rooms)
        again = " back" if event.resumed else ""
        known = _IDENTITY_LINES.get(event.identity, "")
        return (
            f"Welcome{again}, {event.user.name}!{known} You are in {rooms}. "
            "Type /help for commands."
        )
    if isinstance(event, IdentifiedEvent):
        if event.identity == "guest":
            return f"*** {event.user.name} is a guest name now (not registered)."
        return f"*** You are {event.user.name} ({event.identity})."
    if isinstance(event, WhoEvent):
        names = ", ".join(user.name for user in event.users)
        return f"Users in #{event.room} ({len(event.users)}): {names}"
    if isinstance(event, HistoryEvent):
        lines = [_message_line(message) for message in event.messages]
        lines.append(f"(end of history for #{event.room})")
        return "\n".join(lines)
    if isinstance(event, ResumedEvent):
        return _resumed_line(event)
    if isinstance(event, RoomsEvent):
        return "Your rooms: " + ", ".join(
            f"#{room}{' (current)' if room == event.current else ''}" for room in event.rooms
        )
    if isinstance(event, PongEvent):
        return "pong"
    if isinstance(event, RefreshedEvent):
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(event.expires))
        return f"*** Token refreshed: your session lasts until {until}."
    raise TypeError(f"no text rendering for {type(event).__name__}")


def _resumed_line(event: ResumedEvent) -> str:
    recovered = sum(item.recovered for item in event.rooms.values())
    lost = sum(item.lost for item in event.rooms.values())
    line = f"*** Recovered {recovered} missed message{'s' if recovered != 1 else ''}."
    if lost:
        line += f" {lost} older message{'s' if lost != 1 else ''} are no longer available."
    return line


def event_room(event: Event) -> str | None:
    """The room a broadcast event belongs to (None: not room-bound)."""
    if isinstance(event, MessageEvent | JoinEvent | LeaveEvent | SystemEvent | DeleteEvent):
        return event.room
    return None


def text_line(event: Event, current_room: str | None) -> str:
    """The line a text client sees: prefixed with ``[#room]`` unless current."""
    room = event_room(event)
    line = render_text(event)
    return line if room is None or room == current_room else f"[#{room}] {line}"


# --------------------------------------------------------------------------- framing

_OP_TEXT: Final = 0x81  # FIN + text opcode
PING_FRAME: Final = b"\x89\x00"  # FIN + ping, empty payload; the same bytes for everyone


def frame_text(payload: bytes) -> bytes:
    """An unmasked server-to-client text frame (RFC 6455 section 5.2)."""
    length = len(payload)
    if length < 126:
        return bytes((_OP_TEXT, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", _OP_TEXT, 126, length) + payload
    return struct.pack("!BBQ", _OP_TEXT, 127, length) + payload


class Rendered:
    """One event, encoded and framed at most once per rendering.

    Every member of a room gets the same bytes: JSON clients the ``chat.v1``
    frame, text clients the line, or the line prefixed with ``[#room]`` when
    the room is not their current one. Renderings are made lazily, so a room
    with no text clients never renders text.
    """

    __slots__ = ("_json", "_prefixed", "_text", "event", "room")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.room = event_room(event)
        self._json: bytes | None = None
        self._text: bytes | None = None
        self._prefixed: bytes | None = None

    def json_frame(self) -> bytes:
        if self._json is None:
            self._json = frame_text(encode_json(self.event))
        return self._json

    def text_frame(self, current_room: str | None) -> bytes:
        if self.room is None or self.room == current_room:
            if self._text is None:
                self._text = frame_text(text_line(self.event, self.room).encode())
            return self._text
        if self._prefixed is None:
            self._prefixed = frame_text(text_line(self.event, None).encode())
        return self._prefixed
