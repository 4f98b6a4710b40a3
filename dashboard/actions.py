"""Operator actions shared by the JSON API and the dashboard's forms.

Both hand over the request's fields (a JSON object or form fields, so numbers
may arrive as text) and an actor for the audit log; bad input raises
:class:`CommandError` (``bad_request`` or ``not_found``), which each edge
turns into its own answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from chatserver.connection import Connection
from chatserver.directory import ConnInfo
from chatserver.errors import CommandError, Unavailable
from chatserver.hub import Hub
from chatserver.inputs import MAX_INT
from chatserver.moderation import MAX_DURATION, Moderation, parse_duration, until_text
from chatserver.protocol import parse_uint
from chatserver.signin import end_account
from chatserver.text import describe, refused_char

from .rows import connection_row

Fields = Mapping[str, object]
BAN_BY = ("name", "address", "both", "account")


@dataclasses.dataclass(slots=True)
class Outcome:
    """What an action did: a line for the operator and a JSON body for scripts."""

    message: str
    data: dict[str, Any]
    status: int = 200


def text_field(fields: Fields, key: str) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise CommandError("bad_request", f"{key} must be a string")
    if key == "name" and (ch := refused_char(value, name=True)) is not None:
        # The chat refuses such a name, so no live user has it; say so now.
        raise CommandError("bad_request", f"a name cannot contain {describe(ch)}")
    return value.strip() or None


def int_field(fields: Fields, key: str) -> int | None:
    value = fields.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str) and (number := parse_uint(value.strip())) is not None:
        return number
    # Bounded here, where it is parsed: past 2**63 - 1 SQLite cannot store it.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INT:
        return value
    raise CommandError("bad_request", f"{key} must be an integer from 0 to {MAX_INT}")


def duration_field(fields: Fields) -> float | None:
    value = fields.get("duration")
    # float() of an integer with hundreds of digits raises OverflowError.
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_DURATION:
        raise CommandError("bad_request", "duration must be between 0 and 10 years")
    if value is None or (isinstance(value, int | float | str) and not isinstance(value, bool)):
        return parse_duration(value)
    raise CommandError("bad_request", "duration must be seconds or a text like 10m")


def find_connection(hub: Hub, fields: Fields) -> Connection:
    """The live connection named by ``conn_id``, ``user_id`` or ``name``."""
    conn_id, user_id, name = (
        int_field(fields, "conn_id"),
        int_field(fields, "user_id"),
        text_field(fields, "name"),
    )
    if conn_id is not None:
        return live_connection(hub, conn_id)
    if user_id is not None:
        conn = hub.users.get(user_id)
        what = f"user {user_id}"
    elif name is not None:
        conn = hub.by_name(name)
        what = f"user {name!r}"
    else:
        raise CommandError("bad_request", "name a connection: conn_id, user_id or name")
    if conn is None:
        raise CommandError("not_found", f"{what} is not connected")
    return conn


async def _elsewhere(hub: Hub, user_id: int | None, name: str | None) -> int | None:
    """The connection id of a user connected to another node, if one is."""
    live = hub.users.get(user_id) if user_id is not None else None
    if live is None and name is not None:
        live = hub.by_name(name)
    if live is not None or (user_id is None and name is None):
        return None  # here, or not named: the usual path answers
    info = await hub.directory.find_user(user_id, name)
    return None if info is None else info.conn_id


async def located(hub: Hub, conn_id: int) -> ConnInfo:
    """Who connection ``conn_id`` is, on whichever node serves it."""
    conn = hub.find(conn_id)
    if conn is not None:
        return hub.info(conn)
    info = await hub.directory.locate(conn_id)
    if info is None:
        raise CommandError("not_found", f"connection {conn_id} is not connected")
    return info


def live_connection(hub: Hub, conn_id: int) -> Connection:
    conn = hub.find(conn_id)
    if conn is None:
        raise CommandError("not_found", f"connection {conn_id} is not connected")
    return conn


def required_id(fields: Fields, key: str) -> int:
    value = int_field(fields, key)
    if value is None:
        raise CommandError("bad_request", f"{key} is required")
    return value


async def kick(hub: Hub, moderation: Moderation, fields: Fields, actor: str) -> Outcome:
    conn_id = int_field(fields, "conn_id")
    if conn_id is None:
        conn_id = await _elsewhere(hub, int_field(fields, "user_id"), text_field(fields, "name"))
    if conn_id is not None and hub.find(conn_id) is None:
        # Not on this node: the node that serves it closes it.
        entry = await moderation.kick_id(conn_id, text_field(fields, "reason") or "", actor)
        return Outcome(
            f"Kicked connection {conn_id} ({entry.reason}).",
            {"kicked": {"id": conn_id}, "audit": entry.as_dict()},
        )
    conn = find_connection(hub, fields)
    row = connection_row(hub, conn)
    entry = await moderation.kick(conn, text_field(fields, "reason") or "", actor)
    return Outcome(
        f"Kicked {conn.name} ({entry.reason}).", {"kicked": row, "audit": entry.as_dict()}
    )


async def ban(hub: Hub, moderation: Moderation, fields: Fields, actor: str) -> Outcome:
    """Ban a live connection (``conn_id`` and ``by``), a ``name`` and/or ``address``,
    a registered ``account`` (its name, which a logged-in user cannot change), a
    token user's ``subject`` (the site's ``sub``, whatever name the token shows),
    or a ``user_id`` (a message's speaker: their connection if they are live, else
    the id, which a registered or token user keeps on every connection)."""
    name, address = text_field(fields, "name"), text_field(fields, "address")
    subject = text_field(fields, "subject")
    account = text_field(fields, "account")
    if account is not None:
        registered = await hub.directory.account(account)
        if registered is None:
            raise CommandError("not_registered", f"no account is registered as {account!r}")
        name = registered.name
    user_id = int_field(fields, "user_id")
    info = await _ban_connection(hub, int_field(fields, "conn_id"), user_id)
    if info is not None:
        name, address, subject = ban_target(info, text_field(fields, "by") or "name")
        user_id = None  # the live connection says who the user is
    record, kicked = await moderation.ban(
        name=name,
        address=address,
        subject=subject,
        user_id=user_id,
        duration=duration_field(fields),
        reason=text_field(fields, "reason") or "",
        actor=actor,
    )
    return Outcome(
        f"Banned {record.target()} {until_text(record.until)} ({kicked} connection(s) closed).",
        {"ban": record.as_dict(), "kicked": kicked},
        201,
    )


async def _ban_connection(hub: Hub, conn_id: int | None, user_id: int | None) -> ConnInfo | None:
    """The live connection a ban names: ``conn_id``, else ``user_id``'s if that
    user is connected on any node (None: not connected, or not named)."""
    if conn_id is not None:
        return await located(hub, conn_id)
    if user_id is None:
        return None
    live = hub.users.get(user_id)
    if live is not None:
        return hub.info(live)
    return await hub.directory.find_user(user_id, None)


def ban_target(info: ConnInfo, by: str) -> tuple[str | None, str | None, str | None]:
    """The name, address and subject to ban for a live connection.

    ``name`` (and ``account``) mean who the user is: a token user's name is only
    what their current token shows, so their ``sub`` is banned instead; a
    registered user's name is their account. A guest has no account.
    """
    if by not in BAN_BY:
        raise CommandError("bad_request", "by is one of: " + ", ".join(BAN_BY))
    address = info.address if by in {"address", "both"} else None
    if by == "address":
        return None, address, None
    if info.identity == "token" and info.subject:
        return None, address, info.subject
    if by == "account" and info.identity != "registered":
        raise CommandError(
            "bad_request",
            f"connection {info.conn_id} is a guest, with no account: ban its name or address",
        )
    return info.name, address, None


async def unban(hub: Hub, moderation: Moderation, fields: Fields, actor: str) -> Outcome:
    ban_id = required_id(fields, "ban_id")
    record = await moderation.lift_ban(ban_id, actor)
    return Outcome(f"Lifted ban {ban_id} ({record.target()}).", {"lifted": record.as_dict()})


async def mute(hub: Hub, moderation: Moderation, fields: Fields, actor: str) -> Outcome:
    """Mute a live connection (``conn_id``), a ``user_id`` or a ``name``."""
    user_id, name = int_field(fields, "user_id"), text_field(fields, "name")
    conn_id = int_field(fields, "conn_id")
    if conn_id is not None:
        info = await located(hub, conn_id)
        user_id, name = info.user_id, info.name
    record = await moderation.mute(
        user_id=user_id,
        name=name,
        duration=duration_field(fields),
        reason=text_field(fields, "reason") or "",
        actor=actor,
    )
    return Outcome(
        f"Muted {record.target()} {until_text(record.until)}.",
        {"mute": record.as_dict()},
        201,
    )


async def unmute(hub: Hub, moderation: Moderation, fields: Fields, actor: str) -> Outcome:
    record = await moderation.unmute(required_id(fields, "mute_id"), actor)
    return Outcome(f"Unmuted {record.target()}.", {"lifted": record.as_dict()})


async def announce(hub: Hub, moderation: Moderation, fields: Fields, actor: str) -> Outcome:
    text = fields.get("text")
    if not isinstance(text, str):
        raise CommandError("bad_request", "text (a string) is required")
    room = text_field(fields, "room")
    recipients = await moderation.announce(text, room, actor)
    where = f"#{room.lstrip('#')}" if room else "everyone"
    return Outcome(
        f"Announced to {where} ({recipients} recipient(s)).",
        {"room": room, "recipients": recipients},
    )


async def delete(hub: Hub, moderation: Moderation, fields: Fields, actor: str) -> Outcome:
    """Delete message ``id`` of ``room`` from history and from every client's view."""
    room = text_field(fields, "room")
    if room is None:
        raise CommandError("bad_request", "room is required")
    msg_id = required_id(fields, "id")
    if not await moderation.delete_message(room, msg_id, actor):
        raise CommandError("not_found", f"#{room.lstrip('#')} has no message {msg_id}")
    where = room.lstrip("#")
    return Outcome(f"Deleted message {msg_id} of #{where}.", {"room": where, "id": msg_id})


