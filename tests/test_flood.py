"""Flood control counts every frame: binary frames, pings and pongs as well as
text, and a flood's queued replies go out before its 1008. Raw frames from a
hand-rolled client, so a whole flood arrives in one write."""

from __future__ import annotations

import asyncio
import json
import os
import struct

import pytest

from chatserver.limits import ABUSE_STRIKES
from tests.conftest import ChatServer, RawPeer

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def client_frame(opcode: int, payload: bytes, masked: bool = True) -> bytes:
    """One final client frame; masked, as RFC 6455 requires of clients, unless told."""
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head = bytes((0x80 | opcode, mask_bit | length))
    elif length < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, mask_bit | 127, length)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))


def frames_until_close(peer: RawPeer) -> tuple[list[tuple[int, bytes]], int | None]:
    """Every frame the server sends until its close frame; and the close code."""
    seen: list[tuple[int, bytes]] = []
    for opcode, payload in peer.read_frames(timeout=10):
        if opcode == OP_CLOSE:
            return seen, int.from_bytes(payload[:2], "big")
        seen.append((opcode, payload))
    return seen, None


@pytest.fixture
async def rated(chat: ChatServer) -> ChatServer:
    await chat.stop()
    await chat.start(rate_limit=10.0, rate_burst=20)
    return chat


@pytest.mark.parametrize("opcode", [OP_BINARY, OP_PING, OP_PONG], ids=["binary", "ping", "pong"])
async def test_a_flood_of_any_frame_type_is_closed_with_1008(
    rated: ChatServer, opcode: int
) -> None:
    """500 binary frames, pings or pongs in a burst end with close 1008."""
    peer = await asyncio.to_thread(RawPeer, rated.settings.port, protocol="chat.v1")
    try:
        flood = client_frame(opcode, b"x") * 500
        await asyncio.to_thread(peer.sock.sendall, flood)
        _, code = await asyncio.to_thread(frames_until_close, peer)
        assert code == 1008
    finally:
        peer.close()


async def test_replies_queued_before_a_flood_close_are_delivered(rated: ChatServer) -> None:
    """Every reply the server queued for a flooding client arrives before the 1008."""
    peer = await asyncio.to_thread(RawPeer, rated.settings.port, protocol="chat.v1")
    try:
        commands = [
            json.dumps({"type": "history", "limit": 0, "ref": ref}).encode() for ref in range(60)
        ]
        burst = b"".join(client_frame(OP_TEXT, command) for command in commands)
        await asyncio.to_thread(peer.sock.sendall, burst)
        frames, code = await asyncio.to_thread(frames_until_close, peer)
        assert code == 1008
        events = [json.loads(payload) for _, payload in frames]
        errors = [event for event in events if event["type"] == "error"]
        answered = [e for e in errors if e.get("code") == "bad_request"]
        refused = [e for e in errors if e.get("code") == "rate_limited"]
        # The strike that closes gets no reply; every earlier frame got one.
        assert len(refused) == ABUSE_STRIKES - 1
        assert [e["ref"] for e in answered] == list(range(len(answered)))
        assert len(answered) + len(refused) == len(errors)
    finally:
        peer.close()
