"""What the dashboard and the API show: connection rows, filtered and paged on
the server, room rows, and the server's header stats.

With 10,000 connections a page costs a walk over the connections for a
filter (or only a slice when there is none), never a full table sent out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import math
import os
import resource
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from chatserver.census import Snapshot
from chatserver.connection import Connection
from chatserver.errors import CommandError
from chatserver.health import Health
from chatserver.hub import Hub, Room
from chatserver.protocol import MessageEvent, parse_uint

HOSTNAME = socket.gethostname()
MAX_PER_PAGE = 200
ROOM_MESSAGES = 50  # what a room page shows of the history
DEFAULT_PER_PAGE = 50
MAX_FILTER_CHARS = 100
SORTS: dict[str, Callable[[Connection], float]] = {
    "buffer": lambda conn: conn.buffer_fill(),
    "messages_in": lambda conn: conn.messages_in,
    "messages_out": lambda conn: conn.messages_out,
    "bytes_out": lambda conn: conn.bytes_out,
    "activity": lambda conn: conn.last_activity,
}
Row = dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionQuery:
    """A filter (substrings of name/room/address, or ``q`` for any), a sort and a page."""

    q: str = ""
    name: str = ""
    room: str = ""
    address: str = ""
    sort: str = "id"
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE

    @classmethod
    def parse(cls, params: Mapping[str, object]) -> ConnectionQuery:
        """From a query string or a JSON object; bad values raise CommandError."""
        texts = {key: _text(params.get(key, "")) for key in ("q", "name", "room", "address")}
        sort = _text(params.get("sort", "")) or "id"
        if sort != "id" and sort not in SORTS:
            raise CommandError("bad_request", f"sort is one of: id, {', '.join(SORTS)}")
        page = _positive(params.get("page", 1), "page")
        per_page = min(
            _positive(params.get("per_page", DEFAULT_PER_PAGE), "per_page"), MAX_PER_PAGE
        )
        return cls(sort=sort, page=page, per_page=per_page, **texts)

    @property
    def filtered(self) -> bool:
        return bool(self.q or self.name or self.room or self.address)

    def matches(self, conn: Connection) -> bool:
        if self.name and self.name.casefold() not in conn.name.casefold():
            return False
        if self.room and self.room.lstrip("#") not in conn.rooms:
            return False
        if self.address and self.address not in conn.remote:
            return False
        if self.q:
            q = self.q.casefold()
            return (
                q in conn.name.casefold()
                or q in conn.remote
                or any(q in room.casefold() for room in conn.rooms)
                or (conn.subject is not None and q in conn.subject.casefold())
            )
        return True


@dataclasses.dataclass(slots=True)
class Selection:
    """One page of connections and where it sits in the whole."""

    total: int
    page: int
    pages: int
    per_page: int
    connections: list[Connection]

    def position(self) -> dict[str, int]:
        return {
            "total": self.total,
            "page": self.page,
            "pages": self.pages,
            "per_page": self.per_page,
        }


def select(hub: Hub, query: ConnectionQuery) -> Selection:
    """The page of connections ``query`` asks for (oldest first unless sorted)."""
    if not query.filtered and query.sort == "id":
        # Connection ids only grow and the dict keeps insertion order: slice, do not sort.
        total = len(hub.connections)
        page, pages, start = _page_bounds(query, total)
        chosen = list(itertools.islice(hub.connections.values(), start, start + query.per_page))
        return Selection(total, page, pages, query.per_page, chosen)
    candidates: Iterable[Connection] = hub.connections.values()
    room_name = query.room.lstrip("#")
    if room_name:
        room = hub.rooms.get(room_name)
        candidates = () if room is None else room.members
    matched = [conn for conn in candidates if query.matches(conn)]
    page, pages, start = _page_bounds(query, len(matched))
    if query.sort == "id":
        if room_name:
            matched.sort(key=_conn_id)
        chosen = matched[start : start + query.per_page]
    else:
        key = SORTS[query.sort]
        chosen = heapq.nlargest(start + query.per_page, matched, key=key)[start:]
    return Selection(len(matched), page, pages, query.per_page, chosen)


def _page_bounds(query: ConnectionQuery, total: int) -> tuple[int, int, int]:
    pages = max(1, math.ceil(total / query.per_page))
    page = min(query.page, pages)
    return page, pages, (page - 1) * query.per_page


def _conn_id(conn: Connection) -> int:
    return conn.conn_id


def node_of(hub: Hub, conn: Connection) -> str:
    """The node serving ``conn``: its --node-id in Redis mode, else hostname:port."""
    if hub.settings.redis_url:
        return hub.node
    return request_node(hub, conn.transport.get_extra_info("sockname"))


def request_node(hub: Hub, sockname: object) -> str:
    """This node's name as seen by a request: hostname:listening port."""
    port = sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else hub.settings.port
    return f"{HOSTNAME}:{port}"


