"""Redis mode: several real server processes on one real redis-server act as one chat."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import pytest

from tests.conftest import ADMIN_AUTH, ADMIN_TOKEN, JSON, Peer, RedisServer, ServerProcess

PRESENCE_TTL = 3.0

StartNode = Callable[..., ServerProcess]


@pytest.fixture
def nodes(
    redis_server: RedisServer, server_process: StartNode
) -> Callable[[int], list[ServerProcess]]:
    """Start N chatserver processes on the test's Redis."""

    def start(count: int) -> list[ServerProcess]:
        return [start_node(server_process, redis_server, index) for index in range(count)]

    return start


def start_node(server_process: StartNode, redis: RedisServer, index: int) -> ServerProcess:
    return server_process(
        "--redis-url", redis.url,
        "--node-id", f"node{index}",
        "--presence-ttl", str(PRESENCE_TTL),
        "--heartbeat", "0",
    )  # fmt: skip


async def peer(http: aiohttp.ClientSession, node: ServerProcess, **query: Any) -> Peer:
    """A chat.v1 client on ``node`` that has read its welcome (kept on ``.welcome``)."""
    ws = await http.ws_connect(node.url(**query), protocols=JSON)
    client = Peer(ws)
    client.welcome = await client.until_type("welcome")  # type: ignore[attr-defined]
    return client


