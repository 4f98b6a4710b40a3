"""Every control of the dashboard, pressed in a real Chromium, with and without JavaScript.

Each step checks its effect where it matters: on a real chat client (closed,
told, refused) or in the JSON API.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, expect
from pytest_aiohttp import AiohttpServer

from chatserver.app import create_app
from tests import test_browser
from tests.conftest import ADMIN_AUTH, ADMIN_TOKEN, JSON, Peer, make_settings
from tests.test_browser import base_url, new_page
from tests.test_roles import MOD_TOKEN, OTHER_MOD_TOKEN, VIEWER_TOKEN, operator_specs

# The machine is shared: waits are generous so a loaded run does not fail (each is still bounded).
WAIT = 15_000
expect.set_options(timeout=WAIT)

# The same fixtures as the other browser tests (a Chromium, a server with the admin token).
browser = test_browser.browser
server = test_browser.server


async def api_get(http: aiohttp.ClientSession, server: TestServer, path: str) -> Any:
    async with http.get(base_url(server) + "/admin/api/" + path, headers=ADMIN_AUTH) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def live_page(browser: Browser, server: TestServer) -> Page:
    dialogs: list[str] = []
    page = await new_page(browser, dialogs)
    page.set_default_timeout(WAIT)
    await page.goto(base_url(server) + "/admin/")
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("form button[type=submit]")
    await page.wait_for_selector('body[data-live="1"]')
    return page


async def test_bans_form_ban_button_bans_the_name(
    browser: Browser,
    server: TestServer,
    http: aiohttp.ClientSession,
) -> None:
    """The Bans form's Ban button (no formaction) posts to the ban action, not the page."""
    page = await live_page(browser, server)
    await page.fill(".bans form.action input[name=name]", "mallory")
    await page.click(".bans form.action button[type=submit]")
    await page.wait_for_selector("#status:has-text('Banned')")
    bans = (await api_get(http, server, "bans"))["bans"]
    assert [ban["name"] for ban in bans] == ["mallory"]


async def test_ticked_rows_stay_ticked_when_the_table_refreshes(
    browser: Browser,
    server: TestServer,
    http: aiohttp.ClientSession,
) -> None:
    """A live refresh of the connections table (a new view, a new connection)
    keeps the rows an operator ticked, so a bulk action acts on them."""
    first = await joined(http, server, "first", "lobby")
    page = await live_page(browser, server)
    await page.locator("#conns tbody tr", has_text="first").locator("input.pick").check()
    await page.fill("#filter input[name=q]", "fir")  # the typing's view comes 250 ms later
    second = await joined(http, server, "firstborn", "lobby")
    await expect(page.locator("#conns tbody tr")).to_have_count(2)
    await page.wait_for_timeout(1000)
    picked = page.locator("#conns tbody input.pick:checked")
    await expect(picked).to_have_count(1)
    await page.click("#bulk-kick")
    await expect(page.locator("#act-dialog")).to_be_visible()
    await page.press("#dialog-reason", "Enter")
    assert (await first.closed())[0] == 4500
    assert not second.ws.closed


async def joined(http: aiohttp.ClientSession, server: TestServer, name: str, room: str) -> Peer:
    """A JSON chat client named ``name`` whose first room is ``room``."""
    ws = await http.ws_connect(
        f"ws://127.0.0.1:{server.port}/ws", params={"name": name, "room": room}, protocols=JSON
    )
    peer = Peer(ws)
    assert (await peer.until_type("welcome"))["user"]["name"] == name
    return peer


async def refused_by_ban(http: aiohttp.ClientSession, server: TestServer, name: str) -> bool:
    ws = await http.ws_connect(f"ws://127.0.0.1:{server.port}/ws", params={"name": name})
    code = (await Peer(ws).closed())[0]
    return code == 4501


