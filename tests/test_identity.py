"""Identities that must not escape: bans by a token's ``sub`` (account), a
token's ``exp`` ending its session, ``refresh``, and resume after expiry;
embedded and on two nodes over Redis (connections alternate between nodes)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient

from chatserver import admin_cli
from chatserver.app import create_app
from tests.conftest import (
    ADMIN_AUTH,
    ADMIN_TOKEN,
    ChatServer,
    Connect,
    Peer,
    both_modes,
    make_settings,
)
from tests.test_accounts import PASSWORD, first_frame_login, gone, registered, welcome_of
from tests.test_dashboard import log_in, post_action
from tests.test_tokens import SECRET, mint, with_tokens

chat_mode = both_modes()

SUB = "site-user-42"  # the subject tests.test_tokens.mint() signs by default


def api_url(chat: ChatServer, path: str) -> str:
    assert chat.server is not None
    return f"http://127.0.0.1:{chat.server.port}/admin/api/{path}"


async def api(
    http: aiohttp.ClientSession,
    chat: ChatServer,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    status: int = 200,
) -> dict[str, Any]:
    """One admin API call on the first node (in Redis mode the users tested are
    often on the second: the effect has to cross nodes)."""
    async with http.request(method, api_url(chat, path), json=body, headers=ADMIN_AUTH) as r:
        data: dict[str, Any] = await r.json()
        assert r.status == status, data
        return data


def soon(seconds: float, **extra: Any) -> str:
    """A token that expires ``seconds`` from now (exp is whole seconds)."""
    return mint(exp=int(time.time() + seconds), **extra)


# ------------------------------------------------------------------ bans by subject


async def test_ban_by_subject_closes_every_session_and_refuses_new_ones(
    chat: ChatServer, connect: Connect, http: aiohttp.ClientSession
) -> None:
    """`POST bans {subject}` closes the token user's live connection with 4501
    (on whichever node), refuses a new token of that ``sub`` whatever name it
    shows, and nobody else: not another ``sub``, not a guest of the same name."""
    await with_tokens(chat)
    await (await connect(json=True)).close()  # in Redis mode: the next one is on node 1
    carol = await connect(json=True, token=mint())
    await carol.until_type("welcome")
    answer = await api(http, chat, "POST", "bans", {"subject": SUB, "reason": "abuse"}, status=201)
    ban = answer["ban"]
    assert (ban["subject"], ban["name"], ban["address"]) == (SUB, None, None)
    code, reason = await carol.closed()
    assert code == 4501
    assert reason == "banned permanently: abuse"
    for _ in range(2):  # both nodes refuse a new connection
        again = await connect(json=True, token=mint(name="Someone Else"))
        assert (await again.closed())[0] == 4501
    other = await connect(json=True, token=mint(sub="another-user", name="Dave"))
    assert (await welcome_of(other))["identity"] == "token"
    guest = await connect(json=True, name="Carol")
    assert (await welcome_of(guest))["user"]["name"] == "Carol"
    listed = (await api(http, chat, "GET", "bans"))["bans"]
    assert [b["subject"] for b in listed] == [SUB]
    entries = (await api(http, chat, "GET", "audit"))["entries"]
    assert (entries[0]["action"], entries[0]["target"]) == ("ban", f"subject={SUB}")
    await api(http, chat, "DELETE", f"bans/{ban['id']}")
    back = await connect(json=True, token=mint())
    assert (await welcome_of(back))["identity"] == "token"
    entries = (await api(http, chat, "GET", "audit"))["entries"]
    assert entries[0]["action"] == "unban"
    assert f"subject={SUB}" in entries[0]["target"]


async def test_ban_by_subject_refuses_a_resume(
    chat: ChatServer, connect: Connect, http: aiohttp.ClientSession
) -> None:
    """A token user's resume token does not get them past a ban of their ``sub``,
    on either node."""
    await with_tokens(chat)
    carol = await connect(json=True, token=mint())
    welcome = await welcome_of(carol)
    await gone(chat, carol, welcome["user"]["id"])
    await api(http, chat, "POST", "bans", {"subject": SUB, "duration": "1h"}, status=201)
    for _ in range(2):
        resumed = await connect(json=True, session=welcome["session"])
        code, reason = await resumed.closed()
        assert code == 4501
        assert reason.startswith("banned until ")


async def test_banning_a_token_row_bans_its_subject(
    chat: ChatServer, connect: Connect, http: aiohttp.ClientSession
) -> None:
    """Banning a token user's connection (a row's Ban, bulk or by conn_id) bans
    the ``sub``, not the name this token happens to show; a registered row is
    banned by its account name; a guest has no account to ban."""
    await with_tokens(chat)
    carol = await connect(json=True, token=mint())
    await welcome_of(carol)
    rows = (await api(http, chat, "GET", "connections"))["connections"]
    [row] = [r for r in rows if r["identity"] == "token"]
    assert row["account"] == SUB
    answer = await api(
        http, chat, "POST", "bulk", {"op": "ban", "conn_ids": [row["id"]], "reason": "spam"}
    )
    assert answer["done"] == [row["id"]]
    assert (await carol.closed())[0] == 4501
    [ban] = (await api(http, chat, "GET", "bans"))["bans"]
    assert (ban["subject"], ban["name"]) == (SUB, None)
    renamed = await connect(json=True, token=mint(name="Carla"))
    assert (await renamed.closed())[0] == 4501
    guest = await connect(json=True, name="guest1")
    await welcome_of(guest)
    rows = (await api(http, chat, "GET", "connections"))["connections"]
    guest_row = next(r for r in rows if r["name"] == "guest1")
    assert guest_row["account"] is None
    refused = await api(
        http, chat, "POST", "bans", {"conn_id": guest_row["id"], "by": "account"}, status=400
    )
    assert "guest" in refused["error"]["message"]
    await guest.close()


async def test_banning_a_speaker_by_user_id_keeps_a_token_user_out(
    chat: ChatServer, connect: Connect, http: aiohttp.ClientSession
) -> None:
    """The room page bans a message's speaker by ``user_id`` (and name): for a
    token user that is their ``sub`` while connected, and their user id (which
    every token of that ``sub`` maps to) once gone, never only the name."""
    await with_tokens(chat)
    await (await connect(json=True)).close()  # in Redis mode: Carol is on node 1
    carol = await connect(json=True, token=mint())
    user_id = (await welcome_of(carol))["user"]["id"]
    body = {"user_id": user_id, "name": "Carol", "duration": "1h"}
    ban = (await api(http, chat, "POST", "bans", body, status=201))["ban"]
    assert (ban["subject"], ban["name"]) == (SUB, None)
    assert (await carol.closed())[0] == 4501
    await api(http, chat, "DELETE", f"bans/{ban['id']}")
    dave = await connect(json=True, token=mint(sub="dave-at-site", name="Dave"))
    dave_id = (await welcome_of(dave))["user"]["id"]
    await gone(chat, dave, dave_id)
    body = {"user_id": dave_id, "name": "Dave", "duration": "1h"}
    ban = (await api(http, chat, "POST", "bans", body, status=201))["ban"]
    assert (ban["user_id"], ban["name"]) == (dave_id, "Dave")
    for _ in range(2):
        again = await connect(json=True, token=mint(sub="dave-at-site", name="David"))
        assert (await again.closed())[0] == 4501


async def test_registered_account_ban_does_not_reach_a_token_of_that_name(
    chat: ChatServer, connect: Connect, http: aiohttp.ClientSession
) -> None:
    """A ban of the registered account 'alice' keeps the account out, but a
    site token whose ``name`` claim says 'alice' is another identity: it gets in
    (as User N, since the name is registered), and a ban of that ``sub`` does
    not touch the account."""
    await with_tokens(chat)
    alice, _ = await registered(connect)
    await alice.close()
    await api(http, chat, "POST", "bans", {"account": "alice"}, status=201)
    login = await first_frame_login(connect, "alice", PASSWORD)
    assert (await login.closed())[0] == 4501
    site = await connect(json=True, token=mint(sub="alice-at-site", name="alice"))
    welcome = await welcome_of(site)
    assert welcome["identity"] == "token"
    assert welcome["user"]["name"] != "alice"
    await site.close()


async def test_admin_cli_bans_and_lists_a_subject(
    chat: ChatServer,
    connect: Connect,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`chatserver admin ban --subject SUB` bans the token user; `bans` shows it."""
    await with_tokens(chat)
    assert chat.server is not None
    monkeypatch.setenv("CHAT_ADMIN_URL", f"http://127.0.0.1:{chat.server.port}")
    monkeypatch.setenv("CHAT_ADMIN_TOKEN", ADMIN_TOKEN)

    async def run(*argv: str) -> tuple[int, str]:
        code = await asyncio.wait_for(asyncio.to_thread(admin_cli.main, list(argv)), 20)
        return code, capsys.readouterr().out

    carol = await connect(json=True, token=mint())
    await welcome_of(carol)
    code, out = await run("ban", "--subject", SUB, "--duration", "1d", "--reason", "spam")
    assert code == 0, out
    assert out.startswith(f"Banned subject={SUB} ")
    assert (await carol.closed())[0] == 4501
    code, out = await run("bans")
    assert code == 0
    assert "SUBJECT" in out.splitlines()[0]
    assert SUB in out.splitlines()[1]


