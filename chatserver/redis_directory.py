"""The directory in Redis: ids, names, sessions, presence and connections of
every node.

* User and connection ids come from ``INCR`` counters, so they are unique in
  the cluster.
* A name claim is a key holding ``user_id:node:conn_id`` with an expiry that
  its node refreshes (``lua/claim_name.lua``, ``release_name.lua``,
  ``refresh_name.lua``); a dead node's names free themselves.
* Presence is a sorted set per room whose scores are expiry times. Each node
  refreshes its own members every third of ``--presence-ttl``; every node
  also sweeps expired members, and the one whose ``ZREM`` removed a member
  publishes its leave, so a node that died (SIGKILL) costs each of its users
  exactly one leave notice, within the expiry.
* Each node's connections are a hash beside a liveness key, for operators.
* An account is a hash per registered name (``account:<name key>``, created
  by ``lua/create_account.lua`` only if absent); ``subjects`` maps a site's
  user ids (token ``sub``) to ours; ``user-sessions:<id>`` lists a user's
  resume tokens, so a password change can end them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
from redis.asyncio.client import Pipeline

from .accounts import ADDRESS_FACTOR, LOGIN_WINDOW, Account, LoginLimits, limit_keys
from .broker import Broker, TakeOver
from .directory import ConnInfo, Member, SessionRecord
from .errors import Unavailable
from .protocol import LeaveEvent, User, name_key
from .redis_link import RedisLink

log = logging.getLogger(__name__)


class PresenceEntry(msgspec.Struct, array_like=True, frozen=True):
    user_id: int
    name: str
    node: str
    conn_id: int
    joined: float


_encode = msgspec.json.Encoder().encode
_decode_entry = msgspec.json.Decoder(PresenceEntry).decode


class RedisDirectory:
    """Identities, names, sessions and presence for all nodes, in Redis."""

    def __init__(self, link: RedisLink, broker: Broker, *, ttl: float, session_ttl: float) -> None:
        self.link = link
        self.broker = broker
        self.node = broker.node
        self.ttl = ttl
        self.session_ttl = session_ttl
        # What this node asserts, re-asserted on every refresh.
        self.members: dict[tuple[str, int], bytes] = {}
        self.claims: dict[str, str] = {}  # name key -> holder text
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._task = asyncio.create_task(self._refresh_loop(), name="chat-presence")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # The hub has disconnected everyone: send their leaves and releases.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self.link.flush()

    # ------------------------------------------------------------------ ids

    async def new_user_id(self) -> int:
        return int(
            await self.link.call("new user id", self.link.redis.incr(self.link.key("users")))
        )

    async def new_conn_id(self) -> int:
        return int(
            await self.link.call("new conn id", self.link.redis.incr(self.link.key("conns")))
        )

    # ------------------------------------------------------------------ names

    def _holder(self, user_id: int, conn_id: int) -> str:
        return f"{user_id}:{self.node}:{conn_id}"

    async def claim_name(self, name: str, user_id: int, conn_id: int) -> bool:
        key, holder = name_key(name), self._holder(user_id, conn_id)
        script = self.link.scripts["claim_name"]
        args: list[str | int] = [holder, user_id, int(self.ttl)]
        claimed = await self.link.call("claim name", script([self._name_key(key)], args))
        if claimed:
            self.claims[key] = holder
        return bool(claimed)

    def release_name(self, name: str, user_id: int, conn_id: int) -> None:
        key, holder = name_key(name), self._holder(user_id, conn_id)
        if self.claims.get(key) == holder:
            del self.claims[key]
        redis_key = self._name_key(key)
        # By SHA, like appends: a script object would make the shared write
        # batch ask SCRIPT EXISTS first (NOSCRIPT is handled by the batch).
        self.link.later(
            "release name",
            lambda pipe: self.link.evalsha(pipe, "release_name", [redis_key], [holder]),
        )

    async def name_free(self, name: str, user_id: int) -> bool:
        key = self._name_key(name_key(name))
        (holder,) = await self.link.in_order("read name", lambda pipe: pipe.get(key))
        return holder is None or holder.split(b":", 1)[0] == str(user_id).encode()

    def _name_key(self, key: str) -> str:
        return self.link.key("name", key)

    # ------------------------------------------------------------------ sessions

    async def load_session(self, token_hash: str) -> SessionRecord | None:
        key = self.link.key("session", token_hash)
        (raw,) = await self.link.in_order("load session", lambda pipe: pipe.get(key))
        if raw is None:
            return None
        data = json.loads(raw)
        return SessionRecord(
            token_hash,
            data["user_id"],
            data["name"],
            data["rooms"],
            data["expires"],
            data.get("identity", "guest"),
            data.get("allowed"),
            data.get("subject"),
            data.get("token_expires"),
            data.get("generation", 0),
        )

    def save_session(self, record: SessionRecord) -> None:
        self.link.later("save session", self._session_write(record))

    async def persist_session(self, record: SessionRecord) -> None:
        await self.link.in_order("save session", self._session_write(record))

    def _session_write(self, record: SessionRecord) -> Callable[[Pipeline], object]:
        key = self.link.key("session", record.token_hash)
        data = json.dumps(
            {
                "user_id": record.user_id,
                "name": record.name,
                "rooms": record.rooms,
                "expires": record.expires,
                "identity": record.identity,
                "allowed": record.allowed,
                "subject": record.subject,
                "token_expires": record.token_expires,
                "generation": record.generation,
            }
        )
        ttl = max(1, int(record.expires - time.time()))
        index = self.link.key("user-sessions", record.user_id)

        def write(pipe: Pipeline) -> None:
            pipe.set(key, data, ex=ttl)
            pipe.sadd(index, record.token_hash)
            pipe.expire(index, ttl, gt=True)
            pipe.expire(index, ttl, nx=True)

        return write

    async def take_session(self, user_id: int, conn_id: int) -> None:
        key = self.link.key("holder", user_id)
        holder = f"{self.node}|{conn_id}"
        previous = await self.link.call(
            "take session",
            self.link.redis.set(key, holder, ex=int(self.session_ttl) or None, get=True),
        )
        if previous is not None:
            node, _, _ = previous.decode().partition("|")
            if node != self.node:
                self.broker.control(TakeOver(user_id, conn_id), node)

    # ------------------------------------------------------------------ accounts

    def _account_key(self, name: str) -> str:
        return self.link.key("account", name_key(name))

    async def account(self, name: str) -> Account | None:
        key = self._account_key(name)
        (raw,) = await self.link.in_order("load account", lambda pipe: pipe.hgetall(key))
        if not raw:
            return None
        data = {k.decode(): v.decode() for k, v in raw.items()}
        return Account(
            name_key(name),
            data["name"],
            int(data["user_id"]),
            data["password_hash"],
            data.get("locked") == "1",
            float(data.get("created", "0")),
            int(data.get("generation", "0")),
        )

    @staticmethod
    def _account_fields(account: Account) -> list[str | int | float]:
        return [
            "name", account.name, "user_id", account.user_id,
            "password_hash", account.password_hash,
            "locked", int(account.locked), "created", account.created,
            "generation", account.generation,
        ]  # fmt: skip

    async def create_account(self, account: Account) -> bool:
        script = self.link.scripts["create_account"]
        keys, fields = [self._account_key(account.name)], self._account_fields(account)
        created = await self.link.call("create account", script(keys, fields))
        return bool(created)

    async def save_account(self, account: Account) -> None:
        key, fields = self._account_key(account.name), self._account_fields(account)
        mapping: dict[Any, Any] = dict(zip(fields[::2], fields[1::2], strict=True))
        await self.link.in_order("save account", lambda pipe: pipe.hset(key, mapping=mapping))

    async def delete_account(self, name: str) -> None:
        key = self._account_key(name)
        await self.link.in_order("delete account", lambda pipe: pipe.delete(key))

    async def subject_user(self, subject: str) -> int:
        key = self.link.key("subjects")
        known = await self.link.call("read subject", self.link.redis.hget(key, subject))
        if known is not None:
            return int(known)
        user_id = await self.new_user_id()
        await self.link.call("add subject", self.link.redis.hsetnx(key, subject, user_id))
        # Another node may have won the race: its id is the one.
        return int(await self.link.call("read subject", self.link.redis.hget(key, subject)))

    async def end_sessions(self, user_id: int, keep: str = "") -> None:
        index = self.link.key("user-sessions", user_id)
        (tokens,) = await self.link.in_order("list sessions", lambda pipe: pipe.smembers(index))
        others = [token.decode() for token in tokens if token.decode() != keep]
        if not others:
            return

        def drop(pipe: Pipeline) -> None:
            pipe.delete(*(self.link.key("session", token) for token in others))
            pipe.srem(index, *others)

        await self.link.in_order("end sessions", drop)

    def login_limits(self, limit: int, scope: str) -> LoginLimits:
        return RedisLoginLimits(self.link, limit, scope)

    # ------------------------------------------------------------------ connections

    def register(self, info: ConnInfo) -> None:
        key, ttl = self.link.key("conn", info.conn_id), int(self.session_ttl) or None
        data = json.dumps(dataclasses.asdict(info))
        self.link.later("register", lambda pipe: pipe.set(key, data, ex=ttl))

    def unregister(self, conn_id: int) -> None:
        key = self.link.key("conn", conn_id)
        self.link.later("unregister", lambda pipe: pipe.delete(key))

    async def locate(self, conn_id: int) -> ConnInfo | None:
        key = self.link.key("conn", conn_id)
        (raw,) = await self.link.in_order("locate", lambda pipe: pipe.get(key))
        return None if raw is None else ConnInfo(**json.loads(raw))

    async def find_user(self, user_id: int | None, name: str | None) -> ConnInfo | None:
        if user_id is not None:
            key = self.link.key("holder", user_id)
            (raw,) = await self.link.in_order("find user", lambda pipe: pipe.get(key))
            conn_id = raw.decode().rpartition("|")[2] if raw else ""
        elif name:
            key = self._name_key(name_key(name))
            (raw,) = await self.link.in_order("find user", lambda pipe: pipe.get(key))
            conn_id = raw.decode().rpartition(":")[2] if raw else ""
        else:
            return None
        return await self.locate(int(conn_id)) if conn_id.isdigit() else None

    # ------------------------------------------------------------------ presence

    def joined(self, room: str, member: Member) -> None:
        entry = _encode(
            PresenceEntry(
                member.user.id, member.user.name, member.node, member.conn_id, time.time()
            )
        )
        self.members[(room, member.conn_id)] = entry
        key, rooms, expiry = self._presence_key(room), self.link.key("presence"), self._expiry()

        def write(pipe: Pipeline) -> None:
            pipe.zadd(key, {entry: expiry})
            pipe.sadd(rooms, room)

        self.link.later("join", write)

    def left(self, room: str, member: Member) -> None:
        entry = self.members.pop((room, member.conn_id), None)
        if entry is not None:
            key = self._presence_key(room)
            self.link.later("leave", lambda pipe: pipe.zrem(key, entry))

    async def who(self, room: str) -> list[User]:
        # In order behind this node's pending writes: a member sees its own join.
        key, now = self._presence_key(room), time.time()
        (raw,) = await self.link.in_order("who", lambda pipe: pipe.zrangebyscore(key, now, "+inf"))
        entries = sorted((_decode_entry(item) for item in raw), key=lambda e: e.joined)
        return [User(e.user_id, e.name) for e in entries]

    async def flush(self) -> None:
        await self.link.flush()

    def _presence_key(self, room: str) -> str:
        return self.link.room_key(room, "presence")

    def _expiry(self) -> float:
        return time.time() + self.ttl

    # ------------------------------------------------------------------ refresh

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.refresh()
                await self.sweep()
            except Unavailable:
                pass  # recorded by the link; the next round tries again
            except Exception:
                log.exception("presence refresh failed")

    async def refresh(self) -> None:
        """Re-assert this node's members and names with a fresh expiry."""
        expiry = self._expiry()
        members = list(self.members.items())
        claims = list(self.claims.items())
        script = self.link.scripts["refresh_name"]

        by_room: dict[str, dict[bytes, float]] = {}
        for (room, _), entry in members:
            by_room.setdefault(room, {})[entry] = expiry

        async def build(pipe: Pipeline) -> None:
            # One ZADD per room, not per member: a node's refresh costs its
            # rooms and names, so a quiet room of a thousand stays cheap.
            for room, entries in by_room.items():
                pipe.zadd(self._presence_key(room), entries)
            for key, holder in claims:
                await script([self._name_key(key)], [holder, int(self.ttl)], client=pipe)

        if members or claims:
            await self.link.pipeline("refresh presence", build)

    async def sweep(self) -> int:
        """Remove expired members of every room; publish one leave for each that
        this node removed. Returns how many."""
        rooms = await self.link.call(
            "sweep presence", self.link.redis.smembers(self.link.key("presence"))
        )
        now, removed = time.time(), 0
        for raw_room in rooms:
            room = raw_room.decode()
            key = self._presence_key(room)
            expired = await self.link.call("sweep", self.link.redis.zrangebyscore(key, "-inf", now))
            for item in expired:
                if await self.link.call("sweep", self.link.redis.zrem(key, item)):
                    removed += 1
                    self._announce_lost(room, _decode_entry(item))
            if not expired and not await self.link.call("sweep", self.link.redis.zcard(key)):
                await self.link.call("sweep", self.link.redis.srem(self.link.key("presence"), room))
        return removed

    def _announce_lost(self, room: str, entry: PresenceEntry) -> None:
        user = User(entry.user_id, entry.name)
        detail = f"node {entry.node} stopped answering"
        self.broker.publish(
            LeaveEvent(room=room, user=user, reason="timeout", detail=detail, ts=time.time())
        )


class RedisLoginLimits:
    """Password attempts counted in Redis, so N nodes do not give an attacker N
    times the attempts: a counter per name and per address that lives
    ``LOGIN_WINDOW`` seconds from its first attempt (a fixed window), checked
    and counted together by ``lua/login_attempt.lua``."""

    def __init__(
        self, link: RedisLink, limit: int, scope: str = "login", window: float = LOGIN_WINDOW
    ) -> None:
        self.link = link
        self.limit = limit
        self.scope = scope
        self.window = int(window)

    def _keys(self, name: str, address: str) -> list[str]:
        # One hash tag: a script's keys share a Redis Cluster slot.
        tag = "{" + self.scope + "-fail}"
        return [self.link.key(tag, key) for key in limit_keys(name, address)]

    async def reserve(self, name: str, address: str) -> float:
        if not self.limit:
            return 0.0
        script = self.link.scripts["login_attempt"]
        args = [self.limit, self.limit * ADDRESS_FACTOR, self.window]
        wait = await self.link.call("login limit", script(self._keys(name, address), args))
        return float(wait)

    async def succeeded(self, name: str, address: str) -> None:
        if not self.limit:
            return
        script = self.link.scripts["login_ok"]
        await self.link.call("login ok", script(self._keys(name, address), []))
