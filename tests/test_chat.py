"""Chatting in both dialects: seed lines, names, rooms, presence."""

from __future__ import annotations

import asyncio

import websockets

from tests.conftest import ChatServer, Connect, Peer, both_modes

chat_mode = both_modes()


async def joined_text(connect: Connect, **query: str) -> Peer:
    """A text client that has read its welcome and own connect line."""
    peer = await connect(**query)
    assert (await peer.text()).startswith("Welcome")
    await peer.until("has connected")
    return peer


async def test_text_clients_see_seed_lines(connect: Connect) -> None:
    """Two plain clients get the seed's connect, message and disconnect lines."""
    one = await joined_text(connect)
    two = await joined_text(connect)
    assert await one.text() == "User 2 has connected."
    await one.send("hello")
    assert await one.text() == "User 1: hello"
    assert await two.text() == "User 1: hello"
    await one.close()
    assert await two.text() == "User 1 has disconnected."


async def test_websockets_library_client_chats(chat: ChatServer, connect: Connect) -> None:
    """The `websockets` client with no subprotocol is a working chat client on `/`."""
    aio = await joined_text(connect)
    async with websockets.connect(chat.url("/")) as plain:
        welcome = await asyncio.wait_for(plain.recv(), 5)
        assert "Welcome, User 2!" in str(welcome)
        assert await asyncio.wait_for(plain.recv(), 5) == "User 2 has connected."
        await plain.send("hi from websockets")
        assert await aio.until("hi from") == "User 2: hi from websockets"
        await aio.send("hi back")
        assert await asyncio.wait_for(plain.recv(), 5) == "User 2: hi from websockets"
        assert await asyncio.wait_for(plain.recv(), 5) == "User 1: hi back"


async def test_json_and_text_clients_share_a_room(connect: Connect) -> None:
    """A chat.v1 client and a text client see each other's messages."""
    text = await joined_text(connect)
    js = await connect(json=True, name="ada")
    welcome = await js.event()
    assert welcome["type"] == "welcome"
    assert welcome["user"] == {"id": 2, "name": "ada"}
    assert welcome["rooms"] == ["lobby"]
    assert welcome["session"]
    assert await text.text() == "ada has connected."
    await js.send_json(type="message", text="structured")
    message = await js.until_type("message")
    assert message["text"] == "structured"
    assert message["room"] == "lobby"
    assert message["user"] == {"id": 2, "name": "ada"}
    assert isinstance(message["id"], int)
    assert await text.text() == "ada: structured"
    await text.send("plain")
    assert (await js.until_type("message"))["text"] == "plain"


async def test_names_are_unique_case_insensitively(connect: Connect) -> None:
    """A clashing nick gets name_taken and nobody is renamed."""
    alice = await connect(json=True, name="Alice")
    await alice.until_type("join")
    other = await connect(json=True, name="alice")
    welcome = await other.event()
    assert welcome["user"]["name"] == "User 2"
    assert (await other.until_type("error"))["code"] == "name_taken"
    await other.send_json(type="nick", name="ALICE", ref=7)
    error = await other.until_type("error")
    assert error == {"type": "error", "code": "name_taken", "message": error["message"], "ref": 7}
    await other.send_json(type="nick", name="User 1")
    assert (await other.until_type("error"))["code"] == "name_taken"  # reserved for user 1
    await other.send_json(type="who")
    who = await other.until_type("who")
    assert [u["name"] for u in who["users"]] == ["Alice", "User 2"]


async def test_nick_change_is_broadcast(connect: Connect) -> None:
    """/nick announces the new name to the room; the old name is freed."""
    one = await joined_text(connect)
    two = await joined_text(connect)
    await one.until("User 2 has connected")
    await two.send("/nick bob")
    assert await one.text() == "User 2 is now known as bob."
    await one.send("/nick User 2")
    assert "reserved" in await one.until("Error")
    await two.send("hey")
    assert await one.text() == "bob: hey"


async def test_rooms_isolate_messages(connect: Connect) -> None:
    """A message reaches only its room; join/leave are announced; who lists members."""
    lobby = await joined_text(connect)
    mover = await joined_text(connect)
    await lobby.until("User 2 has connected")
    await mover.send("/join dev")
    assert await mover.text() == "User 2 has joined #dev."
    dev = await joined_text(connect, room="dev")
    assert await mover.until("User 3") == "User 3 has connected."
    await dev.send("in dev")
    assert await mover.text() == "User 3: in dev"
    await lobby.send("in lobby")
    assert await mover.text() == "[#lobby] User 1: in lobby"
    await mover.send("/who")
    assert await mover.text() == "Users in #dev (2): User 2, User 3"
    await mover.send("/leave")
    assert await dev.until("has left") == "User 2 has left #dev."
    await dev.send("gone?")
    await lobby.send("still here")
    assert await mover.until(": ") == "User 1: still here"
    # Nothing from #dev reached the lobby-only peer, before or after the leave.
    assert [await lobby.text(), await lobby.text()] == ["User 1: in lobby", "User 1: still here"]


async def test_json_join_leave_who_and_errors(connect: Connect) -> None:
    """JSON join answers with who; leaving a room you are not in is an error."""
    peer = await connect(json=True)
    await peer.until_type("join")
    await peer.send_json(type="join", room="#games")
    join = await peer.until_type("join")
    assert join["room"] == "games"
    assert join["reason"] == "join"
    who = await peer.until_type("who")
    assert who["room"] == "games"
    assert len(who["users"]) == 1
    await peer.send_json(type="message", text="to games", room="games")
    assert (await peer.until_type("message"))["room"] == "games"
    await peer.send_json(type="leave", room="nowhere")
    assert (await peer.until_type("error"))["code"] == "not_in_room"
    await peer.send_json(type="join", room="bad room!")
    assert (await peer.until_type("error"))["code"] == "room_invalid"
    await peer.send_json(type="message", text="x", room="elsewhere")
    assert (await peer.until_type("error"))["code"] == "not_in_room"


async def test_actor_sees_its_own_events_despite_quick_changes(connect: Connect) -> None:
    """Join, post, leave in one burst: the sender still gets its join, echo and leave."""
    peer = await joined_text(connect)
    await peer.send("/join dev")
    await peer.send("hi dev")
    await peer.send("/leave")
    assert await peer.text() == "User 1 has joined #dev."
    # Prefixed when the leave was applied before the echo's delivery.
    assert (await peer.text()) in {"User 1: hi dev", "[#dev] User 1: hi dev"}
    assert (await peer.text()).endswith("User 1 has left #dev.")
    await peer.send("/nick solo")
    assert await peer.text() == "User 1 is now known as solo."


async def test_quit_command_closes_normally(connect: Connect) -> None:
    """/quit makes the server close with 1000 and tell the room."""
    stay = await joined_text(connect)
    leave = await joined_text(connect)
    await stay.until("User 2 has connected")
    await leave.send("/quit")
    code, _ = await leave.closed()
    assert code == 1000
    assert await stay.text() == "User 2 has disconnected."


async def test_text_help_and_me(connect: Connect) -> None:
    """/help lists commands; /me renders an action line; //x sends '/x'."""
    peer = await joined_text(connect)
    await peer.send("/help")
    assert "/nick" in await peer.text()
    await peer.send("/me waves")
    assert await peer.text() == "* User 1 waves"
    await peer.send("//slash")
    assert await peer.text() == "User 1: /slash"
    await peer.send("/frobnicate")
    assert "unknown command /frobnicate" in await peer.text()
