"""Bans, mutes, kicks, announcements and the audit log of operator actions.

:class:`Restrictions` answers the hub's two hot-path questions, ``find_ban``
(on connect and on every change of name) and ``mute_reason`` (on every
message), from memory: the active
bans and mutes, loaded from the moderation store and reloaded when any node
changes them. :class:`Moderation` carries out operator actions: each is
written to the store together with its audit entry first (a failed write
leaves no trace), then takes effect in memory, and is sent to every node
through the broker, so it applies wherever the target is connected.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Literal, TypeVar

from .broker import Broker, KickConnection, ModerationChanged
from .connection import Connection
from .errors import CommandError
from .hub import CLOSE_KICKED, Hub
from .modstore import (
    MAX_CLOSE_REASON_BYTES,
    RECENT_AUDIT,
    AuditEntry,
    Ban,
    ModerationStore,
    Mute,
    fit_utf8,
    format_time,
    until_text,
)
from .protocol import MAX_NAME_CHARS, name_key, validate_room, validate_text
from .text import check_line
from .tokens import MAX_SUBJECT_CHARS

__all__ = ["AuditEntry", "Ban", "Moderation", "Mute", "Restrictions", "format_time", "until_text"]

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 200
MAX_DURATION = 10 * 365 * 86400.0

Change = Literal["bans", "mutes", "audit"]
ChangeListener = Callable[[Change], None]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_K = TypeVar("_K")
_V = TypeVar("_V")

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_PERMANENT = {"", "0", "permanent", "forever", "never"}


# --------------------------------------------------------------------------- values


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


def clean_subject(subject: str) -> str:
    """A site token's ``sub`` as the chat keeps it (exact, not case-folded: it is
    the site's id, which the chat does not interpret)."""
    if not 1 <= len(subject) <= MAX_SUBJECT_CHARS:
        raise CommandError("bad_request", f"a subject has 1 to {MAX_SUBJECT_CHARS} characters")
    if any(ch < " " or ch == "\x7f" for ch in subject):
        raise CommandError("bad_request", "a subject cannot contain control characters")
    return subject


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


def describe(conn: Connection) -> str:
    return f"conn {conn.conn_id} {conn.name} (user {conn.user.id}, {conn.remote})"


# --------------------------------------------------------------------------- restrictions