async def is_muted(peer: Peer) -> bool:
    """Post once: True if the server answers with the ``muted`` error."""
    await peer.send_json(type="message", text="am I muted?")
    while True:
        event = await peer.event()
        if event["type"] == "error":
            return bool(event["code"] == "muted")
        if event["type"] == "message" and event["text"] == "am I muted?":
            return False


async def system_line(peer: Peer, text: str) -> None:
    """Read system events until one says ``text`` (bounded by the Peer's timeout)."""
    while (await peer.until_type("system"))["text"] != text:
        pass


async def log_in(page: Page, server: TestServer, js: bool) -> None:
    await page.goto(base_url(server) + "/admin/")
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("form button[type=submit]")
    await page.wait_for_url("**/admin/")
    if js:
        await page.wait_for_selector('body[data-live="1"]')


async def row_act(page: Page, name: str, op: str, js: bool, reason: str = "") -> None:
    """Press a row's Kick/Mute/Ban; with script, answer the dialog (Enter confirms)."""
    await page.locator("#conns tbody tr", has_text=name).locator(f"button.{op}").click()
    if js:
        await expect(page.locator("#act-dialog")).to_be_visible()
        await page.fill("#dialog-reason", reason)
        await page.press("#dialog-reason", "Enter")
        await expect(page.locator("#act-dialog")).to_be_hidden()


async def bulk(page: Page, js: bool, op: str, names: list[str] | None) -> None:
    """Tick the rows of ``names`` (None: the header box, or every box without script),
    press the bulk button; with script, confirm the dialog with Enter."""
    await expect(page.locator("#conns tbody input.pick:checked")).to_have_count(0)
    if names is None and js:
        await page.check("#pick-all")
    for row in await page.locator("#conns tbody tr").all():
        name = await row.locator("td[data-f=name]").text_content()
        if (names is None and not js) or (names is not None and name in names):
            await row.locator("input.pick").check()
    await page.click(f"#bulk-{op}")
    if js:
        await expect(page.locator("#act-dialog")).to_be_visible()
        await page.press("#dialog-reason", "Enter")


async def filter_by(page: Page, **fields: str) -> None:
    for key, value in fields.items():
        if key == "sort":
            await page.select_option("#filter select[name=sort]", value)
        else:
            await page.fill(f"#filter input[name={key}]", value)
    await page.click("#filter button[type=submit]")


