"""Bans, mutes and the audit log survive a restart on the same database."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.conftest import ADMIN_AUTH, ADMIN_TOKEN, JSON, ChatServer, Peer


def api_url(chat: ChatServer, path: str) -> str:
    assert chat.server is not None
    return f"http://127.0.0.1:{chat.server.port}/admin/api/{path}"


async def api(
    http: aiohttp.ClientSession, chat: ChatServer, method: str, path: str, body: Any = None
) -> dict[str, Any]:
    async with http.request(method, api_url(chat, path), json=body, headers=ADMIN_AUTH) as response:
        data: dict[str, Any] = await response.json()
        assert response.status < 300, data
        return data


async def connect(http: aiohttp.ClientSession, chat: ChatServer, name: str) -> Peer:
    ws = await http.ws_connect(chat.url(name=name), protocols=JSON)
    return Peer(ws)


async def test_ban_mute_and_audit_survive_a_restart(
    chat: ChatServer, http: aiohttp.ClientSession
) -> None:
    """After a restart a banned name is still refused with 4501, a muted name still
    cannot post, a lifted ban stays lifted, and the audit log is intact."""
    assert chat.settings.admin_token == ADMIN_TOKEN
    await api(http, chat, "POST", "bans", {"name": "mallory", "duration": "1d", "reason": "spam"})
    lifted = await api(http, chat, "POST", "bans", {"name": "forgiven", "reason": "oops"})
    await api(http, chat, "DELETE", f"bans/{lifted['ban']['id']}")
    await api(http, chat, "POST", "mutes", {"name": "loud", "duration": "1h", "reason": "caps"})
    await api(http, chat, "POST", "bans", {"name": "brief", "duration": 0.5, "reason": "short"})

    await chat.stop()
    await asyncio.sleep(0.6)  # "brief" runs out while the server is down
    await chat.start()

    mallory = await connect(http, chat, "Mallory")
    code, reason = await mallory.closed()
    assert code == 4501
    assert reason.startswith("banned until ")
    assert reason.endswith("spam")
    forgiven = await connect(http, chat, "forgiven")
    assert (await forgiven.until_type("welcome"))["user"]["name"] == "forgiven"
    brief = await connect(http, chat, "brief")  # expired while the server was down
    assert (await brief.until_type("welcome"))["user"]["name"] == "brief"
    loud = await connect(http, chat, "loud")
    await loud.until_type("welcome")
    await loud.send_json(type="message", text="STILL HERE")
    error = await loud.until_type("error")
    assert error["code"] == "muted"
    assert "until" in error["message"]

    bans = (await api(http, chat, "GET", "bans"))["bans"]
    assert [ban["name"] for ban in bans] == ["mallory"]
    actions = [e["action"] for e in (await api(http, chat, "GET", "audit"))["entries"]]
    assert actions == ["ban", "mute", "unban", "ban", "ban"]
    # New actions continue the ids rather than reusing them.
    again = await api(http, chat, "POST", "bans", {"name": "next", "reason": "r"})
    assert again["ban"]["id"] == 4
    for peer in (forgiven, brief, loud):
        await peer.close()