class Restrictions:
    """The bans and mutes in force, indexed for the hub's hot paths."""

    def __init__(self, store: ModerationStore) -> None:
        self.store = store
        self.bans: dict[int, Ban] = {}
        self.mutes: dict[int, Mute] = {}
        self.recent_audit: deque[AuditEntry] = deque(maxlen=RECENT_AUDIT)
        self.listeners: list[ChangeListener] = []
        self._ban_names: dict[str, dict[int, Ban]] = {}
        self._ban_addresses: dict[str, dict[int, Ban]] = {}
        self._ban_networks: list[tuple[Network, Ban]] = []
        self._ban_users: dict[int, dict[int, Ban]] = {}
        self._ban_subjects: dict[str, dict[int, Ban]] = {}
        self._mute_users: dict[int, dict[int, Mute]] = {}
        self._mute_names: dict[str, dict[int, Mute]] = {}

    async def reload(self) -> None:
        """Replace the in-memory view with what the store holds now."""
        active = await self.store.active()
        bans_changed = set(self.bans) != {ban.id for ban in active.bans}
        mutes_changed = set(self.mutes) != {mute.id for mute in active.mutes}
        self.bans.clear()
        self.mutes.clear()
        self._ban_names.clear()
        self._ban_addresses.clear()
        self._ban_networks = []
        self._ban_users.clear()
        self._ban_subjects.clear()
        self._mute_users.clear()
        self._mute_names.clear()
        for ban in active.bans:
            self.add_ban(ban)
        for mute in active.mutes:
            self.add_mute(mute)
        known = {entry.id for entry in self.recent_audit}
        fresh = [entry for entry in active.audit if entry.id not in known]
        for entry in fresh:
            self.recent_audit.append(entry)
        for what, changed in (("bans", bans_changed), ("mutes", mutes_changed), ("audit", fresh)):
            if changed:
                self.changed(what)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ hot paths

    def find_ban(
        self, name: str, address: str, user_id: int | None = None, subject: str | None = None
    ) -> Ban | None:
        """The longest ban in force for this name, address, user id or token subject."""
        now = time.time()
        candidates: list[Ban] = []
        buckets = [self._ban_names.get(name_key(name))]
        if user_id is not None:
            buckets.append(self._ban_users.get(user_id))
        if subject:
            buckets.append(self._ban_subjects.get(subject))
        for bucket in buckets:
            if bucket:
                candidates.extend(bucket.values())
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

    # ------------------------------------------------------------------ reading

    def active_bans(self) -> list[Ban]:
        now = time.time()
        return sorted((ban for ban in self.bans.values() if ban.active(now)), key=_by_id)

    def active_mutes(self) -> list[Mute]:
        now = time.time()
        return sorted((mute for mute in self.mutes.values() if mute.active(now)), key=_by_id)

    def expire(self) -> None:
        """Forget bans and mutes whose time is up (lookups ignore them already)."""
        now = time.time()
        bans = [ban for ban in self.bans.values() if not ban.active(now)]
        for ban in bans:
            self.remove_ban(ban)
        mutes = [mute for mute in self.mutes.values() if not mute.active(now)]
        for mute in mutes:
            self.remove_mute(mute)
        if bans:
            self.changed("bans")
        if mutes:
            self.changed("mutes")

    # ------------------------------------------------------------------ indexes

    def add_ban(self, ban: Ban) -> None:
        self.bans[ban.id] = ban
        if ban.name:
            self._ban_names.setdefault(name_key(ban.name), {})[ban.id] = ban
        if ban.user_id is not None:
            self._ban_users.setdefault(ban.user_id, {})[ban.id] = ban
        if ban.subject:
            self._ban_subjects.setdefault(ban.subject, {})[ban.id] = ban
        if ban.address and "/" in ban.address:
            self._ban_networks.append((ipaddress.ip_network(ban.address), ban))
        elif ban.address:
            self._ban_addresses.setdefault(ban.address, {})[ban.id] = ban

    def remove_ban(self, ban: Ban) -> None:
        self.bans.pop(ban.id, None)
        if ban.name:
            _discard(self._ban_names, name_key(ban.name), ban.id)
        if ban.user_id is not None:
            _discard(self._ban_users, ban.user_id, ban.id)
        if ban.subject:
            _discard(self._ban_subjects, ban.subject, ban.id)
        if ban.address and "/" in ban.address:
            self._ban_networks = [(n, b) for n, b in self._ban_networks if b is not ban]
        elif ban.address:
            _discard(self._ban_addresses, ban.address, ban.id)

    def add_mute(self, mute: Mute) -> None:
        self.mutes[mute.id] = mute
        if mute.user_id is not None:
            self._mute_users.setdefault(mute.user_id, {})[mute.id] = mute
        if mute.name:
            self._mute_names.setdefault(name_key(mute.name), {})[mute.id] = mute

    def remove_mute(self, mute: Mute) -> None:
        self.mutes.pop(mute.id, None)
        if mute.user_id is not None:
            _discard(self._mute_users, mute.user_id, mute.id)
        if mute.name:
            _discard(self._mute_names, name_key(mute.name), mute.id)

    def record(self, entry: AuditEntry) -> None:
        if all(known.id != entry.id for known in self.recent_audit):
            self.recent_audit.append(entry)
            self.changed("audit")

    def changed(self, what: Change) -> None:
        for listener in list(self.listeners):
            try:
                listener(what)
            except Exception:
                log.exception("moderation listener failed")


# --------------------------------------------------------------------------- moderation


