"""The dashboard's push channel: a WebSocket at ``/admin/live`` that sends diffs.

Each open dashboard is a :class:`Viewer` with a view (filter, sort, page) and
the rows it was last sent. Connection changes from ``hub.listeners`` wake only
viewers they can affect (a visible row changed, or the page has room for a
new one); a 1 s tick re-reads the counters of the visible rows, the header
stats, the rooms and the rate chart. Each wake-up sends what changed: added
rows whole, removed rows by id, changed rows as ``{id, field: value}``.

Messages (server to browser), all JSON objects with a ``type``:

* ``init``: ``stats``, ``chart`` ([ts, in/s, out/s] for the last minutes),
  ``bans``, ``mutes``, ``audit`` (newest first).
* ``stats``: changed header fields; ``sample`` [ts, in/s, out/s].
* ``conns`` (after the first view): ``reset`` + ``rows`` after a new view; else ``add``, ``remove``,
  ``update``; ``order`` (visible ids) when it changed; ``total``, ``page``,
  ``pages``, ``per_page`` when they changed.
* ``rooms``: the same diff shape, keyed by room name.
* ``bans`` / ``mutes``: the whole (short) list when it changed.
* ``audit``: ``entries`` added since the last message, newest first.
* ``error``: ``message`` (a bad view request).

The browser sends ``{"type": "view", q, name, room, address, sort, page,
per_page}``. A session that expires or logs out is closed with 4401.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from chatserver.census import SNAPSHOT_INTERVAL, Census, Snapshot
from chatserver.connection import Connection
from chatserver.errors import CommandError
from chatserver.health import Health
from chatserver.hub import ConnectionChange, Hub
from chatserver.inputs import check_json_depth
from chatserver.moderation import Change, Moderation
from chatserver.roomlog import RoomLog

from .auth import AdminSession, AdminSessions
from .rows import (
    ConnectionQuery,
    Row,
    cluster_stats,
    connection_row,
    merged_rooms,
    message_row,
    page_of_rows,
    problems_text,
    request_node,
    room_members,
    room_rows,
    server_stats,
)

log = logging.getLogger(__name__)

TICK = 1.0
COALESCE = 0.1  # at most ten pushes a second per viewer
CHART_SECONDS = 300
CLOSE_SESSION_ENDED = 4401
AUDIT_SHOWN = 50
ROOM_RATE_ALPHA = 0.3
ROOM_BATCH = 200  # new messages of a watched room sent per push


class Sampler:
    """Per-second message rates of the server and of each room."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.history: deque[tuple[float, float, float]] = deque(maxlen=CHART_SECONDS)
        self.in_rate = self.out_rate = 0.0
        self.room_rates: dict[str, float] = {}
        self._last = (time.monotonic(), hub.messages_in, hub.deliveries)
        self._room_counts: dict[str, int] = {}

    def sample(self) -> tuple[float, float, float]:
        now = time.monotonic()
        then, messages_in, deliveries = self._last
        elapsed = max(now - then, 1e-3)
        self.in_rate = (self.hub.messages_in - messages_in) / elapsed
        self.out_rate = (self.hub.deliveries - deliveries) / elapsed
        self._last = (now, self.hub.messages_in, self.hub.deliveries)
        counts = {name: room.messages_in for name, room in self.hub.rooms.items()}
        rates: dict[str, float] = {}
        for name, count in counts.items():
            previous = self._room_counts.get(name, 0)
            delta = count - previous if count >= previous else count
            old = self.room_rates.get(name, delta / elapsed)
            rates[name] = old + ROOM_RATE_ALPHA * (delta / elapsed - old)
        self._room_counts, self.room_rates = counts, rates
        point = (round(time.time(), 1), round(self.in_rate, 1), round(self.out_rate, 1))
        self.history.append(point)
        return point


