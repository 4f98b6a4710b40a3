"""``chatserver admin ...``: operator commands over the admin HTTP API.

Every command is one API call (see docs/admin-api.md). The server's address
and the admin token come from ``--url``/``--token`` or the environment
(``CHAT_ADMIN_URL``, ``CHAT_ADMIN_TOKEN``). Output is a readable table, or
the API's JSON with ``--json``. Exit status: 0 done, 1 the server refused or
could not be reached, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import quote

import aiohttp

from cli_client import connect_error_words

DEFAULT_URL = "http://127.0.0.1:8765"
TIMEOUT = 15.0
BAN_BY = ("name", "address", "both", "account")  # as dashboard/actions.py takes them

Json = dict[str, Any]


class AdminError(Exception):
    """The API said no, or could not be reached."""


@dataclass(frozen=True)
class Call:
    """One API request: method, path under /admin/api/, query and JSON body."""

    method: str
    path: str
    query: dict[str, str] | None = None
    body: Json | None = None


# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="chatserver admin",
        description="Operate a running chat server through its admin API.",
        epilog="Environment: CHAT_ADMIN_URL, CHAT_ADMIN_TOKEN.",
    )
    _add_common(parser, None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], help=help_text, description=help_text)

    sub = command("connections", "list live connections (filtered and paged on the server)")
    sub.add_argument("--q", default="", help="substring of name, room or address")
    sub.add_argument("--name", default="", help="substring of the name")
    sub.add_argument("--room", default="", help="member of this room")
    sub.add_argument("--address", default="", help="substring of the address")
    sub.add_argument("--sort", default="id", help="id, buffer, messages_in, messages_out, ...")
    sub.add_argument("--page", type=int, default=1)
    sub.add_argument("--per-page", type=int, default=50)

    sub = command("kick", "close a connection with 4500 and a reason")
    sub.add_argument("conn_id", nargs="?", type=int, help="connection id (see `connections`)")
    sub.add_argument("--name", help="kick the connected user with this name instead")
    sub.add_argument("--reason", default="", help="shown to the user and the room")

    sub = command("ban", "ban a name and/or an address (also kicks matching connections)")
    sub.add_argument("--name", help="the name to ban (case-insensitive)")
    sub.add_argument("--address", help="an IP address or a network like 10.0.0.0/8")
    sub.add_argument("--account", help="a registered name: bans the account")
    sub.add_argument("--subject", help="a site token's sub: bans that token user")
    sub.add_argument("--conn", type=int, dest="conn_id", help="ban this live connection")
    sub.add_argument("--by", choices=BAN_BY, help="with --conn: what to ban")
    sub.add_argument("--duration", default=None, help="30s, 10m, 2h, 1d, 1w (default: permanent)")
    sub.add_argument("--reason", default="")

    sub = command("unban", "lift a ban early")
    sub.add_argument("ban_id", type=int)
    command("bans", "list active bans")

    sub = command("mute", "stop a user from posting for a while")
    sub.add_argument("--name", help="the name to mute (case-insensitive)")
    sub.add_argument("--user-id", type=int, help="the user id to mute")
    sub.add_argument("--conn", type=int, dest="conn_id", help="mute the user of this connection")
    sub.add_argument("--duration", default=None, help="30s, 10m, 2h, 1d, 1w (default: permanent)")
    sub.add_argument("--reason", default="")

    sub = command("unmute", "lift a mute early")
    sub.add_argument("mute_id", type=int)
    command("mutes", "list active mutes")

    sub = command("announce", "send a system message to a room or everyone")
    sub.add_argument("text")
    sub.add_argument("--room", help="only this room (default: everyone)")

    sub = command("audit", "show the audit log, newest first")
    sub.add_argument("--limit", type=int, default=50)
    sub.add_argument("--before", type=int, help="entries older than this id")

    sub = command("account", "reset, lock or unlock a registered name (audit-logged)")
    sub.add_argument("action", choices=("reset", "lock", "unlock"))
    sub.add_argument("name", help="the registered name")

    command("stats", "server stats: connections, rooms, rates, memory")
    command("rooms", "the largest rooms and their message rates")
    sub = command("delete", "remove a message from history and from every client's view")
    sub.add_argument("room")
    sub.add_argument("msg_id", type=int, metavar="ID")

    sub = command("bulk", "kick, mute or ban several connections at once")
    sub.add_argument("op", choices=("kick", "mute", "ban"))
    sub.add_argument("conn_ids", type=int, nargs="+", metavar="CONN_ID")
    sub.add_argument("--by", choices=BAN_BY, help="for ban")
    sub.add_argument("--duration", default=None, help="for mute and ban: 30s, 10m, 2h, 1d, 1w")
    sub.add_argument("--reason", default="")

    command("whoami", "the operator this token belongs to, and its role")
    command("operators", "the declared operators and their roles (admin only)")

    sub = commands.add_parser(
        "hash-token",
        help="make an operator token and the token_hash for the config file (no server)",
        description="Print a new random operator token and its token_hash for [[operators]]. "
        "With --stdin, hash a token you chose instead (scrypt, as for a password).",
    )
    sub.add_argument("--stdin", action="store_true", help="read the token from standard input")
    return parser


def _add_common(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--url", default=default, help=f"server URL (default {DEFAULT_URL})")
    parser.add_argument("--token", default=default, help="admin token")
    parser.add_argument(
        "--json", action="store_true", default=default or False, help="print the API's JSON"
    )


def plan(args: argparse.Namespace) -> Call:
    """The API call for parsed arguments (raises AdminError on a bad combination)."""
    command: str = args.command
    if command == "connections":
        query = {
            "q": args.q,
            "name": args.name,
            "room": args.room,
            "address": args.address,
            "sort": args.sort,
            "page": str(args.page),
            "per_page": str(args.per_page),
        }
        return Call("GET", "connections", {k: v for k, v in query.items() if v})
    if command == "kick":
        if (args.conn_id is None) == (args.name is None):
            raise AdminError("kick needs a connection id or --name (not both)")
        if args.conn_id is not None:
            return Call("POST", f"connections/{args.conn_id}/kick", body={"reason": args.reason})
        return Call("POST", "kick", body={"name": args.name, "reason": args.reason})
    if command == "ban":
        fields = ("name", "address", "account", "subject", "conn_id", "by", "duration", "reason")
        return Call("POST", "bans", body=_fields(args, *fields))
    if command == "mute":
        body = _fields(args, "name", "user_id", "conn_id", "duration", "reason")
        return Call("POST", "mutes", body=body)
    if command == "unban":
        return Call("DELETE", f"bans/{args.ban_id}")
    if command == "unmute":
        return Call("DELETE", f"mutes/{args.mute_id}")
    if command == "announce":
        return Call("POST", "announce", body=_fields(args, "text", "room"))
    if command == "delete":
        return Call(
            "DELETE", f"rooms/{quote(args.room.lstrip('#'), safe='')}/messages/{args.msg_id}"
        )
    if command == "bulk":
        return Call(
            "POST", "bulk", body=_fields(args, "op", "conn_ids", "by", "duration", "reason")
        )
    if command == "audit":
        query = {"limit": str(args.limit)}
        if args.before is not None:
            query["before"] = str(args.before)
        return Call("GET", "audit", query)
    if command == "account":
        return Call("POST", f"accounts/{quote(args.name, safe='')}/{args.action}")
    return Call("GET", command)  # bans, mutes, stats, rooms, whoami, operators


def _fields(args: argparse.Namespace, *names: str) -> Json:
    return {name: getattr(args, name) for name in names if getattr(args, name) not in (None, "")}


# --------------------------------------------------------------------------- HTTP


def server_url(text: str) -> str:
    """The server's base URL from what the user typed: ``host:port`` means
    ``http://host:port``; a ``ws://`` URL means its ``http://`` twin."""
    text = text.strip()
    if "://" not in text:
        text = "http://" + text
    scheme = text.split("://", 1)[0].lower()
    if scheme not in ("http", "https", "ws", "wss"):
        raise AdminError(f"--url {text}: use http://HOST:PORT (or https://, ws://, wss://)")
    host = text.split("://", 1)[1].split("/", 1)[0]
    if not host or host.startswith(":"):
        raise AdminError(f"--url {text}: no host; use e.g. http://127.0.0.1:8765")
    return text