async def test_ban_by_subject_survives_a_restart(
    chat: ChatServer, connect: Connect, http: aiohttp.ClientSession
) -> None:
    """A ban of a ``sub`` is stored (SQLite or Redis), not only held in memory."""
    await with_tokens(chat)
    await api(http, chat, "POST", "bans", {"subject": SUB}, status=201)
    await chat.stop()
    await chat.start()
    peer = await connect(json=True, token=mint())
    assert (await peer.closed())[0] == 4501


async def test_an_account_locked_while_its_login_is_checked_stays_out(
    chat: ChatServer, connect: Connect, http: aiohttp.ClientSession
) -> None:
    """A lock that lands while a login's password is still being checked (here:
    queued behind other logins' hashes) does not let that login in: the account
    was read before the lock, so the connection is checked again once it is
    registered, where the lock's close can reach it."""
    alice, _ = await registered(connect)
    await alice.close()
    await queue_hashes(connect, "a")
    login = await first_frame_login(connect, "alice", PASSWORD)
    await api(http, chat, "POST", "accounts/alice/lock")
    code, reason = await login.closed(timeout=10)
    assert (code, reason) in {
        (4401, "this account is locked by an operator"),
        (4500, "account locked by an operator"),
    }
    await api(http, chat, "POST", "accounts/alice/unlock")
    guest = await connect(json=True)
    await welcome_of(guest)
    await queue_hashes(connect, "b")
    await guest.send_json(type="login", name="alice", password=PASSWORD)
    await api(http, chat, "POST", "accounts/alice/lock")
    code, reason = await guest.closed(timeout=10)
    assert code == 4500
    assert reason in {"this account is locked by an operator", "account locked by an operator"}