class LiveHub:
    """All open dashboards, the shared sampler and the 1 s tick."""

    def __init__(
        self,
        hub: Hub,
        moderation: Moderation,
        sessions: AdminSessions,
        room_log: RoomLog,
        health: Health,
        census: Census,
    ) -> None:
        self.hub = hub
        self.census = census
        # The other nodes' latest snapshots (Redis mode), refreshed while watched.
        self.remote: list[Snapshot] = []
        self.room_log = room_log
        self.health = health
        self.moderation = moderation
        self.sessions = sessions
        self.sampler = Sampler(hub)
        self.viewers: set[Viewer] = set()
        self.node = ""
        # What every viewer shows the same, read once a tick rather than per viewer
        # (the room ranking walks every room; RSS is a /proc read).
        self.tick_stats: Row = {}
        self.tick_rooms: list[Row] = []
        self._task: asyncio.Task[None] | None = None
        self._census_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.hub.listeners.append(self._on_connection)
        self.moderation.listeners.append(self._on_moderation)
        self._task = asyncio.create_task(self._tick_loop(), name="admin-live-tick")
        self._census_task = asyncio.create_task(self._census_loop(), name="admin-census")

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.hub.listeners.remove(self._on_connection)
        with contextlib.suppress(ValueError):
            self.moderation.listeners.remove(self._on_moderation)
        for task in (self._task, self._census_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.close_all(WSCloseCode.GOING_AWAY, "server shutting down")

    async def close_all(self, code: int, reason: str) -> None:
        # Copy: each closed viewer removes itself from the set.
        for viewer in list(self.viewers):
            await viewer.close(code, reason)

    async def end_session(self, session: AdminSession) -> None:
        for viewer in [v for v in self.viewers if v.session is session]:
            await viewer.close(CLOSE_SESSION_ENDED, "logged out")

    def learn_node(self, request: web.Request) -> None:
        """Remember this node's name from the socket a request came in on."""
        if not self.node and request.transport is not None:
            self.node = request_node(self.hub, request.transport.get_extra_info("sockname"))

    def stats(self) -> Row:
        # In Redis mode a node is known by its --node-id, as in the rows' node column.
        node = self.hub.node if self.hub.settings.redis_url else self.node
        stats = server_stats(self.hub, self.sampler.in_rate, self.sampler.out_rate, node)
        stats["problems"] = problems_text(self.health)
        return stats

    def _on_connection(self, change: ConnectionChange, conn: Connection) -> None:
        for viewer in self.viewers:
            viewer.on_connection(change, conn)

    def _on_moderation(self, what: Change) -> None:
        for viewer in self.viewers:
            viewer.want(what)

    async def _census_loop(self) -> None:
        """Publish this node's snapshot while anyone in the cluster looks, and
        fetch the others' while someone looks here."""
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL)
            try:
                if self.viewers:
                    await self.census.want()
                if await self.census.wanted():
                    self.census.publish(self.snapshot())
                self.remote = await self.census.others() if self.viewers else []
            except CommandError:
                pass  # the backend is down: its banner says so
            except Exception:
                log.exception("census round failed")

    def snapshot(self) -> Snapshot:
        """What this node tells the others: its counters, rooms and connections."""
        stats = self.stats()
        return {
            "node": self.hub.node,
            "at": time.time(),
            "stats": {**stats, "node": self.hub.node},
            "rooms": room_rows(self.hub, self.sampler.room_rates),
            "rows": [connection_row(self.hub, conn) for conn in self.hub.connections.values()],
        }

    def remote_rows(self) -> list[Row]:
        return [row for snapshot in self.remote for row in snapshot.get("rows", [])]

    async def fresh_remote(self) -> list[Snapshot]:
        """The other nodes' snapshots for an API answer: if nobody was looking,
        give the nodes one round to publish."""
        if await self.census.want():
            await asyncio.sleep(SNAPSHOT_INTERVAL * 1.5)
        return await self.census.others()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK - time.time() % TICK)
            try:
                self.tick()
            except Exception:
                log.exception("dashboard tick failed")

    def tick(self) -> None:
        self.sampler.sample()
        self.moderation.expire()
        if not self.viewers:
            return
        self.tick_stats = self.stats()
        del self.tick_stats["uptime"]  # the browser counts from "started"
        self.tick_rooms = room_rows(self.hub, self.sampler.room_rates)
        if self.remote:
            here = {**self.tick_stats, "node": self.hub.node}
            self.tick_stats["cluster"] = cluster_stats(here, self.remote)["per_node"]
            self.tick_rooms = merged_rooms(self.tick_rooms, self.remote, len(self.tick_rooms) or 20)
        for viewer in list(self.viewers):
            viewer.want("tick")


