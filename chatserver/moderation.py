"""Bans, mutes, kicks, announcements and the audit log of operator actions.

The hub asks two questions on its hot paths, ``ban_reason`` (on connect) and
``mute_reason`` (on every message); both are dictionary lookups in memory.
Every action changes memory first, so it takes effect at once, and is then
written to SQLite on the store's thread together with its audit entry, so
bans, mutes and the log survive a restart (``open`` loads the active ones).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import re
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

from .connection import Connection
from .errors import CommandError
from .hub import Hub
from .protocol import (
    MAX_NAME_CHARS,
    Rendered,
    SystemEvent,
    name_key,
    validate_room,
    validate_text,
)
from .store import Store
from .text import check_line

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 200
MAX_DURATION = 10 * 365 * 86400.0
MAX_CLOSE_REASON_BYTES = 120  # a close frame's reason is at most 123 bytes
RECENT_AUDIT = 200

SCHEMA = """
CREATE TABLE IF NOT EXISTS bans (
    id INTEGER PRIMARY KEY, name TEXT, address TEXT, reason TEXT NOT NULL,
    actor TEXT NOT NULL, created REAL NOT NULL, until REAL,
    lifted REAL, lifted_by TEXT
);
CREATE TABLE IF NOT EXISTS mutes (
    id INTEGER PRIMARY KEY, user_id INTEGER, name TEXT, reason TEXT NOT NULL,
    actor TEXT NOT NULL, created REAL NOT NULL, until REAL,
    lifted REAL, lifted_by TEXT
);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL
);
"""

_ACTIVE_BANS = (
    "SELECT id, name, address, reason, actor, created, until FROM bans "
    "WHERE lifted IS NULL AND (until IS NULL OR until > ?)"
)
_ACTIVE_MUTES = (
    "SELECT id, user_id, name, reason, actor, created, until FROM mutes "
    "WHERE lifted IS NULL AND (until IS NULL OR until > ?)"
)
_RECENT_AUDIT = (
    "SELECT id, ts, actor, action, target, reason, detail FROM audit_log ORDER BY id DESC LIMIT ?"
)
_MAX_IDS = (
    "SELECT MAX(id) FROM bans",
    "SELECT MAX(id) FROM mutes",
    "SELECT MAX(id) FROM audit_log",
)

Change = Literal["bans", "mutes", "audit"]
ChangeListener = Callable[[Change], None]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_K = TypeVar("_K")
_V = TypeVar("_V")

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_PERMANENT = {"", "0", "permanent", "forever", "never"}


# --------------------------------------------------------------------------- values


def format_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def fit_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8 without splitting a character."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - 3].decode("utf-8", "ignore") + "..."


def parse_duration(value: float | str | None) -> float | None:
    """Seconds from ``90``, ``"90"``, ``"30s"``, ``"10m"``, ``"2h"``, ``"1d"``, ``"1w"``;
    None (permanent) for None, 0, ``""`` or ``"permanent"``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise CommandError("bad_request", "duration must be seconds or a text like 10m")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().lower()
        if text in _PERMANENT:
            return None
        match = _DURATION_RE.fullmatch(text)
        if match is None:
            raise CommandError(
                "bad_request", f"bad duration {value!r}: use seconds or 30s, 10m, 2h, 1d, 1w"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds != seconds or seconds < 0 or seconds > MAX_DURATION:
        raise CommandError("bad_request", "duration must be between 0 and 10 years")
    return seconds or None


def clean_reason(reason: str, default: str = "no reason given") -> str:
    reason = " ".join(reason.split())
    if len(reason) > MAX_REASON_CHARS:
        raise CommandError("bad_request", f"a reason has at most {MAX_REASON_CHARS} characters")
    check_line(reason, "a reason", "bad_request")
    return reason or default


def clean_name(name: str) -> str:
    if not 1 <= len(name) <= MAX_NAME_CHARS or name != name.strip():
        raise CommandError("bad_request", f"a name has 1 to {MAX_NAME_CHARS} characters")
    if any(ch < " " or ch == "\x7f" for ch in name):
        raise CommandError("bad_request", "a name cannot contain control characters")
    return name


def normalize_address(address: str) -> str:
    """The canonical text of an IP address (IPv4-mapped IPv6 as IPv4); others unchanged."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def clean_address(address: str) -> str:
    """An IP address or a network (``10.0.0.0/8``) in canonical form, else an error."""
    address = address.strip()
    try:
        if "/" in address:
            return str(ipaddress.ip_network(address, strict=False))
        return normalize_address(str(ipaddress.ip_address(address)))
    except ValueError:
        raise CommandError("bad_request", f"not an IP address or network: {address!r}") from None


@dataclasses.dataclass(slots=True)
class Ban:
    """A ban of a name (case-insensitive), an address or network, or both."""

    id: int
    name: str | None
    address: str | None
    reason: str
    actor: str
    created: float
    until: float | None  # None: until lifted

    def active(self, now: float) -> bool:
        return self.until is None or self.until > now

    def close_reason(self) -> str:
        """The close reason a refused client gets; it says until when."""
        when = "permanently" if self.until is None else f"until {format_time(self.until)}"
        return fit_utf8(f"banned {when}: {self.reason}", MAX_CLOSE_REASON_BYTES)

    def target(self) -> str:
        parts = []
        if self.name:
            parts.append(f"name={self.name}")
        if self.address:
            parts.append(f"address={self.address}")
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "until_text": until_text(self.until)}


@dataclasses.dataclass(slots=True)
class Mute:
    """A mute of a user id, a name (case-insensitive), or both."""

    id: int
    user_id: int | None
    name: str | None
    reason: str
    actor: str
    created: float
    until: float | None

    def active(self, now: float) -> bool:
        return self.until is None or self.until > now

    def error_text(self) -> str:
        """What a muted user is told when they post; it says until when."""
        return f"you are muted {self._when()} ({self.reason})"

    def notice(self) -> str:
        """What a live user is told when muted."""
        return f"An operator muted you {self._when()} ({self.reason})."

    def _when(self) -> str:
        if self.until is None:
            return "until an operator unmutes you"
        return f"until {format_time(self.until)}"

    def target(self) -> str:
        parts = []
        if self.user_id is not None:
            parts.append(f"user_id={self.user_id}")
        if self.name:
            parts.append(f"name={self.name}")
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "until_text": until_text(self.until)}


@dataclasses.dataclass(slots=True, frozen=True)
class AuditEntry:
    """One operator action: who did what to whom, why and when."""

    id: int
    ts: float
    actor: str
    action: str
    target: str
    reason: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "time": format_time(self.ts)}


def until_text(until: float | None) -> str:
    return "until lifted" if until is None else format_time(until)


def describe(conn: Connection) -> str:
    return f"conn {conn.conn_id} {conn.name} (user {conn.user.id}, {conn.remote})"


# --------------------------------------------------------------------------- moderation


class Moderation:
    """The operator's powers over one hub, kept in memory and in SQLite."""

    def __init__(self, hub: Hub, store: Store) -> None:
        self.hub = hub
        self.store = store
        self.bans: dict[int, Ban] = {}
        self.mutes: dict[int, Mute] = {}
        self.recent_audit: deque[AuditEntry] = deque(maxlen=RECENT_AUDIT)
        self.listeners: list[ChangeListener] = []
        self._ban_names: dict[str, dict[int, Ban]] = {}
        self._ban_addresses: dict[str, dict[int, Ban]] = {}
        self._ban_networks: list[tuple[Network, Ban]] = []
        self._mute_users: dict[int, dict[int, Mute]] = {}
        self._mute_names: dict[str, dict[int, Mute]] = {}
        self._next_ban_id = self._next_mute_id = self._next_audit_id = 0

    # ------------------------------------------------------------------ startup

    async def open(self) -> None:
        """Create the tables and load the active bans and mutes (store must be open)."""
        now = time.time()

        def load(db: sqlite3.Connection) -> tuple[list[Any], list[Any], list[Any], list[int]]:
            db.executescript(SCHEMA)
            bans = db.execute(_ACTIVE_BANS, (now,)).fetchall()
            mutes = db.execute(_ACTIVE_MUTES, (now,)).fetchall()
            audit = db.execute(_RECENT_AUDIT, (RECENT_AUDIT,)).fetchall()
            tops = [(db.execute(sql).fetchone() or (0,))[0] or 0 for sql in _MAX_IDS]
            return bans, mutes, audit, tops

        bans, mutes, audit, tops = await self.store.run(load)
        self._next_ban_id, self._next_mute_id, self._next_audit_id = tops
        for row in bans:
            self._add_ban(Ban(*row))
        for row in mutes:
            self._add_mute(Mute(*row))
        for row in reversed(audit):
            self.recent_audit.append(AuditEntry(*row))
        self.hub.listeners.append(self._on_connection_change)
        log.info("moderation: %d active bans, %d active mutes", len(self.bans), len(self.mutes))

    def close(self) -> None:
        if self._on_connection_change in self.hub.listeners:
            self.hub.listeners.remove(self._on_connection_change)

    # ------------------------------------------------------------------ hot paths

    def ban_reason(self, name: str, address: str) -> str | None:
        """The close reason if ``name`` or ``address`` is banned now, else None."""
        ban = self.find_ban(name, address)
        return None if ban is None else ban.close_reason()

    def find_ban(self, name: str, address: str) -> Ban | None:
        now = time.time()
        candidates: list[Ban] = []
        by_name = self._ban_names.get(name_key(name))
        if by_name:
            candidates.extend(by_name.values())
        if self._ban_addresses or self._ban_networks:
            address = normalize_address(address)
            by_address = self._ban_addresses.get(address)
            if by_address:
                candidates.extend(by_address.values())
            if self._ban_networks:
                candidates.extend(self._network_bans(address))
        return _longest((ban for ban in candidates if ban.active(now)), Ban)

    def _network_bans(self, address: str) -> list[Ban]:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return []
        return [ban for network, ban in self._ban_networks if ip in network]

    def mute_reason(self, user_id: int, name: str) -> str | None:
        """The error text if this user is muted now, else None."""
        mute = self.find_mute(user_id, name)
        return None if mute is None else mute.error_text()

    def find_mute(self, user_id: int, name: str) -> Mute | None:
        by_user = self._mute_users.get(user_id)
        by_name = self._mute_names.get(name_key(name))
        if not by_user and not by_name:
            return None
        now = time.time()
        candidates = [*(by_user or {}).values(), *(by_name or {}).values()]
        return _longest((mute for mute in candidates if mute.active(now)), Mute)

    # ------------------------------------------------------------------ actions

    async def kick(self, conn: Connection, reason: str, actor: str) -> AuditEntry:
        """Close ``conn`` with 4500; its rooms see ``NAME was kicked (reason)``."""
        reason = clean_reason(reason)
        target = describe(conn)
        # "kicked: " + reason must fit a close frame, or the frame is invalid UTF-8.
        self.hub.kick(conn, fit_utf8(reason, MAX_CLOSE_REASON_BYTES - len("kicked: ")))
        return await self._audit(actor, "kick", target, reason)

    async def ban(
        self,
        *,
        name: str | None,
        address: str | None,
        duration: float | None,
        reason: str,
        actor: str,
    ) -> tuple[Ban, int]:
        """Ban a name and/or an address; kick matching live connections. Returns the
        ban and how many connections were kicked."""
        name = clean_name(name) if name else None
        address = clean_address(address) if address else None
        if name is None and address is None:
            raise CommandError("bad_request", "a ban needs a name or an address")
        reason = clean_reason(reason)
        now = time.time()
        self._next_ban_id += 1
        ban = Ban(
            self._next_ban_id,
            name,
            address,
            reason,
            actor,
            now,
            None if duration is None else now + duration,
        )
        self._add_ban(ban)
        kicked = self._kick_banned(ban)
        detail = f"{until_text(ban.until)}; {kicked} connection(s) closed"
        await self._persist(
            "INSERT INTO bans (id, name, address, reason, actor, created, until) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ban.id, name, address, reason, actor, now, ban.until),
            self._audit_entry(actor, "ban", ban.target(), reason, detail),
        )
        self._changed("bans")
        return ban, kicked

    def _kick_banned(self, ban: Ban) -> int:
        matches = [
            conn
            for conn in self.hub.connections.values()
            if _ban_matches(ban, conn.name, normalize_address(conn.remote))
        ]
        for conn in matches:
            self.hub.ban_kick(conn, ban.close_reason(), ban.reason)
        return len(matches)

    async def lift_ban(self, ban_id: int, actor: str) -> Ban:
        ban = self.bans.get(ban_id)
        if ban is None:
            raise CommandError("not_found", f"no active ban {ban_id}")
        self._remove_ban(ban)
        await self._persist(
            "UPDATE bans SET lifted = ?, lifted_by = ? WHERE id = ?",
            (time.time(), actor, ban_id),
            self._audit_entry(actor, "unban", f"ban {ban_id} {ban.target()}", "", ""),
        )
        self._changed("bans")
        return ban

    async def mute(
        self,
        *,
        user_id: int | None,
        name: str | None,
        duration: float | None,
        reason: str,
        actor: str,
    ) -> Mute:
        """Mute a user id and/or a name; a live user is told until when."""
        name = clean_name(name) if name else None
        if user_id is None and name is None:
            raise CommandError("bad_request", "a mute needs a user id or a name")
        live = self.hub.users.get(user_id) if user_id is not None else None
        if live is None and name is not None:
            live = self.hub.by_name(name)
        if live is not None:
            # Both keys: renaming does not escape the mute, nor does a new session.
            user_id, name = live.user.id, name or live.name
        reason = clean_reason(reason)
        now = time.time()
        self._next_mute_id += 1
        until = None if duration is None else now + duration
        mute = Mute(self._next_mute_id, user_id, name, reason, actor, now, until)
        self._add_mute(mute)
        if live is not None:
            live.send(Rendered(SystemEvent(text=mute.notice())))
        await self._persist(
            "INSERT INTO mutes (id, user_id, name, reason, actor, created, until) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (mute.id, user_id, name, reason, actor, now, until),
            self._audit_entry(actor, "mute", mute.target(), reason, until_text(until)),
        )
        self._changed("mutes")
        return mute

    async def unmute(self, mute_id: int, actor: str) -> Mute:
        mute = self.mutes.get(mute_id)
        if mute is None:
            raise CommandError("not_found", f"no active mute {mute_id}")
        self._remove_mute(mute)
        live = self.hub.users.get(mute.user_id) if mute.user_id is not None else None
        if live is None and mute.name:
            live = self.hub.by_name(mute.name)
        if live is not None and self.find_mute(live.user.id, live.name) is None:
            live.send(Rendered(SystemEvent(text="You are no longer muted.")))
        await self._persist(
            "UPDATE mutes SET lifted = ?, lifted_by = ? WHERE id = ?",
            (time.time(), actor, mute_id),
            self._audit_entry(actor, "unmute", f"mute {mute_id} {mute.target()}", "", ""),
        )
        self._changed("mutes")
        return mute

    async def announce(self, text: str, room: str | None, actor: str) -> int:
        """A system message to ``room`` or everyone; returns the number of recipients."""
        validate_text(text)
        limit = self.hub.settings.max_message_bytes
        if limit and len(text.encode("utf-8")) > limit:
            raise CommandError("bad_request", f"an announcement has at most {limit} bytes")
        if room:
            room = validate_room(room)
            if room not in self.hub.rooms:
                raise CommandError("not_found", f"no one is in #{room}")
            recipients = len(self.hub.rooms[room].members)
        else:
            recipients = len(self.hub.connections)
        self.hub.announce(text, room or None)
        await self._audit(actor, "announce", f"#{room}" if room else "everyone", "", text)
        return recipients

    async def record(self, actor: str, action: str, target: str, detail: str = "") -> None:
        """An audit entry for something that is not a moderation action (a login)."""
        await self._audit(actor, action, target, "", detail)

    # ------------------------------------------------------------------ reading

    def active_bans(self) -> list[Ban]:
        now = time.time()
        return sorted((ban for ban in self.bans.values() if ban.active(now)), key=_by_id)

    def active_mutes(self) -> list[Mute]:
        now = time.time()
        return sorted((mute for mute in self.mutes.values() if mute.active(now)), key=_by_id)

    async def audit_page(self, limit: int, before: int | None) -> tuple[list[AuditEntry], bool]:
        """The newest ``limit`` entries with id < ``before``, newest first, and whether
        older ones exist."""
        bound = before if before is not None else 2**62
        sql = (
            "SELECT id, ts, actor, action, target, reason, detail FROM audit_log "
            "WHERE id < ? ORDER BY id DESC LIMIT ?"
        )
        rows = await self.store.run(lambda db: db.execute(sql, (bound, limit + 1)).fetchall())
        return [AuditEntry(*row) for row in rows[:limit]], len(rows) > limit

    def expire(self) -> None:
        """Forget bans and mutes whose time is up (lookups ignore them already)."""
        now = time.time()
        bans = [ban for ban in self.bans.values() if not ban.active(now)]
        for ban in bans:
            self._remove_ban(ban)
        mutes = [mute for mute in self.mutes.values() if not mute.active(now)]
        for mute in mutes:
            self._remove_mute(mute)
        if bans:
            self._changed("bans")
        if mutes:
            self._changed("mutes")

    # ------------------------------------------------------------------ internals

    def _on_connection_change(self, change: str, conn: Connection) -> None:
        # A renamed connection may now carry a banned name.
        if change != "update" or not self._ban_names:
            return
        ban = self.find_ban(conn.name, conn.remote)
        if ban is not None and not conn.closed:
            asyncio.get_running_loop().call_soon(self._late_ban_kick, conn, ban)

    def _late_ban_kick(self, conn: Connection, ban: Ban) -> None:
        if self.hub.find(conn.conn_id) is conn:
            self.hub.ban_kick(conn, ban.close_reason(), ban.reason)

    def _add_ban(self, ban: Ban) -> None:
        self.bans[ban.id] = ban
        if ban.name:
            self._ban_names.setdefault(name_key(ban.name), {})[ban.id] = ban
        if ban.address and "/" in ban.address:
            self._ban_networks.append((ipaddress.ip_network(ban.address), ban))
        elif ban.address:
            self._ban_addresses.setdefault(ban.address, {})[ban.id] = ban
        self._next_ban_id = max(self._next_ban_id, ban.id)

    def _remove_ban(self, ban: Ban) -> None:
        self.bans.pop(ban.id, None)
        if ban.name:
            _discard(self._ban_names, name_key(ban.name), ban.id)
        if ban.address and "/" in ban.address:
            self._ban_networks = [(n, b) for n, b in self._ban_networks if b is not ban]
        elif ban.address:
            _discard(self._ban_addresses, ban.address, ban.id)

    def _add_mute(self, mute: Mute) -> None:
        self.mutes[mute.id] = mute
        if mute.user_id is not None:
            self._mute_users.setdefault(mute.user_id, {})[mute.id] = mute
        if mute.name:
            self._mute_names.setdefault(name_key(mute.name), {})[mute.id] = mute
        self._next_mute_id = max(self._next_mute_id, mute.id)

    def _remove_mute(self, mute: Mute) -> None:
        self.mutes.pop(mute.id, None)
        if mute.user_id is not None:
            _discard(self._mute_users, mute.user_id, mute.id)
        if mute.name:
            _discard(self._mute_names, name_key(mute.name), mute.id)

    def _audit_entry(
        self, actor: str, action: str, target: str, reason: str, detail: str
    ) -> AuditEntry:
        self._next_audit_id += 1
        return AuditEntry(self._next_audit_id, time.time(), actor, action, target, reason, detail)

    async def _audit(
        self, actor: str, action: str, target: str, reason: str, detail: str = ""
    ) -> AuditEntry:
        entry = self._audit_entry(actor, action, target, reason, detail)
        await self._persist(None, (), entry)
        return entry

    async def _persist(self, sql: str | None, params: tuple[Any, ...], entry: AuditEntry) -> None:
        """Write one change and its audit entry in one transaction, then publish the entry."""

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")
            try:
                if sql is not None:
                    db.execute(sql, params)
                db.execute(
                    "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?)",
                    dataclasses.astuple(entry),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        log.info(
            "audit: %s %s %s (%s) %s",
            entry.actor,
            entry.action,
            entry.target,
            entry.reason,
            entry.detail,
        )
        self.recent_audit.append(entry)
        self._changed("audit")
        try:
            await self.store.run(write)
        except sqlite3.Error:
            # The action has taken effect in memory; losing its record is the lesser harm.
            log.exception("could not store audit entry %s", entry.id)

    def _changed(self, what: Change) -> None:
        for listener in list(self.listeners):
            try:
                listener(what)
            except Exception:
                log.exception("moderation listener failed")


_Timed = TypeVar("_Timed", Ban, Mute)


def _ban_matches(ban: Ban, name: str, address: str) -> bool:
    if ban.name and name_key(ban.name) == name_key(name):
        return True
    if not ban.address:
        return False
    if "/" not in ban.address:
        return ban.address == address
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(ban.address)
    except ValueError:
        return False


def _longest(items: Iterable[_Timed], _kind: type[_Timed]) -> _Timed | None:
    """The item that lasts longest (a permanent one beats any expiry)."""
    best: _Timed | None = None
    for item in items:
        if best is None or (
            best.until is not None and (item.until is None or item.until > best.until)
        ):
            best = item
    return best


def _by_id(item: Ban | Mute) -> int:
    return item.id


def _discard(index: dict[_K, dict[int, _V]], key: _K, item_id: int) -> None:
    bucket = index.get(key)
    if bucket is not None:
        bucket.pop(item_id, None)
        if not bucket:
            del index[key]
