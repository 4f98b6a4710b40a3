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


async def send_direct(conn: Connection, event: Event) -> None:
    """Write one event now, with flow control (replays can be large)."""
    payload = encode_json(event) if conn.is_json else text_line(event, conn.current_room).encode()
    await conn.ws.send_frame(payload, WSMsgType.TEXT)
    conn.messages_out += 1
    conn.bytes_out += len(payload)


async def replay(conn: Connection, hub: Hub, last: dict[str, int], history: int) -> None:
    """Replay missed messages per ``last`` cursor (or the last ``history`` messages
    of the first room), then release the held live events."""
    sent: dict[str, int] = {}
    replayed: dict[str, list[MessageEvent]] = {}
    try:
        conn.flush()  # the welcome goes out before anything replayed
        for room in list(conn.rooms):
            if room in last:
                replayed[room] = await _replay_missed(conn, hub, room, last[room], sent)
            elif history and room == conn.rooms[0]:
                await _replay_history(conn, hub, room, history, sent)
        if last:
            await send_direct(conn, _recovery(conn, hub, last, replayed))
    finally:
        release_held(conn, sent)


async def _replay_missed(
    conn: Connection, hub: Hub, room: str, after: int, sent: dict[str, int]
) -> list[MessageEvent]:
    cap = hub.settings.history_max_messages or 1_000_000
    messages = await hub.store.messages_after(room, after, cap) if hub.settings.history else []
    for message in messages:
        await send_direct(conn, message)
    sent[room] = messages[-1].id if messages else after
    return messages


async def _replay_history(
    conn: Connection, hub: Hub, room: str, limit: int, sent: dict[str, int]
) -> None:
    if not hub.settings.history:
        return
    messages, more = await hub.store.messages_before(room, None, limit)
    await send_direct(conn, HistoryEvent(room=room, messages=messages, more=more))
    sent[room] = messages[-1].id if messages else 0


def _recovery(
    conn: Connection, hub: Hub, last: dict[str, int], replayed: dict[str, list[MessageEvent]]
) -> ResumedEvent:
    """Per room: how many missed messages came back, and how many are gone
    (beyond retention), judged by the first id still available."""
    first_held: dict[str, int] = {}
    for rendered in conn.held or ():
        event = rendered.event
        if isinstance(event, MessageEvent):
            first_held.setdefault(event.room, event.id)
    rooms: dict[str, RoomRecovery] = {}
    for room, messages in replayed.items():
        after = last[room]
        first = messages[0].id if messages else first_held.get(room)
        if first is None:
            lost = max(0, hub.store.room_last_ids.get(room, 0) - after)
        else:
            lost = max(0, first - after - 1)
        rooms[room] = RoomRecovery(recovered=len(messages), lost=lost)
    return ResumedEvent(rooms=rooms)


def release_held(conn: Connection, sent: dict[str, int]) -> None:
    """Go live: send the held events, minus messages the replay already sent."""
    held, conn.held = conn.held, None
    for rendered in held or ():
        event = rendered.event
        if isinstance(event, MessageEvent) and event.id <= sent.get(event.room, 0):
            continue
        conn.send(rendered)