def connection_row(hub: Hub, conn: Connection) -> Row:
    return {
        "id": conn.conn_id,
        "user_id": conn.user.id,
        "name": conn.name,
        "identity": conn.identity,
        "account": account_of(conn),
        "rooms": list(conn.rooms),
        "address": conn.remote,
        "dialect": conn.dialect,
        "connected_at": round(conn.connected_at, 3),
        "last_activity": round(conn.last_activity, 3),
        "messages_in": conn.messages_in,
        "messages_out": conn.messages_out,
        "bytes_in": conn.bytes_in,
        "bytes_out": conn.bytes_out,
        "buffer_fill": conn.buffer_fill(),
        "buffer_limit": conn.limit,
        "node": node_of(hub, conn),
        "muted": is_muted(hub, conn),
    }


def account_of(conn: Connection) -> str | None:
    """What identifies the user beyond this connection: the registered name, or
    the token's ``sub`` (None for a guest). Operators see it; users never do."""
    if conn.identity == "token":
        return conn.subject
    if conn.identity == "registered":
        return conn.name
    return None


def is_muted(hub: Hub, conn: Connection) -> bool:
    """Whether an active mute covers this connection's user (a lookup, not a walk)."""
    return hub.restrictions.mute_reason(conn.user.id, conn.name) is not None


def room_rows(hub: Hub, rates: Mapping[str, float], limit: int = 20) -> list[Row]:
    """The ``limit`` largest rooms, largest first."""
    rooms: list[Room] = heapq.nlargest(limit, hub.rooms.values(), key=_room_size)
    return [
        {
            "name": room.name,
            "members": len(room.members),
            "messages": room.messages_in,
            "rate": round(rates.get(room.name, 0.0), 2),
        }
        for room in rooms
    ]


# ------------------------------------------------------------------ the whole cluster

# Sort keys of a row (what SORTS reads from a live connection).
ROW_SORTS = {
    "buffer": "buffer_fill",
    "messages_in": "messages_in",
    "messages_out": "messages_out",
    "bytes_out": "bytes_out",
    "activity": "last_activity",
}


def row_matches(query: ConnectionQuery, row: Row) -> bool:
    """:meth:`ConnectionQuery.matches` for a row (another node's connection)."""
    name, address, rooms = str(row["name"]).casefold(), str(row["address"]), row["rooms"]
    if query.name and query.name.casefold() not in name:
        return False
    if query.room and query.room.lstrip("#") not in rooms:
        return False
    if query.address and query.address not in address:
        return False
    if query.q:
        q = query.q.casefold()
        account = str(row.get("account") or "").casefold()
        return (
            q in name or q in address or any(q in room.casefold() for room in rooms) or q in account
        )
    return True


def page_of_rows(
    hub: Hub, query: ConnectionQuery, remote: list[Row]
) -> tuple[dict[str, int], list[Row]]:
    """The page ``query`` asks for over this node's connections and the rows of
    the other nodes (``remote``, from the census); without those, only this node's."""
    if not remote:
        selection = select(hub, query)
        return selection.position(), [connection_row(hub, c) for c in selection.connections]
    rows = [connection_row(hub, conn) for conn in hub.connections.values()] + remote
    matched = [row for row in rows if row_matches(query, row)]
    page, pages, start = _page_bounds(query, len(matched))
    if query.sort == "id":
        matched.sort(key=lambda row: int(row["id"]))
    else:
        field = ROW_SORTS[query.sort]
        matched.sort(key=lambda row: float(row[field]), reverse=True)
    position = {"total": len(matched), "page": page, "pages": pages, "per_page": query.per_page}
    return position, matched[start : start + query.per_page]


def merged_rooms(local: list[Row], snapshots: list[Snapshot], limit: int) -> list[Row]:
    """Every node's busiest rooms added up by name, largest first."""
    rooms: dict[str, Row] = {}
    for row in [*local, *(row for s in snapshots for row in s.get("rooms", []))]:
        total = rooms.setdefault(
            row["name"], {"name": row["name"], "members": 0, "messages": 0, "rate": 0.0}
        )
        total["members"] += row["members"]
        total["messages"] += row["messages"]
        total["rate"] = round(total["rate"] + row["rate"], 2)
    return heapq.nlargest(limit, rooms.values(), key=lambda row: row["members"])