@pytest.mark.parametrize("js", [True, False], ids=["javascript", "no-javascript"])
async def test_every_dashboard_control_works(
    browser: Browser, server: TestServer, http: aiohttp.ClientSession, js: bool, tmp_path: Path
) -> None:
    """Filter, sort, page, room link, row Kick/Mute/Ban, bulk, mutes, bans, lift,
    announce and logout each do what they say, with script on and off."""
    alice = await joined(http, server, "alice", "lobby")
    bob = await joined(http, server, "bob", "dev")
    carol = await joined(http, server, "carol", "lobby")
    for _ in range(2):
        await alice.send_json(type="message", text="busy")
    context = await browser.new_context(
        java_script_enabled=js, viewport={"width": 1500, "height": 1000}
    )
    page = await context.new_page()
    page.set_default_timeout(WAIT)
    await log_in(page, server, js)
    rows = page.locator("#conns tbody tr")
    names = page.locator("#conns tbody td[data-f=name]")
    await expect(rows).to_have_count(3)

    # Filtering, sorting, paging, the room link.
    await filter_by(page, name="bob")
    await expect(names).to_have_text(["bob"])
    await filter_by(page, name="", q="car")
    await expect(names).to_have_text(["carol"])
    await filter_by(page, q="", address="127.0.0.1")
    await expect(rows).to_have_count(3)
    await filter_by(page, address="", sort="messages_in")
    await expect(names.first).to_have_text("alice")
    await filter_by(page, sort="id", per_page="1")
    await expect(page.locator("#conn-position")).to_have_text("3 total, page 1 of 3")
    await page.click("#next-page")
    await expect(names).to_have_text(["bob"])
    await expect(page.locator("#conn-position")).to_have_text("3 total, page 2 of 3")
    await page.click("#prev-page")
    await expect(names).to_have_text(["alice"])
    await filter_by(page, per_page="50")
    await expect(rows).to_have_count(3)
    await page.locator("#rooms a.room-link", has_text="dev").click()
    await expect(names).to_have_text(["bob"])
    await filter_by(page, room="")
    await expect(rows).to_have_count(3)

    # One-click row actions.
    if js:  # Escape cancels: nothing happens to carol
        await page.locator("#conns tbody tr", has_text="carol").locator("button.kick").click()
        await page.keyboard.press("Escape")
        await expect(page.locator("#act-dialog")).to_be_hidden()
        await expect(rows).to_have_count(3)
    await row_act(page, "carol", "kick", js, "bye")
    assert await carol.closed() == (4500, "bye" if js else "no reason given")
    await expect(page.locator("#status")).to_contain_text("Kicked carol")
    await expect(rows).to_have_count(2)
    await row_act(page, "alice", "mute", js, "calm down")
    await expect(page.locator("#status")).to_contain_text(re.compile("Muted .*alice"))
    assert await is_muted(alice)
    await expect(
        page.locator("#conns tbody tr", has_text="alice").locator("td[data-f=muted]")
    ).to_have_text("muted")
    await page.locator("#mutes tbody tr", has_text="alice").locator("button").click()
    await expect(page.locator("#status")).to_contain_text(re.compile("Unmuted .*alice"))
    assert not await is_muted(alice)
    await row_act(page, "bob", "ban", js, "spam")
    assert (await bob.closed())[0] == 4501
    await expect(page.locator("#status")).to_contain_text(re.compile("Banned .*bob"))
    assert [b["name"] for b in (await api_get(http, server, "bans"))["bans"]] == ["bob"]
    await page.locator("#bans tbody tr", has_text="bob").locator("button").click()
    await expect(page.locator("#status")).to_contain_text("Lifted ban")
    assert (await api_get(http, server, "bans"))["bans"] == []
    bob = await joined(http, server, "bob", "dev")

    # The Mutes form by name.
    await page.fill(".mutes form.action input[name=name]", "bob")
    await page.click(".mutes form.action button[type=submit]")
    await expect(page.locator("#status")).to_contain_text(re.compile("Muted .*bob"))
    assert await is_muted(bob)
    await page.locator("#mutes tbody tr", has_text="bob").locator("button").click()
    await expect(page.locator("#status")).to_contain_text(re.compile("Unmuted .*bob"))

    # Announce to a room and to everyone.
    await page.fill(".announce input[name=room]", "dev")
    await page.fill(".announce input[name=text]", "dev news")
    await page.click(".announce button[type=submit]")
    await expect(page.locator("#status")).to_contain_text("Announced to #dev (1 recipient")
    await system_line(bob, "dev news")
    await page.fill(".announce input[name=room]", "")
    await page.fill(".announce input[name=text]", "all hands")
    await page.click(".announce button[type=submit]")
    await expect(page.locator("#status")).to_contain_text("Announced to everyone")
    await system_line(alice, "all hands")

    # Bulk: mute two rows of a flood, ban one by name, then tick them all and kick.
    flood = [await joined(http, server, f"flood{i}", "lobby") for i in range(3)]
    await filter_by(page, name="flood")
    await expect(rows).to_have_count(3)
    await bulk(page, js, "mute", ["flood0", "flood1"])
    await expect(page.locator("#status")).to_contain_text("Muted 2 connection(s)")
    assert await is_muted(flood[0])
    assert await is_muted(flood[1])
    assert not await is_muted(flood[2])
    await bulk(page, js, "ban", ["flood0"])
    await expect(page.locator("#status")).to_contain_text("Banned 1 connection(s)")
    assert (await flood[0].closed())[0] == 4501
    await expect(rows).to_have_count(2)
    await bulk(page, js, "kick", None)
    await expect(page.locator("#status")).to_contain_text("Kicked 2 connection(s)")
    for peer in flood[1:]:
        assert (await peer.closed())[0] == 4500
    await page.locator("#bans tbody tr", has_text="flood0").locator("button").click()
    await expect(page.locator("#bans tbody tr")).to_have_count(0)
    await filter_by(page, name="")
    await expect(rows).to_have_count(2)

    # The Bans form: by name, by address, by network; then lift them all.
    bans_form = page.locator(".bans form.action")
    targets = (("name", "mallory"), ("address", "192.0.2.7"), ("address", "127.0.0.0/8"))
    for count, (field, value) in enumerate(targets, 1):
        await bans_form.locator("input[name=name]").fill(value if field == "name" else "")
        await bans_form.locator("input[name=address]").fill(value if field == "address" else "")
        await bans_form.locator("button[type=submit]").click()
        await expect(page.locator("#bans tbody tr")).to_have_count(count)
        await expect(page.locator("#status")).to_contain_text(f"Banned {field}={value}")
    bans = (await api_get(http, server, "bans"))["bans"]
    assert sorted((b["name"] or "", b["address"] or "") for b in bans) == [
        ("", "127.0.0.0/8"),
        ("", "192.0.2.7"),
        ("mallory", ""),
    ]
    assert (await alice.closed())[0] == 4501  # the network ban closed everyone on 127/8
    assert (await bob.closed())[0] == 4501
    assert await refused_by_ban(http, server, "someone")
    await page.screenshot(path=str(tmp_path / "controls.png"), full_page=True)
    for left in range(len(bans) - 1, -1, -1):
        await page.locator("#bans tbody tr button").first.click()
        await expect(page.locator("#bans tbody tr")).to_have_count(left)
        await expect(page.locator("#status")).to_contain_text("Lifted ban")
    assert (await api_get(http, server, "bans"))["bans"] == []
    await (await joined(http, server, "mallory", "lobby")).close()

    # Log out: back to the login page, and the dashboard asks for it again.
    await page.click(".logout button")
    await page.wait_for_url("**/admin/login")
    await page.goto(base_url(server) + "/admin/")
    assert page.url.endswith("/admin/login")
    await context.close()


