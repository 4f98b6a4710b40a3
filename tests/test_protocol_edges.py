"""Protocol edges: the Host header is checked before the Origin comparison (DNS
rebinding), and close codes that must not appear on the wire get 1002."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import aiohttp
import pytest

from tests.conftest import ChatServer, RawPeer, ServerProcess
from tests.test_flood import OP_CLOSE, OP_TEXT, client_frame, frames_until_close


async def test_a_foreign_host_with_a_matching_origin_is_refused(
    chat: ChatServer, http: aiohttp.ClientSession
) -> None:
    """Host: evil.example with Origin http://evil.example gets 403 (DNS rebinding)."""
    headers = {"Host": "evil.example", "Origin": "http://evil.example"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(chat.url(), headers=headers)
    assert refused.value.status == 403


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "10.1.2.3", "[::1]"])
async def test_localhost_and_ip_literal_hosts_are_allowed_by_default(
    chat: ChatServer, http: aiohttp.ClientSession, host: str
) -> None:
    """The listen host, localhost and any IP literal need no --allowed-hosts."""
    port = chat.settings.port
    headers = {"Host": f"{host}:{port}", "Origin": f"http://{host}:{port}"}
    ws = await http.ws_connect(chat.url(), headers=headers)
    await ws.close()


async def test_allowed_hosts_admits_a_named_host(
    chat: ChatServer, http: aiohttp.ClientSession
) -> None:
    """--allowed-hosts chat.example admits that Host (port ignored), and only that one."""
    await chat.stop()
    await chat.start(allowed_hosts=("chat.example",))
    good = {"Host": "chat.example:443", "Origin": "https://chat.example"}
    ws = await http.ws_connect(chat.url(), headers=good)
    await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await http.ws_connect(chat.url(), headers={"Host": "other.example"})


@pytest.mark.parametrize("code", [1005, 1006, 1015, 999, 0])
async def test_close_codes_that_must_not_be_sent_get_1002(chat: ChatServer, code: int) -> None:
    """A client close frame with 1005, 1006, 1015 or a code below 1000 is answered 1002."""
    peer = await asyncio.to_thread(RawPeer, chat.settings.port, protocol="chat.v1")
    try:
        close = client_frame(OP_CLOSE, struct.pack("!H", code) + b"bye")
        await asyncio.to_thread(peer.sock.sendall, close)
        _, answer = await asyncio.to_thread(frames_until_close, peer)
        assert answer == 1002
    finally:
        peer.close()


async def test_a_normal_close_is_answered_1000(chat: ChatServer) -> None:
    """A client close with 1000 gets 1000 back."""
    peer = await asyncio.to_thread(RawPeer, chat.settings.port, protocol="chat.v1")
    try:
        close = client_frame(OP_CLOSE, struct.pack("!H", 1000))
        await asyncio.to_thread(peer.sock.sendall, close)
        _, answer = await asyncio.to_thread(frames_until_close, peer)
        assert answer == 1000
    finally:
        peer.close()


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "byte-by-byte-header"])
async def test_an_unmasked_client_frame_is_closed_with_1002(
    server_process: Callable[..., ServerProcess], split: bool
) -> None:
    """RFC 6455 5.1: after masked frames, an unmasked one gets close 1002."""
    server = await asyncio.to_thread(server_process)
    peer = await asyncio.to_thread(RawPeer, server.port, protocol="chat.v1")
    try:
        good = client_frame(OP_TEXT, b'{"type":"ping"}') + client_frame(OP_TEXT, b"x" * 300)
        bad = client_frame(OP_TEXT, b'{"type":"ping"}', masked=False)
        if split:
            for byte in good + bad:
                await asyncio.to_thread(peer.sock.sendall, bytes((byte,)))
        else:
            await asyncio.to_thread(peer.sock.sendall, good + bad)
        _, answer = await asyncio.to_thread(frames_until_close, peer)
        assert answer == 1002
    finally:
        peer.close()