MAX_BULK = 1000
BULK_OPS = ("kick", "mute", "ban")


async def bulk(hub: Hub, moderation: Moderation, fields: Fields, actor: str) -> Outcome:
    """Kick, mute or ban every connection in ``conn_ids`` (e.g. a flood from one network).

    A connection that has gone meanwhile (or was closed by an earlier ban of the
    same address) is skipped and counted, not an error.
    """
    op = text_field(fields, "op")
    if op not in BULK_OPS:
        raise CommandError("bad_request", "op is one of: kick, mute, ban")
    conn_ids = _id_list(fields.get("conn_ids"))
    done: list[int] = []
    for conn_id in conn_ids:
        if hub.find(conn_id) is None:
            continue
        await BY_NAME[op](hub, moderation, {**fields, "conn_id": conn_id}, actor)
        done.append(conn_id)
    verb = {"kick": "Kicked", "mute": "Muted", "ban": "Banned"}[op]
    skipped = len(conn_ids) - len(done)
    gone = f"; {skipped} had already gone" if skipped else ""
    return Outcome(
        f"{verb} {len(done)} connection(s){gone}.",
        {"op": op, "done": done, "skipped": skipped},
    )


def _id_list(value: object) -> list[int]:
    if not isinstance(value, list) or not value:
        raise CommandError("bad_request", "conn_ids: select at least one connection")
    if len(value) > MAX_BULK:
        raise CommandError("bad_request", f"conn_ids: at most {MAX_BULK} at once")
    ids = [int_field({"conn_ids": item}, "conn_ids") for item in value]
    return list(dict.fromkeys(i for i in ids if i is not None))


