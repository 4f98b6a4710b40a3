"""Who is who on the browser chat page, in a real Chromium against a real server:
the identity shown, the account dialogs, resume over a reload, 4401 and the
``--auth`` policies, each checked from a second, real WebSocket client."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, WebSocket

from chatserver.keys import HUB
from tests.conftest import JSON, ChatServer, Peer, make_settings
from tests.test_accounts import gone
from tests.test_browser import XSS_NAME, browser_session, new_page
from tests.test_tokens import SECRET, mint

PASSWORD = "correct horse battery"
NEW_PASSWORD = "staple battery horse"


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    async with browser_session() as browser:
        yield browser


@pytest.fixture
async def chat(tmp_path: Path) -> AsyncIterator[ChatServer]:
    """A server each test starts with the settings it needs."""
    server = ChatServer(make_settings(tmp_path))
    yield server
    await server.stop()


class ChatPage:
    """The chat page in a browser tab, with every WebSocket it opens recorded."""

    def __init__(self, page: Page, chat: ChatServer) -> None:
        self.page = page
        self.chat = chat
        self.sockets: list[str] = []
        self.dialogs: list[str] = []
        page.on("websocket", self._opened)

    def _opened(self, socket: WebSocket) -> None:
        self.sockets.append(socket.url)

    @classmethod
    async def open(
        cls, browser: Browser, chat: ChatServer, fragment: str = "", *, clock: bool = False
    ) -> ChatPage:
        """A new tab on the page; with ``clock``, its timers run only when told."""
        dialogs: list[str] = []
        page = await new_page(browser, dialogs)
        if clock:
            await page.clock.install()
        tab = cls(page, chat)
        tab.dialogs = dialogs
        await tab.goto(fragment)
        return tab

    async def goto(self, fragment: str = "") -> None:
        url = self.chat.url("/").replace("ws://", "http://")
        await self.page.goto(url + (f"#{fragment}" if fragment else ""))

    async def connect(self, name: str) -> None:
        await self.page.fill("#name", name)
        await self.page.click("#connect")
        await self.page.wait_for_selector("#identity:not([hidden])")

    async def identity(self) -> tuple[str, str]:
        """(guest|registered|token, the name) as the indicator shows them."""
        badge = self.page.locator("#identity")
        kind = await badge.get_attribute("data-identity") or ""
        return kind, await badge.locator(".name").text_content() or ""

    async def until_identity(self, kind: str) -> tuple[str, str]:
        await self.page.wait_for_selector(f"#identity[data-identity={kind}]")
        return await self.identity()

    async def dialog_open(self, kind: str) -> bool:
        return bool(
            await self.page.evaluate(f"() => document.getElementById('{kind}-dialog').open")
        )

    async def until_dialog(self, kind: str, state: str = "visible") -> None:
        await self.page.locator(f"#{kind}-dialog").wait_for(state=state)  # type: ignore[arg-type]

    async def stored_session(self) -> str | None:
        value = await self.page.evaluate("() => sessionStorage.getItem('chat.session')")
        return None if value is None else str(value)


async def client(http: aiohttp.ClientSession, chat: ChatServer, **query: str) -> Peer:
    ws = await http.ws_connect(chat.url("/ws", **query), protocols=JSON)
    return Peer(ws)


async def welcomed(http: aiohttp.ClientSession, chat: ChatServer, **query: str) -> Peer:
    peer = await client(http, chat, **query)
    await peer.until_type("welcome")
    return peer


async def login_frame(
    http: aiohttp.ClientSession, chat: ChatServer, name: str, password: str
) -> Peer:
    """A client that logs in with its first frame."""
    peer = await client(http, chat, auth="frame")
    await peer.send(json.dumps({"type": "auth", "name": name, "password": password}))
    return peer


async def registered_account(
    http: aiohttp.ClientSession, chat: ChatServer, name: str, password: str = PASSWORD
) -> int:
    """Register ``name`` from a client that then leaves; the account's user id."""
    peer = await client(http, chat, name=name)
    welcome = await peer.until_type("welcome")
    await peer.send_json(type="register", password=password)
    assert (await peer.until_type("identified"))["identity"] == "registered"
    user_id: int = welcome["user"]["id"]
    await gone(chat, peer, user_id)
    return user_id


async def until_join(peer: Peer, reason: str) -> dict[str, Any]:
    while True:
        event = await peer.until_type("join")
        if event["reason"] == reason:
            return event


