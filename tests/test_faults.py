"""The store tells the truth: a full disk refuses messages instead of losing them,
health says so, and storing resumes by itself when space is back."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ADMIN_AUTH, ADMIN_TOKEN, ChatServer, Connect, Peer, make_settings

MOUNT_SIZE = "2m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs mounted for this test (root only)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={MOUNT_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        reason = f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}"
        if os.environ.get("CHAT_REQUIRE_MOUNT") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; return it."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)
    return filler


async def post(peer: Peer, text: str) -> dict[str, Any]:
    """Send a message and return the sender's answer: its echo or an error."""
    await peer.send_json(type="message", text=text)
    while True:
        event = await peer.event()
        if event["type"] in {"message", "error"}:
            return event


async def healthz(http: aiohttp.ClientSession, server: ChatServer) -> tuple[int, Any]:
    async with http.get(f"http://127.0.0.1:{server.settings.port}/healthz") as response:
        return response.status, await response.json()


async def test_full_disk_refuses_messages_and_recovers(
    small_disk: Path, connect: Connect, http: aiohttp.ClientSession
) -> None:
    """On a full disk the sender gets store_unavailable, nobody sees the message,
    /healthz is 503 naming the store; with space back, ids go on without a gap."""
    server = ChatServer(make_settings(small_disk, db=str(small_disk / "chat.db")))
    await server.start()
    try:
        sender = await connect(json=True, server=server, name="sender")
        bystander = await connect(json=True, server=server, name="bystander")
        await sender.until_type("welcome")
        await bystander.until_type("welcome")
        first = await post(sender, "before the disk filled")
        assert first["type"] == "message"
        assert first["id"] == 1
        filler = fill(small_disk)
        echoed = [first["id"]]
        refusal: dict[str, Any] | None = None
        for i in range(400):  # WAL pages already allocated may take a few more
            answer = await post(sender, f"{i} " + "x" * 2000)
            if answer["type"] == "error":
                refusal = answer
                break
            echoed.append(answer["id"])
        assert refusal is not None
        assert refusal["code"] == "store_unavailable"
        status, body = await healthz(http, server)
        assert status == 503
        assert "store" in body["problems"]
        seen = [e["id"] for e in await drain(bystander) if e["type"] == "message"]
        assert seen == echoed, "the bystander saw exactly the stored messages"
        filler.unlink()
        after = await post(sender, "space is back")
        assert after["type"] == "message"
        assert after["id"] == echoed[-1] + 1
        assert (await healthz(http, server))[0] == 200
    finally:
        await server.stop()
    await server.start()
    try:
        again = await connect(json=True, server=server, name="again", history="500")
        await again.until_type("welcome")
        history = await again.until_type("history")
        assert [m["id"] for m in history["messages"]] == [*echoed, echoed[-1] + 1]
        answer = await post(again, "after the restart")
        assert answer["id"] == echoed[-1] + 2, "ids are never handed out twice"
    finally:
        await server.stop()


async def drain(peer: Peer) -> list[dict[str, Any]]:
    """Every event the peer has waiting (reads until it is quiet for 0.3 s)."""
    events: list[dict[str, Any]] = []
    with contextlib.suppress(TimeoutError):
        while True:
            events.append(await peer.event(timeout=0.3))
    return events


async def test_second_embedded_server_on_one_database_is_refused(tmp_path: Path) -> None:
    """Two embedded servers on one SQLite file would hand out the same ids: the
    second refuses to start with a clear error."""
    first = ChatServer(make_settings(tmp_path))
    await first.start()
    try:
        second = ChatServer(make_settings(tmp_path))
        with pytest.raises(Exception, match="in use by another chatserver"):
            await second.start()
    finally:
        await first.stop()


async def test_dashboard_shows_a_banner_while_the_store_cannot_write(
    small_disk: Path, connect: Connect, http: aiohttp.ClientSession
) -> None:
    """A full disk puts a banner naming the store on an open dashboard (live), and
    on a freshly loaded one; it goes away when writes work again."""
    from tests.test_browser import browser_session

    server = ChatServer(make_settings(small_disk, db=str(small_disk / "chat.db")))
    await server.start()
    try:
        async with browser_session() as browser:
            page = await browser.new_page()
            base = f"http://127.0.0.1:{server.settings.port}"
            await page.goto(base + "/admin/")
            await page.fill("#token", ADMIN_TOKEN)
            await page.click("form button[type=submit]")
            await page.wait_for_selector('body[data-live="1"]')
            assert await page.is_hidden("#health")
            sender = await connect(json=True, server=server, name="sender")
            await sender.until_type("welcome")
            filler = fill(small_disk)
            for i in range(400):
                if (await post(sender, f"{i} " + "x" * 2000))["type"] == "error":
                    break
            await page.wait_for_selector("#health:not([hidden])", timeout=10_000)
            assert "store unavailable" in (await page.text_content("#health") or "")
            await page.reload()
            assert "store unavailable" in (await page.text_content("#health") or "")
            await page.screenshot(path=str(small_disk.parent / "banner.png"))
            filler.unlink()
            assert (await post(sender, "space is back"))["type"] == "message"
            await page.wait_for_selector("#health[hidden]", state="attached", timeout=10_000)
    finally:
        await server.stop()


async def test_an_operator_action_that_cannot_be_stored_leaves_nothing_behind(
    small_disk: Path, connect: Connect, http: aiohttp.ClientSession
) -> None:
    """On a full disk a ban or mute answers 503 store_unavailable, and no ban,
    mute or audit entry exists afterwards, in memory or on disk."""
    server = ChatServer(make_settings(small_disk, db=str(small_disk / "chat.db")))
    await server.start()
    base = f"http://127.0.0.1:{server.settings.port}/admin/api/"
    try:
        target = await connect(json=True, server=server, name="target")
        await target.until_type("welcome")
        filler = fill(small_disk)
        for path, body in (
            ("bans", {"name": "target", "reason": "x"}),
            ("mutes", {"name": "target", "reason": "x"}),
        ):
            async with http.post(base + path, json=body, headers=ADMIN_AUTH) as response:
                assert response.status == 503, await response.text()
                assert (await response.json())["error"]["code"] == "store_unavailable"
        for path, key in (("bans", "bans"), ("mutes", "mutes"), ("audit", "entries")):
            async with http.get(base + path, headers=ADMIN_AUTH) as response:
                assert (await response.json())[key] == []
        filler.unlink()
        assert (await post(target, "still here"))["type"] == "message", "not muted, not banned"
    finally:
        await server.stop()
