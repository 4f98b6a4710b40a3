"""Every control of the dashboard, pressed in a real Chromium, with and without JavaScript.

Each step checks its effect where it matters: on a real chat client (closed,
told, refused) or in the JSON API.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page

from tests import test_browser
from tests.conftest import ADMIN_AUTH, ADMIN_TOKEN
from tests.test_browser import base_url, new_page

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