class Viewer:
    """One open dashboard: its view and what it was last sent."""

    def __init__(self, live: LiveHub, ws: web.WebSocketResponse, session: AdminSession) -> None:
        self.live = live
        self.hub = live.hub
        self.ws = ws
        self.session = session
        self.query = ConnectionQuery()
        self.viewing = False  # rows are sent once the browser has said what it views
        self.rows: dict[int, Row] = {}
        self.order: list[int] = []
        self.position: dict[str, int] = {}
        self.rooms: dict[str, Row] = {}
        self.room_order: list[str] = []
        self.stats: Row = {}
        # A room page watches one room: its members and messages after room_after.
        self.room = ""
        self.room_after = 0
        self.members: dict[int, Row] = {}
        self.fresh_messages: list[Row] = []
        self.audit_sent = 0
        self.pending: set[str] = {"init"}
        self.wake = asyncio.Event()
        self.wake.set()
        self.urgent = asyncio.Event()

    # ------------------------------------------------------------------ wake-ups

    def want(self, what: str) -> None:
        self.pending.add(what)
        self.wake.set()

    def on_connection(self, change: ConnectionChange, conn: Connection) -> None:
        if change != "update" and "counts" not in self.pending:
            self.want("counts")  # the header's connection, user and room counts
        if "conns" in self.pending:
            return
        # Cheap relevance test: with 10,000 connections most changes touch no visible row.
        page_has_room = len(self.order) < self.query.per_page
        if conn.conn_id in self.rows or page_has_room or self.query.sort != "id":
            self.want("conns")

    def on_message(self, data: str) -> None:
        try:
            check_json_depth(data)  # json.loads raises RecursionError on deep nesting
            message = json.loads(data)
            if isinstance(message, dict) and message.get("type") == "room":
                self._watch_room(message)
            elif not isinstance(message, dict) or message.get("type") != "view":
                raise CommandError("bad_request", 'expected {"type": "view", ...}')
            else:
                self.query = ConnectionQuery.parse(message)
                self.viewing = True
        except (ValueError, CommandError) as exc:
            text = exc.message if isinstance(exc, CommandError) else "not JSON"
            self.pending.add("error:" + text)
        self.want("reset")
        self.urgent.set()

    def _watch_room(self, message: dict[str, Any]) -> None:
        room, after = message.get("room"), message.get("after", 0)
        if not isinstance(room, str) or not room or len(room) > 100:
            raise CommandError("bad_request", "room must be a room name")
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise CommandError("bad_request", "after must be a message id")
        self.room, self.room_after, self.members = room.lstrip("#"), after, {}
        self.want("tick")

    async def _read_room(self) -> None:
        """New messages of the watched room since the last push (the store's order)."""
        messages = await self.live.room_log.after(self.room, self.room_after, ROOM_BATCH)
        if messages:
            self.room_after = messages[-1].id
        self.fresh_messages = [message_row(message) for message in messages]

    def _room(self, pending: set[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        members = room_members(self.hub, self.room, self.live.remote_rows())
        fresh = {row["id"]: row for row in members}
        diff = _diff("id", self.members, fresh, reset=not self.members and bool(fresh))
        self.members = fresh
        if diff or self.fresh_messages:
            out.append({"type": "room", "members": diff, "messages": self.fresh_messages})
            self.fresh_messages = []
        if "audit" in pending:
            target = f"#{self.room}"
            gone = [
                int(entry.detail)
                for entry in self.live.moderation.recent_audit
                if entry.id > self.audit_sent
                and entry.action == "delete"
                and entry.target == target
                and entry.detail.isdigit()
            ]
            if gone:
                out.append({"type": "deleted", "ids": gone})
        return out

    # ------------------------------------------------------------------ pushing

    async def run(self) -> None:
        """Send what changed whenever woken, at most every COALESCE seconds."""
        try:
            while not self.ws.closed:
                await self.wake.wait()
                self.wake.clear()
                if not await self.live.sessions.alive(self.session):
                    await self.close(CLOSE_SESSION_ENDED, "session expired: log in again")
                    return
                if self.room and self.pending & {"tick", "init"}:
                    await self._read_room()
                for message in self.build():
                    await self.ws.send_str(json.dumps(message, separators=(",", ":")))
                # Coalesce bursts of changes, but answer a new view at once.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.urgent.wait(), COALESCE)
                self.urgent.clear()
        except (ConnectionError, RuntimeError):
            return  # the browser went away; the receive loop ends the handler

    def build(self) -> list[dict[str, Any]]:
        pending, self.pending = self.pending, set()
        messages: list[dict[str, Any]] = []
        moderation = self.live.moderation
        for item in sorted(p for p in pending if p.startswith("error:")):
            messages.append({"type": "error", "message": item[len("error:") :]})
        if "init" in pending:
            messages.append(self._init())
        elif "tick" in pending:
            self.session.last_seen = time.time()  # an open dashboard is an active one
            messages.append(self._stats())
        elif "counts" in pending:
            counts = self._counts()
            if counts:
                messages.append({"type": "stats", **counts})
        if "tick" in pending or "init" in pending:
            rooms = self._rooms(reset="init" in pending)
            if rooms is not None:
                messages.append(rooms)
        if self.room and pending & {"tick", "init", "audit"}:
            messages.extend(self._room(pending))
        if self.viewing and pending & {"conns", "tick", "reset"}:
            conns = self._conns(reset="reset" in pending)
            if conns is not None:
                messages.append(conns)
        if "bans" in pending and "init" not in pending:
            messages.append({"type": "bans", "bans": _bans(moderation)})
        if "mutes" in pending and "init" not in pending:
            messages.append({"type": "mutes", "mutes": _mutes(moderation)})
        if "audit" in pending and "init" not in pending:
            new = [entry for entry in moderation.recent_audit if entry.id > self.audit_sent]
            if new:
                self.audit_sent = new[-1].id
                entries = [entry.as_dict() for entry in reversed(new[-AUDIT_SHOWN:])]
                messages.append({"type": "audit", "entries": entries})
        return messages

    def _init(self) -> dict[str, Any]:
        moderation = self.live.moderation
        recent = list(moderation.recent_audit)
        self.audit_sent = recent[-1].id if recent else 0
        self.stats = self.live.stats()
        return {
            "type": "init",
            "stats": self.stats,
            "chart": list(self.live.sampler.history),
            "bans": _bans(moderation),
            "mutes": _mutes(moderation),
            "audit": [entry.as_dict() for entry in reversed(recent[-AUDIT_SHOWN:])],
        }

    def _stats(self) -> dict[str, Any]:
        stats = self.live.tick_stats
        changed = _changed(self.stats, stats)
        self.stats.update(stats)
        history = self.live.sampler.history
        return {"type": "stats", **changed, "sample": history[-1] if history else None}

    def _counts(self) -> dict[str, Any]:
        hub = self.hub
        counts = {
            "connections": len(hub.connections),
            "users": len(hub.users),
            "rooms": len(hub.rooms),
        }
        changed = _changed(self.stats, counts)
        self.stats.update(counts)
        return changed

    def _rooms(self, reset: bool) -> dict[str, Any] | None:
        rows = room_rows(self.hub, self.live.sampler.room_rates) if reset else self.live.tick_rooms
        fresh = {row["name"]: row for row in rows}
        message = _diff("name", self.rooms, fresh, reset)
        order = list(fresh)
        if reset or order != self.room_order:
            message["order"] = self.room_order = order
        self.rooms = fresh
        return {"type": "rooms", **message} if message else None

    def _conns(self, reset: bool) -> dict[str, Any] | None:
        position, page = page_of_rows(self.hub, self.query, self.live.remote_rows())
        fresh = {int(row["id"]): row for row in page}
        message = _diff("id", self.rows, fresh, reset)
        order = list(fresh)
        if reset or order != self.order:
            message["order"] = self.order = order
        if reset or position != self.position:
            message.update(position)
            self.position = position
        self.rows = fresh
        return {"type": "conns", **message} if message else None

    async def close(self, code: int, reason: str) -> None:
        self.live.viewers.discard(self)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=code, message=reason.encode())


def _changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in new.items() if old.get(key) != value}