async def api(
    http: aiohttp.ClientSession, node: ServerProcess, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{node.port}/admin/api/{path}"
    async with http.request(method, url, json=body, headers=ADMIN_AUTH) as response:
        return response.status, await response.json()


async def messages(client: Peer, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The next ``count`` message events ``client`` receives."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        event = await client.event(max(0.01, deadline - time.monotonic()))
        if event["type"] == "message":
            got.append(event)
    return got


async def send(client: Peer, text: str) -> None:
    await client.send_json(type="message", text=text)


async def test_one_order_and_gap_free_ids_across_three_nodes(
    nodes: Callable[[int], list[ServerProcess]], http: aiohttp.ClientSession
) -> None:
    """Senders on three nodes post at once: every member on every node sees the
    same messages in the same order, with ids 1..N and no gap."""
    servers = nodes(3)
    receivers = [await peer(http, node, name=f"r{i}") for i, node in enumerate(servers)]
    senders = [await peer(http, node, name=f"s{i}") for i, node in enumerate(servers)]
    per_sender = 40
    await asyncio.gather(
        *(
            asyncio.gather(*(send(s, f"{i}-{n}") for n in range(per_sender)))
            for i, s in enumerate(senders)
        )
    )
    total = per_sender * len(senders)
    seen = [await messages(r, total) for r in receivers]
    ids = [[m["id"] for m in stream] for stream in seen]
    assert ids[0] == list(range(1, total + 1))
    texts = [[m["text"] for m in stream] for stream in seen]
    assert texts[0] == texts[1] == texts[2], "one order for everyone"
    for i in range(len(senders)):
        mine = [t for t in texts[0] if t.startswith(f"{i}-")]
        assert mine == [f"{i}-{n}" for n in range(per_sender)], "each sender's order kept"


async def test_names_and_who_cover_every_node(
    nodes: Callable[[int], list[ServerProcess]], http: aiohttp.ClientSession
) -> None:
    """A name held on one node is taken on another; who lists every node's users."""
    first, second = nodes(2)
    alice = await peer(http, first, name="alice")
    other = await peer(http, second, name="ALICE")
    assert other.welcome["user"]["name"] != "ALICE"  # type: ignore[attr-defined]
    assert (await other.until_type("error"))["code"] == "name_taken"
    bob = await peer(http, second, name="bob")
    await bob.send_json(type="nick", name="Alice")
    assert (await bob.until_type("error"))["code"] == "name_taken"
    await bob.send_json(type="who")
    who = await bob.until_type("who")
    names = {user["name"] for user in who["users"]}
    assert {"alice", "bob"} <= names
    await alice.close()
    await asyncio.sleep(0.5)
    await bob.send_json(type="nick", name="alice")
    assert (await bob.until_type("nick"))["user"]["name"] == "alice", "freed on leave"


async def test_operators_act_across_nodes(
    nodes: Callable[[int], list[ServerProcess]], http: aiohttp.ClientSession
) -> None:
    """Kick, ban, mute and announce through one node's API reach a user on another,
    and a ban is enforced on every node for new connections too."""
    first, second = nodes(2)
    bystander = await peer(http, first, name="watcher")
    target = await peer(http, second, name="target")
    status, _ = await api(http, first, "POST", "announce", {"text": "hello all"})
    assert status == 200
    assert (await target.until_type("system"))["text"] == "hello all"
    status, _ = await api(http, first, "POST", "mutes", {"name": "target", "reason": "calm"})
    assert status == 201
    assert "muted" in (await target.until_type("system"))["text"]
    await send(target, "can I talk?")
    assert (await target.until_type("error"))["code"] == "muted"
    kicked_id = target.welcome["user"]["id"]  # type: ignore[attr-defined]
    assert kicked_id
    conn = await peer(http, second, name="kickme")
    await asyncio.sleep(0.3)
    status, rows = await api(http, second, "GET", "connections?name=kickme")
    conn_id = rows["connections"][0]["id"]
    status, body = await api(http, first, "POST", f"connections/{conn_id}/kick", {"reason": "out"})
    assert status == 200, body
    assert (await conn.closed())[0] == 4500
    status, _ = await api(http, first, "POST", "bans", {"name": "target", "reason": "bye"})
    assert status == 201
    assert (await target.closed())[0] == 4501
    leave = await bystander.until_type("leave")
    while leave["user"]["name"] != "target":
        leave = await bystander.until_type("leave")
    assert (leave["reason"], leave["detail"]) == ("banned", "bye")
    ws = await http.ws_connect(second.url(name="target"), protocols=JSON)
    assert (await Peer(ws).closed())[0] == 4501, "refused on the other node too"


async def test_resume_on_another_node_gets_exactly_what_was_missed(
    nodes: Callable[[int], list[ServerProcess]], http: aiohttp.ClientSession
) -> None:
    """A client that leaves node 1 and resumes on node 2 gets the missed messages
    and keeps its identity."""
    first, second = nodes(2)
    talker = await peer(http, second, name="talker")
    roamer = await peer(http, first, name="roamer")
    await send(talker, "seen")
    last = (await messages(roamer, 1))[0]["id"]
    session = roamer.welcome["session"]  # type: ignore[attr-defined]
    user_id = roamer.welcome["user"]["id"]  # type: ignore[attr-defined]
    await roamer.close()
    for n in range(5):
        await send(talker, f"missed {n}")
    await messages(talker, 6)
    back = await peer(http, second, session=session, last=f"lobby:{last}")
    assert back.welcome["user"] == {"id": user_id, "name": "roamer"}  # type: ignore[attr-defined]
    replayed = await messages(back, 5)
    assert [m["text"] for m in replayed] == [f"missed {n}" for n in range(5)]
    resumed = await back.until_type("resumed")
    assert resumed["rooms"]["lobby"] == {"recovered": 5, "lost": 0}


async def test_live_members_outlast_the_presence_expiry_in_every_room(
    nodes: Callable[[int], list[ServerProcess]], http: aiohttp.ClientSession
) -> None:
    """A node refreshes its members (one ZADD per room): after several expiry
    periods every member of every room is still listed, and nobody left."""
    home, other = nodes(2)
    members = {
        room: [await peer(http, home, name=f"{room}{i}", room=room) for i in range(3)]
        for room in ("north", "south")
    }
    watchers = {room: await peer(http, other, name=f"w{room}", room=room) for room in members}
    await asyncio.sleep(PRESENCE_TTL * 2.5)
    for room, watcher in watchers.items():
        await watcher.send_json(type="who")
        events = [await watcher.event()]
        while events[-1]["type"] != "who":
            events.append(await watcher.event())
        names = {u["name"] for u in events[-1]["users"]}
        assert names == {f"{room}{i}" for i in range(3)} | {f"w{room}"}
        assert [e for e in events if e["type"] == "leave"] == []


async def test_a_killed_node_leaves_presence_once_per_user(
    nodes: Callable[[int], list[ServerProcess]], http: aiohttp.ClientSession
) -> None:
    """SIGKILL a node: within the presence expiry each of its users leaves once,
    announced by a survivor, and can resume on another node."""
    doomed, survivor = nodes(2)
    watcher = await peer(http, survivor, name="watcher")
    victims = [await peer(http, doomed, name=f"v{i}") for i in range(3)]
    sessions = [v.welcome["session"] for v in victims]  # type: ignore[attr-defined]
    await asyncio.sleep(0.3)
    doomed.signal(signal.SIGKILL)
    leaves: list[str] = []
    deadline = time.monotonic() + PRESENCE_TTL * 3
    while len(leaves) < 3 and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            event = await watcher.event(timeout=0.5)
            if event["type"] == "leave":
                leaves.append(event["user"]["name"])
    assert sorted(leaves) == ["v0", "v1", "v2"]
    with contextlib.suppress(TimeoutError):
        extra = await watcher.until_type("leave", timeout=PRESENCE_TTL)
        raise AssertionError(f"a second leave: {extra}")
    await watcher.send_json(type="who")
    assert [u["name"] for u in (await watcher.until_type("who"))["users"]] == ["watcher"]
    back = await peer(http, survivor, session=sessions[0])
    assert back.welcome["user"]["name"] == "v0"  # type: ignore[attr-defined]
    assert back.welcome["resumed"] is True  # type: ignore[attr-defined]


async def test_killed_subscriber_connection_loses_no_message(
    nodes: Callable[[int], list[ServerProcess]],
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    """CLIENT KILL TYPE pubsub while a sender posts: receivers on the other node
    still see every message, in order, without a gap."""
    first, second = nodes(2)
    receiver = await peer(http, second, name="receiver")
    sender = await peer(http, first, name="sender")
    for n in range(10):
        await send(sender, f"a{n}")
    assert int(redis_server.cli("CLIENT", "KILL", "TYPE", "pubsub")) >= 2
    for n in range(10):
        await send(sender, f"b{n}")
    got = await messages(receiver, 20, timeout=15)
    assert [m["id"] for m in got] == list(range(1, 21))


async def test_flushall_changes_the_epoch_and_resume_reports_the_loss(
    nodes: Callable[[int], list[ServerProcess]],
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    """After Redis loses its data the room's epoch changes; a resume with the old
    cursor says how much was lost instead of pretending."""
    (node,) = nodes(1)
    talker = await peer(http, node, name="talker")
    reader = await peer(http, node, name="reader")
    for n in range(4):
        await send(talker, f"old {n}")
    old = await messages(reader, 4)
    epoch = reader.welcome["epochs"]["lobby"]  # type: ignore[attr-defined]
    session = reader.welcome["session"]  # type: ignore[attr-defined]
    await reader.close()
    assert redis_server.cli("FLUSHALL") == "OK"
    await asyncio.sleep(0.3)
    await send(talker, "new 0")
    new_first = await messages(talker, 5, timeout=4)
    assert new_first[-1]["id"] == 1, "a new epoch counts from 1"
    back = await peer(http, node, session=session, last=f"lobby:{old[-1]['id']}@{epoch}")
    resumed = await back.until_type("resumed")
    lobby = resumed["rooms"]["lobby"]
    assert lobby["epoch_changed"] is True
    assert lobby["lost"] == 4
    assert lobby["epoch"] != epoch


async def test_a_redis_that_lost_its_scripts_still_takes_every_message(
    nodes: Callable[[int], list[ServerProcess]],
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    """Appends call the script by its SHA alone; after ``SCRIPT FLUSH`` (what a
    restarted Redis also forgets) the node loads it again and no send fails."""
    (node,) = nodes(1)
    talker = await peer(http, node, name="talker")
    await send(talker, "one")
    await messages(talker, 1)
    assert redis_server.cli("SCRIPT", "FLUSH") == "OK"
    for n in range(3):
        await send(talker, f"after {n}")
    got = await messages(talker, 3)
    assert [(m["id"], m["text"]) for m in got] == [(2, "after 0"), (3, "after 1"), (4, "after 2")]


@pytest.mark.parametrize("kind", ["password", "acl user", "unix socket"])
async def test_nodes_chat_over_a_redis_with_a_password_or_on_a_unix_socket(
    kind: str, tmp_path: Any, server_process: StartNode, http: aiohttp.ClientSession
) -> None:
    """The subscription connects by itself (``redis_subscriber.py``): it must
    authenticate and reach a Unix socket just as the command client does. The
    ACL user has exactly the rights docs/operations.md lists."""
    from tests.conftest import require_redis

    require_redis()
    redis = RedisServer(
        tmp_path,
        password="" if kind == "unix socket" else "s3cret-pass",
        user="chatnode" if kind == "acl user" else "",
        unix=kind == "unix socket",
    )
    redis.start()
    if kind == "acl user":
        rights = "on >s3cret-pass ~chat:* &chat:* +@read +@write +@scripting +@pubsub +@connection"
        assert redis.cli("ACL", "SETUSER", "chatnode", *rights.split()) == "OK"
    try:
        first, second = (start_node(server_process, redis, i) for i in range(2))
        receiver = await peer(http, second, name="receiver")
        sender = await peer(http, first, name="sender")
        await send(sender, "across")
        assert [m["text"] for m in await messages(receiver, 1)] == ["across"]
        assert redis.cli("PUBSUB", "NUMSUB", "chat:messages").splitlines()[-1] == "2"
    finally:
        redis.stop()


async def test_redis_restart_nodes_recover_and_nothing_acknowledged_is_lost(
    tmp_path: Any, server_process: StartNode, http: aiohttp.ClientSession
) -> None:
    """Redis restarted mid-chat: healthz says so meanwhile, sends get an error
    instead of vanishing, the nodes come back by themselves, and every message
    that was echoed to its sender is in history afterwards."""
    from tests.conftest import require_redis

    require_redis()
    redis = RedisServer(tmp_path, persist=True)
    redis.start()
    try:
        first, second = (start_node(server_process, redis, i) for i in range(2))
        sender = await peer(http, first, name="sender")
        receiver = await peer(http, second, name="receiver")
        acked: list[int] = []
        for n in range(5):
            await send(sender, f"before {n}")
        acked += [m["id"] for m in await messages(sender, 5)]
        redis.stop()
        await asyncio.sleep(0.5)
        await send(sender, "while down")
        assert (await sender.until_type("error"))["code"] == "broker_unavailable"
        async with http.get(f"http://127.0.0.1:{first.port}/healthz") as response:
            assert response.status == 503
            assert "broker" in (await response.json())["problems"]
        redis.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            async with http.get(f"http://127.0.0.1:{second.port}/healthz") as response:
                if response.status == 200:
                    break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("node 2 did not come back")
        await asyncio.sleep(0.5)
        await send(sender, "after")
        after = await messages(receiver, 6, timeout=15)
        assert after[-1]["text"] == "after"
        acked.append(after[-1]["id"])
        await sender.send_json(type="history", room="lobby", limit=50)
        history = await sender.until_type("history")
        assert [m["id"] for m in history["messages"]] == acked
    finally:
        redis.stop()


async def test_a_nodes_events_keep_their_order_across_nodes(
    nodes: Callable[[int], list[ServerProcess]], http: aiohttp.ClientSession
) -> None:
    """A user's join, message, nick and leave reach another node in that order."""
    first, second = nodes(2)
    watcher = await peer(http, second, name="watcher")
    mover = await peer(http, first, name="mover")
    await send(mover, "first words")
    await mover.send_json(type="nick", name="moved")
    await mover.send_json(type="leave", room="lobby")
    kinds: list[str] = []
    while len(kinds) < 4:
        event = await watcher.event()
        if event.get("user", {}).get("id") == mover.welcome["user"]["id"]:  # type: ignore[attr-defined]
            kinds.append(event["type"])
    assert kinds == ["join", "message", "nick", "leave"]


async def test_retention_by_count_and_age_on_redis(
    tmp_path: Any, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    """Each room's stream keeps at most --history-max-messages, and the sweep
    removes messages older than --history-max-age; history and resume say so."""
    from chatserver.app import apply_retention
    from tests.conftest import ChatServer, make_settings

    server = ChatServer(make_settings(tmp_path, redis_url=redis_server.url, history_max_messages=5))
    await server.start()
    try:
        talker = await http.ws_connect(server.url(name="talker"), protocols=JSON)
        client = Peer(talker)
        await client.until_type("welcome")
        for n in range(12):
            await send(client, f"m{n}")
        await messages(client, 12)
        await client.send_json(type="history", room="lobby", limit=50)
        kept = (await client.until_type("history"))["messages"]
        assert [m["id"] for m in kept] == [8, 9, 10, 11, 12]
        await server.stop()
        await server.start(history_max_age=0.5)
        await asyncio.sleep(1.0)
        assert server.app is not None
        assert await apply_retention(server.app) == 5
        again = Peer(await http.ws_connect(server.url(name="later"), protocols=JSON))
        await again.until_type("welcome")
        await again.send_json(type="history", room="lobby", limit=50)
        assert (await again.until_type("history"))["messages"] == []
    finally:
        await server.stop()


async def test_operator_delete_reaches_every_node(
    nodes: Callable[[int], list[ServerProcess]], http: aiohttp.ClientSession
) -> None:
    """Deleting a message through one node's API removes it from the shared
    history and tells members on the other node."""
    first, second = nodes(2)
    speaker = await peer(http, first, name="speaker")
    reader = await peer(http, second, name="reader")
    await send(speaker, "oops")
    (message,) = await messages(reader, 1)
    status, body = await api(http, first, "DELETE", f"rooms/lobby/messages/{message['id']}")
    assert status == 200, body
    deleted = await reader.until_type("delete")
    assert (deleted["room"], deleted["id"]) == ("lobby", message["id"])
    await reader.send_json(type="history", room="lobby", limit=10)
    assert (await reader.until_type("history"))["messages"] == []


async def dashboard_login(http: aiohttp.ClientSession, node: ServerProcess, token: str) -> int:
    """Post the dashboard's login form on ``node``; the answer's status."""
    base = f"http://127.0.0.1:{node.port}"
    async with http.get(base + "/admin/login") as response:
        page = await response.text()
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match is not None
    async with http.post(
        base + "/admin/login",
        data={"csrf": match.group(1), "token": token},
        allow_redirects=False,
    ) as response:
        return response.status


async def test_dashboard_login_and_its_limit_are_shared_by_every_node(
    nodes: Callable[[int], list[ServerProcess]],
) -> None:
    """Logged in through one node, an operator's cookie works on the other (a
    round-robin balancer does not log them out), logging out ends it on both,
    and failed logins on one node count on the other."""
    first, second = nodes(2)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        assert await dashboard_login(browser, first, ADMIN_TOKEN) == 303
        url = f"http://127.0.0.1:{second.port}/admin/"
        async with browser.get(url, allow_redirects=False) as response:
            assert response.status == 200
            page = await response.text()
        csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
        assert csrf is not None
        async with browser.post(
            url + "logout", data={"csrf": csrf.group(1)}, allow_redirects=False
        ) as response:
            assert response.status == 303
        async with browser.get(
            f"http://127.0.0.1:{first.port}/admin/", allow_redirects=False
        ) as response:
            assert response.status == 303, "logged out on the first node too"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as guesser:
        statuses = [await dashboard_login(guesser, first, f"guess-{n}") for n in range(10)]
        assert set(statuses) == {401}
        assert await dashboard_login(guesser, second, "one more") == 429


async def test_operators_see_every_nodes_connections_rooms_and_stats(
    nodes: Callable[[int], list[ServerProcess]], http: aiohttp.ClientSession
) -> None:
    """The API of any node lists the connections of all nodes with their node,
    adds up rooms across nodes, and reports each node in stats."""
    first, second = nodes(2)
    clients = [  # held, so that they stay connected
        await peer(http, first, name="here", room="shared"),
        await peer(http, second, name="there", room="shared"),
        await peer(http, second, name="other", room="elsewhere"),
    ]
    status, body = await api(http, first, "GET", "connections")
    assert status == 200, body
    by_name = {row["name"]: row["node"] for row in body["connections"]}
    assert by_name == {"here": "node0", "there": "node1", "other": "node1"}
    assert body["total"] == 3
    status, body = await api(http, first, "GET", "connections?room=shared&sort=activity")
    assert {row["name"] for row in body["connections"]} == {"here", "there"}
    status, rooms = await api(http, first, "GET", "rooms")
    members = {row["name"]: row["members"] for row in rooms["rooms"]}
    assert members == {"shared": 2, "elsewhere": 1}
    status, stats = await api(http, first, "GET", "stats")
    assert stats["cluster"]["connections"] == 3
    assert sorted(node["node"] for node in stats["nodes"]) == ["node0", "node1"]
    status, room = await api(http, first, "GET", "rooms/shared")
    assert {(row["name"], row["node"]) for row in room["members"]} == {
        ("here", "node0"),
        ("there", "node1"),
    }
    assert all(not client.ws.closed for client in clients)


async def test_dashboard_kicks_a_user_on_another_node(
    nodes: Callable[[int], list[ServerProcess]], http: aiohttp.ClientSession
) -> None:
    """In Chromium, the dashboard of node 0 lists a user connected to node 1 with
    its node, and its row's Kick closes that user's socket with 4500."""
    from tests.test_browser import browser_session

    first, second = nodes(2)
    remote_user = await peer(http, second, name="faraway")
    async with browser_session() as browser:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{first.port}/admin/")
        await page.fill("#token", ADMIN_TOKEN)
        await page.click("form button[type=submit]")
        await page.wait_for_selector('body[data-live="1"]')
        row = page.locator("#conns tr", has_text="faraway")
        await row.wait_for(timeout=15_000)
        assert "node1" in (await row.inner_text())
        await row.get_by_role("button", name="Kick").click()
        dialog = page.locator("dialog[open]")
        await dialog.locator("input[name=reason], input").first.fill("from afar")
        await dialog.locator("input").first.press("Enter")
        assert (await remote_user.closed(timeout=10))[0] == 4500
        await row.wait_for(state="detached", timeout=15_000)


def test_embedded_mode_imports_nothing_of_redis(tmp_path: Any) -> None:
    """Without --redis-url the server builds and starts without importing redis."""
    code = (
        "import asyncio, sys\n"
        "from aiohttp.test_utils import TestServer\n"
        "from chatserver.app import create_app\n"
        "from tests.conftest import make_settings\n"
        "from pathlib import Path\n"
        "async def main():\n"
        f"    server = TestServer(create_app(make_settings(Path({str(tmp_path)!r}))))\n"
        "    await server.start_server()\n"
        "    await server.close()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


class FreezingProxy:
    """A TCP proxy in front of Redis that can stop passing anything to the
    node's subscriber connection while keeping it open: a subscription that
    looks healthy but receives nothing (Centrifugo issue 1189). Setting
    ``frozen`` freezes the subscriber connections open at that moment; a
    connection made afterwards (the node resubscribing) passes."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self._subscribers: list[dict[str, bool]] = []

    @property
    def frozen(self) -> bool:
        return any(state["frozen"] for state in self._subscribers)

    @frozen.setter
    def frozen(self, value: bool) -> None:
        for state in self._subscribers:
            state["frozen"] = value

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]
        state = {"frozen": False}

        async def upstream() -> None:
            while data := await reader.read(65536):
                if b"SUBSCRIBE" in data.upper() and state not in self._subscribers:
                    self._subscribers.append(state)
                up_writer.write(data)

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if not state["frozen"]:
                    writer.write(data)

        with contextlib.suppress(ConnectionError, OSError):
            await asyncio.gather(upstream(), downstream())

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@contextlib.asynccontextmanager
async def behind_a_freezing_proxy(
    redis_server: RedisServer, server_process: StartNode
) -> AsyncIterator[tuple[FreezingProxy, ServerProcess, ServerProcess]]:
    """A node on Redis itself and a node whose Redis is behind a FreezingProxy."""
    proxy = FreezingProxy(redis_server.port)
    port = await proxy.start()
    talker = start_node(server_process, redis_server, 0)
    proxied = RedisServer(redis_server.directory)
    proxied.port = port
    # In a thread: the proxy runs on this loop, which must not block meanwhile.
    listener = await asyncio.to_thread(start_node, server_process, proxied, 1)
    try:
        yield proxy, talker, listener
    finally:
        await asyncio.to_thread(listener.stop)
        await proxy.stop()


async def test_a_silent_subscription_is_noticed_and_nothing_is_missed(
    redis_server: RedisServer, server_process: StartNode, http: aiohttp.ClientSession
) -> None:
    """When a node's subscription stays connected but delivers nothing, its own
    probe notices, it resubscribes, and its members get every message."""
    pair = behind_a_freezing_proxy(redis_server, server_process)
    async with pair as (proxy, talker_node, listener_node):
        receiver = await peer(http, listener_node, name="receiver")
        sender = await peer(http, talker_node, name="sender")
        await send(sender, "before")
        assert (await messages(receiver, 1))[0]["text"] == "before"
        proxy.frozen = True
        for n in range(5):
            await send(sender, f"during {n}")
        got = await messages(receiver, 5, timeout=20)
        assert [m["text"] for m in got] == [f"during {n}" for n in range(5)]
        assert [m["id"] for m in got] == [2, 3, 4, 5, 6]


async def test_a_connect_storm_on_one_node_is_welcomed_whole(
    nodes: Callable[[int], list[ServerProcess]],
) -> None:
    """400 clients connecting at once to one Redis-mode node all get their welcome
    (a pool that opened a Redis connection per waiting command ran out)."""
    (node,) = nodes(1)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def welcome() -> tuple[aiohttp.ClientWebSocketResponse, str]:
            ws = await session.ws_connect(node.url(room="storm"), protocols=JSON)
            first = await ws.receive(timeout=30)
            return ws, json.loads(first.data)[
                "type"
            ] if first.type is aiohttp.WSMsgType.TEXT else str(first.data)

        results = await asyncio.gather(*(welcome() for _ in range(400)))
        assert [kind for _, kind in results] == ["welcome"] * 400
        for ws, _ in results:
            await ws.close()


TOKEN_SECRET = "shared-site-secret-of-32-bytes!!"


def token_nodes(
    redis_server: RedisServer, server_process: StartNode
) -> tuple[ServerProcess, ServerProcess]:
    """Two nodes on one Redis that take site tokens signed with TOKEN_SECRET."""
    first, second = (
        server_process(
            "--redis-url", redis_server.url, "--node-id", f"node{i}", "--token-secret", TOKEN_SECRET
        )
        for i in range(2)
    )  # fmt: skip
    return first, second


async def test_accounts_and_token_subjects_span_node_processes(
    redis_server: RedisServer,
    server_process: StartNode,
    http: aiohttp.ClientSession,
) -> None:
    """A name registered on one process is refused to a guest on another, where
    its owner logs in as the same user; one token ``sub`` is one user on both."""
    first, second = token_nodes(redis_server, server_process)
    owner = await peer(http, first, name="dora")
    await owner.send_json(type="register", password="dora's password")
    await owner.until_type("identified")
    guest = await peer(http, second, name="Dora")
    assert guest.welcome["user"]["name"] != "Dora"  # type: ignore[attr-defined]
    assert (await guest.until_type("error"))["code"] == "name_registered"
    ws = await http.ws_connect(second.url(auth="frame"), protocols=JSON)
    await ws.send_str(json.dumps({"type": "auth", "name": "dora", "password": "dora's password"}))
    welcome = await Peer(ws).until_type("welcome")
    assert welcome["user"] == owner.welcome["user"]  # type: ignore[attr-defined]
    assert welcome["identity"] == "registered"
    assert await owner.closed() == (4001, "session resumed by another connection")
    claims = {"sub": "site-7", "name": "Site Seven", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")
    on_first = await peer(http, first, token=token)
    on_second = await peer(http, second, token=token)
    assert on_first.welcome["user"] == on_second.welcome["user"]  # type: ignore[attr-defined]
    assert on_second.welcome["identity"] == "token"  # type: ignore[attr-defined]


async def test_a_resume_during_a_nodes_gap_fill_gets_no_id_twice(
    redis_server: RedisServer, server_process: StartNode, http: aiohttp.ClientSession
) -> None:
    """A client resumes on a node whose subscription missed messages: the replay
    sends them, and the node's later gap fill must not send them again (found by
    the Redis soak: id 8 replayed, then delivered live once more)."""
    pair = behind_a_freezing_proxy(redis_server, server_process)
    async with pair as (proxy, talker_node, listener_node):
        stayer = await peer(http, listener_node, name="stayer")  # keeps the room tracked
        roamer = await peer(http, listener_node, name="roamer")
        sender = await peer(http, talker_node, name="sender")
        await send(sender, "before")
        last = (await messages(roamer, 1))[0]["id"]
        await messages(stayer, 1)
        session = roamer.welcome["session"]  # type: ignore[attr-defined]
        await roamer.close()
        proxy.frozen = True  # the listener node stops hearing publications
        for n in range(2):
            await send(sender, f"missed {n}")
        await messages(sender, 3)  # the echoes: both are stored
        back = await peer(http, listener_node, session=session, last=f"lobby:{last}")
        replayed = await messages(back, 2)
        assert [m["id"] for m in replayed] == [last + 1, last + 2]
        await back.until_type("resumed")
        proxy.frozen = False
        await send(sender, "after")  # the node sees the jump and fills the gap
        await messages(stayer, 3, timeout=20)  # the fill has run
        got = await messages(back, 1, timeout=20)
        assert [m["text"] for m in got] == ["after"], "no replayed id again"


async def test_kick_by_name_or_user_id_reaches_another_node(
    nodes: Callable[[int], list[ServerProcess]], http: aiohttp.ClientSession
) -> None:
    """POST kick with a name or a user id, on a node where that user is not
    connected, closes them on the node that serves them (4500)."""
    first, second = nodes(2)
    by_name = await peer(http, second, name="farname")
    by_id = await peer(http, second, name="farid")
    status, body = await api(http, first, "POST", "kick", {"name": "FARNAME", "reason": "x"})
    assert status == 200, body
    assert (await by_name.closed())[0] == 4500
    user_id = by_id.welcome["user"]["id"]  # type: ignore[attr-defined]
    status, body = await api(http, first, "POST", "kick", {"user_id": user_id})
    assert status == 200, body
    assert (await by_id.closed())[0] == 4500
    status, body = await api(http, first, "POST", "kick", {"name": "nobody"})
    assert status == 404, body


async def test_a_ban_of_a_sub_through_one_node_holds_on_another(
    redis_server: RedisServer, server_process: StartNode, http: aiohttp.ClientSession
) -> None:
    """A ban of a token's ``sub`` made through node 0 closes the user's session
    on node 1 (4501), and node 1 refuses their new tokens and their resume; once
    lifted on node 0, node 1 lets them in again."""
    first, second = token_nodes(redis_server, server_process)

    def token(name: str) -> str:
        claims = {"sub": "site-9", "name": name, "exp": int(time.time()) + 60}
        return jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")

    user = await peer(http, second, token=token("Nine"))
    session = user.welcome["session"]  # type: ignore[attr-defined]
    status, body = await api(http, first, "POST", "bans", {"subject": "site-9", "reason": "x"})
    assert status == 201, body
    assert await user.closed() == (4501, "banned permanently: x")
    for query in ({"token": token("Renamed")}, {"session": session}):
        ws = await http.ws_connect(second.url(**query), protocols=JSON)
        assert (await Peer(ws).closed())[0] == 4501, query
    status, body = await api(http, first, "DELETE", f"bans/{body['ban']['id']}")
    assert status == 200, body
    deadline = time.monotonic() + 5
    while True:  # node 1 reloads the bans when node 0's change reaches it
        ws = await http.ws_connect(second.url(token=token("Nine")), protocols=JSON)
        first_frame = await asyncio.wait_for(ws.receive(), 5)
        if first_frame.type is aiohttp.WSMsgType.TEXT:
            assert json.loads(first_frame.data)["identity"] == "token"
            break
        assert time.monotonic() < deadline, "still banned on node 1"
        await asyncio.sleep(0.1)