async def test_unregistering_leaves_the_rooms_guests_may_not_join(
    chat: ChatServer, connect: Connect
) -> None:
    """A registered user who drops the registration is a guest from then on,
    also in the ``--restricted-rooms`` they joined while registered."""
    await chat.stop()
    await chat.start(restricted_rooms=("staff",))
    alice, _ = await registered(connect)
    await alice.send_json(type="join", room="staff")
    await alice.until_type("who")
    await alice.send_json(type="unregister", password=PASSWORD)
    seen = {event["type"]: event for event in [await alice.event(), await alice.event()]}
    assert seen["identified"]["identity"] == "guest"
    assert (seen["leave"]["room"], seen["leave"]["reason"]) == ("staff", "leave")
    await alice.send_json(type="join", room="staff")
    assert (await alice.until_type("error"))["code"] == "login_required"


async def queue_hashes(connect: Connect, tag: str, count: int = 8) -> None:
    """Keep the password hashers busy for a while: failed logins of names that
    do not exist (each still costs a hash), ahead of the next login; two such
    queues stay under the per-address limit of failed logins (4 x 5 a minute)."""
    blockers = [await connect(json=True, auth="frame") for _ in range(count)]
    for number, blocker in enumerate(blockers):
        frame = {"type": "auth", "name": f"nobody-{tag}{number}", "password": "not a password"}
        await blocker.send(json.dumps(frame))


# ------------------------------------------------------------------ token expiry


async def test_a_session_ends_4401_when_its_token_expires(
    chat: ChatServer, connect: Connect
) -> None:
    """At ``exp`` (plus the leeway) the connection closes 4401 "token expired",
    in either dialect."""
    await with_tokens(chat, token_leeway=0.0)
    json_peer = await connect(json=True, token=soon(2))
    await welcome_of(json_peer)
    text_peer = await connect(token=soon(2, sub="text-user", name="Tex"))
    assert (await text_peer.text()).startswith("Welcome")
    assert await json_peer.closed(timeout=6) == (4401, "token expired")
    assert await text_peer.closed(timeout=6) == (4401, "token expired")


