"""The dashboard over HTTP: login, sessions, CSRF, cross-site refusal, the push
channel's diffs, escaping and the browser chat page's files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient

from chatserver.app import create_app
from dashboard.keys import SESSIONS
from tests.conftest import ADMIN_TOKEN, Client, Peer, join, make_settings

XSS_NAME = "<img src=x onerror=alert(1)>"


async def login_nonce(client: Client) -> str:
    async with client.get("/admin/login") as response:
        assert response.status == 200
        match = re.search(r'name="csrf" value="([^"]+)"', await response.text())
    assert match is not None
    return match.group(1)


async def post_login(client: Client, token: str, nonce: str | None = None) -> int:
    nonce = await login_nonce(client) if nonce is None else nonce
    async with client.post(
        "/admin/login", data={"csrf": nonce, "token": token}, allow_redirects=False
    ) as response:
        return response.status


async def log_in(client: Client) -> str:
    """Log in; the session's CSRF token from the dashboard page."""
    assert await post_login(client, ADMIN_TOKEN) == 303
    async with client.get("/admin/", allow_redirects=False) as response:
        assert response.status == 200
        match = re.search(r'<meta name="csrf-token" content="([^"]+)">', await response.text())
    assert match is not None
    return match.group(1)


def session_cookie(client: Client) -> str:
    cookies = client.session.cookie_jar.filter_cookies(client.make_url("/admin/"))
    morsel = cookies.get("chat_admin_session")
    return morsel.value if morsel is not None else ""


