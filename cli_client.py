"""Interactive terminal client for the chat server's JSON dialect (``chat.v1``).

Usage: ``chat-client [URL] [--name NAME] [--room ROOM] [--history N] [--wait SECONDS]``.

Input is read off the event loop (prompt_toolkit on a terminal, a pipe reader
otherwise), so events are printed while you type. A dropped connection, a
server restart (1001) or a slow-consumer close (4000) is followed by a
reconnect with exponential backoff that resumes the session and replays the
messages missed meanwhile; kicks, bans and policy closes end the client.

At the end of input (or ``/quit``) the client waits, at most ``--wait``
seconds, until the server has answered every line it sent: the echo of each
message (it is stored by then), the reply to each command, or an error. So
``printf 'a\nb\n/who\n' | chat-client`` exits 0 only once ``a`` and ``b`` are
stored and the ``/who`` answer is printed.

Exit status: 0 after ``/quit``, end of input, Ctrl-C or a normal close by the
server; 1 when connecting fails, when lines typed were not confirmed in time
(they are named), or when the server closes with an error that reconnecting
cannot fix (4001, 1008, 1009, ...); 2 when an operator kicked or banned you
(4500, 4501).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import getpass
import io
import json
import os
import random
import signal
import stat
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TextIO, cast

import aiohttp
from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import OneStyleAndTextTuple, StyleAndTextTuples
from prompt_toolkit.history import DummyHistory, InMemoryHistory
from prompt_toolkit.layout.processors import Processor, Transformation, TransformationInput
from prompt_toolkit.patch_stdout import patch_stdout
from yarl import URL

__all__ = ["main", "run_client"]

DEFAULT_URL: Final = "ws://localhost:8765/"
SUBPROTOCOL: Final = "chat.v1"

PASSWORD_ENV: Final = "CHAT_PASSWORD"  # noqa: S105 (the name of a variable, not a secret)
EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_REMOVED: Final = 2  # kicked or banned by an operator

CONNECT_TIMEOUT: Final = 10.0  # seconds for TCP connect + WebSocket handshake
CLOSE_TIMEOUT: Final = 5.0  # seconds to wait for the server's close frame
HEARTBEAT: Final = 20.0  # client pings, so a half-open connection is noticed
STABLE_AFTER: Final = 10.0  # a connection that lived this long resets the backoff
MAX_LINE: Final = 1 << 20
MAX_PENDING: Final = 1000  # lines typed while disconnected, sent after reconnecting
DEFAULT_HISTORY: Final = 20
DEFAULT_WAIT: Final = 10.0
JOIN_REF: Final = "join:"  # prefix of the ref of join commands

# Close codes after which the client reconnects and resumes: network trouble,
# server restarts and the slow-consumer close (docs/protocol.md).
RECONNECT_CODES: Final = frozenset({1001, 1006, 1011, 1012, 1013, 1014, 4000})
# Handshake refusals that retrying cannot heal.
FATAL_HTTP_STATUSES: Final = frozenset({400, 401, 403, 404, 405, 426})

# --------------------------------------------------------------------------- escaping

# Escape C0 and C1 control characters and DEL, which can drive the terminal,
# and the invisible Unicode line separators and bidi overrides, which can
# disguise a line. Tab is kept: harmless, and common in pasted text.
_ESCAPED_CODEPOINTS: Final = (
    *range(0x00, 0x09),
    *range(0x0A, 0x20),
    0x7F,
    *range(0x80, 0xA0),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
)
TERMINAL_ESCAPES: Final = str.maketrans(
    {code: repr(chr(code))[1:-1] for code in _ESCAPED_CODEPOINTS}
)


def escape(text: str) -> str:
    """Make a string from the network safe to print on a terminal."""
    return text.translate(TERMINAL_ESCAPES)


# --------------------------------------------------------------------------- styles

_NAME_COLORS: Final = ("32", "33", "35", "36", "91", "92", "93", "95", "96")
DIM: Final = "2"
BOLD: Final = "1"
ROOM: Final = "36"
NOTICE: Final = "33"
ERROR: Final = "31"


@dataclass(frozen=True)
class Style:
    """ANSI colors, or none when output is not a terminal."""

    color: bool = False

    def paint(self, text: str, sgr: str) -> str:
        return f"\x1b[{sgr}m{text}\x1b[0m" if self.color else text

    def name(self, user_id: int | None, name: str) -> str:
        color = _NAME_COLORS[user_id % len(_NAME_COLORS)] if user_id is not None else ""
        return self.paint(name, f"{BOLD};{color}" if color else BOLD)


def use_color(stream: TextIO) -> bool:
    """Color only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: a random first delay, then exponential growth with a cap.

    The random first delay spreads the reconnects of every client of a server
    that just restarted (RFC 6455, 7.2.3); later delays get jitter too.
    """

    initial: float = 1.0
    minimum: float = 1.0
    factor: float = 2.0
    maximum: float = 30.0

    def delays(self) -> Iterator[float]:
        yield random.random() * self.initial
        delay = self.minimum
        while True:
            yield min(delay, self.maximum) * random.uniform(0.75, 1.0)
            delay *= self.factor


@dataclass(frozen=True)
class Options:
    """What the user asked for on the command line."""

    url: URL = field(default_factory=lambda: URL(DEFAULT_URL))
    name: str | None = None
    room: str | None = None
    history: int = 0
    wait: float = DEFAULT_WAIT  # at end of input: seconds to wait for the server's answers
    backoff: Backoff = field(default_factory=Backoff)
    # --login: sent in the first frame of every connection; never in a repr.
    password: str | None = field(default=None, repr=False)


def _websocket_url(text: str) -> URL:
    url = URL(text)
    if url.scheme not in ("ws", "wss") or not url.host:
        raise argparse.ArgumentTypeError(f"not a ws:// or wss:// URL: {text}")
    return url


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"not a number of seconds from 0 to 3600: {text}")
    return value


def _history_count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > 500:
        raise argparse.ArgumentTypeError(f"not a number from 0 to 500: {text}")
    return int(text)


def parse_args(argv: list[str] | None = None) -> Options:
    """Turn the command line into Options; exit with status 2 on a usage error."""
    parser = argparse.ArgumentParser(
        prog="chat-client", description="Terminal client for the WebSocket chat server."
    )
    parser.add_argument(
        "url", nargs="?", default=DEFAULT_URL, type=_websocket_url,
        help=f"server URL (default: {DEFAULT_URL})",
    )  # fmt: skip
    parser.add_argument("--name", help="nickname to ask for (default: User N)")
    parser.add_argument("--room", help="first room (default: the server's, lobby)")
    parser.add_argument(
        "--history", type=_history_count, default=0, metavar="N",
        help="show the last N messages of the first room on connect (default: 0)",
    )  # fmt: skip
    parser.add_argument(
        "--wait", type=_seconds, default=DEFAULT_WAIT, metavar="SECONDS",
        help="at end of input, wait this long for the server to confirm every line sent "
        f"(default: {DEFAULT_WAIT:g})",
    )  # fmt: skip
    parser.add_argument(
        "--login", action="store_true",
        help=f"log into the registered --name: the password comes from ${PASSWORD_ENV} "
        "or is asked for (without echo)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    room = args.room.removeprefix("#") if args.room else None
    password = None
    if args.login:
        if not args.name:
            parser.error("--login needs --name NAME")
        password = login_password(args.name)
        if password is None:
            parser.error(f"--login needs a terminal to ask for the password, or ${PASSWORD_ENV}")
    return Options(
        url=args.url,
        name=args.name,
        room=room,
        history=args.history,
        wait=args.wait,
        password=password,
    )


def login_password(name: str) -> str | None:
    """The password of ``--login``: from the environment, else asked on the terminal."""
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        return None
    try:
        return getpass.getpass(f"Password for {name}: ")
    except (EOFError, KeyboardInterrupt):
        return None


# --------------------------------------------------------------------------- state


@dataclass
class ChatState:
    """What the client knows about its session; updated from server events."""

    user_id: int | None = None
    name: str = ""
    wanted_name: str | None = None  # asked for again when a session is not resumed
    rooms: list[str] = field(default_factory=list)  # in join order: the last is current
    joining: set[str] = field(default_factory=set)
    session: str | None = None
    last_ids: dict[str, int] = field(default_factory=dict)

    @property
    def current_room(self) -> str | None:
        return self.rooms[-1] if self.rooms else None

    def is_own(self, event: Mapping[str, Any]) -> bool:
        return self.user_id is not None and _user(event)[0] == self.user_id

    def is_duplicate(self, event: Mapping[str, Any]) -> bool:
        """Whether a message was already seen (a replay can overlap what arrived)."""
        room, msg_id = event.get("room"), event.get("id")
        if not isinstance(room, str) or not isinstance(msg_id, int):
            return False
        return msg_id <= self.last_ids.get(room, 0)

    def note_sent(self, frame: Mapping[str, Any]) -> None:
        """Track joins until the server confirms them."""
        if frame["type"] == "join":
            self.joining.add(frame["room"])

    def welcome(self, event: Mapping[str, Any]) -> None:
        user_id, name = _user(event)
        self.user_id, self.name = user_id, name
        token = event.get("session")
        self.session = token if isinstance(token, str) else None
        rooms = [room for room in event.get("rooms", ()) if isinstance(room, str)]
        if event.get("resumed") is True:
            # Keep our join order, so the current room stays current.
            self.rooms = [r for r in self.rooms if r in rooms] + [
                r for r in rooms if r not in self.rooms
            ]
        else:
            # A new session: message ids may start over (e.g. a restarted server).
            self.rooms, self.last_ids = rooms, {}
        self.joining.clear()

    def apply(self, event: Mapping[str, Any]) -> None:
        """Update the state from one server event (welcome excepted)."""
        kind, room = event.get("type"), event.get("room")
        if kind == "message" and isinstance(room, str) and isinstance(event.get("id"), int):
            self.last_ids[room] = max(self.last_ids.get(room, 0), event["id"])
        elif kind == "history" and isinstance(room, str):
            ids = [m["id"] for m in _messages(event) if isinstance(m.get("id"), int)]
            if ids:
                self.last_ids[room] = max(self.last_ids.get(room, 0), *ids)
        elif kind == "join" and isinstance(room, str) and self.is_own(event):
            self._joined(room, make_current=event.get("reason", "join") == "join")
        elif kind == "who" and isinstance(room, str) and room in self.joining:
            # Large rooms send no join notices; the who list confirms the join.
            self._joined(room, make_current=True)
        elif kind == "leave" and isinstance(room, str) and self.is_own(event):
            if room in self.rooms:
                self.rooms.remove(room)
        elif kind == "nick" and self.is_own(event):
            self.name = self.wanted_name = _user(event)[1]
        elif kind == "identified":
            # A login makes this client another user, with a new resume token.
            self.user_id, self.name = _user(event)
            self.wanted_name = self.name
            if isinstance(token := event.get("session"), str) and token:
                self.session = token
        elif kind == "error" and isinstance(ref := event.get("ref"), str):
            self.joining.discard(ref.removeprefix(JOIN_REF))

    def _joined(self, room: str, *, make_current: bool) -> None:
        self.joining.discard(room)
        if make_current and room in self.rooms:
            self.rooms.remove(room)
        if room not in self.rooms:
            self.rooms.append(room)

    def connect_url(self, options: Options, *, first: bool) -> URL:
        """The URL to connect to, with the query parameters of docs/protocol.md."""
        query: dict[str, str] = {}
        if self.wanted_name:
            query["name"] = self.wanted_name
        room = self.rooms[0] if self.rooms else options.room
        if room:
            query["room"] = room
        if first and options.history:
            query["history"] = str(options.history)
        if options.password is not None:
            query["auth"] = "frame"  # the password goes in the first frame, not the URL
        if self.session:
            query["session"] = self.session
            last = ",".join(f"{room}:{msg_id}" for room, msg_id in self.last_ids.items())
            if last:
                query["last"] = last
        return options.url.update_query(query)


# --------------------------------------------------------------------------- input commands


@dataclass(frozen=True)
class Send:
    """A chat.v1 command to send to the server."""

    frame: dict[str, Any]


@dataclass(frozen=True)
class Say:
    """A line to print locally."""

    text: str


@dataclass(frozen=True)
class Quit:
    """Close the connection and exit."""


@dataclass(frozen=True)
class AskSecret:
    """An account command whose password(s) are asked for without echo."""

    kind: str  # register, login, password, unregister
    name: str = ""


Action = Send | Say | Quit | AskSecret

HELP_TEXT: Final = "\n".join(
    (
        "Commands:",
        "  /nick NAME       change your name",
        "  /join ROOM       join a room and make it current",
        "  /leave [ROOM]    leave a room (default: the current one)",
        "  /who [ROOM]      list the users of a room",
        f"  /history [N]     show the last N messages of the current room ({DEFAULT_HISTORY})",
        "  /me ACTION       send an action (* NAME ACTION)",
        "  /rooms           list your rooms",
        "  /register        register your current name (asks for a password)",
        "  /login NAME      log into a registered name (asks for its password)",
        "  /password        change your password; /unregister drops the registration",
        "  /help            show this help",
        "  /quit, quit      leave the chat",
        "Anything else is a message to the current room; //text sends /text.",
    )
)


def translate(line: str, state: ChatState) -> Action | None:
    """Turn one input line into an action; None for a blank line."""
    if not line.strip():
        return None
    if line.strip() == "quit":  # the seed client's way out
        return Quit()
    if line.startswith("/") and not line.startswith("//"):
        verb, _, arg = line[1:].partition(" ")
        return _command(verb.lower(), arg.strip(), state)
    return _message(line.removeprefix("/"), state)


def _where(arg: str, state: ChatState) -> dict[str, str] | None:
    """The ``room`` field of a command: the room named, else the current one.

    While a join is on its way the field is left out, so that the server,
    which applies commands in order, picks the room that join made current.
    None when there is no room at all.
    """
    room = arg.removeprefix("#")
    if room:
        return {"room": room}
    if state.joining:
        return {}
    return {"room": state.current_room} if state.current_room else None


def _message(text: str, state: ChatState) -> Action:
    where = _where("", state)
    if where is None:
        return Say("You are not in any room: /join ROOM first.")
    return Send({"type": "message", **where, "text": text})


def _room_command(verb: str, arg: str, state: ChatState) -> Action:
    if verb == "history":
        if arg and not (arg.isascii() and arg.isdigit() and 1 <= int(arg) <= 500):
            return Say("Usage: /history [N], N from 1 to 500")
        limit, arg = int(arg) if arg else DEFAULT_HISTORY, ""
    where = _where(arg, state)
    if where is None:
        return Say("You are not in any room.")
    frame = {"type": verb, **where}
    return Send({**frame, "limit": limit} if verb == "history" else frame)


def _command(verb: str, arg: str, state: ChatState) -> Action:
    if verb == "nick":
        return Send({"type": "nick", "name": arg}) if arg else Say("Usage: /nick NAME")
    if verb == "join":
        room = arg.removeprefix("#")
        if not room:
            return Say("Usage: /join ROOM")
        # The ref comes back with an error, which tells which join failed.
        return Send({"type": "join", "room": room, "ref": JOIN_REF + room})
    if verb in ("leave", "who", "history"):
        return _room_command(verb, arg, state)
    if verb == "me":
        return _message("/me " + arg, state) if arg else Say("Usage: /me ACTION")
    if verb == "rooms":
        names = [f"#{r}" + (" (current)" if r == state.current_room else "") for r in state.rooms]
        return Say("Your rooms: " + (", ".join(names) or "none"))
    if verb in ("register", "login", "password", "unregister"):
        return _account_command(verb, arg)
    if verb == "help":
        return Say(HELP_TEXT)
    if verb == "quit":
        return Quit()
    return Say(f"Unknown command /{verb}. Type /help for commands.")


def _account_command(verb: str, arg: str) -> Action:
    """``/login NAME`` asks for the password; ``/register PASSWORD`` (and the like,
    as in the text dialect) sends it as typed, for scripts."""
    if verb == "login":
        name, _, password = arg.partition(" ")
        if not name:
            return Say("Usage: /login NAME")
        if password:
            return Send({"type": "login", "name": name, "password": password})
        return AskSecret("login", name)
    if not arg:
        return AskSecret(verb)
    if verb == "password":
        old, _, new = arg.partition(" ")
        return Send({"type": "password", "old": old, "new": new})
    return Send({"type": verb, "password": arg})


# --------------------------------------------------------------------------- secrets

ACCOUNT_VERBS: Final = frozenset({"register", "login", "password", "unregister"})
MASK: Final = "***"
# Query parameters of a URL that are credentials (docs/protocol.md).
SECRET_QUERY: Final = frozenset({"token", "session", "password"})


def account_verb(line: str) -> str | None:
    """The verb of an account command line (as translate() reads it), else None."""
    if not line.startswith("/") or line.startswith("//"):
        return None
    verb = line[1:].partition(" ")[0].lower()
    return verb if verb in ACCOUNT_VERBS else None


def secret_start(line: str) -> int:
    """Where the password(s) typed on an account command line begin; len(line) if none.

    Splits as _account_command() does: /login NAME PASSWORD, /register PASSWORD,
    /unregister PASSWORD, /password OLD NEW."""
    verb = account_verb(line)
    if verb is None:
        return len(line)
    head, space, arg = line.partition(" ")
    start = len(head) + len(space) + len(arg) - len(arg.lstrip())
    words = arg.strip()
    if verb == "login":
        name, _, password = words.partition(" ")
        return start + len(name) + 1 if password else len(line)
    return start if words else len(line)


def masked(line: str) -> str:
    """A typed line fit to show in reports: each password argument shown as ***."""
    start = secret_start(line)
    if start == len(line):
        return line
    count = 2 if account_verb(line) == "password" else 1  # OLD and NEW
    return " ".join([line[:start].rstrip(), *[MASK] * count])


def without_secrets(line: str) -> str:
    """A typed line without its passwords: recalled from history, it asks for them."""
    start = secret_start(line)
    return line if start == len(line) else line[:start].rstrip()


def shown_url(url: URL) -> URL:
    """``url`` fit to print: no user-info password, no token or resume token in the query."""
    if url.password is not None:
        url = url.with_password(MASK)
    hidden = {key: MASK for key in url.query if key in SECRET_QUERY}
    return url.update_query(hidden) if hidden else url


class SecretFreeHistory(InMemoryHistory):
    """Prompt history that keeps account commands without the passwords typed on them."""

    def append_string(self, string: str) -> None:
        super().append_string(without_secrets(string))


class MaskSecrets(Processor):
    """Show the passwords typed on an account command line as asterisks, while typing
    and after: the accepted line stays on the terminal (and in its scrollback)."""

    def apply_transformation(self, ti: TransformationInput) -> Transformation:
        start = secret_start(ti.document.lines[ti.lineno])
        fragments: StyleAndTextTuples = []
        index = 0  # fragments map one to one onto the line's characters
        for style, text, *handler in ti.fragments:
            keep = max(0, min(len(text), start - index))
            shown = text[:keep] + "*" * (len(text) - keep)
            fragments.append(cast(OneStyleAndTextTuple, (style, shown, *handler)))
            index += len(text)
        return Transformation(fragments)


SecretPrompt = Callable[[str], Awaitable[str | None]]


async def secret_frame(ask: AskSecret, prompt: SecretPrompt) -> Action:
    """The command of ``ask`` with its password(s) read through ``prompt``."""
    if ask.kind == "login":
        password = await prompt(f"Password for {ask.name}: ")
        if not password:
            return Say("Login cancelled.")
        return Send({"type": "login", "name": ask.name, "password": password})
    if ask.kind == "password":
        old = await prompt("Current password: ")
        new = await _new_password(prompt) if old else None
        if not old or not new:
            return Say("Password unchanged.")
        return Send({"type": "password", "old": old, "new": new})
    if ask.kind == "register":
        password = await _new_password(prompt)
        if not password:
            return Say("Not registered.")
        return Send({"type": "register", "password": password})
    password = await prompt("Password: ")
    if not password:
        return Say("Registration kept.")
    return Send({"type": "unregister", "password": password})


async def _new_password(prompt: SecretPrompt) -> str | None:
    first = await prompt("New password: ")
    if not first:
        return None
    if await prompt("Same password again: ") != first:
        return None
    return first


# --------------------------------------------------------------------------- rendering


def _user(event: Mapping[str, Any]) -> tuple[int | None, str]:
    user = event.get("user")
    if not isinstance(user, dict):
        return None, "?"
    user_id, name = user.get("id"), user.get("name")
    return (user_id if isinstance(user_id, int) else None), (name if isinstance(name, str) else "?")


def _field(event: Mapping[str, Any], key: str) -> str:
    value = event.get(key)
    return escape(value) if isinstance(value, str) else ""


def _messages(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = event.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _clock(event: Mapping[str, Any]) -> str:
    ts = event.get("ts")
    when = float(ts) if isinstance(ts, int | float) else time.time()
    return time.strftime("%H:%M", time.localtime(when))


def _prefix(event: Mapping[str, Any], style: Style) -> str:
    clock = style.paint(_clock(event), DIM)
    room = _field(event, "room")
    return f"{clock} {style.paint('[#' + room + ']', ROOM)} " if room else f"{clock} "


def _message_line(event: Mapping[str, Any], style: Style) -> str:
    user_id, name = _user(event)
    text = _field(event, "text")
    if text.startswith("/me "):
        return f"{_prefix(event, style)}* {style.name(user_id, escape(name))} {text[4:]}"
    return f"{_prefix(event, style)}{style.name(user_id, escape(name))}: {text}"


_JOIN_WORDS: Final = {"join": "has joined", "connect": "has connected", "resume": "has reconnected"}


def _presence_line(event: Mapping[str, Any], style: Style) -> str:
    name = _user(event)[1]
    reason = event.get("reason")
    detail = _field(event, "detail")
    if event["type"] == "join":
        words = _JOIN_WORDS.get(reason, "has joined") if isinstance(reason, str) else "has joined"
    elif reason == "quit":
        words = "has disconnected"
    elif reason == "leave":
        words = "has left"
    elif reason in ("kicked", "banned"):
        words = f"was {reason}" + (f" ({detail})" if detail else "")
    else:
        words = f"has disconnected ({_field(event, 'reason') or 'unknown'})"
    return _prefix(event, style) + style.paint(f"{escape(name)} {words}.", DIM)


def render_event(event: Mapping[str, Any], style: Style) -> list[str]:
    """The terminal lines of one server event (none for events not shown)."""
    kind = event.get("type")
    if kind == "message":
        return [_message_line(event, style)]
    if kind in ("join", "leave"):
        return [_presence_line(event, style)]
    if kind == "nick":
        user_id, name = _user(event)
        new = style.name(user_id, escape(name))
        return [f"{_prefix(event, style)}{_field(event, 'old')} is now known as {new}."]
    if kind == "who":
        users = event.get("users")
        names = [escape(_user({"user": u})[1]) for u in users] if isinstance(users, list) else []
        room = _field(event, "room")
        return [f"Users in #{room} ({len(names)}): {', '.join(names)}"]
    if kind == "history":
        room = _field(event, "room")
        lines = [_message_line({**m, "room": event.get("room")}, style) for m in _messages(event)]
        more = " (older messages exist)" if event.get("more") is True else ""
        return [*lines, style.paint(f"(end of history for #{room}){more}", DIM)]
    if kind == "system":
        return [_prefix(event, style) + style.paint(f"*** {_field(event, 'text')}", NOTICE)]
    if kind == "delete":  # a terminal cannot unprint the line: say which one is gone
        msg_id = event.get("id")
        number = msg_id if isinstance(msg_id, int) and not isinstance(msg_id, bool) else "?"
        removed = f"*** An operator removed message {number}."
        return [_prefix(event, style) + style.paint(removed, NOTICE)]
    if kind == "error":
        message, code = _field(event, "message"), _field(event, "code")
        return [style.paint(f"Error: {message} ({code})", ERROR)]
    if kind == "resumed":
        line = resumed_line(event)
        return [line] if line else []
    if kind == "welcome":
        rooms = event.get("rooms")
        rooms = rooms if isinstance(rooms, list) else []
        where = ", ".join(f"#{escape(r)}" for r in rooms if isinstance(r, str))
        name = escape(_user(event)[1])
        identity = _field(event, "identity")
        known = f" You are logged in ({identity})." if identity not in ("", "guest") else ""
        return [f"Welcome, {name}!{known} You are in {where}. Type /help for commands."]
    if kind == "identified":
        name, identity = escape(_user(event)[1]), _field(event, "identity")
        if identity == "guest":
            return [style.paint(f"*** {name} is not registered any more.", NOTICE)]
        return [style.paint(f"*** You are {name} ({identity}).", NOTICE)]
    return []  # pong, and types this client does not know


def resumed_line(event: Mapping[str, Any]) -> str:
    """One line summing up what a resume recovered and lost; "" when nothing was missed."""
    rooms = event.get("rooms")
    counts = [c for c in rooms.values() if isinstance(c, dict)] if isinstance(rooms, dict) else []
    recovered = sum(c["recovered"] for c in counts if isinstance(c.get("recovered"), int))
    lost = sum(c["lost"] for c in counts if isinstance(c.get("lost"), int))
    if not recovered and not lost:
        return ""
    line = f"Recovered {recovered} missed message{'' if recovered == 1 else 's'}."
    if lost:
        were = "message was" if lost == 1 else "messages were"
        line += f" {lost} older {were} lost (beyond retention)."
    return line


# --------------------------------------------------------------------------- closing


@dataclass(frozen=True)
class Closed:
    """How a connection ended; ``code`` is None when it dropped without a close frame."""

    code: int | None
    reason: str = ""


@dataclass(frozen=True)
class Verdict:
    """What to do after a close: reconnect, or exit with ``exit_code``."""

    reconnect: bool
    exit_code: int
    line: str


def describe_close(code: int, reason: str) -> str:
    return f"code {code}: {escape(reason)}" if reason else f"code {code}"


# Why a connection that the client will reopen was lost, in a user's words.
LOST_WORDS: Final = {
    1001: "the server is shutting down or restarting",
    1006: "the connection dropped",
    1011: "the server hit an internal error",
    1012: "the server is restarting",
    1013: "the server is overloaded",
    1014: "a gateway in between failed",
    4000: "this client was too slow to keep up",
}


def judge_close(closed: Closed) -> Verdict:
    """Decide from the close code whether to reconnect, and what to tell the user."""
    code, reason = closed.code, escape(closed.reason)
    if code is None:
        return Verdict(True, EXIT_ERROR, "Connection lost: the connection dropped")
    described = describe_close(code, closed.reason)
    if code in RECONNECT_CODES:
        return Verdict(True, EXIT_ERROR, f"Connection lost: {LOST_WORDS[code]} (code {code})")
    if code == 4401:
        return Verdict(False, EXIT_ERROR, f"Login refused: {reason or 'bad credentials'}.")
    if code in (4500, 4501):
        # A kick's close reason is the operator's reason; a ban's reads
        # "banned until WHEN: REASON".
        removed = "kicked" if code == 4500 else "banned"
        if code == 4501:
            reason = reason.removeprefix(removed).removeprefix(":").strip()
        reason = reason or "no reason given"
        return Verdict(False, EXIT_REMOVED, f"{removed.title()} by an operator: {reason}")
    if code == 1000:
        return Verdict(False, EXIT_OK, f"Connection closed by the server ({described}).")
    why = {
        4001: "Session taken over by another connection",
        1008: "Disconnected for a policy violation",
        1009: "Disconnected: a message was too big",
    }.get(code, "Connection closed")
    return Verdict(False, EXIT_ERROR, f"{why} ({described}).")


_ERRNO_WORDS: Final = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timed out",
}


def connect_error_words(exc: BaseException) -> str:
    """A few human words for why a connection attempt failed (no socket jargon)."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "host name not found"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _ERRNO_WORDS.get(exc.os_error.errno or 0, exc.os_error.strerror or "cannot connect")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    # The text of these names the URL asked for, with its resume token or ?token=.
    if isinstance(exc, aiohttp.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"the server answered HTTP {exc.status}"
    if isinstance(exc, aiohttp.InvalidURL):
        return "invalid URL"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_WORDS:
        return _ERRNO_WORDS[exc.errno]
    return str(exc) or type(exc).__name__


def handshake_words(status: int, url: URL) -> str:
    """Why an HTTP answer to the WebSocket upgrade is not a chat connection."""
    chat = url.with_path("/ws").with_query(None)
    if 200 <= status < 400:
        return f"this is a web page, not a chat endpoint (HTTP {status}); the chat socket is {chat}"
    if status == 404:
        return f"no chat endpoint at this path (HTTP 404); the chat socket is {chat}"
    if status == 403:
        return "the server refused this client (HTTP 403: origin not allowed)"
    if status == 429:
        return "too many connections from this address (HTTP 429)"
    if status >= 500:
        return f"the server failed to answer (HTTP {status})"
    return f"the server refused the connection (HTTP {status})"


class ConnectFailed(Exception):
    """A connection attempt failed; ``fatal`` when retrying cannot help."""

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


# --------------------------------------------------------------------------- input sources

LineHandler = Callable[[str], Awaitable[bool]]  # returns False to stop reading
InputSource = Callable[[LineHandler], Coroutine[Any, Any, None]]


async def read_terminal(on_line: LineHandler, prompt: Callable[[], str]) -> None:
    """Read lines with a prompt_toolkit prompt; Ctrl-D and Ctrl-C end the input."""
    session: PromptSession[str] = PromptSession(
        history=SecretFreeHistory(), input_processors=[MaskSecrets()]
    )
    while True:
        try:
            line = await session.prompt_async(prompt)
        except (EOFError, KeyboardInterrupt):
            return
        if not await on_line(line):
            return


async def read_stream(stream: TextIO, on_line: LineHandler) -> None:
    """Read lines from a pipe, socket or file without a prompt (for scripting)."""
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, io.UnsupportedOperation):
        fd, mode = -1, 0
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or (stat.S_ISCHR(mode) and os.isatty(fd)):
        await _read_pipe(fd, on_line)
    else:
        # Regular files, /dev/null and in-memory streams never block for long
        # (and epoll refuses the first two).
        while line := await asyncio.to_thread(stream.readline):
            if not await on_line(line.rstrip("\r\n")):
                return


