"""Heartbeats, graceful shutdown and the start line."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import aiohttp
import pytest

from tests.conftest import ChatServer, Connect, RawPeer, ServerProcess


async def test_dead_peer_is_dropped_within_two_heartbeats(
    chat: ChatServer, connect: Connect
) -> None:
    """A peer that never answers pings is dropped and its leave broadcast; live ones stay."""
    interval = 0.5
    await chat.stop()
    await chat.start(heartbeat=interval)
    watcher = await connect()
    await watcher.until("User 1 has connected")
    dead = await asyncio.to_thread(RawPeer, chat.settings.port)
    await watcher.until("User 2 has connected")
    started = time.monotonic()
    line = await watcher.until("User 2 has disconnected", timeout=4 * interval + 2)
    elapsed = time.monotonic() - started
    dead.close()
    assert line == "User 2 has disconnected (timeout)."
    # The contract is "within two intervals"; a second of slack for a busy CI.
    assert elapsed <= 2 * interval + 1.0, elapsed
    # Reading lets aiohttp answer pings: a live watcher survives several sweeps.
    with pytest.raises(TimeoutError):
        await watcher.text(timeout=3 * interval)
    await watcher.send("still here")
    assert await watcher.until("still here") == "User 1: still here"


async def test_sigterm_closes_every_client_with_1001(
    server_process: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    """On SIGTERM each client gets close 1001 and the process exits in time."""
    server = await asyncio.to_thread(server_process, "--shutdown-timeout", "3")
    peers = [await http.ws_connect(server.url()) for _ in range(3)]
    for peer in peers:
        await asyncio.wait_for(peer.receive(), 5)
    server.signal(signal.SIGTERM)
    started = time.monotonic()
    for peer in peers:
        msg = await asyncio.wait_for(peer.receive(), 5)
        while msg.type is aiohttp.WSMsgType.TEXT:
            msg = await asyncio.wait_for(peer.receive(), 5)
        # The close frame's own code: aiohttp's client may overwrite close_code
        # with 1006 when its close reply meets the already-closed socket.
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1001)
    code = await asyncio.to_thread(server.wait, 10)
    assert code == 0
    assert time.monotonic() - started < 3 + 2


async def test_sigint_stops_an_idle_server(
    server_process: Callable[..., ServerProcess],
) -> None:
    """Ctrl-C (SIGINT) stops the server cleanly; it printed the seed's start line."""
    server = await asyncio.to_thread(server_process)
    assert any(
        line.startswith(f"Server started on ws://127.0.0.1:{server.port}") for line in server.output
    )
    server.signal(signal.SIGINT)
    assert await asyncio.to_thread(server.wait, 10) == 0