async def test_refresh_extends_the_session_and_needs_the_same_subject(
    chat: ChatServer, connect: Connect
) -> None:
    """`refresh {token}` with a valid token of the same ``sub`` moves the end of
    the session to its ``exp``; another ``sub``'s token or a bad one is an error
    and changes nothing."""
    await with_tokens(chat, token_leeway=0.0)
    peer = await connect(json=True, token=soon(2))
    await welcome_of(peer)
    await peer.send_json(type="refresh", token=mint(sub="someone-else"), ref=1)
    error = await peer.until_type("error")
    assert (error["code"], error["ref"]) == ("token_mismatch", 1)
    await peer.send_json(type="refresh", token=mint(exp=int(time.time()) - 60))
    error = await peer.until_type("error")
    assert (error["code"], error["message"]) == ("token_invalid", "token expired")
    later = int(time.time()) + 300
    await peer.send_json(type="refresh", token=mint(exp=later))
    assert (await peer.until_type("refreshed"))["expires"] == later
    await asyncio.sleep(3)
    await peer.send_json(type="ping")
    assert (await peer.until_type("pong"))["type"] == "pong"


async def test_welcome_says_when_a_token_session_ends(chat: ChatServer, connect: Connect) -> None:
    """A token user's welcome carries the token's ``exp`` (when to refresh); a
    guest's has none."""
    await with_tokens(chat)
    exp = int(time.time()) + 300
    peer = await connect(json=True, token=mint(exp=exp))
    assert (await welcome_of(peer))["expires"] == exp
    guest = await connect(json=True)
    assert "expires" not in await welcome_of(guest)


async def test_refresh_applies_the_new_tokens_rooms(chat: ChatServer, connect: Connect) -> None:
    """The rooms a refreshed token allows replace the old token's: a room it no
    longer lists is left, and cannot be joined again."""
    await with_tokens(chat)
    peer = await connect(json=True, token=mint(rooms=["lobby", "support"]))
    await welcome_of(peer)
    await peer.send_json(type="join", room="support")
    await peer.until_type("who")
    await peer.send_json(type="refresh", token=mint(rooms=["lobby"]))
    # The leave crosses the broker (Redis): it may come after the direct reply.
    seen = {event["type"]: event for event in [await peer.event(), await peer.event()]}
    assert (seen["leave"]["room"], seen["leave"]["reason"]) == ("support", "leave")
    assert "refreshed" in seen
    await peer.send_json(type="join", room="support")
    assert (await peer.until_type("error"))["code"] == "room_forbidden"
    await peer.send_json(type="refresh", token=mint())
    await peer.until_type("refreshed")
    await peer.send_json(type="join", room="support")
    assert (await peer.until_type("who"))["room"] == "support"


async def test_refresh_is_refused_to_non_token_users(chat: ChatServer, connect: Connect) -> None:
    """A guest cannot become a token user by `refresh`."""
    await with_tokens(chat)
    guest = await connect(json=True)
    await welcome_of(guest)
    await guest.send_json(type="refresh", token=mint())
    assert (await guest.until_type("error"))["code"] == "token_mismatch"
    await guest.send_json(type="ping")
    await guest.until_type("pong")


async def test_a_resumed_token_session_still_ends_at_exp(
    chat: ChatServer, connect: Connect
) -> None:
    """A resume before ``exp`` works (on either node) and still ends at ``exp``;
    a resume after it is refused 4401, so a resume token cannot outlive the
    site's token."""
    await with_tokens(chat, token_leeway=0.0)
    first = await connect(json=True, token=soon(3))
    welcome = await welcome_of(first)
    await gone(chat, first, welcome["user"]["id"])
    resumed = await connect(json=True, session=welcome["session"])
    assert (await welcome_of(resumed))["resumed"] is True
    assert await resumed.closed(timeout=6) == (4401, "token expired")
    late = await connect(json=True, session=welcome["session"])
    assert await late.closed() == (4401, "token expired")


async def test_a_new_token_resumes_an_expired_session(chat: ChatServer, connect: Connect) -> None:
    """After ``exp`` a resume that brings a new token of the same ``sub`` gets the
    session back (same user, resumed) until the new token's ``exp``."""
    await with_tokens(chat, token_leeway=0.0)
    first = await connect(json=True, token=soon(1))
    welcome = await welcome_of(first)
    assert await first.closed(timeout=5) == (4401, "token expired")
    later = int(time.time()) + 300
    back = await connect(json=True, session=welcome["session"], token=mint(exp=later))
    again = await welcome_of(back)
    assert (again["resumed"], again["user"], again["expires"]) == (True, welcome["user"], later)


async def test_a_refreshed_deadline_holds_after_resume(chat: ChatServer, connect: Connect) -> None:
    """A refresh is saved with the session: a resume on the other node keeps it."""
    await with_tokens(chat, token_leeway=0.0)
    first = await connect(json=True, token=soon(2))
    welcome = await welcome_of(first)
    await first.send_json(type="refresh", token=mint())
    await first.until_type("refreshed")
    await gone(chat, first, welcome["user"]["id"])
    await asyncio.sleep(2.5)
    resumed = await connect(json=True, session=welcome["session"])
    assert (await welcome_of(resumed))["resumed"] is True
    await resumed.send_json(type="ping")
    await resumed.until_type("pong")


