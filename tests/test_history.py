"""Stored history: ids, paging, history on connect, retention."""

from __future__ import annotations

from chatserver.app import apply_retention
from tests.conftest import ChatServer, Connect, Peer, both_modes

chat_mode = both_modes()


async def post(peer: Peer, count: int, prefix: str = "m") -> list[int]:
    """Post ``count`` messages and return their ids from the echoes."""
    ids: list[int] = []
    for i in range(count):
        await peer.send_json(type="message", text=f"{prefix}{i}")
        ids.append((await peer.until_type("message"))["id"])
    return ids


async def test_ids_increase_per_room(connect: Connect) -> None:
    """Message ids count up from 1 within each room independently."""
    peer = await connect(json=True)
    assert await post(peer, 3) == [1, 2, 3]
    await peer.send_json(type="join", room="other")
    await peer.until_type("who")
    await peer.send_json(type="message", text="x", room="other")
    assert (await peer.until_type("message"))["id"] == 1


async def test_history_pages_backwards_in_order(connect: Connect) -> None:
    """history returns the newest page oldest-first, `before` pages back, `more` says when."""
    peer = await connect(json=True)
    await post(peer, 7)
    await peer.send_json(type="history", room="lobby", limit=3)
    page = await peer.until_type("history")
    assert [m["id"] for m in page["messages"]] == [5, 6, 7]
    assert page["more"] is True
    assert page["messages"][0]["text"] == "m4"
    assert page["messages"][0]["user"]["id"] == 1
    await peer.send_json(type="history", room="lobby", before=2, limit=3)
    first = await peer.until_type("history")
    assert [m["id"] for m in first["messages"]] == [1]
    assert first["more"] is False


async def test_text_history_command(connect: Connect) -> None:
    """/history N prints the last N messages and an end line."""
    peer = await connect()
    for text in ("one", "two", "three"):
        await peer.send(text)
        await peer.until(text)
    await peer.send("/history 2")
    assert await peer.text() == "User 1: two\nUser 1: three\n(end of history for #lobby)"


async def test_odd_numbers_in_history_requests_get_an_error(connect: Connect) -> None:
    """A "²" passes str.isdigit() but not int(): an error reply; the socket stays usable."""
    peer = await connect(json=True, history="²")
    await peer.until_type("welcome")
    assert (await peer.until_type("error"))["code"] == "bad_request"
    await peer.send_json(type="message", text="still here")
    assert (await peer.until_type("message"))["text"] == "still here"
    text = await connect()
    await text.until("User 2 has connected")
    await text.send("/history ²")
    assert await text.until("Error") == "Error: not a number: ² (bad_request)"
    await text.send("me too")
    assert await text.until("me too") == "User 2: me too"


async def test_history_on_connect_comes_before_live(chat: ChatServer, connect: Connect) -> None:
    """?history=N delivers the last N messages right after welcome, then live ones."""
    writer = await connect(json=True)
    await post(writer, 5)
    reader = await connect(json=True, history=3)
    assert (await reader.event())["type"] == "welcome"
    history = await reader.until_type("history")
    assert [m["text"] for m in history["messages"]] == ["m2", "m3", "m4"]
    await writer.send_json(type="message", text="live")
    assert (await reader.until_type("message"))["text"] == "live"


async def test_messages_survive_a_restart(chat: ChatServer, connect: Connect) -> None:
    """Stored messages and the id sequence continue after a restart on the same db."""
    peer = await connect(json=True)
    await post(peer, 3)
    await peer.close()
    await chat.stop()
    await chat.start()
    again = await connect(json=True)
    await again.send_json(type="history", room="lobby")
    history = await again.until_type("history")
    assert [m["text"] for m in history["messages"]] == ["m0", "m1", "m2"]
    assert await post(again, 1, "new") == [4]
    welcome_user = history["messages"][0]["user"]["id"]
    assert welcome_user == 1


async def test_retention_keeps_the_newest_per_room(chat: ChatServer, connect: Connect) -> None:
    """With history_max_messages=5 a prune leaves the 5 newest messages."""
    await chat.stop()
    await chat.start(history_max_messages=5)
    peer = await connect(json=True)
    await post(peer, 12)
    assert chat.app is not None
    deleted = await apply_retention(chat.app)
    # Redis caps each stream on every append (memory stays bounded between
    # sweeps), so its sweep finds nothing left to delete by count.
    assert deleted == (7 if chat.settings.redis_url == "" else 0)
    await peer.send_json(type="history", room="lobby", limit=50)
    history = await peer.until_type("history")
    assert [m["id"] for m in history["messages"]] == [8, 9, 10, 11, 12]


async def test_history_off_is_a_clear_error(chat: ChatServer, connect: Connect) -> None:
    """With --history false the history command answers history_unavailable."""
    await chat.stop()
    await chat.start(history=False)
    peer = await connect(json=True)
    await peer.send_json(type="history", room="lobby")
    assert (await peer.until_type("error"))["code"] == "history_unavailable"
    assert await post(peer, 2) == [1, 2]
