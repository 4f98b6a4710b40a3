"""The dashboard and the chat page in a real Chromium (Playwright, async API)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from benchmarks.chromium import CHROMIUM, CHROMIUM_ARGS
from chatserver.app import create_app
from tests.conftest import ADMIN_AUTH, ADMIN_TOKEN, JSON, ChatServer, Peer, make_settings

XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_TEXT = "<script>alert(2)</script><img src=y onerror=alert(3)>"
WAIT_MS = 5000

try:
    from playwright.async_api import Browser, Dialog, Page, async_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    async_playwright = None  # type: ignore[assignment]


def browser_missing() -> str | None:
    if async_playwright is None:
        return "Playwright for Python is not installed"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt install chromium)"
    return None


@contextlib.asynccontextmanager
async def browser_session() -> AsyncIterator[Browser]:
    """A real headless Chromium (Debian's); skipped, or failed in CI, without one."""
    reason = browser_missing()
    if reason is not None:
        if os.environ.get("CHAT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CHAT_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with browser_session() as chromium:
        yield chromium


@pytest.fixture
async def server(aiohttp_server: AiohttpServer, tmp_path: Path) -> TestServer:
    return await aiohttp_server(create_app(make_settings(tmp_path, admin_token=ADMIN_TOKEN)))


def base_url(server: TestServer) -> str:
    return f"http://127.0.0.1:{server.port}"


async def chat_client(http: aiohttp.ClientSession, server: TestServer, name: str) -> Peer:
    ws = await http.ws_connect(
        f"ws://127.0.0.1:{server.port}/ws", params={"name": name}, protocols=JSON
    )
    peer = Peer(ws)
    assert (await peer.until_type("welcome"))["user"]["name"] == name
    return peer


async def new_page(browser: Browser, dialogs: list[str]) -> Page:
    """A page that records (and dismisses) every JavaScript dialog."""
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)

    async def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    return page


async def log_in(page: Page, server: TestServer) -> None:
    await page.goto(base_url(server) + "/admin/")
    assert page.url.endswith("/admin/login")
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("form button[type=submit]")
    await page.wait_for_selector('body[data-live="1"]')


async def test_dashboard_shows_a_client_live_and_kicks_it(
    browser: Browser, server: TestServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A new client's row appears without a reload; Kick removes it and closes it 4500."""
    dialogs: list[str] = []
    page = await new_page(browser, dialogs)
    await log_in(page, server)
    carol = await chat_client(http, server, "carol")
    row = page.locator("#conns tbody tr", has_text="carol")
    await row.wait_for()
    others = [await chat_client(http, server, name) for name in ("dave", "erin", "frank")]
    await page.locator("#conns tbody tr").nth(3).wait_for()
    await page.wait_for_selector("[data-stat=connections]:text-is('4')")
    for second in range(3):  # some traffic for the rate chart and the counters
        for peer in others:
            await peer.send_json(type="message", text=f"hello {second}")
        await asyncio.sleep(0.7)
    await page.wait_for_selector("#conns tbody td[data-f=messages_in]:text-is('3')")
    await page.wait_for_selector("#rooms tbody td[data-f=messages]:text-is('9')")
    await page.wait_for_selector("#chart-max:has-text('deliveries/s; peak')")
    assert int(await page.get_attribute("#chart", "data-points") or "0") <= 300
    await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    await row.locator("button.kick").click()
    await page.fill("#dialog-reason", "spamming")
    await page.press("#dialog-reason", "Enter")
    await row.wait_for(state="detached")
    assert await carol.closed() == (4500, "spamming")
    await page.wait_for_selector("#status:has-text('Kicked carol')")
    await page.wait_for_selector("#audit tbody tr:has-text('kick')")
    assert await page.locator("#conns tbody tr").count() == 3
    assert dialogs == []
    for peer in others:
        await peer.close()


async def test_hostile_names_and_texts_show_literally_and_run_nothing(
    browser: Browser, server: TestServer, http: aiohttp.ClientSession
) -> None:
    """A name and a message made of HTML show as text on both pages; no script runs."""
    dialogs: list[str] = []
    page = await new_page(browser, dialogs)
    await log_in(page, server)
    hostile = await chat_client(http, server, XSS_NAME)
    cell = page.locator("#conns tbody td[data-f=name]", has_text="onerror")
    await cell.wait_for()
    assert await cell.text_content() == XSS_NAME
    await cell.locator("xpath=..").locator("button.mute").click()
    await page.fill("#dialog-reason", XSS_TEXT)
    await page.click("#dialog-confirm")
    mute_row = page.locator("#mutes tbody tr", has_text="onerror")
    await mute_row.wait_for()
    assert XSS_NAME in (await mute_row.text_content() or "")
    await page.reload()
    await page.wait_for_selector('body[data-live="1"]')
    assert await page.locator("#conns tbody td[data-f=name]").first.text_content() == XSS_NAME
    await page.wait_for_selector("#audit tbody tr:has-text('alert(2)')")
    assert await page.locator("main img, main script").count() == 0

    chat_page = await new_page(browser, dialogs)
    await chat_page.goto(base_url(server) + "/")
    await chat_page.fill("#name", "reader")
    await chat_page.click("#connect")
    await chat_page.wait_for_selector("#log li:has-text('Welcome, reader!')")
    await api_unmute(http, server)
    await hostile.send_json(type="message", text=XSS_TEXT)
    line = chat_page.locator("#log li", has_text="alert(3)")
    await line.wait_for()
    assert XSS_NAME in (await line.text_content() or "")
    assert XSS_TEXT in (await line.text_content() or "")
    assert await chat_page.locator("#log img, #log script").count() == 0
    person = chat_page.locator("#people li", has_text="onerror")
    await person.wait_for()
    assert await person.text_content() == XSS_NAME
    assert await chat_page.locator("aside img, aside script").count() == 0
    assert dialogs == []
    await hostile.close()


async def api_unmute(http: aiohttp.ClientSession, server: TestServer) -> None:
    url = base_url(server) + "/admin/api/mutes"
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.get(url, headers=auth) as response:
        mutes = (await response.json())["mutes"]
    for mute in mutes:
        async with http.delete(f"{url}/{mute['id']}", headers=auth) as response:
            assert response.status == 200


async def test_browser_chat_page_sends_and_receives(
    browser: Browser, server: TestServer, http: aiohttp.ClientSession
) -> None:
    """A person on the chat page at / talks with a CLI-style client."""
    dialogs: list[str] = []
    cli = await chat_client(http, server, "cli")
    page = await new_page(browser, dialogs)
    await page.goto(base_url(server) + "/")
    await page.fill("#name", "webby")
    await page.click("#connect")
    await page.wait_for_selector("#log li:has-text('Welcome, webby!')")
    await page.fill("#text", "hello from the browser")
    await page.press("#text", "Enter")
    message = await cli.until_type("message")
    assert (message["user"]["name"], message["text"]) == ("webby", "hello from the browser")
    await cli.send_json(type="message", text="hi browser")
    await page.wait_for_selector("#log li:has-text('cli: hi browser')")
    await page.fill("#text", "/nick webster")
    await page.press("#text", "Enter")
    assert (await cli.until_type("nick"))["user"]["name"] == "webster"
    await page.wait_for_selector("#log li:has-text('webby is now known as webster.')")
    assert dialogs == []
    await cli.close()


# ------------------------------------------------------------------ the chat page


async def open_chat_page(browser: Browser, url: str, name: str, dialogs: list[str]) -> Page:
    """The chat page at ``url``, connected as ``name``."""
    page = await new_page(browser, dialogs)
    await page.goto(url + "/")
    await page.fill("#name", name)
    await page.click("#connect")
    await page.wait_for_selector(f"#log li:has-text('Welcome, {name}!')")
    return page


async def log_is_at_bottom(page: Page) -> bool:
    result = await page.evaluate(
        "() => { const l = document.getElementById('log');"
        " return l.scrollHeight > l.clientHeight"
        " && l.scrollTop + l.clientHeight >= l.scrollHeight - 8; }"
    )
    return bool(result)


async def test_overflowing_log_stays_at_the_newest_line_until_the_user_scrolls_up(
    browser: Browser, server: TestServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """New lines keep the log at the bottom; scrolled up, a marker appears; a kick shows."""
    dialogs: list[str] = []
    page = await open_chat_page(browser, base_url(server), "webby", dialogs)
    bob = await chat_client(http, server, "bob")
    for number in range(80):
        await bob.send_json(type="message", text=f"line {number}")
    await page.wait_for_selector("#log li:has-text('bob: line 79')")
    assert await log_is_at_bottom(page)
    assert await page.locator("#new-marker").is_hidden()
    await page.evaluate("() => { document.getElementById('log').scrollTop = 0; }")
    await bob.send_json(type="message", text="while scrolled up")
    await page.wait_for_selector("#log li:has-text('while scrolled up')", state="attached")
    await page.wait_for_selector("#new-marker")
    assert await page.evaluate("() => document.getElementById('log').scrollTop") == 0
    await page.click("#new-marker")
    assert await log_is_at_bottom(page)
    await page.screenshot(path=str(tmp_path / "chat-bottom.png"))

    url = base_url(server) + "/admin/api/connections/1/kick"
    async with http.post(url, json={"reason": "testing kicks"}, headers=ADMIN_AUTH) as response:
        assert response.status == 200, await response.text()
    notice = page.locator("#log li", has_text="You were kicked by an operator: testing kicks")
    await notice.wait_for()
    assert await log_is_at_bottom(page)
    await page.wait_for_selector("#state:has-text('kicked')")
    await page.wait_for_selector("#people-title:text-is('Here in #lobby (0)')")
    await page.screenshot(path=str(tmp_path / "chat-kicked.png"))
    assert dialogs == []
    await bob.close()


async def test_history_lines_show_the_time_the_message_was_sent(
    browser: Browser, server: TestServer, http: aiohttp.ClientSession
) -> None:
    """Lines from history carry their message's ts, not the time the page loaded."""
    bob = await chat_client(http, server, "bob")
    await bob.send_json(type="message", text="said earlier")
    sent = await bob.until_type("message")
    dialogs: list[str] = []
    page = await new_page(browser, dialogs)
    # The page's clock reads 03:07 local time, so "now" cannot pass for the message time.
    await page.clock.install(time="2020-01-01T03:07:00")
    await page.goto(base_url(server) + "/")
    await page.click("#connect")
    line = page.locator("#log li", has_text="bob: said earlier")
    await line.wait_for()
    expected = await page.evaluate(
        "(ts) => new Date(ts * 1000).toLocaleTimeString([],"
        " {hour: '2-digit', minute: '2-digit', hour12: false})",
        sent["ts"],
    )
    assert await line.locator(".time").text_content() == expected
    assert expected != "03:07"
    welcome = page.locator("#log li", has_text="Welcome")
    assert await welcome.locator(".time").text_content() == "03:07"
    await bob.close()


async def test_rooms_list_switches_rooms_counts_unread_and_shows_who_is_here(
    browser: Browser, server: TestServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Join from the side list, see who is here live, unread counts, switch and leave."""
    dialogs: list[str] = []
    page = await open_chat_page(browser, base_url(server), "webby", dialogs)
    await page.fill("#new-room", "dev")
    await page.press("#new-room", "Enter")
    await page.wait_for_selector("#rooms li.current:has-text('#dev')")
    await page.wait_for_selector("#state:has-text('in #dev')")
    await page.wait_for_selector("#people li:text-is('webby (you)')")
    bob = await chat_client(http, server, "bob")
    await bob.send_json(type="join", room="dev")
    await page.wait_for_selector("#people li:text-is('bob')")
    await page.wait_for_selector("#people-title:text-is('Here in #dev (2)')")
    await bob.send_json(type="message", room="lobby", text="psst, in the lobby")
    await bob.send_json(type="message", room="lobby", text="and again")
    await page.wait_for_selector("#rooms li[data-room=lobby] .unread:text-is('2')")
    await page.fill("#text", "hello dev")
    await page.press("#text", "Enter")
    message = await bob.until_type("message")
    while message["user"]["name"] == "bob":  # bob's own two echoes first
        message = await bob.until_type("message")
    assert (message["room"], message["text"]) == ("dev", "hello dev")
    await page.screenshot(path=str(tmp_path / "chat-rooms.png"))

    await page.click("#rooms li[data-room=lobby] .room-name")
    await page.wait_for_selector("#log li:has-text('bob: psst, in the lobby')")
    assert await page.locator("#rooms li[data-room=lobby] .unread").count() == 0
    await page.wait_for_selector("#state:has-text('in #lobby')")
    await bob.send_json(type="leave", room="lobby")
    await page.wait_for_selector("#people-title:text-is('Here in #lobby (1)')")
    await page.click("#rooms li[data-room=dev] .leave")
    await page.locator("#rooms li[data-room=dev]").wait_for(state="detached")
    assert dialogs == []
    await bob.close()


async def test_chat_page_resumes_after_a_server_restart_and_shows_what_it_missed(
    browser: Browser, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The server restarts; messages sent before the page is back are replayed once."""
    chat = ChatServer(make_settings(tmp_path))
    await chat.start()
    try:
        dialogs: list[str] = []
        page = await new_page(browser, dialogs)
        # A controlled clock: the page's reconnect timer fires only when the test says.
        await page.clock.install()
        url = chat.url("/").replace("ws://", "http://").rstrip("/")
        await page.goto(url + "/")
        await page.fill("#name", "webby")
        await page.click("#connect")
        await page.wait_for_selector("#log li:has-text('Welcome, webby!')")
        await chat.stop()
        await page.wait_for_selector("#state:has-text('The server is restarting.')")
        await page.wait_for_selector("#log li:has-text('Connection lost')")
        await chat.start()
        ws = await http.ws_connect(chat.url("/ws", name="bob"), protocols=JSON)
        bob = Peer(ws)
        await bob.until_type("welcome")
        for text in ("missed one", "missed two"):
            await bob.send_json(type="message", text=text)
            await bob.until_type("message")
        await page.clock.run_for(60_000)
        await page.wait_for_selector("#log li:has-text('Recovered 2 missed messages.')")
        await page.wait_for_selector("#log li:has-text('bob: missed two')")
        assert await page.locator("#log li", has_text="bob: missed one").count() == 1
        await page.wait_for_selector("#state:has-text('Connected as webby in #lobby.')")
        await page.wait_for_selector("#people li:text-is('bob')")
        await bob.send_json(type="message", text="live again")
        await page.wait_for_selector("#log li:has-text('bob: live again')")
        await page.screenshot(path=str(tmp_path / "chat-resumed.png"))
        assert dialogs == []
        await bob.close()
    finally:
        await chat.stop()