async def register_from_dialog(tab: ChatPage) -> None:
    """Press Register and register the name the page holds."""
    await tab.page.click("#register-button")
    await fill_dialog(
        tab.page,
        {"#register-password": PASSWORD, "#register-confirm": PASSWORD},
        "#register-confirm",
    )
    await tab.until_identity("registered")


async def fill_dialog(page: Page, fields: dict[str, str], submit_in: str) -> None:
    """Type into the open dialog's fields, then press Enter in ``submit_in``."""
    for selector, value in fields.items():
        await page.fill(selector, value)
    await page.press(submit_in, "Enter")


# ---------------------------------------------------------------- registering


async def test_a_guest_registers_its_name_and_is_still_that_user_after_a_reload(
    chromium: Browser, chat: ChatServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Register from the dialog: the indicator says registered, another client is
    refused the name, and a reload resumes the same user id from sessionStorage."""
    await chat.start()
    tab = await ChatPage.open(chromium, chat)
    page = tab.page
    await tab.connect("webby")
    assert await tab.identity() == ("guest", "webby")
    bob = await welcomed(http, chat, name="bob")
    await page.click("#register-button")
    await tab.until_dialog("register")
    assert await page.input_value("#register-name") == "webby"
    assert await page.get_attribute("#register-password", "type") == "password"
    assert await page.get_attribute("#register-password", "autocomplete") == "new-password"
    await fill_dialog(
        page,
        {"#register-password": PASSWORD, "#register-confirm": PASSWORD + "!"},
        "#register-confirm",
    )
    await page.wait_for_selector("#register-error:text-is('The two passwords do not match.')")
    assert await tab.dialog_open("register")
    await page.screenshot(path=str(tmp_path / "register-mismatch.png"))
    await fill_dialog(page, {"#register-confirm": PASSWORD}, "#register-confirm")
    assert await tab.until_identity("registered") == ("registered", "webby")
    await tab.until_dialog("register", "hidden")
    await page.wait_for_selector("#log li:has-text('The name webby is registered to you now')")
    await page.screenshot(path=str(tmp_path / "registered.png"))

    who = await welcomed(http, chat, name="webby")  # a real second client wants the name
    refusal = await who.until_type("error")
    assert refusal["code"] == "name_registered"
    await bob.send_json(type="who")
    members = {user["name"]: user["id"] for user in (await bob.until_type("who"))["users"]}
    webby_id = members["webby"]
    token = await tab.stored_session()
    assert token

    await page.reload()
    assert await tab.until_identity("registered") == ("registered", "webby")
    await page.wait_for_selector("#log li:has-text('Welcome back, webby! You are logged in.')")
    back = await until_join(bob, "resume")
    assert back["user"] == {"id": webby_id, "name": "webby"}
    assert "session=" in tab.sockets[-1]
    await page.screenshot(path=str(tmp_path / "reloaded.png"))
    assert tab.dialogs == []
    await bob.close()
    await who.close()


async def test_a_hostile_name_shows_literally_in_the_indicator_and_the_login_prompt(
    chromium: Browser, chat: ChatServer, http: aiohttp.ClientSession
) -> None:
    """A name made of HTML is registered and shown as text; no element is made of it."""
    await chat.start()
    tab = await ChatPage.open(chromium, chat)
    await tab.connect(XSS_NAME)
    await register_from_dialog(tab)
    assert await tab.identity() == ("registered", XSS_NAME)
    other = await ChatPage.open(chromium, chat)
    await other.connect(XSS_NAME)  # refused: the prompt quotes the name
    await other.until_dialog("login")
    note = await other.page.locator("#login-note").text_content() or ""
    assert f'"{XSS_NAME}" is registered' in note
    assert await other.page.input_value("#login-name") == XSS_NAME
    for page in (tab.page, other.page):
        assert await page.locator("header img, dialog img, #log img").count() == 0
    assert tab.dialogs == other.dialogs == []


# ---------------------------------------------------------------- logging in


async def test_a_guest_refused_a_registered_name_logs_in_from_the_prompt(
    chromium: Browser, chat: ChatServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Asking for a registered name opens the login prompt; Escape cancels it, a
    wrong password says so there, the right one makes the page that account, and
    a reload keeps it."""
    await chat.start()
    alice_id = await registered_account(http, chat, "alice")
    bob = await welcomed(http, chat, name="bob")
    tab = await ChatPage.open(chromium, chat)
    page = tab.page
    await tab.connect("alice")
    await tab.until_dialog("login")
    note = page.locator("#login-note")
    assert await note.text_content() == '"alice" is registered \u2014 log in or pick another name.'
    assert await page.input_value("#login-name") == "alice"
    kind, name = await tab.identity()
    assert kind == "guest"
    assert name.startswith("User ")
    await page.screenshot(path=str(tmp_path / "login-prompt.png"))
    await page.keyboard.press("Escape")
    await tab.until_dialog("login", "hidden")

    await page.click("#login-button")
    await tab.until_dialog("login")
    assert await page.get_attribute("#login-name", "autocomplete") == "username"
    assert await page.get_attribute("#login-password", "autocomplete") == "current-password"
    await fill_dialog(
        page, {"#login-name": "alice", "#login-password": "not it at all"}, "#login-password"
    )
    await page.wait_for_selector("#login-error:text-is('Wrong name or password.')")
    assert await tab.dialog_open("login")
    await page.screenshot(path=str(tmp_path / "login-wrong.png"))
    await fill_dialog(page, {"#login-password": PASSWORD}, "#login-password")
    assert await tab.until_identity("registered") == ("registered", "alice")
    await tab.until_dialog("login", "hidden")
    nick = await bob.until_type("nick")
    assert nick["user"] == {"id": alice_id, "name": "alice"}

    await page.reload()
    assert await tab.until_identity("registered") == ("registered", "alice")
    back = await until_join(bob, "resume")
    assert back["user"] == {"id": alice_id, "name": "alice"}
    await page.wait_for_selector("#people li:text-is('alice (you)')")
    assert tab.dialogs == []
    await bob.close()


async def test_logging_in_before_connecting_uses_the_first_frame_and_a_refusal_stops(
    chromium: Browser, chat: ChatServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Log in while disconnected: the password goes in the first frame, not the
    URL; a wrong one closes 4401, the dialog says why and the page does not
    reconnect however long it waits; the right one gets in."""
    await chat.start()
    alice_id = await registered_account(http, chat, "alice")
    tab = await ChatPage.open(chromium, chat, clock=True)  # reconnect timers wait for the test
    page = tab.page
    await page.click("#login-button")
    await fill_dialog(
        page, {"#login-name": "alice", "#login-password": "wrong password"}, "#login-password"
    )
    await page.wait_for_selector("#login-error:text-is('Wrong name or password.')")
    await page.wait_for_selector("#state:text-is('Not logged in: Wrong name or password.')")
    await page.screenshot(path=str(tmp_path / "login-refused.png"))
    assert len(tab.sockets) == 1
    assert "auth=frame" in tab.sockets[0]
    assert "password" not in tab.sockets[0]
    await page.clock.run_for(120_000)  # every backoff of a reconnect loop, and more
    await page.wait_for_selector("#connect:not([disabled])")
    assert len(tab.sockets) == 1
    assert chat.app is not None
    assert chat.app[HUB].close_codes[4401] == 1
    assert "Reconnecting" not in (await page.locator("#state").text_content() or "")

    await fill_dialog(page, {"#login-password": PASSWORD}, "#login-password")
    assert await tab.until_identity("registered") == ("registered", "alice")
    bob = await welcomed(http, chat, name="bob")
    await bob.send_json(type="who")
    assert {"id": alice_id, "name": "alice"} in (await bob.until_type("who"))["users"]
    assert tab.dialogs == []
    await bob.close()


async def test_change_password_from_the_page_is_the_password_of_the_next_login(
    chromium: Browser, chat: ChatServer, http: aiohttp.ClientSession
) -> None:
    """A wrong current password and a mismatched confirmation are shown in the
    dialog; after the change the old password fails and the new one logs in
    (which takes the account over: the page says so and stays closed)."""
    await chat.start()
    alice_id = await registered_account(http, chat, "alice")
    tab = await ChatPage.open(chromium, chat)
    page = tab.page
    await page.click("#login-button")
    await fill_dialog(
        page, {"#login-name": "alice", "#login-password": PASSWORD}, "#login-password"
    )
    await tab.until_identity("registered")
    await page.click("#password-button")
    await tab.until_dialog("password")
    assert await page.input_value("#password-name") == "alice"
    fields = {"#password-old": "wrong password", "#password-new": NEW_PASSWORD}
    await fill_dialog(page, {**fields, "#password-confirm": NEW_PASSWORD}, "#password-confirm")
    await page.wait_for_selector("#password-error:text-is('The current password is wrong.')")
    fields["#password-old"] = PASSWORD
    await fill_dialog(page, {**fields, "#password-confirm": "something else"}, "#password-new")
    await page.wait_for_selector("#password-error:text-is('The two new passwords do not match.')")
    await fill_dialog(page, {**fields, "#password-confirm": NEW_PASSWORD}, "#password-old")
    await tab.until_dialog("password", "hidden")
    await page.wait_for_selector("#log li:has-text('Password changed')")

    old = await login_frame(http, chat, "alice", PASSWORD)
    assert await old.closed() == (4401, "wrong name or password")
    new = await login_frame(http, chat, "alice", NEW_PASSWORD)
    welcome = await new.until_type("welcome")
    assert (welcome["identity"], welcome["user"]["id"]) == ("registered", alice_id)
    await page.wait_for_selector("#state:has-text('your account logged in elsewhere')")
    await page.wait_for_selector("#connect:not([disabled])")
    assert await tab.stored_session() is None
    assert tab.dialogs == []
    await new.close()


async def test_unregister_makes_a_guest_and_log_out_forgets_the_session(
    chromium: Browser, chat: ChatServer, http: aiohttp.ClientSession
) -> None:
    """Unregister (a wrong password is refused) leaves a guest whose name nobody
    can log into; Log out closes the socket and a reload stays logged out."""
    await chat.start()
    tab = await ChatPage.open(chromium, chat)
    page = tab.page
    await tab.connect("dora")
    await register_from_dialog(tab)
    await page.click("#unregister-button")
    await tab.until_dialog("unregister")
    assert await page.input_value("#unregister-name") == "dora"
    await fill_dialog(page, {"#unregister-password": "wrong password"}, "#unregister-password")
    await page.wait_for_selector("#unregister-error:text-is('Wrong password.')")
    await fill_dialog(page, {"#unregister-password": PASSWORD}, "#unregister-password")
    assert await tab.until_identity("guest") == ("guest", "dora")
    await page.wait_for_selector("#log li:has-text('dora is not registered any more')")
    assert await page.locator("#unregister-button").is_hidden()
    nobody = await login_frame(http, chat, "dora", PASSWORD)
    assert await nobody.closed() == (4401, "wrong name or password")

    await register_from_dialog(tab)  # again, to log out
    bob = await welcomed(http, chat, name="bob")
    await page.click("#logout-button")
    await page.wait_for_selector("#state:text-is('Logged out.')")
    left = await bob.until_type("leave")
    assert (left["user"]["name"], left["reason"]) == ("dora", "quit")
    assert await page.locator("#identity").is_hidden()
    assert await tab.stored_session() is None
    opened = len(tab.sockets)
    await page.reload()
    await page.wait_for_selector("#state:text-is('Not connected.')")
    await page.wait_for_selector("#connect:not([disabled])")
    assert len(tab.sockets) == opened
    assert tab.dialogs == []
    await bob.close()


async def test_every_dialog_refuses_an_incomplete_form_in_words_and_sends_nothing(
    chromium: Browser, chat: ChatServer, http: aiohttp.ClientSession
) -> None:
    """Enter on an empty Log in, Register, Change password or Unregister form
    says what is missing in the dialog, which stays open, and nothing reaches
    the server: the page stays a guest, then stays registered."""
    await chat.start()
    tab = await ChatPage.open(chromium, chat)
    page = tab.page
    await tab.connect("eve")

    async def refused(kind: str, fields: dict[str, str], submit_in: str, words: str) -> None:
        await page.click(f"#{kind}-button")
        await tab.until_dialog(kind)
        await fill_dialog(page, fields, submit_in)
        await page.wait_for_selector(f"#{kind}-error:text-is('{words}')")
        assert await tab.dialog_open(kind)
        assert await page.is_enabled(f"#{kind}-submit")
        await page.keyboard.press("Escape")
        await tab.until_dialog(kind, "hidden")

    await refused("login", {}, "#login-name", "Enter the registered name and its password.")
    await refused(
        "register", {"#register-name": ""}, "#register-name", "Choose the name to register."
    )
    assert await tab.identity() == ("guest", "eve")

    await register_from_dialog(tab)
    await refused("password", {}, "#password-old", "Enter your current password and a new one.")
    await refused("unregister", {}, "#unregister-password", "Enter your password.")
    assert await tab.identity() == ("registered", "eve")
    guest = await welcomed(http, chat, name="eve")
    assert (await guest.until_type("error"))["code"] == "name_registered"  # still registered
    assert tab.dialogs == []
    await guest.close()


# ---------------------------------------------------------------- policies


async def test_under_auth_registered_a_guest_reads_is_told_to_log_in_and_talks_once_registered(
    chromium: Browser, chat: ChatServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """``--auth registered``: the page says guests read only, a guest's message
    gets words instead of a code, and once the guest has taken a name and
    registered it from the dialog its messages reach others."""
    await chat.start(auth="registered")
    await registered_account(http, chat, "bob")
    bob = await login_frame(http, chat, "bob", PASSWORD)
    await bob.until_type("welcome")
    tab = await ChatPage.open(chromium, chat)
    page = tab.page
    await page.wait_for_selector("#auth-hint:has-text('Guests can read here')")
    await tab.connect("")  # a guest with the default name "User N"
    await bob.send_json(type="message", text="hello readers")
    await page.wait_for_selector("#log li:has-text('bob: hello readers')")
    await page.fill("#text", "can I talk?")
    await page.press("#text", "Enter")
    await page.wait_for_selector("#log li:has-text('Log in or register to talk here')")
    await page.screenshot(path=str(tmp_path / "registered-only.png"))
    await page.click("#register-button")
    assert await page.input_value("#register-name") == ""  # "User N" cannot be registered
    fields = {"#register-name": "gina", "#register-password": PASSWORD}
    await fill_dialog(page, {**fields, "#register-confirm": PASSWORD}, "#register-confirm")
    assert await tab.until_identity("registered") == ("registered", "gina")
    await page.locator("#auth-hint").wait_for(state="hidden")
    await page.fill("#text", "now I can")
    await page.press("#text", "Enter")
    while True:
        message = await bob.until_type("message")
        if message["user"]["name"] == "gina":
            break
    assert message["text"] == "now I can"
    assert tab.dialogs == []
    await bob.close()


async def test_a_site_token_in_the_fragment_goes_in_the_first_frame_and_a_bad_one_stops(
    chromium: Browser, chat: ChatServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """``--auth token``: ``/#token=...`` signs the page in through the first frame
    (never the URL), the page has no password buttons, a reload resumes, and an
    expired token closes 4401 with words and no reconnect loop."""
    await chat.start(token_secret=SECRET, auth="token")
    token = mint()
    tab = await ChatPage.open(chromium, chat, f"token={token}")
    page = tab.page
    assert await tab.until_identity("token") == ("token", "Carol")
    assert "#" not in page.url  # the token left the address bar at once
    assert all(token not in url and "auth=frame" in url for url in tab.sockets)
    for button in ("login", "register", "password", "unregister", "logout"):
        assert await page.locator(f"#{button}-button").is_hidden()
    dave = await welcomed(http, chat, token=mint(sub="site-user-7", name="Dave"))
    await page.fill("#text", "hi from the site")
    await page.press("#text", "Enter")
    while True:
        message = await dave.until_type("message")
        if message["user"]["name"] == "Carol":
            break
    await page.screenshot(path=str(tmp_path / "token-user.png"))
    await page.reload()
    assert await tab.until_identity("token") == ("token", "Carol")
    assert token not in tab.sockets[-1]
    assert "session=" in tab.sockets[-1]

    stale = mint(exp=int(time.time()) - 600)
    expired = await ChatPage.open(chromium, chat, f"token={stale}", clock=True)
    await expired.page.wait_for_selector("#state:has-text('token expired')")
    state = await expired.page.locator("#state").text_content() or ""
    assert "Open the chat from your site's link again" in state
    await expired.page.clock.run_for(120_000)
    await expired.page.wait_for_selector('#auth-hint:has-text("open it from the site\'s link")')
    assert len(expired.sockets) == 1
    assert await expired.page.locator("#login-dialog").is_hidden()
    assert await expired.page.locator("#connect").is_disabled()
    await expired.page.screenshot(path=str(tmp_path / "token-expired.png"))
    assert tab.dialogs == expired.dialogs == []
    await dave.close()


@pytest.mark.parametrize("policy", ["guests", "registered", "token"])
async def test_the_page_is_told_the_auth_policy(
    chat: ChatServer, http: aiohttp.ClientSession, policy: str
) -> None:
    """GET / names the ``--auth`` policy in a meta tag, so the page offers what it allows."""
    await chat.start(auth=policy, token_secret=SECRET)
    async with http.get(chat.url("/").replace("ws://", "http://")) as response:
        page = await response.text()
    assert f'<meta name="chat-auth" content="{policy}">' in page
    assert page.count('name="chat-auth"') == 1
