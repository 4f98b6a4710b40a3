"""The admin JSON API and ``chatserver admin``, against a real server and real clients."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from chatserver import admin_cli
from tests.conftest import ADMIN_AUTH, ADMIN_TOKEN, JSON, Client, Peer, join


async def api(
    client: Client, method: str, path: str, body: Any = None, status: int = 200, **params: str
) -> dict[str, Any]:
    """One authenticated API call that must answer ``status``; its JSON body."""
    async with client.request(
        method, "/admin/api/" + path, json=body, params=params or None, headers=ADMIN_AUTH
    ) as response:
        data: dict[str, Any] = await response.json()
        assert response.status == status, data
        assert response.headers["Cache-Control"] == "no-store"
        return data


async def conn_id(client: Client, name: str) -> int:
    rows = (await api(client, "GET", "connections", name=name))["connections"]
    assert len(rows) == 1, rows
    return int(rows[0]["id"])


async def refused_connect(client: Client, name: str) -> tuple[int | None, str]:
    """Connect as ``name``; the close code and reason the server answers with."""
    ws = await client.ws_connect("/ws", params={"name": name}, protocols=JSON)
    try:
        return await Peer(ws).closed()
    finally:
        await ws.close()


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Basic dGVzdC1hZG1pbi10b2tlbg=="},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer tökén-ünïcode"},
        {"Authorization": "Bearer " + "x" * 5000},
        {"Authorization": "Bearer " + ADMIN_TOKEN + "x"},
    ],
    ids=["none", "wrong", "basic", "empty", "non-ascii", "oversized", "prefix"],
)
async def test_api_refuses_bad_tokens_with_401(client: Client, headers: dict[str, str]) -> None:
    """Missing, wrong, non-ASCII and oversized tokens get 401 JSON, never 500."""
    for method, path in [("GET", "stats"), ("GET", "connections"), ("POST", "announce")]:
        async with client.request(
            method, "/admin/api/" + path, headers=headers, json={"text": "x"}
        ) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await response.json())["error"]["code"] == "unauthorized"


async def test_api_refuses_raw_non_utf8_token_bytes(client: Client) -> None:
    """A token of raw non-UTF-8 header bytes is a 401, not a server error."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"GET /admin/api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer \xff\xfe\x80token\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 401"), head


async def test_api_rate_limits_failed_attempts(client: Client) -> None:
    """After ten wrong tokens an address gets 429, even with the right token."""
    for _ in range(10):
        async with client.get("/admin/api/stats", headers={"Authorization": "Bearer no"}) as r:
            assert r.status == 401
    async with client.get("/admin/api/stats", headers=ADMIN_AUTH) as response:
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1


async def test_api_wrong_method_is_json_405(client: Client) -> None:
    """A known API path with another method answers a JSON 405."""
    data = await api(client, "PUT", "bans", status=405)
    assert data["error"]["code"] == "method_not_allowed"


async def test_api_unknown_route_is_json_404(client: Client) -> None:
    """An unknown API path answers a JSON 404 (after authentication)."""
    data = await api(client, "GET", "nope", status=404)
    assert data["error"]["message"]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("announce", b"{not json"),
        ("announce", b"[1, 2]"),
        ("announce", b'"text"'),
        ("bans", b"\xff\xfe"),
    ],
)
async def test_bad_json_bodies_are_400(client: Client, path: str, raw: bytes) -> None:
    """A body that is not a JSON object gets 400 with a JSON error."""
    async with client.post(
        "/admin/api/" + path, data=raw, headers={**ADMIN_AUTH, "Content-Type": "application/json"}
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "bad_json"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("announce", {"text": 5}),
        ("announce", {"text": "   "}),
        ("announce", {"text": "hi", "room": "bad room!"}),
        ("bans", {"reason": "no target"}),
        ("bans", {"name": "x", "duration": "soon"}),
        ("bans", {"name": "x", "duration": -5}),
        ("bans", {"address": "not-an-ip"}),
        ("bans", {"name": "x", "reason": "r" * 500}),
        ("mutes", {"duration": "1m"}),
        ("kick", {}),
    ],
)
async def test_invalid_fields_are_400(client: Client, path: str, body: dict[str, Any]) -> None:
    """Wrong types, bad durations, bad addresses and missing targets get 400."""
    data = await api(client, "POST", path, body, status=400)
    assert data["error"]["code"] in {"bad_request", "text_invalid", "room_invalid"}
    assert data["error"]["message"]


async def test_bad_paging_is_400(client: Client) -> None:
    """Paging and sort parameters are validated."""
    await api(client, "GET", "connections", status=400, page="0")
    await api(client, "GET", "connections", status=400, per_page="x")
    await api(client, "GET", "connections", status=400, sort="name; drop")
    await api(client, "GET", "audit", status=400, limit="100000")