class Moderation:
    """The operator's powers: store first, then memory, then every node."""

    def __init__(
        self, hub: Hub, restrictions: Restrictions, store: ModerationStore, broker: Broker
    ) -> None:
        self.hub = hub
        self.restrictions = restrictions
        self.store = store
        self.broker = broker

    # The dashboard reads these through the moderation object.
    @property
    def listeners(self) -> list[ChangeListener]:
        return self.restrictions.listeners

    @property
    def recent_audit(self) -> deque[AuditEntry]:
        return self.restrictions.recent_audit

    def active_bans(self) -> list[Ban]:
        return self.restrictions.active_bans()

    def active_mutes(self) -> list[Mute]:
        return self.restrictions.active_mutes()

    def expire(self) -> None:
        self.restrictions.expire()

    # ------------------------------------------------------------------ actions

    async def kick(self, conn: Connection, reason: str, actor: str) -> AuditEntry:
        """Close ``conn`` with 4500; its rooms see ``NAME was kicked (reason)``."""
        reason = clean_reason(reason)
        entry = await self._audit(actor, "kick", describe(conn), reason)
        # "kicked: " + reason must fit a close frame, or the frame is invalid UTF-8.
        close_text = fit_utf8(reason, MAX_CLOSE_REASON_BYTES - len("kicked: "))
        self.broker.control(
            KickConnection(
                conn.conn_id, CLOSE_KICKED, close_text or "kicked by an operator", reason
            )
        )
        return entry

    async def kick_id(self, conn_id: int, reason: str, actor: str) -> AuditEntry:
        """Kick connection ``conn_id`` on whichever node serves it."""
        conn = self.hub.find(conn_id)
        if conn is not None:
            return await self.kick(conn, reason, actor)
        info = await self.hub.directory.locate(conn_id)
        if info is None:
            raise CommandError("not_found", f"connection {conn_id} is not connected")
        reason = clean_reason(reason)
        target = (
            f"conn {conn_id} {info.name} (user {info.user_id}, {info.address}, node {info.node})"
        )
        entry = await self._audit(actor, "kick", target, reason)
        close_text = fit_utf8(reason, MAX_CLOSE_REASON_BYTES - len("kicked: "))
        command = KickConnection(
            conn_id, CLOSE_KICKED, close_text or "kicked by an operator", reason
        )
        self.broker.control(command, info.node)
        return entry

    async def ban(
        self,
        *,
        name: str | None,
        address: str | None,
        duration: float | None,
        reason: str,
        actor: str,
        subject: str | None = None,
        user_id: int | None = None,
    ) -> tuple[Ban, int]:
        """Ban a name, an address, a token subject and/or a user id; kick matching
        live connections on every node. Returns the ban and how many connections
        this node closed."""
        name = clean_name(name) if name else None
        address = clean_address(address) if address else None
        subject = clean_subject(subject) if subject else None
        if name is None and address is None and subject is None and user_id is None:
            raise CommandError("bad_request", "a ban needs a name, an address or a subject")
        if subject:
            # The user id is what a resumed session or a live connection carries.
            user_id = await self.hub.directory.subject_user(subject)
        reason = clean_reason(reason)
        now = time.time()
        until = None if duration is None else now + duration
        draft = Ban(0, name, address, reason, actor, now, until, subject, user_id)
        matches = sum(
            _ban_matches(draft, conn.name, normalize_address(conn.remote), conn.user.id)
            for conn in self.hub.connections.values()
        )
        detail = f"{until_text(until)}; {matches} connection(s) closed"
        ban, entry = await self.store.add_ban(
            draft, self._draft(actor, "ban", draft.target(), reason, detail)
        )
        self.restrictions.add_ban(ban)
        self.restrictions.record(entry)
        kicked = self.hub.enforce_bans()
        self.restrictions.changed("bans")
        self.broker.control(ModerationChanged("bans"))
        return ban, kicked

    async def lift_ban(self, ban_id: int, actor: str) -> Ban:
        ban = self.restrictions.bans.get(ban_id)
        if ban is None:
            raise CommandError("not_found", f"no active ban {ban_id}")
        target = f"ban {ban_id} {ban.target()}"
        entry = await self.store.lift("ban", ban_id, actor, self._draft(actor, "unban", target))
        self.restrictions.remove_ban(ban)
        self.restrictions.record(entry)
        self.restrictions.changed("bans")
        self.broker.control(ModerationChanged("bans"))
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
        until = None if duration is None else now + duration
        draft = Mute(0, user_id, name, reason, actor, now, until)
        mute, entry = await self.store.add_mute(
            draft, self._draft(actor, "mute", draft.target(), reason, until_text(until))
        )
        self.restrictions.add_mute(mute)
        self.restrictions.record(entry)
        self.restrictions.changed("mutes")
        self.broker.control(ModerationChanged("mutes", user_id, name, mute.notice()))
        return mute

    async def unmute(self, mute_id: int, actor: str) -> Mute:
        mute = self.restrictions.mutes.get(mute_id)
        if mute is None:
            raise CommandError("not_found", f"no active mute {mute_id}")
        target = f"mute {mute_id} {mute.target()}"
        entry = await self.store.lift("mute", mute_id, actor, self._draft(actor, "unmute", target))
        self.restrictions.remove_mute(mute)
        self.restrictions.record(entry)
        self.restrictions.changed("mutes")
        still = mute.user_id is not None and self.restrictions.find_mute(
            mute.user_id, mute.name or ""
        )
        notice = "" if still else "You are no longer muted."
        self.broker.control(ModerationChanged("mutes", mute.user_id, mute.name, notice))
        return mute

    async def announce(self, text: str, room: str | None, actor: str) -> int:
        """A system message to ``room`` or everyone; returns the number of recipients
        on this node."""
        validate_text(text)
        limit = self.hub.settings.max_message_bytes
        if limit and len(text.encode("utf-8")) > limit:
            raise CommandError("bad_request", f"an announcement has at most {limit} bytes")
        if room:
            room = validate_room(room)
            members = await self.hub.who(room)
            if not members:
                raise CommandError("not_found", f"no one is in #{room}")
            recipients = len(members)
        else:
            recipients = len(self.hub.connections)
        await self._audit(actor, "announce", f"#{room}" if room else "everyone", "", text)
        self.hub.announce(text, room or None)
        return recipients

    async def delete_message(self, room: str, msg_id: int, actor: str) -> bool:
        """Remove message ``msg_id`` of ``room`` from history and from every client's view.

        False if no such message was ever sent. Without stored history there is
        no row to remove, but clients still hide it. The audit entry's target is
        the room and its detail the id.
        """
        room = validate_room(room)
        log_ = self.hub.room_log
        existed = await log_.delete(room, msg_id)
        if not existed and not self.hub.settings.history:
            existed = 0 < msg_id <= (await log_.heads([room]))[room].last_id
        if existed:
            await self._audit(actor, "delete", f"#{room}", "", str(msg_id))
            self.hub.delete(room, msg_id)
        return existed

    async def record(self, actor: str, action: str, target: str, detail: str = "") -> None:
        """An audit entry for something that is not a moderation action (a login)."""
        await self._audit(actor, action, target, "", detail)

    async def audit_page(self, limit: int, before: int | None) -> tuple[list[AuditEntry], bool]:
        return await self.store.audit_page(limit, before)

    # ------------------------------------------------------------------ internals

    def _draft(
        self, actor: str, action: str, target: str, reason: str = "", detail: str = ""
    ) -> AuditEntry:
        return AuditEntry(0, time.time(), actor, action, target, reason, detail)

    async def _audit(
        self, actor: str, action: str, target: str, reason: str, detail: str = ""
    ) -> AuditEntry:
        entry = await self.store.add_audit(self._draft(actor, action, target, reason, detail))
        log.info(
            "audit: %s %s %s (%s) %s",
            entry.actor,
            entry.action,
            entry.target,
            entry.reason,
            entry.detail,
        )
        self.restrictions.record(entry)
        return entry


_Timed = TypeVar("_Timed", Ban, Mute)


def _ban_matches(ban: Ban, name: str, address: str, user_id: int) -> bool:
    if ban.name and name_key(ban.name) == name_key(name):
        return True
    if ban.user_id is not None and ban.user_id == user_id:
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
