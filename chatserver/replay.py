"""Sending a connection what it missed (resume) or asked for (history on
connect) with no gap and no duplicate before its live events.

The connection is a room member before the replay starts, with its live
events held (``conn.held``). Messages are stored before anyone sees them, so
the stored rows cover everything up to the held ones; held messages whose id
was already replayed are dropped, the rest follow the replay in order.
"""

from __future__ import annotations

from aiohttp import WSMsgType

from .connection import Connection
from .hub import Hub
from .protocol import (
    Event,
    HistoryEvent,
    MessageEvent,
    ResumedEvent,
    RoomRecovery,
    encode_json,
    text_line,
)
from .roomlog import Head
from .session import Cursor


async def send_direct(conn: Connection, event: Event) -> None:
    """Write one event now, with flow control (replays can be large)."""
    payload = encode_json(event) if conn.is_json else text_line(event, conn.current_room).encode()
    await conn.ws.send_frame(payload, WSMsgType.TEXT)
    conn.messages_out += 1
    conn.bytes_out += len(payload)


async def replay(conn: Connection, hub: Hub, last: dict[str, Cursor], history: int) -> None:
    """Replay missed messages per ``last`` cursor (or the last ``history`` messages
    of the first room), then release the held live events."""
    sent: dict[str, int] = {}
    recovery: dict[str, RoomRecovery] = {}
    try:
        conn.flush()  # the welcome goes out before anything replayed
        heads = await hub.room_log.heads(conn.rooms)
        for room in list(conn.rooms):
            if room in last:
                recovery[room] = await _replay_missed(
                    conn, hub, room, last[room], heads[room], sent
                )
            elif history and room == conn.rooms[0]:
                await _replay_history(conn, hub, room, history, sent)
        if last:
            await send_direct(conn, ResumedEvent(rooms=recovery))
    finally:
        release_held(conn, sent)


async def _replay_missed(
    conn: Connection, hub: Hub, room: str, cursor: Cursor, head: Head, sent: dict[str, int]
) -> RoomRecovery:
    """Send what came after the cursor; say how many came back and how many are
    gone (trimmed by retention, or in an older epoch of the log)."""
    changed = bool(cursor.epoch) and cursor.epoch != head.epoch
    after = 0 if changed else cursor.last_id
    cap = hub.settings.history_max_messages or 1_000_000
    messages = await hub.room_log.after(room, after, cap) if hub.settings.history else []
    for message in messages:
        await send_direct(conn, message)
    sent[room] = messages[-1].id if messages else after
    if changed:
        return RoomRecovery(len(messages), cursor.last_id, True, head.epoch)
    first = messages[0].id if messages else _first_held(conn, room)
    # Without a replayed or held message, everything up to the head is gone.
    gone = head.last_id - after if first is None else first - after - 1
    return RoomRecovery(len(messages), max(0, gone))


async def _replay_history(
    conn: Connection, hub: Hub, room: str, limit: int, sent: dict[str, int]
) -> None:
    if not hub.settings.history:
        return
    messages, more = await hub.room_log.before(room, None, limit)
    await send_direct(conn, HistoryEvent(room=room, messages=messages, more=more))
    sent[room] = messages[-1].id if messages else 0


def _first_held(conn: Connection, room: str) -> int | None:
    """The id of the first live message held for ``room`` during the replay."""
    for rendered in conn.held or ():
        event = rendered.event
        if isinstance(event, MessageEvent) and event.room == room:
            return event.id
    return None


def release_held(conn: Connection, sent: dict[str, int]) -> None:
    """Go live: send the held events, minus messages the replay already sent."""
    held, conn.held = conn.held, None
    conn.replayed = {room: last for room, last in sent.items() if last} or None
    for rendered in held or ():
        event = rendered.event
        if isinstance(event, MessageEvent) and event.id <= sent.get(event.room, 0):
            continue
        conn.send(rendered)
