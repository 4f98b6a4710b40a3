"""Registered names: register, log in, guests refused, rate limits, restarts,
policies and resume, embedded and on two nodes over Redis."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from argon2 import PasswordHasher

from chatserver import accounts, admin_cli
from chatserver.keys import DIRECTORY, HUB
from chatserver.session import hash_token, new_token
from tests.conftest import (
    ADMIN_AUTH,
    ADMIN_TOKEN,
    TIMEOUT,
    ChatServer,
    ClusterChat,
    Connect,
    Peer,
    both_modes,
    make_settings,
)

chat_mode = both_modes()

PASSWORD = "correct horse battery"


async def gone(chat: ChatServer, peer: Peer, user_id: int) -> None:
    """Close ``peer`` and wait until every node has let its user go and written
    that down (a node saves sessions and frees names in the background)."""
    await peer.close()
    servers = [chat, *([chat.second] if isinstance(chat, ClusterChat) else [])]
    deadline = time.monotonic() + TIMEOUT
    for server in servers:
        assert server.app is not None
        while user_id in server.app[HUB].users:
            assert time.monotonic() < deadline, "the server kept the connection"
            await asyncio.sleep(0.01)
        await server.app[DIRECTORY].flush()


async def welcome_of(peer: Peer) -> dict[str, Any]:
    event = await peer.until_type("welcome")
    return event


async def registered(connect: Connect, name: str = "alice") -> tuple[Peer, dict[str, Any]]:
    """A chat.v1 client that holds ``name`` and registered it; its welcome, with
    the resume token the registration gave in place of the guest's."""
    peer = await connect(json=True, name=name)
    welcome = await welcome_of(peer)
    assert welcome["identity"] == "guest"
    await peer.send_json(type="register", password=PASSWORD)
    identified = await peer.until_type("identified")
    assert identified["identity"] == "registered"
    assert identified["user"] == welcome["user"]
    session = identified.get("session", welcome["session"])
    return peer, {**welcome, "session": session, "guest_session": welcome["session"]}


async def first_frame_login(connect: Connect, name: str, password: str, **query: str) -> Peer:
    """Connect and log in with the first frame (no password in the URL)."""
    peer = await connect(json=True, auth="frame", **query)
    await peer.send(json.dumps({"type": "auth", "name": name, "password": password}))
    return peer


async def test_register_then_log_in_on_a_later_connection(connect: Connect) -> None:
    """A registered name logs in later (first frame or command) as the same user."""
    alice, welcome = await registered(connect)
    await alice.close()
    again = await first_frame_login(connect, "alice", PASSWORD)
    back = await welcome_of(again)
    assert back["identity"] == "registered"
    assert back["user"] == welcome["user"]
    await again.close()
    guest = await connect(json=True)
    await welcome_of(guest)
    await guest.send_json(type="login", name="ALICE", password=PASSWORD)
    identified = await guest.until_type("identified")
    assert identified["user"] == welcome["user"]
    assert identified["identity"] == "registered"
    assert identified["session"]


async def test_text_dialect_registers_and_logs_in(connect: Connect) -> None:
    """/register and /login work from a plain text client; others see the name change."""
    bob = await connect()
    await bob.until("has connected")
    await bob.send("/nick bob")
    await bob.until("is now known as bob")
    await bob.send(f"/register {PASSWORD}")
    assert await bob.until(r"^\*\*\* You are") == "*** You are bob (registered)."
    await bob.close()
    watcher = await connect()
    await watcher.until("has connected")
    other = await connect()
    await other.until("Welcome")
    await other.send(f"/login bob {PASSWORD}")
    assert await other.until(r"^\*\*\* You are") == "*** You are bob (registered)."
    assert (await watcher.until("now known as")).endswith("is now known as bob.")