async def test_dashboard_hides_what_the_role_cannot_do(
    browser: Browser, aiohttp_server: AiohttpServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A viewer's live rows have no buttons; a moderator sees Lift only on its own bans."""
    settings = make_settings(tmp_path, operators=operator_specs())
    site = await aiohttp_server(create_app(settings))
    peer = await joined(http, site, "alice", "lobby")
    await api_as(http, site, OTHER_MOD_TOKEN, "bans", {"name": "theirs"})
    for token, role in ((VIEWER_TOKEN, "viewer"), (MOD_TOKEN, "moderator")):
        page = await new_page(browser, [])
        page.set_default_timeout(WAIT)
        await page.goto(base_url(site) + "/admin/")
        await page.fill("#token", token)
        await page.click("form button[type=submit]")
        await page.wait_for_selector('body[data-live="1"]')
        await expect(page.locator("#whoami")).to_contain_text(f"({role})")
        await expect(page.locator("#conns tbody tr")).to_have_count(1)
        buttons = page.locator("#conns tbody tr button")
        if role == "viewer":
            await expect(buttons).to_have_count(0)
            assert await page.locator("#bulk-form, .bans form.action, .announce form").count() == 0
            await expect(page.locator("#bans tbody tr button")).to_have_count(0)
        else:
            await expect(buttons).to_have_count(3)
            await page.fill(".bans form.action input[name=name]", "mine")
            await page.click(".bans form.action button[type=submit]")
            await expect(page.locator("#bans tbody tr")).to_have_count(2)
            await expect(
                page.locator("#bans tbody tr", has_text="mine").locator("button")
            ).to_have_count(1)
            await expect(
                page.locator("#bans tbody tr", has_text="theirs").locator("button")
            ).to_have_count(0)
        await page.close()
    await peer.close()


async def api_as(
    http: aiohttp.ClientSession, server: TestServer, token: str, path: str, body: Any
) -> None:
    url = base_url(server) + "/admin/api/" + path
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status < 300, await resp.text()


@pytest.mark.parametrize("js", [True, False], ids=["javascript", "no-javascript"])
async def test_room_page_streams_messages_and_deletes_them(
    browser: Browser, server: TestServer, http: aiohttp.ClientSession, js: bool, tmp_path: Path
) -> None:
    """The room page lists members and the last messages, shows new ones live; Delete
    removes a message everywhere, and Mute, Ban and Kick act on members and speakers."""
    alice = await joined(http, server, "alice", "dev")
    troll = await joined(http, server, "troll", "dev")
    await troll.send_json(type="message", text="first rude line")
    first = (await alice.until_type("message"))["id"]
    await troll.send_json(type="message", text="another rude line")
    await alice.until_type("message")
    context = await browser.new_context(java_script_enabled=js)
    page = await context.new_page()
    page.set_default_timeout(WAIT)
    await log_in(page, server, js)
    await page.locator("#rooms tr", has_text="dev").locator("a.room-page-link").click()
    await page.wait_for_url("**/admin/rooms/dev")
    await expect(page.locator("#members tbody td.name")).to_have_text(["alice", "troll"])
    messages = page.locator("#messages tbody tr")
    await expect(messages).to_have_count(2)
    if js:
        await page.wait_for_selector('body[data-live="1"]')
        await troll.send_json(type="message", text="third rude line")
        await expect(messages).to_have_count(3)  # arrives without a reload
        await expect(messages.nth(2)).to_contain_text("third rude line")
    await messages.first.locator("button.delete").click()
    await expect(page.locator("#status")).to_contain_text(f"Deleted message {first} of #dev")
    assert await alice.until_type("delete") == {"type": "delete", "room": "dev", "id": first}
    await expect(page.locator("#messages tbody tr", has_text="first rude line")).to_have_count(0)
    await page.screenshot(path=str(tmp_path / "room.png"), full_page=True)
    await page.locator("#members tbody tr", has_text="troll").locator("button.mute").click()
    await expect(page.locator("#status")).to_contain_text(re.compile("Muted .*troll"))
    assert await is_muted(troll)
    speaker = page.locator("#messages tbody tr", has_text="another rude line")
    await speaker.locator("button.ban").click()
    await expect(page.locator("#status")).to_contain_text(re.compile("Banned name=troll"))
    assert (await troll.closed())[0] == 4501
    await page.locator("#members tbody tr", has_text="alice").locator("button.kick").click()
    await expect(page.locator("#status")).to_contain_text("Kicked alice")
    assert (await alice.closed())[0] == 4500
    await expect(page.locator("#members tbody tr")).to_have_count(0)
    await context.close()


async def test_chat_page_marks_a_message_an_operator_deleted(
    browser: Browser, server: TestServer, http: aiohttp.ClientSession
) -> None:
    """The browser chat page greys out the removed line and says which message went."""
    talker = await joined(http, server, "talker", "lobby")
    page = await new_page(browser, [])
    page.set_default_timeout(WAIT)
    await page.goto(base_url(server) + "/")
    await page.fill("#name", "reader")
    await page.click("#connect")
    await page.wait_for_selector("#log li:has-text('Welcome, reader!')")
    await talker.send_json(type="message", text="regrettable")
    msg_id = (await talker.until_type("message"))["id"]
    await page.wait_for_selector("#log li:has-text('talker: regrettable')")
    url = f"{base_url(server)}/admin/api/rooms/lobby/messages/{msg_id}"
    async with http.delete(url, headers=ADMIN_AUTH) as response:
        assert response.status == 200
    await page.wait_for_selector(f"#log li:has-text('An operator removed message {msg_id}.')")
    await expect(page.locator("#log li.deleted")).to_have_count(1)
    await expect(page.locator("#log li", has_text="regrettable")).to_have_count(0)
    await talker.close()