async def _read_pipe(fd: int, on_line: LineHandler) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    # The transport closes the file it reads when done: give it a duplicate,
    # so that the caller's stdin stays open.
    pipe = os.fdopen(os.dup(fd), "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        while True:
            try:
                raw = await reader.readline()
            except ValueError:  # longer than MAX_LINE: the server would refuse it anyway
                continue
            if not raw or not await on_line(raw.decode(errors="replace").rstrip("\r\n")):
                return
    finally:
        transport.close()
        # The duplicate shares the open file description, which the transport
        # made non-blocking: undo that for the shell and any later reader.
        with contextlib.suppress(OSError):
            os.set_blocking(fd, True)


# --------------------------------------------------------------------------- the client


# --------------------------------------------------------------------------- confirmations


@dataclass
class Unconfirmed:
    """A typed line sent (or queued) whose answer from the server has not come yet."""

    line: str
    frame: dict[str, Any]
    sent: bool = False


class Confirmations:
    """Matches server events to the commands they answer.

    The server echoes a sender's own message after storing it, answers `join`
    and `who` with a `who`, `history` with a `history`, `nick` and `leave` with
    the sender's own `nick`/`leave` event, and a refused command with an
    `error` carrying its `ref` (docs/protocol.md). At the end of piped input
    the client waits until each line typed got one of those.
    """

    def __init__(self) -> None:
        self.items: list[Unconfirmed] = []
        self.settled = asyncio.Event()
        self.settled.set()
        self._refs = 0

    def track(self, line: str, frame: dict[str, Any]) -> dict[str, Any]:
        """Give ``frame`` a ref (errors echo it) and remember it; return the frame."""
        if "ref" not in frame:
            self._refs += 1
            frame = {**frame, "ref": self._refs}
        self.items.append(Unconfirmed(line, frame))
        self.settled.clear()
        return frame

    def sent(self, frame: dict[str, Any]) -> None:
        for item in self.items:
            if item.frame is frame:
                item.sent = True

    def resend_after_reconnect(self) -> list[dict[str, Any]]:
        """Commands sent on a lost connection and not answered: safe to send again.
        (Messages are not: a resume replays them if they were stored.)"""
        again = [i for i in self.items if i.sent and i.frame["type"] != "message"]
        for item in again:
            item.sent = False
        return [item.frame for item in again]

    def observe(self, event: Mapping[str, Any], state: ChatState) -> None:
        for index, item in enumerate(self.items):
            if _answers(item.frame, event, state):
                del self.items[index]
                break
        if not self.items:
            self.settled.set()

    def lines(self) -> list[str]:
        return [item.line for item in self.items]


def _answers(frame: Mapping[str, Any], event: Mapping[str, Any], state: ChatState) -> bool:
    """Whether ``event`` is the server's answer to ``frame``."""
    kind, room = event.get("type"), event.get("room")
    if kind == "error":
        return "ref" in event and event["ref"] == frame.get("ref")
    sent = frame["type"]
    same_room = "room" not in frame or frame["room"] == room
    if sent == "message":
        return (
            kind == "message"
            and state.is_own(event)
            and same_room
            and (event.get("text") == frame["text"])
        )
    if sent in ("join", "who"):
        return kind == "who" and same_room
    if sent == "history":
        return kind == "history" and same_room
    if sent in ("register", "login", "unregister"):
        return kind == "identified"
    if sent == "password":
        return kind == "system"
    if sent in ("nick", "leave"):
        return kind == sent and state.is_own(event) and (sent == "nick" or same_room)
    return False


@dataclass(frozen=True)
class Early:
    """A line typed before the first welcome, when the current room is not known yet."""

    line: str  # as typed (passwords masked): translated once the room is known
    # An account command, already read (and its password asked for): it needs no
    # room, and asking again at the welcome would throw the first answer away.
    action: Action | None = field(default=None, repr=False)


class Printer:
    """Writes whole lines to the output stream, flushing each one."""

    def __init__(self, stream: TextIO, style: Style) -> None:
        self.stream = stream
        self.style = style

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def notice(self, text: str) -> None:
        self.line(self.style.paint(text, NOTICE))


class Client:
    """One chat session: connects, resumes after drops, and routes input and events."""

    def __init__(
        self, options: Options, printer: Printer, ask_secret: SecretPrompt | None = None
    ) -> None:
        self.options = options
        self.printer = printer
        self.ask_secret = ask_secret  # None: no terminal to ask passwords on
        self.state = ChatState(wanted_name=options.name)
        self.ws: aiohttp.ClientWebSocketResponse | None = None  # set once welcomed
        self.pending: deque[dict[str, Any]] = deque(maxlen=MAX_PENDING)
        # Lines typed before the first welcome: their room is not known yet.
        self.early: deque[Early] = deque(maxlen=MAX_PENDING)
        self.confirmations = Confirmations()
        self.quit = asyncio.Event()
        self.welcomed = asyncio.Event()
        self.reconnecting = False
        self.ever_welcomed = False
        self.told_offline = False  # "will send after reconnecting", once per outage
        self.drain_deadline: float | None = None  # set when the input ends
        self._interrupts = 0
        self._task: asyncio.Task[Any] | None = None

    def prompt(self) -> str:
        room = self.state.current_room
        return f"[#{escape(room)}] > " if room else "> "

    async def run(self, read_input: InputSource) -> int:
        """Run until the user quits or the server ends the session; return the exit status."""
        self._task = asyncio.current_task()
        input_task = asyncio.create_task(read_input(self.handle_line))
        input_task.add_done_callback(lambda _: self.end_of_input())
        restore_sigint = _handle_sigint(self.on_interrupt)
        try:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                return await self.connection_loop(session)
        finally:
            restore_sigint()
            input_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await input_task

    def end_of_input(self) -> None:
        """The input ended (EOF or /quit): answers are awaited until the deadline."""
        if self.drain_deadline is None:
            self.drain_deadline = asyncio.get_running_loop().time() + self.options.wait
        self.quit.set()

    def on_interrupt(self) -> None:
        """Ctrl-C: quit cleanly without waiting for answers; a second one stops at once."""
        self._interrupts += 1
        self.drain_deadline = 0.0
        self.quit.set()
        if self._interrupts > 1 and self._task is not None:
            self._task.cancel()

    def drain_left(self) -> float:
        """Seconds left to wait for answers after the input ended."""
        if self.drain_deadline is None:
            return 0.0
        return max(0.0, self.drain_deadline - asyncio.get_running_loop().time())

    def draining(self) -> bool:
        """Whether the input ended with lines unconfirmed and time left to wait."""
        unsettled = bool(self.confirmations.items or self.early)
        return self.quit.is_set() and unsettled and self.drain_left() > 0

    async def connection_loop(self, session: aiohttp.ClientSession) -> int:
        self.printer.notice(f"Connecting to {shown_url(self.options.url)}...")
        try:
            ws = await self.connect(session, first=True)
        except ConnectFailed as exc:
            self.printer.notice(f"Failed to connect to {shown_url(self.options.url)}: {exc}.")
            return EXIT_ERROR
        loop = asyncio.get_running_loop()
        delays: Iterator[float] | None = None
        while True:
            started = loop.time()
            closed = await self.converse(ws)
            if closed is None:
                code = describe_close(ws.close_code or 1000, "")
                self.printer.notice(f"Connection closed ({code}).")
                return self.finish(EXIT_OK)
            verdict = judge_close(closed)
            if not verdict.reconnect:
                self.printer.notice(verdict.line)
                return self.finish(verdict.exit_code)
            if delays is None or loop.time() - started >= STABLE_AFTER:
                delays = self.options.backoff.delays()
            result = await self.reconnect(session, verdict.line, delays)
            if isinstance(result, int):
                return self.finish(result)
            ws = result

    def finish(self, status: int) -> int:
        """The exit status, made an error when typed lines went unconfirmed."""
        lines = [*self.confirmations.lines(), *(early.line for early in self.early)]
        if not lines or self._interrupts:
            return status
        count = len(lines)
        shown = ", ".join(repr(escape(line)) for line in lines[:10])
        more = f" and {count - 10} more" if count > 10 else ""
        self.printer.notice(
            f"Not confirmed by the server: {count} line{'' if count == 1 else 's'} ({shown}{more})."
        )
        return status if status != EXIT_OK else EXIT_ERROR

    async def connect(
        self, session: aiohttp.ClientSession, *, first: bool
    ) -> aiohttp.ClientWebSocketResponse:
        url = self.state.connect_url(self.options, first=first)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                ws = await session.ws_connect(url, protocols=(SUBPROTOCOL,), heartbeat=HEARTBEAT)
        except aiohttp.WSServerHandshakeError as exc:
            # A web page (2xx/3xx) or a refusal retrying cannot heal.
            fatal = exc.status in FATAL_HTTP_STATUSES or exc.status < 400
            words = handshake_words(exc.status, shown_url(self.options.url))
            raise ConnectFailed(words, fatal=fatal) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConnectFailed(connect_error_words(exc)) from None
        if ws.protocol != SUBPROTOCOL:
            await ws.close()
            raise ConnectFailed(f"the server does not speak {SUBPROTOCOL}", fatal=True)
        if self.options.password is not None:
            auth = {"type": "auth", "name": self.options.name, "password": self.options.password}
            await ws.send_str(json.dumps(auth))
        self.welcomed.clear()
        return ws

    async def reconnect(
        self, session: aiohttp.ClientSession, why: str, delays: Iterator[float]
    ) -> aiohttp.ClientWebSocketResponse | int:
        """Retry with backoff until connected (the socket) or told to stop (an exit status).

        Prints one line when the connection is lost and one more only when the
        reason an attempt fails changes, not a line per attempt."""
        self.reconnecting = True
        self.told_offline = False
        self.printer.notice(f"{why}. Reconnecting...")
        last_failure = ""
        while True:
            delay = next(delays)
            if self.quit.is_set():
                if not self.draining():
                    self._report_unsent()
                    return EXIT_OK
                await asyncio.sleep(min(delay, self.drain_left()))
                if not self.draining():
                    return EXIT_OK
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.quit.wait(), delay)
                if self.quit.is_set() and not self.draining():
                    self._report_unsent()
                    return EXIT_OK
            try:
                ws = await self.connect(session, first=False)
            except ConnectFailed as exc:
                if exc.fatal:
                    self.printer.notice(f"Reconnect failed: {exc}.")
                    return EXIT_ERROR
                if str(exc) != last_failure:
                    last_failure = str(exc)
                    self.printer.notice(f"Still reconnecting: {exc}; retrying...")
                continue
            self.printer.notice("Reconnected.")
            self.reconnecting = False
            return ws

    def _report_unsent(self) -> None:
        if self.pending:
            count = len(self.pending)
            self.printer.notice(f"{count} unsent line{'' if count == 1 else 's'} dropped.")

    async def converse(self, ws: aiohttp.ClientWebSocketResponse) -> Closed | None:
        """Print events until the connection ends (a Closed) or the user quits (None).

        After the input ends, keep reading until every typed line is answered
        (or the --wait deadline passes): a script must know its lines were stored."""
        receiver = asyncio.create_task(self.receive_events(ws))
        quitting = asyncio.create_task(self.quit.wait())
        try:
            await asyncio.wait({receiver, quitting}, return_when=asyncio.FIRST_COMPLETED)
            if not receiver.done() and self.draining():
                settled = asyncio.create_task(self._settled())
                await asyncio.wait(
                    {receiver, settled},
                    timeout=self.drain_left(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                settled.cancel()

            if receiver.done():
                return receiver.result()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT)
            return None
        finally:
            self.ws = None
            quitting.cancel()
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver

    async def _settled(self) -> None:
        await self.welcomed.wait()  # lines typed before it are tracked from then on
        await self.confirmations.settled.wait()

    async def receive_events(self, ws: aiohttp.ClientWebSocketResponse) -> Closed:
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                await self.handle_frame(ws, msg.data)
            elif msg.type is aiohttp.WSMsgType.CLOSE:
                return Closed(msg.data, msg.extra or "")
            elif msg.type is not aiohttp.WSMsgType.BINARY:
                # CLOSED or ERROR: the connection dropped without a close frame.
                return Closed(None)

    async def handle_frame(self, ws: aiohttp.ClientWebSocketResponse, data: str) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "message" and self.state.is_duplicate(event):
            return
        if kind == "welcome":
            await self.on_welcome(ws, event)
            return
        for line in render_event(event, self.printer.style):
            self.printer.line(line)
        self.state.apply(event)
        self.confirmations.observe(event, self.state)

    async def on_welcome(self, ws: aiohttp.ClientWebSocketResponse, event: dict[str, Any]) -> None:
        """Adopt the (new or resumed) session, rejoin rooms if needed, send queued lines."""
        if not self.ever_welcomed:
            # Only now: a banned user is closed before any welcome.
            self.ever_welcomed = True
            self.printer.notice("Connected successfully!")
            self.printer.notice("Enter message (or 'quit' to exit):")
        previous_rooms = list(self.state.rooms)
        self.state.welcome(event)
        rejoin: list[dict[str, Any]] = []
        if event.get("resumed") is not True:
            # After a failed resume the server says why in a system event.
            for line in render_event(event, self.printer.style):
                self.printer.line(line)
            rejoin = [
                {"type": "join", "room": room}
                for room in previous_rooms
                if room not in self.state.rooms
            ]
        for frame in rejoin:
            self.state.note_sent(frame)
        unanswered = self.confirmations.resend_after_reconnect()
        self.pending.extendleft(reversed([*rejoin, *unanswered]))
        # Lines typed before the first welcome can be placed now. Translate them
        # all before the first await: a line typed while these are sent goes
        # to the end of the queue (self.ws is still None), after them.
        while self.early:
            early = self.early.popleft()
            action = early.action or translate(early.line, self.state)
            if (typed := self.act(action, early.line)) is not None:
                self.pending.append(typed)
        while self.pending:
            frame = self.pending.popleft()
            if not await self._send(ws, frame):
                self.pending.appendleft(frame)  # the connection dropped meanwhile
                return
        self.ws = ws
        self.welcomed.set()

    async def handle_line(self, line: str) -> bool:
        """Act on one input line; False once the user quits."""
        action = translate(line, self.state)
        if isinstance(action, Quit):
            return False
        if isinstance(action, AskSecret):
            action = await self.read_secret(action)
        line = masked(line)  # what reports show: never a password
        if self.state.session is None:
            self.hold_early(line, action)
            return True
        frame = self.act(action, line)
        if frame is None:
            return True
        if self.ws is not None and not self.pending and await self._send(self.ws, frame):
            return True
        self.pending.append(frame)
        if self.reconnecting and not self.told_offline:
            self.told_offline = True
            self.printer.notice("Not connected; will send after reconnecting.")
        return True

    def hold_early(self, line: str, action: Action | None) -> None:
        """Keep a line typed before the first welcome: the current room is not known yet."""
        if not account_verb(line):
            self.early.append(Early(line))  # translated at the welcome
        elif isinstance(action, Send):
            # It needs no room; keep it with the password just typed (in memory only).
            self.early.append(Early(line, action))
            self.printer.notice(f"Not connected yet; {line} will be sent once connected.")
        else:
            self.act(action, line)  # "Login cancelled." and the like: say it now

    async def read_secret(self, ask: AskSecret) -> Action:
        """The account command with its password(s) asked for on the terminal."""
        if self.ask_secret is None:
            return Say(f"/{ask.kind} asks for a password on a terminal; not here.")
        return await secret_frame(ask, self.ask_secret)

    def act(self, action: Action | None, line: str) -> dict[str, Any] | None:
        """Print a local answer, or return the frame to send (tracked until answered)."""
        if isinstance(action, Say):
            self.printer.notice(action.text)
        elif isinstance(action, Send):
            self.state.note_sent(action.frame)
            return self.confirmations.track(line, action.frame)
        return None

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> bool:
        """Send a frame; False if the connection is gone."""
        if ws.closed:
            return False
        try:
            await ws.send_str(json.dumps(frame, ensure_ascii=False))
        except (aiohttp.ClientError, ConnectionError):
            return False
        self.confirmations.sent(frame)
        return True


async def ask_password(prompt: str) -> str | None:
    """A password typed at the terminal, shown as asterisks; None if cancelled."""
    session: PromptSession[str] = PromptSession(history=DummyHistory())  # nothing to recall
    try:
        return await session.prompt_async(prompt, is_password=True)
    except (EOFError, KeyboardInterrupt):
        return None


def _handle_sigint(callback: Callable[[], None]) -> Callable[[], None]:
    """Route SIGINT to ``callback`` while the client runs; return the undo function."""
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGINT)
    try:
        loop.add_signal_handler(signal.SIGINT, callback)
    except (NotImplementedError, RuntimeError, ValueError):
        # Not in the main thread, or no signal support: Ctrl-C stays as it was.
        return lambda: None

    def restore() -> None:
        loop.remove_signal_handler(signal.SIGINT)
        signal.signal(signal.SIGINT, previous)

    return restore


async def run_client(options: Options, stdin: TextIO, stdout: TextIO) -> int:
    """Chat on ``stdin``/``stdout`` until done; return the exit status."""
    if stdin.isatty() and stdout.isatty():
        # Lines printed while typing go above the prompt, not through it.
        with patch_stdout(raw=True):
            printer = Printer(sys.stdout, Style(use_color(stdout)))
            client = Client(options, printer, ask_password)
            return await client.run(lambda on_line: read_terminal(on_line, client.prompt))
    client = Client(options, Printer(stdout, Style(use_color(stdout))))
    return await client.run(lambda on_line: read_stream(stdin, on_line))


def main(argv: list[str] | None = None) -> int:
    """Console entry point of ``chat-client``."""
    options = parse_args(argv)
    try:
        return asyncio.run(run_client(options, sys.stdin, sys.stdout))
    except (KeyboardInterrupt, asyncio.CancelledError):
        # A second Ctrl-C, or one before the client set up its handler.
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