async def test_wrong_password_is_refused_then_rate_limited(connect: Connect) -> None:
    """Wrong passwords get login_failed, then login_rate_limited even for the right
    one; in Redis mode failures on both nodes count together."""
    alice, _ = await registered(connect)
    await alice.close()
    guests = [await connect(json=True), await connect(json=True)]  # one per node
    for guest in guests:
        await welcome_of(guest)
    for attempt in range(5):
        guest = guests[attempt % 2]
        await guest.send_json(type="login", name="alice", password="not the password")
        assert (await guest.until_type("error"))["code"] == "login_failed"
    for guest in guests:
        await guest.send_json(type="login", name="alice", password=PASSWORD)
        error = await guest.until_type("error")
        assert error["code"] == "login_rate_limited"
        assert "try again in" in error["message"]


async def test_wrong_password_in_the_first_frame_closes_4401(connect: Connect) -> None:
    """Bad credentials at connect close the socket 4401 with a clear reason."""
    alice, _ = await registered(connect)
    await alice.close()
    peer = await first_frame_login(connect, "alice", "wrong password!")
    assert await peer.closed() == (4401, "wrong name or password")


async def test_guest_cannot_take_a_registered_name(connect: Connect) -> None:
    """Asking for a registered name at connect or by /nick gets name_registered."""
    alice, _ = await registered(connect)
    await alice.close()
    guest = await connect(json=True, name="Alice")
    welcome = await welcome_of(guest)
    assert welcome["user"]["name"] != "Alice"
    assert (await guest.until_type("error"))["code"] == "name_registered"
    await guest.send_json(type="nick", name="alice")
    assert (await guest.until_type("error"))["code"] == "name_registered"


async def test_registering_a_name_someone_else_registered_is_refused(connect: Connect) -> None:
    """A second registration of one name, or of one account twice, is refused."""
    alice, _ = await registered(connect)
    await alice.send_json(type="register", password=PASSWORD)
    assert (await alice.until_type("error"))["code"] == "already_registered"
    await alice.send_json(type="register", password="short")
    assert (await alice.until_type("error"))["code"] == "already_registered"
    anonymous = await connect(json=True)
    await welcome_of(anonymous)
    await anonymous.send_json(type="register", password=PASSWORD)
    assert (await anonymous.until_type("error"))["code"] == "name_invalid"
    await anonymous.send_json(type="nick", name="carol")
    await anonymous.until_type("nick")
    await anonymous.send_json(type="register", password="short")
    assert (await anonymous.until_type("error"))["code"] == "password_invalid"


async def test_restart_keeps_accounts(chat: ChatServer, connect: Connect) -> None:
    """Accounts survive a restart (SQLite file or Redis)."""
    alice, welcome = await registered(connect)
    await alice.close()
    await chat.stop()
    await chat.start()
    again = await first_frame_login(connect, "alice", PASSWORD)
    back = await welcome_of(again)
    assert back["user"] == welcome["user"]
    assert back["identity"] == "registered"


async def test_resume_keeps_the_account(chat: ChatServer, connect: Connect) -> None:
    """A session resumed after a login is the same account, still registered."""
    alice, welcome = await registered(connect)
    await alice.close()
    guest = await connect(json=True)
    await welcome_of(guest)
    await guest.send_json(type="login", name="alice", password=PASSWORD)
    session = (await guest.until_type("identified"))["session"]
    await gone(chat, guest, welcome["user"]["id"])
    resumed = await connect(json=True, session=session)
    back = await welcome_of(resumed)
    assert back["resumed"] is True
    assert back["identity"] == "registered"
    assert back["user"] == welcome["user"]


