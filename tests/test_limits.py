"""Bad input gets a clear answer and harms nobody else."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import ChatServer, Connect


async def test_invalid_json_and_unknown_types_keep_the_connection(connect: Connect) -> None:
    """Malformed JSON, unknown types and wrong field types are error events."""
    peer = await connect(json=True)
    await peer.until_type("join")
    cases = [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_request"),
        ('{"type": "dance"}', "bad_request"),
        ('{"type": "message", "text": 42}', "bad_request"),
        ('{"type": "message"}', "bad_request"),
        ('{"type": "message", "text": "   "}', "text_invalid"),
        ('{"type": "message", "text": "bell\\u0007"}', "text_invalid"),
        ('{"type": "nick", "name": "\\u202eevil"}', "name_invalid"),
        ('{"type": "history", "room": "lobby", "limit": 100000}', "bad_request"),
    ]
    for frame, code in cases:
        await peer.send(frame)
        error = await peer.until_type("error")
        assert error["code"] == code, (frame, error)
        assert error["message"]
    unknown = '{"type": "dance"}'
    await peer.send(unknown)
    assert "dance" in (await peer.until_type("error"))["message"]
    await peer.send_json(type="message", text="still alive")
    assert (await peer.until_type("message"))["text"] == "still alive"


async def test_binary_frame_is_an_error(connect: Connect) -> None:
    """A binary frame gets binary_unsupported; the connection stays."""
    peer = await connect(json=True)
    await peer.until_type("join")
    await peer.ws.send_bytes(b"\x00\x01")
    assert (await peer.until_type("error"))["code"] == "binary_unsupported"
    await peer.send_json(type="ping")
    assert (await peer.until_type("pong"))["type"] == "pong"


async def test_oversized_frame_closes_1009_and_others_continue(
    chat: ChatServer, connect: Connect
) -> None:
    """A frame over --max-message-bytes closes that client with 1009 only."""
    await chat.stop()
    await chat.start(max_message_bytes=1024)
    big = await connect()
    other = await connect()
    await big.until("User 2 has connected")
    await big.send("x" * 2000)
    code, _ = await big.closed()
    assert code == 1009
    assert await other.until("disconnected") == "User 1 has disconnected (error)."
    await other.send("fine")
    assert await other.until("fine") == "User 2: fine"


async def test_foreign_origin_is_refused_before_upgrade(
    chat: ChatServer, http: aiohttp.ClientSession
) -> None:
    """An Origin that is neither same-origin nor allowed gets HTTP 403."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(chat.url(), headers={"Origin": "http://evil.example"})
    assert refused.value.status == 403
    port = chat.settings.port
    same = await http.ws_connect(chat.url(), headers={"Origin": f"http://127.0.0.1:{port}"})
    await same.close()
    no_origin = await http.ws_connect(chat.url())
    await no_origin.close()


async def test_allowed_origins_setting(chat: ChatServer, http: aiohttp.ClientSession) -> None:
    """--allowed-origins admits a listed foreign origin, and only that one."""
    await chat.stop()
    await chat.start(allowed_origins=("https://chat.example.org",))
    ok = await http.ws_connect(chat.url(), headers={"Origin": "https://chat.example.org"})
    await ok.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(chat.url(), headers={"Origin": "https://other.example.org"})
    assert refused.value.status == 403


async def test_rate_limit_errors_then_closes_1008(chat: ChatServer, connect: Connect) -> None:
    """Over the rate: rate_limited errors; sustained abuse: close 1008."""
    await chat.stop()
    await chat.start(rate_limit=1.0, rate_burst=3)
    flooder = await connect(json=True)
    bystander = await connect(json=True)
    await flooder.until_type("welcome")
    for i in range(40):
        await flooder.send_json(type="message", text=f"spam {i}")
    codes: list[str] = []
    msg = await flooder.recv()
    while msg.type is aiohttp.WSMsgType.TEXT:
        if '"type":"error"' in msg.data:
            codes.append("rate_limited" if "rate_limited" in msg.data else msg.data)
        msg = await flooder.recv()
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1008)
    assert codes
    assert set(codes) == {"rate_limited"}
    await bystander.send_json(type="message", text="unaffected")
    seen: list[str] = []
    while not seen or seen[-1] != "unaffected":
        seen.append((await bystander.until_type("message"))["text"])
    assert seen[:-1] == ["spam 0", "spam 1", "spam 2"]


async def test_connections_per_ip_limit(chat: ChatServer, http: aiohttp.ClientSession) -> None:
    """Past --max-connections-per-ip the upgrade is refused with 429."""
    await chat.stop()
    await chat.start(max_connections_per_ip=2)
    first = await http.ws_connect(chat.url())
    second = await http.ws_connect(chat.url())
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(chat.url())
    assert refused.value.status == 429
    await first.close()
    third = await http.ws_connect(chat.url())
    await second.close()
    await third.close()


async def test_healthz(chat: ChatServer, http: aiohttp.ClientSession) -> None:
    """/healthz answers 200 with a JSON status."""
    async with http.get(f"http://127.0.0.1:{chat.settings.port}/healthz") as response:
        assert response.status == 200
        body = await response.json()
    assert body["status"] == "ok"
    assert body["connections"] == 0