# "²" passes str.isdigit() but not int(); 5,000 digits pass both checks but int() refuses them.
@pytest.mark.parametrize("number", ["²", "9" * 5000])
async def test_odd_numbers_get_an_error_reply_not_a_500(client: Client, number: str) -> None:
    """Every number the API reads from text is refused cleanly, in paths, queries and bodies."""
    await api(client, "GET", "connections", status=400, page=number)
    await api(client, "GET", "connections", status=400, per_page=number)
    await api(client, "GET", "rooms", status=400, limit=number)
    await api(client, "GET", "audit", status=400, limit=number)
    await api(client, "GET", "audit", status=400, before=number)
    await api(client, "POST", "kick", {"conn_id": number}, status=400)
    for path in (f"bans/{number}", f"mutes/{number}"):
        assert (await api(client, "DELETE", path, status=404))["error"]["code"] == "not_found"
    assert (await api(client, "GET", "connections"))["total"] == 0  # the server is fine


# --------------------------------------------------------------------------- reading


async def test_connections_are_filtered_and_paged_on_the_server(client: Client) -> None:
    """Filters by name, room and address, and pages of the requested size."""
    peers = [await join(client, f"member{i}") for i in range(5)]
    peers.append(await join(client, "dev-only", room="dev"))
    page = await api(client, "GET", "connections", per_page="2", page="2")
    assert [row["name"] for row in page["connections"]] == ["member2", "member3"]
    assert (page["total"], page["page"], page["pages"]) == (6, 2, 3)
    assert (await api(client, "GET", "connections", name="MEMBER4"))["total"] == 1
    by_room = await api(client, "GET", "connections", room="#dev")
    assert [row["name"] for row in by_room["connections"]] == ["dev-only"]
    assert (await api(client, "GET", "connections", address="127.0.0"))["total"] == 6
    assert (await api(client, "GET", "connections", q="dev"))["total"] == 1
    row = (await api(client, "GET", "connections", name="member0"))["connections"][0]
    expected = {"id", "user_id", "name", "rooms", "address", "dialect", "connected_at"}
    expected |= {"last_activity", "messages_in", "messages_out", "bytes_out", "buffer_fill"}
    assert expected | {"node"} <= set(row)
    assert row["rooms"] == ["lobby"]
    assert row["dialect"] == "json"
    single = await api(client, "GET", f"connections/{row['id']}")
    assert single["connection"]["name"] == "member0"
    for peer in peers:
        await peer.close()


async def test_stats_and_rooms_report_the_server(client: Client) -> None:
    """Stats count connections, users, rooms and messages; rooms list members."""
    alice = await join(client, "alice")
    bob = await join(client, "bob", room="dev")
    await alice.send_json(type="message", text="hello")
    await alice.until_type("message")
    stats = await api(client, "GET", "stats")
    assert (stats["connections"], stats["users"], stats["rooms"]) == (2, 2, 2)
    assert stats["messages_in"] == 1
    assert stats["rss_bytes"] > 0
    assert stats["uptime"] >= 0
    assert stats["node"].endswith(f":{client.port}")
    rooms = {row["name"]: row for row in (await api(client, "GET", "rooms"))["rooms"]}
    assert rooms["lobby"]["members"] == 1
    assert rooms["lobby"]["messages"] == 1
    assert rooms["dev"]["members"] == 1
    await alice.close()
    await bob.close()


# --------------------------------------------------------------------------- actions


async def test_kick_closes_4500_and_the_room_hears_why(client: Client) -> None:
    """A kicked client gets 4500 with the reason; the room sees 'NAME was kicked (reason)'."""
    alice = await join(client, "alice")
    watcher = await join(client, "watcher", json_mode=False)
    data = await api(
        client, "POST", f"connections/{await conn_id(client, 'alice')}/kick", {"reason": "spam"}
    )
    assert data["kicked"]["name"] == "alice"
    assert await alice.closed() == (4500, "spam")
    assert await watcher.until("was kicked") == "alice was kicked (spam)."
    assert (await api(client, "GET", "connections"))["total"] == 1
    await watcher.close()


async def test_kick_by_name_and_unknown_targets(client: Client) -> None:
    """Kick by name works; unknown ids and names are 404."""
    bob = await join(client, "bob")
    await api(client, "POST", "kick", {"name": "BOB", "reason": "bye"})
    assert (await bob.closed())[0] == 4500
    await api(client, "POST", "connections/999/kick", {"reason": "x"}, status=404)
    await api(client, "POST", "connections/abc/kick", {}, status=404)
    await api(client, "POST", "kick", {"name": "ghost"}, status=404)