async def test_password_change_ends_other_sessions(connect: Connect) -> None:
    """After a password change the old resume token is unknown and the old password fails."""
    alice, welcome = await registered(connect)
    old_session = welcome["session"]
    await alice.close()
    other = await first_frame_login(connect, "alice", PASSWORD)
    await welcome_of(other)
    await other.send_json(type="password", old=PASSWORD, new="a new long password")
    assert "other sessions have ended" in (await other.until_type("system"))["text"]
    stale = await connect(json=True, session=old_session)
    assert (await welcome_of(stale))["resumed"] is False
    refused = await first_frame_login(connect, "alice", PASSWORD)
    assert (await refused.closed())[0] == 4401
    fresh = await first_frame_login(connect, "alice", "a new long password")
    assert (await welcome_of(fresh))["identity"] == "registered"


async def test_unregister_frees_the_name(chat: ChatServer, connect: Connect) -> None:
    """Dropping a registration makes the holder a guest and the name free later."""
    alice, welcome = await registered(connect)
    await alice.send_json(type="unregister", password=PASSWORD)
    assert (await alice.until_type("identified"))["identity"] == "guest"
    await gone(chat, alice, welcome["user"]["id"])
    guest = await connect(json=True, name="alice")
    assert (await welcome_of(guest))["user"]["name"] == "alice"


async def test_registered_policy_lets_guests_read_only(chat: ChatServer, connect: Connect) -> None:
    """With --auth registered a guest reads and gets login_required for a message."""
    await registered(connect)
    await chat.stop()
    await chat.start(auth="registered", restricted_rooms=("staff",))
    member = await first_frame_login(connect, "alice", PASSWORD)
    await welcome_of(member)
    guest = await connect(json=True)
    await welcome_of(guest)
    await guest.send_json(type="message", text="hello?")
    assert (await guest.until_type("error"))["code"] == "login_required"
    await guest.send_json(type="join", room="staff")
    assert (await guest.until_type("error"))["code"] == "login_required"
    await member.send_json(type="join", room="staff")
    assert (await member.until_type("who"))["room"] == "staff"
    await member.send_json(type="message", text="members talk", room="lobby")
    assert (await guest.until_type("message"))["text"] == "members talk"


async def admin(
    http: aiohttp.ClientSession, chat: ChatServer, path: str, status: int = 200
) -> dict[str, Any]:
    """One admin API call on the first node."""
    assert chat.server is not None
    url = f"http://127.0.0.1:{chat.server.port}/admin/api/{path}"
    async with http.post(url, headers=ADMIN_AUTH) as response:
        data: dict[str, Any] = await response.json()
        assert response.status == status, data
        return data


async def test_operator_locks_an_account_on_any_node(
    chat: ChatServer, connect: Connect, http: aiohttp.ClientSession
) -> None:
    """Locking closes the account's live connection (4500), refuses its logins
    and resumes, and is in the audit log; unlocking lets it in again."""
    alice, welcome = await registered(connect)
    await alice.close()
    live = await first_frame_login(connect, "alice", PASSWORD)
    await welcome_of(live)
    # In Redis mode this connection is on the second node: the lock crosses nodes.
    await admin(http, chat, "accounts/alice/lock")
    assert await live.closed() == (4500, "account locked by an operator")
    refused = await first_frame_login(connect, "alice", PASSWORD)
    assert await refused.closed() == (4401, "this account is locked by an operator")
    await admin(http, chat, "accounts/alice/unlock")
    again = await first_frame_login(connect, "alice", PASSWORD)
    assert (await welcome_of(again))["user"] == welcome["user"]
    assert chat.server is not None
    audit_url = f"http://127.0.0.1:{chat.server.port}/admin/api/audit"
    async with http.get(audit_url, headers=ADMIN_AUTH) as response:
        entries = (await response.json())["entries"]
    assert [(e["action"], e["target"]) for e in entries[:2]] == [
        ("account_unlock", "alice"),
        ("account_lock", "alice"),
    ]


