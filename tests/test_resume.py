"""Lossless resume: same identity, exactly the missed messages, across crashes."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from chatserver.app import apply_retention
from tests.conftest import TIMEOUT, ChatServer, Connect, Peer, RawPeer, ServerProcess, both_modes

chat_mode = both_modes()


async def welcome_of(peer: Peer) -> dict[str, Any]:
    event = await peer.event()
    assert event["type"] == "welcome", event
    return event


async def post(peer: Peer, texts: list[str]) -> list[int]:
    ids: list[int] = []
    for text in texts:
        await peer.send_json(type="message", text=text)
        while True:
            event = await peer.until_type("message")
            if event["text"] == text:
                ids.append(event["id"])
                break
    return ids


async def resume_and_collect(
    connect: Connect, token: str, last: int, expect_live: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any], Peer]:
    """Resume and read welcome, replayed messages and the resumed summary."""
    peer = await connect(json=True, session=token, last=f"lobby:{last}")
    welcome = await welcome_of(peer)
    replayed: list[dict[str, Any]] = []
    while True:
        event = await peer.event()
        if event["type"] == "resumed":
            return welcome, replayed, event, peer
        if event["type"] == "message":
            replayed.append(event)


async def test_resume_restores_identity_and_exactly_the_missed(connect: Connect) -> None:
    """A resumed client gets its id, name and rooms back and only what it missed, in order."""
    alice = await connect(json=True, name="alice")
    welcome = await welcome_of(alice)
    await alice.send_json(type="join", room="dev")
    await alice.until_type("who")
    bob = await connect(json=True, name="bob")
    [seen] = await post(bob, ["before"])
    assert (await alice.until_type("message"))["id"] == seen
    await alice.close()
    missed = await post(bob, ["one", "two", "three"])
    again, replayed, summary, alice2 = await resume_and_collect(connect, welcome["session"], seen)
    assert again["resumed"] is True
    assert again["user"] == {"id": welcome["user"]["id"], "name": "alice"}
    assert again["rooms"] == ["lobby", "dev"]
    assert [m["id"] for m in replayed] == missed
    assert [m["text"] for m in replayed] == ["one", "two", "three"]
    assert summary["rooms"] == {"lobby": {"recovered": 3, "lost": 0}}
    await bob.send_json(type="message", text="live")
    assert (await alice2.until_type("message"))["text"] == "live"


async def test_quiet_room_resumes_from_the_join_cursor(connect: Connect) -> None:
    """A room with no message seen yet resumes from who.last_id of the join."""
    alice = await connect(json=True)
    welcome = await welcome_of(alice)
    bob = await connect(json=True)
    await post(bob, ["old lobby"])
    lobby_cursor = (await alice.until_type("message"))["id"]  # seen live
    await bob.send_json(type="join", room="quiet")
    await bob.until_type("who")
    await post(bob, ["old quiet"])
    await alice.send_json(type="join", room="quiet")
    cursor = (await alice.until_type("who"))["last_id"]
    assert cursor == 1
    assert welcome["last_ids"] == {"lobby": 0}
    await alice.close()
    await bob.send_json(type="message", text="new quiet", room="quiet")
    await bob.until_type("message")
    peer = await connect(
        json=True, session=welcome["session"], last=f"lobby:{lobby_cursor},quiet:{cursor}"
    )
    await welcome_of(peer)
    replay = await drain(peer)
    assert replay == {"close": None, "ids": [2]}


async def test_resume_with_nothing_missed(connect: Connect) -> None:
    """Resuming at the newest id replays nothing and reports zero."""
    peer = await connect(json=True)
    welcome = await welcome_of(peer)
    [last] = await post(peer, ["only"])
    await peer.close()
    _, replayed, summary, _ = await resume_and_collect(connect, welcome["session"], last)
    assert replayed == []
    assert summary["rooms"]["lobby"] == {"recovered": 0, "lost": 0}


async def test_expired_token_gives_a_new_identity(chat: ChatServer, connect: Connect) -> None:
    """After --session-ttl the token no longer resumes: resumed false, a new user."""
    await chat.stop()
    await chat.start(session_ttl=0.2)
    peer = await connect(json=True)
    welcome = await welcome_of(peer)
    await peer.close()
    await asyncio.sleep(0.5)
    again = await connect(json=True, session=welcome["session"], last="lobby:0")
    fresh = await welcome_of(again)
    assert fresh["resumed"] is False
    assert fresh["user"]["id"] != welcome["user"]["id"]
    assert fresh["session"] != welcome["session"]
    assert "expired" in (await again.until_type("system"))["text"]


async def test_unknown_token_is_not_accepted(connect: Connect) -> None:
    """A made-up token resumes nobody."""
    victim = await connect(json=True, name="victim")
    await welcome_of(victim)
    forged = await connect(json=True, session="A" * 43, last="lobby:0")
    welcome = await welcome_of(forged)
    assert welcome["resumed"] is False
    assert welcome["user"]["name"] != "victim"


async def test_gap_beyond_retention_is_reported(chat: ChatServer, connect: Connect) -> None:
    """When retention removed part of the gap: the rest is replayed and `lost` says how many."""
    await chat.stop()
    await chat.start(history_max_messages=5)
    reader = await connect(json=True)
    welcome = await welcome_of(reader)
    writer = await connect(json=True)
    [seen] = await post(writer, ["seen"])
    await reader.until_type("message")
    await reader.close()
    await post(writer, [f"m{i}" for i in range(20)])
    assert chat.app is not None
    await apply_retention(chat.app)
    _, replayed, summary, _ = await resume_and_collect(connect, welcome["session"], seen)
    assert [m["text"] for m in replayed] == [f"m{i}" for i in range(15, 20)]
    assert summary["rooms"]["lobby"] == {"recovered": 5, "lost": 15}


@pytest.mark.parametrize("chat_mode", ["embedded"])  # reads one process's hub
async def test_two_racing_resumes_leave_one_winner(chat: ChatServer, connect: Connect) -> None:
    """Two resumes of one token at once: the later takes over, the other gets 4001."""
    peer = await connect(json=True)
    welcome = await welcome_of(peer)
    writer = await connect(json=True)
    [seen] = await post(writer, ["seen"])
    await peer.close()
    missed = await post(writer, [f"x{i}" for i in range(50)])
    token = welcome["session"]
    first, second = await asyncio.gather(
        connect(json=True, session=token, last=f"lobby:{seen}"),
        connect(json=True, session=token, last=f"lobby:{seen}"),
    )
    outcomes = await asyncio.gather(drain(first), drain(second))
    if all(o["close"] is None for o in outcomes):
        # The loser may finish its replay before the winner takes over: read
        # both until the first close (the other then stays open).
        waits = {
            asyncio.create_task(close_code_within(p, TIMEOUT)): o
            for p, o in zip((first, second), outcomes, strict=True)
        }
        done, others = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)  # free the winner's receive()
        for task in done:
            waits[task]["close"] = task.result()
    closed = [o for o in outcomes if o["close"] is not None]
    assert len(closed) == 1
    assert closed[0]["close"] == 4001
    peers = zip((first, second), outcomes, strict=True)
    [(winner, alive)] = [(p, o) for p, o in peers if o["close"] is None]
    assert alive["ids"] == missed
    await winner.send_json(type="who")
    assert (await winner.until_type("who"))["room"] == "lobby"
    assert chat.app is not None
    from chatserver.keys import HUB

    users = [c.user.id for c in chat.app[HUB].connections.values()]
    assert users.count(welcome["user"]["id"]) == 1


async def close_code_within(peer: Peer, seconds: float) -> int | None:
    """The close code if the server closes ``peer`` within ``seconds``, else None."""
    try:
        while True:
            msg = await peer.recv(seconds)
            if msg.type is aiohttp.WSMsgType.CLOSE:
                return int(msg.data)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return -1
    except TimeoutError:
        return None


async def drain(peer: Peer) -> dict[str, Any]:
    """Read a resuming peer until its summary or its close."""
    ids: list[int] = []
    while True:
        msg = await peer.recv()
        if msg.type is aiohttp.WSMsgType.CLOSE:
            return {"close": int(msg.data), "ids": ids}
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return {"close": -1, "ids": ids}
        event = json.loads(msg.data)
        if event["type"] == "message":
            ids.append(event["id"])
        if event["type"] == "resumed":
            return {"close": None, "ids": ids}


# ---------------------------------------------------------------- crashes (SIGKILL)


async def chat_until_killed(
    server: ServerProcess, http: aiohttp.ClientSession, kill_after: int
) -> tuple[str, int, list[int]]:
    """A reader and a writer chat; SIGKILL the server mid-stream.

    The writer keeps a window of 10 messages in flight; an echo is the
    acknowledgement that a message is stored. Returns the reader's token, the
    last id the reader saw, and every id acknowledged before the crash.
    """
    reader = Peer(await http.ws_connect(server.url(), protocols=("chat.v1",)))
    token = (await welcome_of(reader))["session"]
    writer = Peer(await http.ws_connect(server.url(), protocols=("chat.v1",)))
    await welcome_of(writer)
    acked = await post(writer, [f"early{i}" for i in range(20)])
    reader_last = 0
    while reader_last < acked[-1]:
        reader_last = (await reader.until_type("message"))["id"]
    await reader.close()  # the reader drops and misses the rest
    in_flight = 0
    for i in range(10_000):
        try:
            await writer.send_json(type="message", text=f"c{i}")
        except ConnectionError:
            break
        in_flight += 1
        if in_flight < 10:
            continue
        msg = await writer.recv()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
        event = json.loads(msg.data)
        if event["type"] == "message":
            acked.append(event["id"])
            in_flight -= 1
        if len(acked) == kill_after:
            server.signal(signal.SIGKILL)
    return token, reader_last, acked


async def test_sigkill_loses_no_acknowledged_message(
    server_process: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    """After SIGKILL and a restart on the same db, a resume recovers every acked message."""
    server = await asyncio.to_thread(server_process)
    token, last, acked = await chat_until_killed(server, http, 300)
    await asyncio.to_thread(server.wait, 10)
    assert len(acked) >= 300
    restarted = await asyncio.to_thread(server_process, port=server.port)
    peer = Peer(
        await http.ws_connect(
            restarted.url(session=token, last=f"lobby:{last}"), protocols=("chat.v1",)
        )
    )
    welcome = await welcome_of(peer)
    assert welcome["resumed"] is True
    outcome = await drain(peer)
    missed = [i for i in acked if i > last]
    assert outcome["ids"][: len(missed)] == missed
    assert outcome["ids"] == sorted(set(outcome["ids"])), "no duplicates, in order"


async def test_crash_during_resume_then_resume_again(
    server_process: Callable[..., ServerProcess], http: aiohttp.ClientSession
) -> None:
    """A server killed while replaying: resuming again from the last id seen completes it."""
    server = await asyncio.to_thread(server_process)
    reader = Peer(await http.ws_connect(server.url(), protocols=("chat.v1",)))
    token = (await welcome_of(reader))["session"]
    await reader.close()
    writer = Peer(await http.ws_connect(server.url(), protocols=("chat.v1",)))
    await welcome_of(writer)
    texts = [f"r{i} " + "y" * 200 for i in range(3000)]
    expected = await post(writer, texts)
    await writer.close()
    # A raw reader with a 4 KiB receive buffer holds the replay back: the
    # server can be at most a few hundred KiB (its buffers) ahead of what was read.
    path = "/ws?" + urlencode({"session": token, "last": "lobby:0"})
    first = await asyncio.to_thread(RawPeer, server.port, path, 4096, "chat.v1")
    got = await asyncio.to_thread(first.message_ids, 100)
    server.signal(signal.SIGKILL)
    got += await asyncio.to_thread(first.message_ids)  # what was in flight, then the end
    first.close()
    assert got == expected[: len(got)]
    assert len(got) < len(expected), "the crash must land in the middle of the replay"
    await asyncio.to_thread(server.wait, 10)
    restarted = await asyncio.to_thread(server_process, port=server.port)
    second = Peer(
        await http.ws_connect(
            restarted.url(session=token, last=f"lobby:{got[-1]}"), protocols=("chat.v1",)
        )
    )
    await welcome_of(second)
    rest = await drain(second)
    assert got + rest["ids"] == expected