async def test_long_multibyte_kick_reason_still_gives_a_valid_close(client: Client) -> None:
    """A 200-character non-ASCII reason is cut to fit a close frame as valid UTF-8."""
    carol = await join(client, "carol")
    await api(client, "POST", "kick", {"name": "carol", "reason": "ü" * 200})
    code, reason = await carol.closed()
    assert code == 4500
    assert reason.startswith("üü")
    assert len(reason.encode()) <= 123


async def test_ban_by_name_kicks_refuses_and_lifts(client: Client) -> None:
    """A name ban closes the live user with 4501, refuses reconnects saying until when,
    and lifting it lets the name back in."""
    mallory = await join(client, "Mallory")
    watcher = await join(client, "watcher", json_mode=False)
    data = await api(
        client,
        "POST",
        "bans",
        {"name": "mallory", "duration": "1h", "reason": "spam links"},
        status=201,
    )
    assert data["kicked"] == 1
    code, reason = await mallory.closed()
    assert code == 4501
    assert reason.startswith("banned until ")
    assert "spam links" in reason
    assert await watcher.until("was banned") == "Mallory was banned (spam links)."
    code, reason = await refused_connect(client, "MALLORY")
    assert code == 4501
    assert "until" in reason
    bans = (await api(client, "GET", "bans"))["bans"]
    assert [(ban["name"], ban["reason"]) for ban in bans] == [("mallory", "spam links")]
    await api(client, "DELETE", f"bans/{bans[0]['id']}")
    await api(client, "DELETE", f"bans/{bans[0]['id']}", status=404)
    again = await join(client, "Mallory")
    await again.close()
    await watcher.close()


async def test_ban_of_a_connection_by_address(client: Client) -> None:
    """Banning a connection's address refuses every client from that address."""
    eve = await join(client, "eve")
    await api(
        client,
        "POST",
        "bans",
        {"conn_id": await conn_id(client, "eve"), "by": "address", "reason": "abuse"},
        status=201,
    )
    assert (await eve.closed())[0] == 4501
    code, reason = await refused_connect(client, "someone-else")
    assert code == 4501
    assert reason == "banned permanently: abuse"


async def test_network_ban_and_expiry(client: Client) -> None:
    """A network ban covers its addresses, and a short ban expires by itself."""
    await api(client, "POST", "bans", {"address": "127.0.0.0/8", "duration": 1}, status=201)
    assert (await refused_connect(client, "x"))[0] == 4501
    await asyncio.sleep(1.2)
    peer = await join(client, "x")
    await peer.close()
    assert (await api(client, "GET", "bans"))["bans"] == []


async def test_renaming_to_a_banned_name_is_refused(client: Client) -> None:
    """A connected user who takes a banned name is closed with 4501."""
    await api(client, "POST", "bans", {"name": "trouble", "reason": "old ban"}, status=201)
    sneaky = await join(client, "sneaky")
    await sneaky.send_json(type="nick", name="Trouble")
    assert (await sneaky.closed())[0] == 4501


async def test_mute_blocks_posting_until_unmuted(client: Client) -> None:
    """A muted user gets error 'muted' saying until when; others see nothing; unmute
    lets them post again, also after a rename."""
    alice = await join(client, "alice")
    bob = await join(client, "bob")
    data = await api(
        client,
        "POST",
        "mutes",
        {"conn_id": await conn_id(client, "alice"), "duration": "10m", "reason": "flood"},
        status=201,
    )
    notice = await alice.until_type("system")
    assert "muted you until" in notice["text"]
    await alice.send_json(type="nick", name="alice2")
    await alice.send_json(type="message", text="can you hear me?")
    error = await alice.until_type("error")
    assert error["code"] == "muted"
    assert "until" in error["message"]
    assert "flood" in error["message"]
    mutes = (await api(client, "GET", "mutes"))["mutes"]
    assert [m["id"] for m in mutes] == [data["mute"]["id"]]
    await api(client, "DELETE", f"mutes/{data['mute']['id']}")
    await alice.send_json(type="message", text="back")
    assert (await bob.until_type("message"))["text"] == "back"
    await alice.close()
    await bob.close()


async def test_mute_by_name_of_an_offline_user(client: Client) -> None:
    """A name muted while offline cannot post after connecting."""
    await api(client, "POST", "mutes", {"name": "later", "reason": "r"}, status=201)
    later = await join(client, "later")
    await later.send_json(type="message", text="hi")
    error = await later.until_type("error")
    assert error["code"] == "muted"
    assert "until an operator unmutes you" in error["message"]
    await later.close()