def _diff(key: str, old: Mapping[Any, Row], new: Mapping[Any, Row], reset: bool) -> dict[str, Any]:
    """Rows added (whole), removed (keys) and updated (key + changed fields)."""
    if reset:
        return {"reset": True, "rows": list(new.values())}
    message: dict[str, Any] = {}
    removed = [k for k in old if k not in new]
    added = [row for k, row in new.items() if k not in old]
    updated = []
    for k, row in new.items():
        if k in old:
            changed = _changed(old[k], row)
            if changed:
                updated.append({key: k, **changed})
    if removed:
        message["remove"] = removed
    if added:
        message["add"] = added
    if updated:
        message["update"] = updated
    return message


def _bans(moderation: Moderation) -> list[Row]:
    return [ban.as_dict() for ban in moderation.active_bans()]


def _mutes(moderation: Moderation) -> list[Row]:
    return [mute.as_dict() for mute in moderation.active_mutes()]


async def serve_viewer(
    live: LiveHub, request: web.Request, session: AdminSession
) -> web.WebSocketResponse:
    """Run one dashboard's push channel until it or the server closes."""
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096)
    await ws.prepare(request)
    viewer = Viewer(live, ws, session)
    live.viewers.add(viewer)
    pusher = asyncio.create_task(viewer.run(), name="admin-live-push")
    try:
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                viewer.on_message(message.data)
    finally:
        live.viewers.discard(viewer)
        pusher.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await pusher
    return ws