async def test_connections_show_the_subject_of_a_token_user(
    chat: ChatServer, connect: Connect, http: aiohttp.ClientSession
) -> None:
    """`GET connections` rows carry ``account``: a registered name or a ``sub``,
    also after a resume; ``q`` finds a row by it."""
    await with_tokens(chat)
    carol = await connect(json=True, token=mint())
    welcome = await welcome_of(carol)
    await gone(chat, carol, welcome["user"]["id"])
    resumed = await connect(json=True, session=welcome["session"])
    await welcome_of(resumed)
    alice, _ = await registered(connect)
    rows = (await api(http, chat, "GET", "connections"))["connections"]
    accounts = {row["identity"]: row["account"] for row in rows}
    assert accounts == {"token": SUB, "registered": "alice"}
    found = (await api(http, chat, "GET", f"connections?q={SUB[:9]}"))["connections"]
    assert [row["account"] for row in found] == [SUB]
    await alice.close()


async def test_who_lists_users_without_leaking_subjects(chat: ChatServer, connect: Connect) -> None:
    """Users see ids and names of token users, never their site's ``sub``."""
    await with_tokens(chat)
    carol = await connect(json=True, token=mint())
    await welcome_of(carol)
    await carol.send_json(type="who")
    who = await carol.until_type("who")
    assert SUB not in json.dumps(who)


async def test_text_client_refreshes_with_a_command(chat: ChatServer, connect: Connect) -> None:
    """`/refresh TOKEN` works in the text dialect too."""
    await with_tokens(chat, token_leeway=0.0)
    peer = await connect(token=soon(2))
    assert (await peer.text()).startswith("Welcome")
    await peer.send("/refresh " + mint())
    assert (await peer.until(r"^\*\*\* Token refreshed")).endswith(" UTC.")
    await asyncio.sleep(2.5)
    await peer.send("/rooms")
    assert (await peer.until("Your rooms")).startswith("Your rooms: #lobby")


async def test_dashboard_shows_the_account_and_bans_a_token_row_by_subject(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """The connections table has an Account column (the ``sub`` of a token user);
    its row's Ban form bans the ``sub``, shown in the bans table."""
    client = await aiohttp_client(create_app(make_settings(tmp_path, token_secret=SECRET)))
    csrf = await log_in(client)
    ws = await client.ws_connect("/ws", params={"token": mint()}, protocols=("chat.v1",))
    carol = Peer(ws)
    await welcome_of(carol)
    async with client.get("/admin/") as response:
        page = await response.text()
    assert f'<td data-f="account">{SUB}</td>' in page
    status, body = await post_action(client, "ban", {"csrf": csrf, "conn_id": "1"})
    assert status == 201, body
    assert body["ban"]["subject"] == SUB
    assert (await carol.closed())[0] == 4501
    async with client.get("/admin/") as response:
        page = await response.text()
    assert f"<td>{SUB}</td>" in page


# ------------------------------------------------------------------ old databases


async def test_an_old_bans_table_is_migrated(tmp_path: Path) -> None:
    """A database from before subject bans keeps its bans and gains the columns."""
    path = tmp_path / "chat.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE bans (id INTEGER PRIMARY KEY, name TEXT, address TEXT, "
        "reason TEXT NOT NULL, actor TEXT NOT NULL, created REAL NOT NULL, until REAL, "
        "lifted REAL, lifted_by TEXT);"
        "INSERT INTO bans (name, address, reason, actor, created) "
        "VALUES ('mallory', NULL, 'old ban', 'ops', 1.0);"
    )
    db.commit()
    db.close()

    chat = ChatServer(make_settings(tmp_path, token_secret=SECRET))
    await chat.start()
    try:
        async with aiohttp.ClientSession() as http:
            bans = (await api(http, chat, "GET", "bans"))["bans"]
            assert [(b["name"], b.get("subject")) for b in bans] == [("mallory", None)]
            await api(http, chat, "POST", "bans", {"subject": SUB}, status=201)
            async with http.ws_connect(chat.url(name="mallory")) as ws:
                msg = await asyncio.wait_for(ws.receive(), 5)
                assert msg.type is aiohttp.WSMsgType.CLOSE
                assert msg.data == 4501
    finally:
        await chat.stop()
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(bans)")}
    assert {"subject", "user_id"} <= columns