async def test_announce_to_a_room_and_to_everyone(client: Client) -> None:
    """Announcements reach one room or every connection as system events."""
    lobby = await join(client, "lobbyist")
    dev = await join(client, "developer", room="dev")
    data = await api(client, "POST", "announce", {"text": "dev only", "room": "dev"})
    assert data["recipients"] == 1
    assert (await dev.until_type("system"))["text"] == "dev only"
    await api(client, "POST", "announce", {"text": "everyone"})
    assert (await lobby.until_type("system"))["text"] == "everyone"
    assert (await dev.until_type("system"))["text"] == "everyone"
    await api(client, "POST", "announce", {"text": "x", "room": "empty"}, status=404)
    await lobby.close()
    await dev.close()


async def test_audit_log_records_every_action(client: Client) -> None:
    """Kick, ban, unban, mute, unmute and announce appear in the audit log, newest first."""
    target = await join(client, "target")
    await api(client, "POST", "kick", {"name": "target", "reason": "k"})
    await target.closed()
    ban = await api(client, "POST", "bans", {"name": "b", "reason": "r1"}, status=201)
    await api(client, "DELETE", f"bans/{ban['ban']['id']}")
    mute = await api(client, "POST", "mutes", {"name": "m", "reason": "r2"}, status=201)
    await api(client, "DELETE", f"mutes/{mute['mute']['id']}")
    await api(client, "POST", "announce", {"text": "note"})
    entries = (await api(client, "GET", "audit"))["entries"]
    actions = [entry["action"] for entry in entries]
    assert actions == ["announce", "unmute", "mute", "unban", "ban", "kick"]
    kick = entries[-1]
    assert kick["actor"] == "admin via api@127.0.0.1"
    assert "target" in kick["target"]
    assert kick["reason"] == "k"
    assert all(entry["ts"] > 0 and entry["time"].endswith("UTC") for entry in entries)
    older = await api(client, "GET", "audit", limit="2", before=str(entries[1]["id"]))
    assert [e["action"] for e in older["entries"]] == ["mute", "unban"]
    assert older["more"]


# --------------------------------------------------------------------------- the CLI


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``chatserver admin`` in a thread (it runs its own event loop)."""
    code = await asyncio.wait_for(asyncio.to_thread(admin_cli.main, list(argv)), 20)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_admin_cli_operates_the_server(
    client: Client, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator commands list, kick, ban, unban, mute, announce and audit."""
    monkeypatch.setenv("CHAT_ADMIN_URL", f"http://127.0.0.1:{client.port}")
    monkeypatch.setenv("CHAT_ADMIN_TOKEN", ADMIN_TOKEN)
    dave = await join(client, "dave")
    code, out, _ = await run_cli(capsys, "connections")
    assert code == 0
    assert "dave" in out
    assert "1 total" in out
    code, out, _ = await run_cli(capsys, "connections", "--json")
    assert json.loads(out)["connections"][0]["name"] == "dave"
    code, out, _ = await run_cli(capsys, "mute", "--name", "dave", "--duration", "5m")
    assert code == 0
    assert out.startswith("Muted")
    code, out, _ = await run_cli(capsys, "kick", "--name", "dave", "--reason", "cli")
    assert code == 0
    assert (await dave.closed()) == (4500, "cli")
    code, out, _ = await run_cli(capsys, "ban", "--name", "dave", "--reason", "x", "--json")
    ban_id = json.loads(out)["ban"]["id"]
    code, out, _ = await run_cli(capsys, "bans")
    assert "dave" in out
    assert "until lifted" in out
    code, out, _ = await run_cli(capsys, "unban", str(ban_id))
    assert code == 0
    assert "Lifted" in out
    code, out, _ = await run_cli(capsys, "announce", "hello ops", "--room", "lobby")
    assert code == 1  # nobody is in #lobby any more
    erin = await join(client, "erin")
    await erin.send_json(type="message", text="to be removed")
    msg_id = (await erin.until_type("message"))["id"]
    code, out, _ = await run_cli(capsys, "delete", "lobby", str(msg_id))
    assert (code, out.strip()) == (0, f"Deleted message {msg_id} of #lobby.")
    assert (await erin.until_type("delete"))["id"] == msg_id
    code, out, _ = await run_cli(capsys, "bulk", "kick", str(await conn_id(client, "erin")))
    assert (code, out.strip()) == (0, "Kicked 1 connection(s).")
    assert (await erin.closed())[0] == 4500
    code, out, _ = await run_cli(capsys, "whoami")
    assert out.strip() == "admin (admin)"
    code, out, _ = await run_cli(capsys, "audit")
    assert code == 0
    assert "kick" in out
    assert "unban" in out
    code, out, _ = await run_cli(capsys, "stats")
    assert code == 0
    assert "connections:" in out
    code, _, err = await run_cli(capsys, "stats", "--token", "wrong")
    assert code == 1
    assert "401" in err
    code, _, err = await run_cli(capsys, "kick")
    assert code == 2
    assert "--name" in err