def api_base(url: str) -> str:
    url = server_url(url).rstrip("/")
    if url.startswith(("ws://", "wss://")):
        url = "http" + url[2:]
    for suffix in ("/admin/api", "/admin", "/ws"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    return url + "/admin/api/"


async def perform(url: str, token: str, call: Call) -> Json:
    """Make one API call; the decoded JSON answer, or AdminError with the server's words."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(
                call.method,
                api_base(url) + call.path,
                params=call.query,
                json=call.body,
                headers=headers,
            ) as response,
        ):
            text = await response.text()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise AdminError(f"cannot reach {url}: {connect_error_words(exc)}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise AdminError(f"HTTP {status} from {url}: not JSON: {text[:200]!r}") from None
    if status >= 400 or not isinstance(data, dict):
        error = data.get("error") if isinstance(data, dict) else None
        error = error if isinstance(error, dict) else {}
        message, code = error.get("message", text[:200]), error.get("code", status)
        raise AdminError(f"{message} ({code}, HTTP {status})")
    return data


# --------------------------------------------------------------------------- output


def clean(value: object) -> str:
    """A cell's text with control characters escaped (names are text, not terminal codes)."""
    text = "" if value is None else str(value)
    return "".join(
        ch if ch >= " " and not "\x7f" <= ch <= "\x9f" else f"\\x{ord(ch):02x}" for ch in text
    )


def table(rows: Sequence[Json], columns: Sequence[tuple[str, str]], out: TextIO) -> None:
    """Print ``rows`` as an aligned table of the given (key, heading) columns."""
    cells = [[clean(_cell(row, key)) for key, _ in columns] for row in rows]
    headings = [heading for _, heading in columns]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headings)]
    out.write("  ".join(h.ljust(w) for h, w in zip(headings, widths, strict=True)).rstrip() + "\n")
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _cell(row: Json, key: str) -> object:
    value = row.get(key)
    if key in {"connected_at", "last_activity", "created", "ts"} and isinstance(value, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value))
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return value