async def post_action(
    client: Client, action: str, data: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with client.post(
        f"/admin/action/{action}",
        data=data,
        headers={"Accept": "application/json", **(headers or {})},
        allow_redirects=False,
    ) as response:
        return response.status, await response.json()


async def next_of(live: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """The next push message of type ``kind`` (bounded wait)."""
    return await Peer(live).until_type(kind)


async def next_reset(live: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The rows of the next new view (diffs queued before it are skipped)."""
    while True:
        conns = await next_of(live, "conns")
        if conns.get("reset"):
            return conns


# --------------------------------------------------------------------------- no session


async def test_without_a_session_pages_redirect_and_the_rest_is_401(client: Client) -> None:
    """No session: the page redirects to login, actions and the push channel get 401."""
    async with client.get("/admin/", allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/admin/login"
    async with client.get("/admin", allow_redirects=False) as response:
        assert response.headers["Location"] == "/admin/"
    status, _ = await post_action(client, "kick", {"conn_id": "1", "csrf": "x"})
    assert status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/admin/live")
    assert refused.value.status == 401
    client.session.cookie_jar.update_cookies(
        {"chat_admin_session": "forged"}, client.make_url("/admin/")
    )
    async with client.get("/admin/", allow_redirects=False) as response:
        assert response.status == 303


# --------------------------------------------------------------------------- login


async def test_login_starts_a_strict_httponly_session_with_a_new_id(client: Client) -> None:
    """Login sets an HttpOnly SameSite=Strict cookie; each login gets a fresh id."""
    nonce = await login_nonce(client)
    async with client.post(
        "/admin/login", data={"csrf": nonce, "token": ADMIN_TOKEN}, allow_redirects=False
    ) as response:
        assert response.status == 303
        header = next(
            value
            for value in response.headers.getall("Set-Cookie")
            if value.startswith("chat_admin_session=")
        )
    assert "HttpOnly" in header
    assert "SameSite=Strict" in header
    assert "Path=/admin/" in header
    first = session_cookie(client)
    await log_in(client)
    second = session_cookie(client)
    assert first
    assert second
    assert first != second
    async with client.get("/admin/", allow_redirects=False) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("trusted_proxy", "secure"), [(True, True), (False, False)], ids=["trusted", "untrusted"]
)
async def test_cookies_are_secure_behind_a_trusted_tls_proxy(
    aiohttp_client: AiohttpClient, tmp_path: Path, trusted_proxy: bool, secure: bool
) -> None:
    """X-Forwarded-Proto: https marks the cookies Secure, only from a trusted proxy."""
    settings = make_settings(tmp_path, admin_token=ADMIN_TOKEN, trusted_proxy=trusted_proxy)
    client = await aiohttp_client(create_app(settings))
    https = {"X-Forwarded-Proto": "https"}
    async with client.get("/admin/login", headers=https) as response:
        [nonce_cookie] = response.headers.getall("Set-Cookie")
        match = re.search(r'name="csrf" value="([^"]+)"', await response.text())
    assert match is not None
    assert ("Secure" in nonce_cookie) is secure
    # As a browser on https would: the test client's jar keeps Secure cookies off http.
    cookie = nonce_cookie.split(";", 1)[0]
    async with client.post(
        "/admin/login",
        data={"csrf": match.group(1), "token": ADMIN_TOKEN},
        headers={**https, "Cookie": cookie},
        allow_redirects=False,
    ) as response:
        assert response.status == 303
        [session] = [c for c in response.headers.getall("Set-Cookie") if "session=" in c]
    assert ("Secure" in session) is secure


@pytest.mark.parametrize(
    "token", ["wrong", "", "tökén", "x" * 100_000, ADMIN_TOKEN + " "], ids=lambda t: repr(t[:8])
)
async def test_login_refuses_bad_tokens_with_401(client: Client, token: str) -> None:
    """Wrong, empty, non-ASCII and oversized tokens get 401 and no session."""
    assert await post_login(client, token) == 401
    assert session_cookie(client) == ""


async def test_login_without_the_form_token_is_refused(client: Client) -> None:
    """A login POST without the login form's CSRF nonce is refused (403)."""
    await login_nonce(client)
    assert await post_login(client, ADMIN_TOKEN, nonce="") == 403
    assert await post_login(client, ADMIN_TOKEN, nonce="forged-nonce") == 403
    assert session_cookie(client) == ""


async def test_cross_site_login_is_refused(client: Client) -> None:
    """A login posted from another site's page is refused (403)."""
    nonce = await login_nonce(client)
    async with client.post(
        "/admin/login",
        data={"csrf": nonce, "token": ADMIN_TOKEN},
        headers={"Origin": "http://evil.example"},
        allow_redirects=False,
    ) as response:
        assert response.status == 403


async def test_login_attempts_are_rate_limited(client: Client) -> None:
    """Ten wrong logins from one address, then even the right token gets 429."""
    for _ in range(10):
        assert await post_login(client, "guess") == 401
    assert await post_login(client, ADMIN_TOKEN) == 429


async def test_expired_session_is_refused(client: Client) -> None:
    """A session past its lifetime no longer opens the dashboard."""
    await log_in(client)
    assert client.app is not None
    session = await client.app[SESSIONS].get(session_cookie(client))
    assert session is not None
    session.created -= 9 * 3600
    async with client.get("/admin/", allow_redirects=False) as response:
        assert response.status == 303


async def test_logout_ends_the_session_and_its_push_channel(client: Client) -> None:
    """Logout needs the CSRF token, drops the session and closes its push channel (4401)."""
    csrf = await log_in(client)
    live = await client.ws_connect("/admin/live")
    await next_of(live, "init")
    async with client.post("/admin/logout", data={}, allow_redirects=False) as response:
        assert response.status == 403
    async with client.post("/admin/logout", data={"csrf": csrf}, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/admin/login"
    code, _ = await Peer(live).closed()
    assert code == 4401
    await live.close()
    async with client.get("/admin/", allow_redirects=False) as response:
        assert response.status == 303


# --------------------------------------------------------------------------- CSRF and origin


async def test_actions_without_a_csrf_token_change_nothing(client: Client) -> None:
    """Forms without or with a wrong CSRF token are refused (403) and nobody is kicked."""
    csrf = await log_in(client)
    victim = await join(client, "victim")
    status, body = await post_action(client, "kick", {"conn_id": "1", "reason": "x"})
    assert status == 403
    assert "CSRF" in body["error"]["message"]
    status, _ = await post_action(client, "kick", {"conn_id": "1", "csrf": csrf[:-2] + "zz"})
    assert status == 403
    for action in ("ban", "mute", "announce", "unban", "unmute"):
        status, _ = await post_action(client, action, {"name": "victim", "text": "t"})
        assert status == 403
    await victim.send_json(type="ping")
    await victim.until_type("pong")  # still connected: none of the refused actions ran
    await victim.close()


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
async def test_cross_site_actions_are_refused(client: Client, headers: dict[str, str]) -> None:
    """A POST from another origin is refused even with the right CSRF token."""
    csrf = await log_in(client)
    victim = await join(client, "victim")
    status, _ = await post_action(
        client, "kick", {"conn_id": "1", "csrf": csrf, "reason": "x"}, headers
    )
    assert status == 403
    await victim.send_json(type="ping")
    await victim.until_type("pong")
    await victim.close()


async def test_cross_site_push_channel_is_refused(client: Client) -> None:
    """The push channel refuses a WebSocket opened by another site's page."""
    await log_in(client)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/admin/live", origin="http://evil.example")
    assert refused.value.status == 403


async def test_form_actions_take_effect(client: Client) -> None:
    """Kick, mute and ban from the forms work and land in the audit log."""
    csrf = await log_in(client)
    alice = await join(client, "alice")
    bob = await join(client, "bob")
    status, body = await post_action(client, "mute", {"csrf": csrf, "conn_id": "2"})
    assert status == 201
    assert body["mute"]["name"] == "bob"
    status, body = await post_action(
        client, "kick", {"csrf": csrf, "conn_id": "1", "reason": "from the form"}
    )
    assert status == 200
    assert await alice.closed() == (4500, "from the form")
    status, body = await post_action(
        client, "ban", {"csrf": csrf, "conn_id": "2", "by": "both", "duration": "1h"}
    )
    assert status == 201
    assert body["ban"]["address"] == "127.0.0.1"
    assert (await bob.closed())[0] == 4501
    status, body = await post_action(client, "unban", {"csrf": csrf, "ban_id": "1"})
    assert status == 200
    status, body = await post_action(client, "kick", {"csrf": csrf, "conn_id": "42"})
    assert status == 404
    async with client.post(
        "/admin/action/announce", data={"csrf": csrf, "text": "hi"}, allow_redirects=False
    ) as response:
        assert response.status == 303  # a plain form gets a redirect and a flash line
    async with client.get("/admin/") as response:
        page = await response.text()
    assert "Announced to everyone" in page
    for action in ("login", "mute", "kick", "ban", "unban", "announce"):
        assert f"<td>{action}</td>" in page


# --------------------------------------------------------------------------- the push channel


async def test_push_channel_sends_diffs_not_tables(client: Client) -> None:
    """Connect, counter changes and disconnect arrive as add, update and remove diffs."""
    await log_in(client)
    first = await join(client, "first")
    live = await client.ws_connect("/admin/live")
    await live.send_str(json.dumps({"type": "view"}))
    init = await next_of(live, "init")
    assert init["stats"]["connections"] == 1
    assert "chart" in init
    reset = await next_reset(live)
    assert [row["name"] for row in reset["rows"]] == ["first"]
    second = await join(client, "second")
    added = await next_of(live, "conns")
    while "add" not in added:
        added = await next_of(live, "conns")
    assert [row["name"] for row in added["add"]] == ["second"]
    assert "reset" not in added
    await second.send_json(type="message", text="hello")
    update: dict[str, Any] = {}
    while not any(item["id"] == 2 and "messages_in" in item for item in update.get("update", [])):
        update = await next_of(live, "conns")
    changed = next(item for item in update["update"] if item["id"] == 2)
    assert changed["messages_in"] == 1
    assert "name" not in changed
    assert "address" not in changed
    await second.close()
    removed = await next_of(live, "conns")
    while "remove" not in removed:
        removed = await next_of(live, "conns")
    assert removed["remove"] == [2]
    stats = await next_of(live, "stats")
    assert "sample" in stats
    await first.close()
    await live.close()


async def test_push_channel_filters_and_pages_on_the_server(client: Client) -> None:
    """A view with a filter and a page gets only that page's rows."""
    await log_in(client)
    peers = [await join(client, f"p{i:02d}", room="odd" if i % 2 else "even") for i in range(12)]
    live = await client.ws_connect("/admin/live")
    await live.send_str(json.dumps({"type": "view", "per_page": 4, "page": 2}))
    page = await next_reset(live)
    assert [row["name"] for row in page["rows"]] == ["p04", "p05", "p06", "p07"]
    assert (page["total"], page["pages"]) == (12, 3)
    await live.send_str(json.dumps({"type": "view", "room": "odd", "per_page": 4, "page": 2}))
    page = await next_reset(live)
    assert [row["name"] for row in page["rows"]] == ["p09", "p11"]
    await live.send_str(json.dumps({"type": "view", "q": "p1", "sort": "id"}))
    page = await next_reset(live)
    assert [row["name"] for row in page["rows"]] == ["p10", "p11"]
    await live.send_str(json.dumps({"type": "view", "page": "zero"}))
    error = await next_of(live, "error")
    assert "page" in error["message"]
    await live.close()
    for peer in peers:
        await peer.close()


async def test_push_channel_reports_moderation_changes(client: Client) -> None:
    """Bans, mutes and audit entries reach open dashboards within a second."""
    csrf = await log_in(client)
    live = await client.ws_connect("/admin/live")
    await next_of(live, "init")
    await post_action(client, "ban", {"csrf": csrf, "name": "spammer", "reason": "links"})
    bans = await next_of(live, "bans")
    assert [(b["name"], b["reason"]) for b in bans["bans"]] == [("spammer", "links")]
    audit = await next_of(live, "audit")
    assert audit["entries"][0]["action"] == "ban"
    await live.close()


# --------------------------------------------------------------------------- escaping


async def test_names_are_escaped_and_the_page_has_no_inline_code(client: Client) -> None:
    """A hostile name is escaped in the page; the CSP forbids inline script and style."""
    await log_in(client)
    hostile = await join(client, XSS_NAME)
    async with client.get("/admin/") as response:
        page = await response.text()
        csp = response.headers["Content-Security-Policy"]
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<img" not in page
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert " style=" not in page
    assert "<style" not in page
    assert " on" + "click=" not in page
    await hostile.close()


async def test_chat_page_and_assets_are_served(client: Client) -> None:
    """GET / serves the chat page whose script and style load from /static/."""
    async with client.get("/") as response:
        page = await response.text()
        assert response.status == 200
        assert "text/html" in response.headers["Content-Type"]
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
        async with client.get(asset) as response:
            assert response.status == 200, asset
    async with client.get("/admin/static/dashboard.js") as response:
        assert response.status == 200
        assert "textContent" in await response.text()