def account_name(fields: Fields) -> str:
    name = text_field(fields, "name")
    if not name:
        raise CommandError("bad_request", "name (a registered name) is required")
    return name


async def reset_account(hub: Hub, moderation: Moderation, fields: Fields, actor: str) -> Outcome:
    """A new temporary password (shown once, to the operator); the account's sessions end."""
    account, password = await hub.accounts.reset(account_name(fields))
    await end_account(hub, account.user_id, "password reset by an operator")
    await moderation.record(actor, "account_reset", account.name)
    return Outcome(
        f"Reset the password of {account.name}; the temporary password is {password}",
        {"account": account.name, "user_id": account.user_id, "password": password},
    )


async def lock_account(hub: Hub, moderation: Moderation, fields: Fields, actor: str) -> Outcome:
    """Lock (or with ``locked`` false, unlock) an account; locking ends its sessions."""
    locked = fields.get("locked", True) not in {False, "false", "0", "no", "off"}
    account = await hub.accounts.set_locked(account_name(fields), locked)
    if locked:
        await end_account(hub, account.user_id, "account locked by an operator")
    verb = "locked" if locked else "unlocked"
    await moderation.record(actor, f"account_{verb[:-2]}", account.name)
    return Outcome(
        f"{verb.capitalize()} the account {account.name}.",
        {"account": account.name, "user_id": account.user_id, "locked": locked},
    )


# One signature for every action, so both edges can dispatch by name.
Action = Callable[[Hub, Moderation, Fields, str], Awaitable[Outcome]]
BY_NAME: dict[str, Action] = {
    "kick": kick,
    "ban": ban,
    "unban": unban,
    "mute": mute,
    "unmute": unmute,
    "announce": announce,
    "bulk": bulk,
    "delete": delete,
    "reset_account": reset_account,
    "lock_account": lock_account,
}


def status_of(error: CommandError) -> int:
    if isinstance(error, Unavailable):
        return 503
    return {"not_found": 404, "not_registered": 404, "forbidden": 403}.get(error.code, 400)