CONNECTION_COLUMNS = [
    ("id", "ID"),
    ("name", "NAME"),
    ("user_id", "USER"),
    ("identity", "IDENTITY"),
    ("account", "ACCOUNT"),
    ("rooms", "ROOMS"),
    ("address", "ADDRESS"),
    ("dialect", "DIALECT"),
    ("connected_at", "SINCE (UTC)"),
    ("messages_in", "IN"),
    ("messages_out", "OUT"),
    ("bytes_out", "BYTES_OUT"),
    ("buffer_fill", "BUFFER"),
    ("node", "NODE"),
]
BAN_COLUMNS = [
    ("id", "ID"),
    ("name", "NAME"),
    ("address", "ADDRESS"),
    ("subject", "SUBJECT"),
    ("until_text", "UNTIL"),
    ("reason", "REASON"),
    ("actor", "BY"),
]
MUTE_COLUMNS = [
    ("id", "ID"),
    ("user_id", "USER"),
    ("name", "NAME"),
    ("until_text", "UNTIL"),
    ("reason", "REASON"),
    ("actor", "BY"),
]
AUDIT_COLUMNS = [
    ("id", "ID"),
    ("time", "WHEN"),
    ("actor", "WHO"),
    ("action", "ACTION"),
    ("target", "TARGET"),
    ("reason", "REASON"),
    ("detail", "DETAIL"),
]
ROOM_COLUMNS = [
    ("name", "ROOM"),
    ("members", "MEMBERS"),
    ("messages", "MESSAGES"),
    ("rate", "MSGS/S"),
]


