"""Heartbeats from one shared timer instead of one timer per connection.

Every ``interval`` seconds one sweep pings every connection. A peer that has
sent nothing, not even a pong, since the previous sweep is dropped (leave
reason ``timeout``), so a dead peer is gone within two intervals.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSCloseCode

from .hub import Hub
from .protocol import PING_FRAME

log = logging.getLogger(__name__)


def sweep(hub: Hub, previous_sweep: float) -> int:
    """Ping live peers and drop silent ones; return how many were dropped."""
    dropped = 0
    # Copy: dropping a connection changes the dict.
    for conn in list(hub.connections.values()):
        if conn.last_seen < previous_sweep:
            log.info("dropping %s (%s): no pong", conn.conn_id, conn.name)
            hub.disconnect(conn, "timeout")
            hub.close(conn, WSCloseCode.GOING_AWAY, "heartbeat timeout")
            dropped += 1
        else:
            conn.enqueue(PING_FRAME)
    return dropped


async def run_heartbeats(hub: Hub, interval: float) -> None:
    previous = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        now = time.monotonic()
        sweep(hub, previous)
        previous = now