def cluster_stats(local: Row, snapshots: list[Snapshot]) -> Row:
    """Totals over the nodes, and each node's own figures."""
    nodes = [local, *(s["stats"] for s in snapshots)]
    totals = {key: sum(n.get(key, 0) for n in nodes) for key in ("connections", "users", "rooms")}
    summary = ", ".join(f"{n['node']}: {n['connections']}" for n in nodes)
    return {**totals, "nodes": len(nodes), "per_node": summary}


def room_members(
    hub: Hub, name: str, remote: Iterable[Row] = (), limit: int = MAX_PER_PAGE
) -> list[Row]:
    """The first ``limit`` members of room ``name`` as connection rows: this
    node's in join order, then the other nodes' (``remote``, from the census)."""
    name = name.lstrip("#")
    room = hub.rooms.get(name)
    local = (
        []
        if room is None
        else [connection_row(hub, c) for c in itertools.islice(room.members, limit)]
    )
    others = (row for row in remote if name in row["rooms"])
    return [*local, *itertools.islice(others, max(0, limit - len(local)))]


def message_row(message: MessageEvent) -> Row:
    return {
        "id": message.id,
        "user_id": message.user.id,
        "name": message.user.name,
        "text": message.text,
        "ts": round(message.ts, 3),
    }


def _room_size(room: Room) -> int:
    return len(room.members)


def metric_counts(hub: Hub) -> Row:
    """What /metrics reports of the hub: one walk over the connections for the sums."""
    buffered = bytes_out = 0
    for conn in hub.connections.values():
        buffered += conn.buffer_fill()
        bytes_out += conn.bytes_out
    return {
        **hub_counts(hub),
        "bytes_out": bytes_out,
        "buffered": buffered,
        "close_codes": dict(hub.close_codes),
    }


def rss_bytes() -> int:
    """Resident memory of this process (current from /proc, else the peak)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def hub_counts(hub: Hub) -> Row:
    """The hub's own counters, shared by /metrics and the dashboard's stats."""
    return {
        "connections": len(hub.connections),
        "users": len(hub.users),
        "rooms": len(hub.rooms),
        "messages_in": hub.messages_in,
        "deliveries": hub.deliveries,
    }


def server_stats(hub: Hub, in_rate: float, out_rate: float, node: str) -> Row:
    return {
        **hub_counts(hub),
        "in_rate": round(in_rate, 1),
        "out_rate": round(out_rate, 1),
        "started": round(hub.started, 3),
        "uptime": round(time.time() - hub.started, 1),
        "rss_bytes": rss_bytes(),
        "tasks": len(asyncio.all_tasks()),  # flat over a long run, or something leaks
        "node": node,
    }


def problems_text(health: Health) -> str:
    """The dashboard banner: what does not work now ("" when all does)."""
    return "; ".join(
        f"{component} unavailable since {time.strftime('%H:%M:%S', time.gmtime(outage.since))} UTC"
        f" ({outage.failures} failed): {outage.reason}"
        for component, outage in sorted(health.outages.items())
    )


def page_url(query: ConnectionQuery, page: int) -> str:
    """The dashboard's URL for ``query`` on ``page`` (links that work without script)."""
    params = {
        "q": query.q,
        "name": query.name,
        "room": query.room,
        "address": query.address,
        "sort": query.sort if query.sort != "id" else "",
        "per_page": str(query.per_page) if query.per_page != DEFAULT_PER_PAGE else "",
        "page": str(page),
    }
    return "/admin/?" + urlencode({key: value for key, value in params.items() if value})


def _text(value: object) -> str:
    text = value if isinstance(value, str) else str(value) if isinstance(value, int) else None
    if text is None:
        raise CommandError("bad_request", "filters are strings")
    text = text.strip()
    if len(text) > MAX_FILTER_CHARS:
        raise CommandError("bad_request", f"a filter has at most {MAX_FILTER_CHARS} characters")
    return text


def _positive(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise CommandError("bad_request", f"{name} must be a positive integer")
    if isinstance(value, str):
        value = parse_uint(value.strip())
    if not isinstance(value, int) or value < 1 or value > 1_000_000:
        raise CommandError("bad_request", f"{name} must be a positive integer")
    return value