def show(command: str, data: Json, out: TextIO) -> None:
    """Print an answer for people."""
    printers: dict[str, Callable[[], None]] = {
        "connections": lambda: _show_connections(data, out),
        "bans": lambda: table(data["bans"], BAN_COLUMNS, out),
        "mutes": lambda: table(data["mutes"], MUTE_COLUMNS, out),
        "audit": lambda: table(data["entries"], AUDIT_COLUMNS, out),
        "rooms": lambda: table(data["rooms"], ROOM_COLUMNS, out),
        "stats": lambda: _show_stats(data, out),
        "whoami": lambda: _show_whoami(data, out),
        "operators": lambda: table(data["operators"], [("name", "NAME"), ("role", "ROLE")], out),
    }
    printer = printers.get(command)
    if printer is not None:
        printer()
    else:
        out.write(clean(data.get("message", "done")) + "\n")


def _show_whoami(data: Json, out: TextIO) -> None:
    operator = data["operator"]
    out.write(f"{clean(operator['name'])} ({clean(operator['role'])})\n")


def _show_connections(data: Json, out: TextIO) -> None:
    table(data["connections"], CONNECTION_COLUMNS, out)
    out.write(f"({data['total']} total, page {data['page']} of {data['pages']})\n")


def _show_stats(data: Json, out: TextIO) -> None:
    uptime = int(data.get("uptime", 0))
    rows = [
        ("connections", data.get("connections")),
        ("users", data.get("users")),
        ("rooms", data.get("rooms")),
        ("messages in/s", data.get("in_rate")),
        ("deliveries/s", data.get("out_rate")),
        ("messages in (total)", data.get("messages_in")),
        ("deliveries (total)", data.get("deliveries")),
        ("uptime", f"{uptime // 3600}h {uptime % 3600 // 60}m {uptime % 60}s"),
        ("memory (RSS)", f"{int(data.get('rss_bytes', 0)) / 2**20:.1f} MiB"),
        ("active bans", data.get("bans")),
        ("active mutes", data.get("mutes")),
        ("node", data.get("node")),
    ]
    for label, value in rows:
        out.write(f"{label + ':':<22}{clean(value)}\n")


# --------------------------------------------------------------------------- main


def hash_token_command(from_stdin: bool, stdin: TextIO, out: TextIO) -> int:
    """Print a token and its hash (or only the hash of a token read from stdin)."""
    from dashboard.roles import hash_token, new_token

    if from_stdin:
        token = stdin.readline().strip()
        if len(token) < 12:
            print("chatserver admin: a chosen token needs at least 12 characters", file=sys.stderr)
            return 2
        out.write(f'token_hash = "{hash_token(token, slow=True)}"\n')
        return 0
    token = new_token()
    out.write(f"token = {token}\n")
    out.write(f'token_hash = "{hash_token(token, slow=False)}"\n')
    out.write("# Give the token to the operator; put only token_hash in [[operators]].\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command == "hash-token":
        return hash_token_command(args.stdin, sys.stdin, sys.stdout)
    url = args.url or os.environ.get("CHAT_ADMIN_URL") or DEFAULT_URL
    token = args.token or os.environ.get("CHAT_ADMIN_TOKEN", "")
    if not token:
        print("chatserver admin: no token: use --token or CHAT_ADMIN_TOKEN", file=sys.stderr)
        return 2
    try:
        url = server_url(url)
        call = plan(args)
    except AdminError as exc:
        print(f"chatserver admin: {exc}", file=sys.stderr)
        return 2
    try:
        data = asyncio.run(perform(url, token, call))
    except AdminError as exc:
        print(f"chatserver admin: {clean(exc)}", file=sys.stderr)
        return 1
    try:
        if args.json:
            json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
            sys.stdout.write("\n")
        else:
            show(args.command, data, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (e.g. `| head`) has gone; that is not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