async def test_operator_reset_gives_a_temporary_password(
    chat: ChatServer, connect: Connect, http: aiohttp.ClientSession
) -> None:
    """A reset ends the account's sessions and only the temporary password opens it."""
    alice, welcome = await registered(connect)
    reset = await admin(http, chat, "accounts/alice/reset")
    assert await alice.closed() == (4500, "password reset by an operator")
    stale = await connect(json=True, session=welcome["session"])
    assert (await welcome_of(stale))["resumed"] is False
    old = await first_frame_login(connect, "alice", PASSWORD)
    assert (await old.closed())[0] == 4401
    fresh = await first_frame_login(connect, "alice", reset["password"])
    assert (await welcome_of(fresh))["identity"] == "registered"
    missing = await admin(http, chat, "accounts/nobody/lock", status=404)
    assert missing["error"]["code"] == "not_registered"


async def test_admin_cli_resets_and_locks_and_lists_identity(
    chat: ChatServer,
    connect: Connect,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`chatserver admin account reset|lock|unlock NAME`; connections show the identity."""
    assert chat.server is not None
    monkeypatch.setenv("CHAT_ADMIN_URL", f"http://127.0.0.1:{chat.server.port}")
    monkeypatch.setenv("CHAT_ADMIN_TOKEN", ADMIN_TOKEN)

    async def run(*argv: str) -> tuple[int, str]:
        code = await asyncio.wait_for(asyncio.to_thread(admin_cli.main, list(argv)), 20)
        return code, capsys.readouterr().out

    alice, _ = await registered(connect)
    code, out = await run("connections", "--json")
    assert code == 0
    [row] = json.loads(out)["connections"]
    assert (row["name"], row["identity"]) == ("alice", "registered")
    code, out = await run("account", "reset", "alice")
    assert code == 0
    assert out.startswith("Reset the password of alice; the temporary password is ")
    assert await alice.closed() == (4500, "password reset by an operator")
    assert (await run("account", "lock", "alice"))[1] == "Locked the account alice.\n"
    assert (await run("account", "unlock", "alice"))[1] == "Unlocked the account alice.\n"
    code, _ = await run("account", "lock", "nobody")
    assert code != 0


async def test_logging_into_a_banned_name_is_closed_4501(
    chat: ChatServer, connect: Connect, http: aiohttp.ClientSession
) -> None:
    """A name ban holds for a guest who logs into that registered name later."""
    alice, _ = await registered(connect)
    await alice.close()
    assert chat.server is not None
    url = f"http://127.0.0.1:{chat.server.port}/admin/api/bans"
    async with http.post(url, json={"name": "alice", "reason": "spam"}, headers=ADMIN_AUTH) as r:
        assert r.status == 201
    guest = await connect(json=True)
    await welcome_of(guest)
    await guest.send_json(type="login", name="alice", password=PASSWORD)
    code, reason = await guest.closed()
    assert code == 4501
    assert reason.endswith("spam")


async def test_ban_by_account_holds_whatever_the_address(
    chat: ChatServer, connect: Connect, http: aiohttp.ClientSession
) -> None:
    """`POST bans {account}` bans the registered name, which its owner cannot
    nick away from while logged in: the account stays out."""
    alice, _ = await registered(connect)
    await alice.send_json(type="nick", name="alias")
    assert (await alice.until_type("error"))["code"] == "name_locked"
    await alice.send_json(type="nick", name="ALICE")
    assert (await alice.until_type("nick"))["user"]["name"] == "ALICE"
    assert chat.server is not None
    url = f"http://127.0.0.1:{chat.server.port}/admin/api/bans"
    body = {"account": "alice", "reason": "abuse", "duration": "1h"}
    async with http.post(url, json=body, headers=ADMIN_AUTH) as response:
        assert response.status == 201
        assert (await response.json())["ban"]["name"] == "alice"
    assert (await alice.closed())[0] == 4501
    again = await first_frame_login(connect, "alice", PASSWORD)
    assert (await again.closed())[0] == 4501
    async with http.post(url, json={"account": "nobody"}, headers=ADMIN_AUTH) as response:
        assert response.status == 404


async def test_resuming_a_guest_session_whose_name_was_registered_since(
    chat: ChatServer, connect: Connect
) -> None:
    """A guest who left as 'erin' resumes as User N once someone registered 'erin'."""
    erin = await connect(json=True, name="erin")
    welcome = await welcome_of(erin)
    await gone(chat, erin, welcome["user"]["id"])
    _owner, _ = await registered(connect, "erin")
    back = await connect(json=True, session=welcome["session"])
    again = await welcome_of(back)
    assert again["resumed"] is True
    assert again["user"] == {"id": welcome["user"]["id"], "name": f"User {welcome['user']['id']}"}
    assert (await back.until_type("error"))["code"] == "name_registered"


# ------------------------------------------------------------- review of issue 13


async def test_parallel_wrong_logins_are_all_counted(connect: Connect) -> None:
    """Twenty wrong passwords for one name sent at once, as login commands and
    first frames: at most the limit (5) are checked, the rest are rate-limited."""
    alice, _ = await registered(connect)
    await alice.close()
    guests = [await connect(json=True) for _ in range(12)]
    for guest in guests:
        await welcome_of(guest)
    wrong = "not the password"
    framed = [await connect(json=True, auth="frame") for _ in range(8)]
    await asyncio.gather(
        *(guest.send_json(type="login", name="alice", password=wrong) for guest in guests),
        *(peer.send_json(type="auth", name="alice", password=wrong) for peer in framed),
    )
    codes = [(await guest.until_type("error"))["code"] for guest in guests]
    closes = [await peer.closed() for peer in framed]
    refused = codes.count("login_failed") + closes.count((4401, "wrong name or password"))
    assert 1 <= refused <= 5
    limited = [reason for code, reason in closes if reason.startswith("too many failed logins")]
    assert codes.count("login_rate_limited") + len(limited) == 20 - refused


async def test_parallel_wrong_logins_from_one_address_are_all_counted(connect: Connect) -> None:
    """Wrong logins for 30 names sent at once from one address: at most four
    times the per-name limit (20) are checked."""
    guests = [await connect(json=True) for _ in range(30)]
    for guest in guests:
        await welcome_of(guest)
    await asyncio.gather(
        *(
            guest.send_json(type="login", name=f"nobody{index}", password="whatever it is")
            for index, guest in enumerate(guests)
        )
    )
    codes = [(await guest.until_type("error"))["code"] for guest in guests]
    assert 1 <= codes.count("login_failed") <= 20
    assert codes.count("login_rate_limited") == 30 - codes.count("login_failed")


async def test_a_session_saved_again_after_a_reset_does_not_resume(
    chat: ChatServer, connect: Connect, http: aiohttp.ClientSession
) -> None:
    """A record that a live connection writes again after a reset ended the
    account's sessions (a join on another node, racing the close) is stale: it
    resumes as nobody's session, not as the account."""
    alice, welcome = await registered(connect)
    assert chat.app is not None
    directory = chat.app[DIRECTORY]
    await asyncio.sleep(0.1)  # the registering node saves in the background
    for server in [chat, *([chat.second] if isinstance(chat, ClusterChat) else [])]:
        assert server.app is not None
        await server.app[DIRECTORY].flush()
    record = await directory.load_session(hash_token(welcome["session"]))
    assert record is not None
    assert record.identity == "registered"
    await admin(http, chat, "accounts/alice/reset")
    assert await alice.closed() == (4500, "password reset by an operator")
    directory.save_session(record)  # what the racing join wrote afterwards
    await directory.flush()
    stale = await connect(json=True, session=welcome["session"])
    back = await welcome_of(stale)
    assert back["resumed"] is False
    assert back["identity"] == "guest"
    assert back["user"]["id"] != welcome["user"]["id"]


async def test_a_password_change_keeps_its_own_session_resumable(
    chat: ChatServer, connect: Connect
) -> None:
    """The connection that changed the password resumes later as the account."""
    alice, welcome = await registered(connect)
    await alice.send_json(type="password", old=PASSWORD, new="a new long password")
    await alice.until_type("system")
    await gone(chat, alice, welcome["user"]["id"])
    back = await connect(json=True, session=welcome["session"])
    again = await welcome_of(back)
    assert (again["resumed"], again["identity"]) == (True, "registered")


async def test_register_rotates_the_resume_token(chat: ChatServer, connect: Connect) -> None:
    """The guest's token ends with a registration; the identified event's new
    one resumes the account."""
    alice, welcome = await registered(connect)
    assert welcome["session"] != welcome["guest_session"]
    await gone(chat, alice, welcome["user"]["id"])
    old = await connect(json=True, session=welcome["guest_session"])
    assert (await welcome_of(old))["resumed"] is False
    await old.close()
    new = await connect(json=True, session=welcome["session"])
    again = await welcome_of(new)
    assert (again["resumed"], again["identity"]) == (True, "registered")
    assert again["user"] == welcome["user"]


async def test_who_of_a_restricted_room_needs_a_login(chat: ChatServer, connect: Connect) -> None:
    """A guest gets login_required for `who` of a restricted room; its members see it."""
    await chat.stop()
    await chat.start(restricted_rooms=("staff",))
    alice, _ = await registered(connect)
    await alice.send_json(type="join", room="staff")
    assert [u["name"] for u in (await alice.until_type("who"))["users"]] == ["alice"]
    guest = await connect(json=True)
    await welcome_of(guest)
    await guest.send_json(type="who", room="staff")
    assert (await guest.until_type("error"))["code"] == "login_required"
    await alice.send_json(type="who", room="staff")
    assert (await alice.until_type("who"))["room"] == "staff"
    text_guest = await connect()
    await text_guest.until("Welcome")
    await text_guest.send("/who staff")
    assert (await text_guest.until("Error")).endswith("(login_required)")


async def test_text_passwords_keep_their_spaces(connect: Connect) -> None:
    """/register keeps the password's own leading and trailing spaces; /login
    NAME PASSWORD takes the rest of the line after NAME's one space."""
    spaced = "  spaced out password  "
    bob = await connect(name="bob")
    await bob.until("Welcome")
    await bob.send(f"/register {spaced}")
    assert await bob.until(r"^\*\*\* You are") == "*** You are bob (registered)."
    await bob.close()
    stripped = await first_frame_login(connect, "bob", spaced.strip())
    assert (await stripped.closed())[0] == 4401
    exact = await first_frame_login(connect, "bob", spaced)
    assert (await welcome_of(exact))["identity"] == "registered"
    await exact.close()
    other = await connect()
    await other.until("Welcome")
    await other.send(f"/login bob {spaced}")
    assert await other.until(r"^\*\*\* You are") == "*** You are bob (registered)."


async def test_text_welcome_says_how_the_user_is_known(chat: ChatServer, connect: Connect) -> None:
    """A text client's welcome says guest, as the JSON one does, and registered after a login."""
    guest = await connect(name="gus")
    line = await guest.until("Welcome")
    assert line == (
        "Welcome, gus! You are a guest (not registered). You are in #lobby. "
        "Type /help for commands."
    )
    alice, welcome = await registered(connect)
    await gone(chat, alice, welcome["user"]["id"])
    back = await connect(session=welcome["session"])
    assert "You are logged in (registered)." in await back.until("Welcome")


async def test_a_full_hash_queue_answers_busy(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the node's cap of queued password hashes a login command gets
    `busy` and a first-frame login is closed 1013 (try again); nothing breaks
    and the next attempt works once there is room."""
    await registered(connect)
    monkeypatch.setattr(accounts.HASH_QUEUE, "limit", 0)
    guest = await connect(json=True)
    await welcome_of(guest)
    await guest.send_json(type="login", name="alice", password=PASSWORD)
    error = await guest.until_type("error")
    assert error["code"] == "busy"
    assert "try again" in error["message"]
    framed = await first_frame_login(connect, "alice", PASSWORD)
    code, reason = await framed.closed()
    assert code == 1013
    assert "busy" in reason
    monkeypatch.setattr(accounts.HASH_QUEUE, "limit", 1)
    peers = [await connect(json=True) for _ in range(12)]
    for peer in peers:
        await welcome_of(peer)
    await asyncio.gather(
        *(p.send_json(type="login", name=f"n{i}", password="x" * 9) for i, p in enumerate(peers))
    )
    codes = {(await peer.until_type("error"))["code"] for peer in peers}
    assert "busy" in codes
    assert codes <= {"busy", "login_failed"}
    assert accounts.HASH_QUEUE.jobs == 0
    await guest.send_json(type="login", name="alice", password=PASSWORD)
    assert (await guest.until_type("identified"))["identity"] == "registered"


async def test_register_password_and_unregister_are_rate_limited(
    chat: ChatServer, connect: Connect
) -> None:
    """Registrations count per name and address like logins, successful or not;
    wrong passwords of `password` and `unregister` count as failed logins."""
    await chat.stop()
    await chat.start(login_attempts=1)
    alice, _ = await registered(connect)
    await alice.send_json(type="unregister", password=PASSWORD)
    assert (await alice.until_type("identified"))["identity"] == "guest"
    await alice.send_json(type="register", password=PASSWORD)
    error = await alice.until_type("error")
    assert error["code"] == "register_rate_limited"
    assert "try again in" in error["message"]
    bob, _ = await registered(connect, "bob")
    await bob.send_json(type="password", old="wrong password!", new="another password")
    assert (await bob.until_type("error"))["code"] == "login_failed"
    await bob.send_json(type="password", old=PASSWORD, new="another password")
    assert (await bob.until_type("error"))["code"] == "login_rate_limited"
    await bob.send_json(type="unregister", password=PASSWORD)
    assert (await bob.until_type("error"))["code"] == "login_rate_limited"


OLD_SCHEMA = """
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY, user_id INTEGER NOT NULL, name TEXT NOT NULL,
    rooms TEXT NOT NULL, expires REAL NOT NULL, identity TEXT NOT NULL DEFAULT 'guest',
    allowed TEXT, subject TEXT, token_expires REAL
);
CREATE TABLE accounts (
    key TEXT PRIMARY KEY, name TEXT NOT NULL, user_id INTEGER NOT NULL,
    password_hash TEXT NOT NULL, locked INTEGER NOT NULL, created REAL NOT NULL
);
"""


async def test_accounts_and_sessions_from_before_generations_keep_working(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A database written before credential generations: its account logs in and
    its registered session resumes as the account."""
    settings = make_settings(tmp_path)
    token = new_token()
    with sqlite3.connect(settings.db) as db:
        db.executescript(OLD_SCHEMA)
        row = ("alice", "alice", 7, PasswordHasher().hash(PASSWORD), 0, time.time())
        db.execute("INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?)", row)
        session = (hash_token(token), 7, "alice", '["lobby"]', time.time() + 3600, "registered")
        db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, NULL)", session)
    db.close()
    chat = ChatServer(settings)
    await chat.start()
    try:
        peer = Peer(await http.ws_connect(chat.url(session=token), protocols=("chat.v1",)))
        back = await welcome_of(peer)
        assert (back["resumed"], back["identity"], back["user"]["id"]) == (True, "registered", 7)
        await peer.close()
        login = Peer(await http.ws_connect(chat.url(auth="frame"), protocols=("chat.v1",)))
        await login.send_json(type="auth", name="alice", password=PASSWORD)
        assert (await welcome_of(login))["identity"] == "registered"
        await login.close()
    finally:
        await chat.stop()
