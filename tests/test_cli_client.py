"""The chat client (cli_client.py) against real servers, with only stdin and
stdout replaced: a pipe to type into and a screen that tests can wait on."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer
from websockets.typing import Subprotocol

import cli_client
from cli_client import (
    Backoff,
    ChatState,
    Closed,
    Confirmations,
    Say,
    Send,
    Verdict,
    escape,
    judge_close,
    translate,
)
from tests.conftest import ADMIN_AUTH, ChatServer, Connect, ServerProcess, free_port

TIMEOUT = 5.0
RECONNECT_TIMEOUT = 15.0
CLOCK = r"\d\d:\d\d"
FAST = Backoff(initial=0.05, minimum=0.05, factor=2.0, maximum=0.2)
# No immediate retry after the first failure: time for a test to act meanwhile
# (4.5-6 s with jitter, so a loaded machine still restarts a server in time).
SLOW_SECOND = Backoff(initial=0.0, minimum=6.0, factor=1.0, maximum=6.0)
REPO = Path(__file__).resolve().parents[1]


class Screen(io.StringIO):
    """A stdout replacement whose lines a test can wait for (polling, so that a
    client running in another thread can write to it too)."""

    def __init__(self) -> None:
        super().__init__()
        self.cursor = 0

    async def expect(self, pattern: str, timeout: float = TIMEOUT) -> str:
        """Wait for a line after the last one matched that matches ``pattern``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            lines = self.getvalue().splitlines()
            for index in range(self.cursor, len(lines)):
                if re.search(pattern, lines[index]):
                    self.cursor = index + 1
                    return lines[index]
            if loop.time() > deadline:
                raise AssertionError(f"no line matches {pattern!r} in:\n{self.getvalue()}")
            await asyncio.sleep(0.01)


class Keyboard:
    """A pipe standing in for stdin."""

    def __init__(self) -> None:
        read_fd, self.write_fd = os.pipe()
        self.stdin = open(read_fd, encoding="utf-8")  # noqa: SIM115 (closed in dispose)

    def type(self, *lines: str) -> None:
        os.write(self.write_fd, "".join(line + "\n" for line in lines).encode())

    def close(self) -> None:
        """End of input, like Ctrl-D."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def dispose(self) -> None:
        self.close()
        self.stdin.close()


@dataclasses.dataclass
class CliClient:
    """A running ``run_client`` with its keyboard and screen."""

    keyboard: Keyboard
    screen: Screen
    task: asyncio.Task[int]

    async def exit_code(self, timeout: float = TIMEOUT) -> int:
        return await asyncio.wait_for(asyncio.shield(self.task), timeout)


StartCli = Callable[..., Awaitable[CliClient]]


@pytest.fixture
async def cli() -> AsyncIterator[StartCli]:
    """Start ``run_client`` on a URL: ``await cli(url, "--name", "x", backoff=...)``."""
    started: list[CliClient] = []

    async def start(
        url: str, *args: str, backoff: Backoff = FAST, welcome: bool = True
    ) -> CliClient:
        options = dataclasses.replace(cli_client.parse_args([url, *args]), backoff=backoff)
        keyboard, screen = Keyboard(), Screen()
        task = asyncio.create_task(cli_client.run_client(options, keyboard.stdin, screen))
        client = CliClient(keyboard, screen, task)
        started.append(client)
        if welcome:
            await screen.expect("^Welcome, ")
        return client

    yield start
    for client in started:
        client.keyboard.close()
        # A client that does not exit at end of input is a failure, not noise.
        await asyncio.wait_for(client.task, TIMEOUT)
        client.keyboard.dispose()


async def admin_post(http: aiohttp.ClientSession, chat: ChatServer, path: str, **body: Any) -> None:
    """POST to the admin API of ``chat`` with the test token."""
    url = chat.url(f"/admin/api/{path}").replace("ws", "http", 1)
    async with http.post(url, json=body, headers=ADMIN_AUTH) as response:
        assert response.ok, await response.text()


# ------------------------------------------------------------------ chatting


async def test_prints_seed_lines_and_welcome(chat: ChatServer, cli: StartCli) -> None:
    """The client prints the seed's connect lines, then the server's welcome."""
    client = await cli(chat.url("/"), "--name", "alice", welcome=False)
    port = chat.settings.port
    await client.screen.expect(rf"^Connecting to ws://127\.0\.0\.1:{port}/\.\.\.$")
    await client.screen.expect(r"^Connected successfully!$")
    await client.screen.expect(r"^Welcome, alice! You are in #lobby\. Type /help for commands\.$")
    await client.screen.expect(rf"^{CLOCK} \[#lobby\] alice has connected\.$")
    assert "\x1b" not in client.screen.getvalue()  # no colors: not a terminal


async def test_messages_go_both_ways(chat: ChatServer, cli: StartCli, connect: Connect) -> None:
    """A typed line reaches a text client, and its reply is printed with time and room."""
    bob = await connect(name="bob")
    await bob.until("bob has connected")
    client = await cli(chat.url("/"), "--name", "alice")
    await bob.until("alice has connected")
    client.keyboard.type("hello from the cli")
    assert await bob.until("hello from") == "alice: hello from the cli"
    await bob.send("hi alice")
    await client.screen.expect(rf"^{CLOCK} \[#lobby\] bob: hi alice$")


async def test_chats_with_a_websockets_json_client(chat: ChatServer, cli: StartCli) -> None:
    """A `websockets` chat.v1 client gets the typed message as a JSON event, and back."""
    client = await cli(chat.url("/"), "--name", "alice")
    async with websockets.connect(
        chat.url("/ws", name="carol"), subprotocols=[Subprotocol("chat.v1")]
    ) as carol:
        welcome = json.loads(await asyncio.wait_for(carol.recv(), TIMEOUT))
        assert welcome["type"] == "welcome"
        await client.screen.expect("carol has connected")
        client.keyboard.type("structured?")
        while (event := json.loads(await asyncio.wait_for(carol.recv(), TIMEOUT)))["type"] != (
            "message"
        ):
            pass
        assert (event["text"], event["room"]) == ("structured?", "lobby")
        assert event["user"]["name"] == "alice"
        await carol.send(json.dumps({"type": "message", "text": "yes, JSON"}))
        await client.screen.expect(rf"^{CLOCK} \[#lobby\] carol: yes, JSON$")


async def test_nick_join_who_and_leave(chat: ChatServer, cli: StartCli, connect: Connect) -> None:
    """/nick, /join, /who and /leave work, and messages go to the room joined last."""
    client = await cli(chat.url("/"), "--name", "alice")
    screen = client.screen
    client.keyboard.type("/nick ada")
    await screen.expect(rf"^{CLOCK} alice is now known as ada\.$")
    client.keyboard.type("/join #dev")
    await screen.expect(rf"^{CLOCK} \[#dev\] ada has joined\.$")
    bob = await connect(json=True, name="bob", room="dev")
    await screen.expect(rf"^{CLOCK} \[#dev\] bob has connected\.$")
    client.keyboard.type("in dev", "/who")
    message = await bob.until_type("message")
    assert (message["room"], message["text"], message["user"]["name"]) == ("dev", "in dev", "ada")
    await screen.expect(r"^Users in #dev \(2\): ada, bob$")
    client.keyboard.type("/leave")
    await screen.expect(rf"^{CLOCK} \[#dev\] ada has left\.$")
    await bob.send_json(type="join", room="lobby")
    await screen.expect(rf"^{CLOCK} \[#lobby\] bob has joined\.$")
    client.keyboard.type("back in the lobby", "/rooms")
    message = await bob.until_type("message")
    assert (message["room"], message["text"]) == ("lobby", "back in the lobby")
    await screen.expect(r"^Your rooms: #lobby \(current\)$")


async def test_help_and_unknown_commands_are_local(chat: ChatServer, cli: StartCli) -> None:
    """/help lists the commands and an unknown command is answered without the server."""
    client = await cli(chat.url("/"))
    client.keyboard.type("/help", "/frobnicate")
    await client.screen.expect(r"^  /join ROOM ")
    await client.screen.expect(r"^Unknown command /frobnicate\. Type /help for commands\.$")


@pytest.mark.parametrize("command", ["quit", "/quit"])
async def test_quit_exits_zero(
    chat: ChatServer, cli: StartCli, connect: Connect, command: str
) -> None:
    """The seed's bare `quit` and `/quit` close the connection and exit with status 0."""
    bob = await connect(name="bob")
    client = await cli(chat.url("/"), "--name", "alice")
    await bob.until("alice has connected")
    client.keyboard.type(command)
    assert await client.exit_code() == 0
    await client.screen.expect(r"^Connection closed \(code 1000\)\.$")
    assert await bob.until("alice has") == "alice has disconnected."


async def test_end_of_input_sends_what_was_typed_and_exits_zero(
    chat: ChatServer, cli: StartCli, connect: Connect
) -> None:
    """Piped input is sent even if it ends before the connection is up; EOF exits 0."""
    bob = await connect(name="bob")
    await bob.until("bob has connected")
    client = await cli(chat.url("/"), "--name", "alice", welcome=False)
    client.keyboard.type("/join dev", "scripted line")
    client.keyboard.close()
    assert await client.exit_code() == 0
    assert await bob.until("alice has") == "alice has connected."
    carol = await connect(json=True, name="carol", room="dev", history=5)
    event = await carol.until_type("history")
    assert [m["text"] for m in event["messages"]] == ["scripted line"]


# ------------------------------------------------------------------ escaping


async def test_escapes_control_characters_from_the_network(
    aiohttp_server: AiohttpServer, cli: StartCli
) -> None:
    """C1 controls, bidi overrides and newlines in a message are shown escaped; tab stays.

    The chat server refuses such text (tests/test_text_rules.py), so a scripted
    server sends it, as an older or hostile server could.
    """

    async def script(ws: web.WebSocketResponse, attempt: int) -> None:
        await ws.send_json(welcome())
        text = "csi\x9b2J rtl\u202eevil\nfake line\tend"
        await ws.send_json(message(1, text, user={"id": 2, "name": "bob"}))
        await ws.close()

    server, _ = await scripted_server(aiohttp_server, script)
    client = await cli(str(server.make_url("/")).replace("http", "ws", 1))
    assert await client.exit_code() == 0
    line = await client.screen.expect(r"bob: csi")
    assert line.endswith(r"bob: csi\x9b2J rtl\u202eevil\nfake line" + "\tend")
    assert not re.search("[\x9b\u202e]", client.screen.getvalue())


async def test_escapes_what_a_hostile_server_sends(
    aiohttp_server: AiohttpServer, cli: StartCli
) -> None:
    """Escape sequences in names and texts from a hostile server can't drive the terminal."""

    async def script(ws: web.WebSocketResponse, attempt: int) -> None:
        user = {"id": 1, "name": "\x1b[2Jroot"}
        await ws.send_json(welcome(user=user))
        await ws.send_json(message(1, "\x1b]0;pwned\x07", user=user))
        await ws.close()

    server, _ = await scripted_server(aiohttp_server, script)
    client = await cli(str(server.make_url("/")).replace("http", "ws", 1))
    assert await client.exit_code() == 0
    output = client.screen.getvalue()
    assert not re.search("[\x1b\x07]", output)
    assert "Welcome, \\x1b[2Jroot! " in output
    await client.screen.expect(r"\\x1b\[2Jroot: \\x1b\]0;pwned\\x07$")


# ------------------------------------------------------------------ reconnecting


async def test_reconnects_and_resumes_after_sigterm_restart(
    server_process: Callable[..., ServerProcess], cli: StartCli, connect: Connect
) -> None:
    """SIGTERM closes with 1001; the client retries, resumes on the restarted server and
    prints the messages it missed, once."""
    server = await asyncio.to_thread(server_process)
    url = f"ws://127.0.0.1:{server.port}/"
    client = await cli(url, "--name", "alice", backoff=SLOW_SECOND)
    screen = client.screen
    client.keyboard.type("before the restart")
    await screen.expect(rf"^{CLOCK} \[#lobby\] alice: before the restart$")
    server.signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait, 10) == 0
    await screen.expect(
        r"^Connection lost: the server is shutting down or restarting \(code 1001\)\. "
        r"Reconnecting\.\.\.$"
    )
    await screen.expect(r"^Still reconnecting: connection refused; retrying\.\.\.$")
    restarted = await asyncio.to_thread(server_process, port=server.port)
    async with aiohttp.ClientSession() as http, http.ws_connect(restarted.url(name="bob")) as bob:
        await bob.send_str("missed one")
        await bob.send_str("missed two")
        await screen.expect(r"^Reconnected\.$", RECONNECT_TIMEOUT)
    await screen.expect(rf"^{CLOCK} \[#lobby\] bob: missed one$")
    await screen.expect(rf"^{CLOCK} \[#lobby\] bob: missed two$")
    await screen.expect(r"^Recovered 2 missed messages\.$")
    client.keyboard.type("after the restart")
    await screen.expect(rf"^{CLOCK} \[#lobby\] alice: after the restart$")
    assert screen.getvalue().count("alice: before the restart") == 1


async def test_rejoins_rooms_when_the_session_is_not_resumed(
    chat: ChatServer, cli: StartCli, connect: Connect, tmp_path: Path
) -> None:
    """Against a server that forgot the session, the client keeps its name and rooms,
    and sends what was typed while it was away."""
    client = await cli(chat.url("/"), "--name", "alice")
    client.keyboard.type("/join dev")
    await client.screen.expect(r"\[#dev\] alice has joined\.$")
    await chat.stop()
    await client.screen.expect(r"^Connection lost: the server is shutting down or restarting")
    client.keyboard.type("typed while away")
    await client.screen.expect(r"^Not connected; will send after reconnecting\.$")
    await chat.start(db=str(tmp_path / "fresh.db"))
    await client.screen.expect(r"^Reconnected\.$", RECONNECT_TIMEOUT)
    await client.screen.expect(r"^Welcome, alice! You are in #lobby\.")
    await client.screen.expect(r"session has expired or is unknown")
    await client.screen.expect(r"\[#dev\] alice has joined\.$")
    await client.screen.expect(rf"^{CLOCK} \[#dev\] alice: typed while away$")
    bob = await connect(json=True, name="bob", room="dev")
    client.keyboard.type("still in dev")
    message = await bob.until_type("message")
    assert (message["room"], message["text"]) == ("dev", "still in dev")


async def test_resume_sends_the_cursor_and_drops_duplicates(
    aiohttp_server: AiohttpServer, cli: StartCli
) -> None:
    """After a drop the client resumes with session and last ids, skips replayed
    duplicates and sums up what was recovered and lost in one line."""

    async def script(ws: web.WebSocketResponse, attempt: int) -> None:
        if attempt == 1:
            await ws.send_json(welcome(session="tok-1"))
            for msg_id in (5, 5, 4, 6):
                await ws.send_json(message(msg_id, f"live {msg_id}"))
            await ws.send_json(message(2, "other room", room="dev"))
            await ws.close(code=4000, message=b"slow consumer")
            return
        await ws.send_json(welcome(session="tok-1", resumed=True))
        for msg_id in (6, 9):
            await ws.send_json(message(msg_id, f"replayed {msg_id}"))
        await ws.send_json({"type": "resumed", "rooms": {"lobby": {"recovered": 1, "lost": 2}}})
        await ws.close()

    server, queries = await scripted_server(aiohttp_server, script)
    client = await cli(str(server.make_url("/")).replace("http", "ws", 1), "--room", "lobby")
    assert await client.exit_code() == 0
    screen = client.screen
    live = [line.split(": ")[-1] for line in screen.getvalue().splitlines() if ": live" in line]
    assert live == ["live 5", "live 6"]
    await screen.expect(
        r"^Connection lost: this client was too slow to keep up \(code 4000\)\. Reconnecting"
    )
    await screen.expect(r"^Reconnected\.$")
    await screen.expect(r"alice: replayed 9$")
    await screen.expect(
        r"^Recovered 1 missed message\. 2 older messages were lost \(beyond retention\)\.$"
    )
    assert "replayed 6" not in screen.getvalue()
    assert queries[1]["session"] == "tok-1"
    assert queries[1]["last"] == "lobby:6,dev:2"


# ------------------------------------------------------------------ closing for good


@pytest.mark.parametrize(
    ("endpoint", "line"),
    [
        ("kick", r"^Kicked by an operator: spamming$"),
        ("bans", r"^Banned by an operator: permanently: spamming$"),
    ],
)
async def test_removed_client_exits_2_without_reconnecting(
    chat: ChatServer, cli: StartCli, http: aiohttp.ClientSession, endpoint: str, line: str
) -> None:
    """A kick (close 4500) or a ban (4501) prints the operator's reason and exits
    with status 2, without trying to reconnect."""
    client = await cli(chat.url("/"), "--name", "alice")
    await admin_post(http, chat, endpoint, name="alice", reason="spamming")
    assert await client.exit_code() == 2
    await client.screen.expect(line)
    assert "Reconnect" not in client.screen.getvalue()


@pytest.mark.parametrize(
    ("code", "reason", "line"),
    [
        (4001, b"session resumed by another connection", r"^Session taken over by another"),
        (
            1008,
            b"rate limit exceeded repeatedly",
            r"^Disconnected for a policy violation \(code 1008",
        ),
        (1009, b"message too big", r"^Disconnected: a message was too big \(code 1009"),
    ],
)
async def test_final_close_codes_exit_1(
    aiohttp_server: AiohttpServer, cli: StartCli, code: int, reason: bytes, line: str
) -> None:
    """4001, 1008 and 1009 are printed and end the client with status 1, no reconnect."""

    async def script(ws: web.WebSocketResponse, attempt: int) -> None:
        await ws.send_json(welcome())
        await ws.close(code=code, message=reason)

    server, queries = await scripted_server(aiohttp_server, script)
    client = await cli(str(server.make_url("/")).replace("http", "ws", 1))
    assert await client.exit_code() == 1
    await client.screen.expect(line)
    assert len(queries) == 1


async def test_unreachable_server_exits_1(cli: StartCli) -> None:
    """When the first connection fails, the client says so and exits with status 1."""
    client = await cli(f"ws://127.0.0.1:{free_port()}/", welcome=False)
    assert await client.exit_code() == 1
    await client.screen.expect(r"^Failed to connect to ws://127\.0\.0\.1:\d+/: .+\.$")


# ------------------------------------------------------------------ the entry point


async def test_main_chats_on_replaced_stdin_and_stdout(
    chat: ChatServer, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """main(argv) runs the client on sys.stdin/sys.stdout and returns the exit status."""
    bob = await connect(name="bob")
    keyboard, screen = Keyboard(), Screen()
    monkeypatch.setattr(sys, "stdin", keyboard.stdin)
    monkeypatch.setattr(sys, "stdout", screen)
    try:
        running = asyncio.create_task(
            asyncio.to_thread(cli_client.main, [chat.url("/"), "--name", "zed"])
        )
        await screen.expect("^Welcome, zed!")
        keyboard.type("from main")
        assert await bob.until("from main") == "zed: from main"
        keyboard.type("quit")
        assert await asyncio.wait_for(running, TIMEOUT) == 0
    finally:
        keyboard.dispose()


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A URL that is not ws:// or wss:// is a usage error (status 2)."""
    with pytest.raises(SystemExit) as raised:
        cli_client.main(["http://localhost:8765/"])
    assert raised.value.code == 2
    assert "not a ws:// or wss:// URL" in capsys.readouterr().err


async def test_ctrl_c_exits_zero_without_traceback(chat: ChatServer) -> None:
    """SIGINT (Ctrl-C) closes the connection cleanly: status 0 and no traceback."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli_client", chat.url("/"), "--name", "alice",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        while b"Welcome, alice!" not in await asyncio.wait_for(proc.stdout.readline(), TIMEOUT):
            pass
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert b"Connection closed (code 1000)." in out
    assert b"Traceback" not in err, err.decode()


# ------------------------------------------------------------------ pieces


def test_escape_keeps_tab_and_escapes_controls() -> None:
    """ESC, BEL, CR, DEL, C1 and bidi controls are escaped; tab and plain text stay."""
    assert escape("a\tb") == "a\tb"
    assert (
        escape("\x1b[31m\x07\r\x7f\x9b\u202e\u2028ok é")
        == r"\x1b[31m\x07\r\x7f\x9b\u202e\u2028ok é"
    )


def test_translate_turns_lines_into_commands() -> None:
    """Plain text, //text and the slash commands become chat.v1 frames or local answers."""
    state = ChatState(rooms=["lobby", "dev"])
    assert translate("hi", state) == Send({"type": "message", "room": "dev", "text": "hi"})
    assert translate("//etc", state) == Send({"type": "message", "room": "dev", "text": "/etc"})
    assert translate("/join #ops", state) == Send(
        {"type": "join", "room": "ops", "ref": "join:ops"}
    )
    assert translate("/leave", state) == Send({"type": "leave", "room": "dev"})
    assert translate("/who lobby", state) == Send({"type": "who", "room": "lobby"})
    assert translate("/history 5", state) == Send({"type": "history", "room": "dev", "limit": 5})
    assert translate("/nick", state) == Say("Usage: /nick NAME")
    assert translate("   ", state) is None
    state.joining.add("ops")  # a join on its way: the server picks the room
    assert translate("hi", state) == Send({"type": "message", "text": "hi"})


def test_close_codes_decide_between_reconnecting_and_exiting() -> None:
    """Drops, 1001 and 4000 reconnect; 1000 exits 0; kicks and bans exit 2; the rest 1."""
    assert judge_close(Closed(None)).reconnect
    assert judge_close(Closed(1001, "bye")).reconnect
    assert judge_close(Closed(4000)).reconnect
    assert judge_close(Closed(1000)) == Verdict(
        False, 0, "Connection closed by the server (code 1000)."
    )
    kicked = judge_close(Closed(4500, "spamming"))
    assert (kicked.reconnect, kicked.exit_code, kicked.line) == (
        False,
        2,
        "Kicked by an operator: spamming",
    )
    assert judge_close(Closed(4001)).exit_code == 1


def test_confirmations_match_each_answer_to_its_command() -> None:
    """Echoes, who/history replies, own nick/leave and errors by ref settle lines;
    answers may come in any order; unanswered commands are resent, messages not."""
    state = ChatState(user_id=1, rooms=["lobby"])
    book = Confirmations()
    hello = book.track("hello", {"type": "message", "room": "lobby", "text": "hello"})
    who = book.track("/who", {"type": "who", "room": "lobby"})
    book.track("/nick x", {"type": "nick", "name": "x"})
    book.sent(hello)
    book.sent(who)
    assert hello["ref"] != who["ref"]
    book.observe({"type": "who", "room": "dev", "users": []}, state)  # another room's
    book.observe(message(3, "hello", user={"id": 2, "name": "bob"}), state)  # not mine
    assert book.lines() == ["hello", "/who", "/nick x"]
    assert book.resend_after_reconnect() == [who]
    book.observe({"type": "who", "room": "lobby", "users": []}, state)
    book.observe({"type": "error", "code": "name_taken", "ref": 3}, state)
    assert book.lines() == ["hello"]
    assert not book.settled.is_set()
    book.observe(message(4, "hello"), state)
    assert book.lines() == []
    assert book.settled.is_set()


def test_backoff_starts_random_and_grows_to_a_cap() -> None:
    """The first delay is random below `initial`; later ones grow by `factor` up to `maximum`."""
    delays = Backoff(initial=1.0, minimum=1.0, factor=2.0, maximum=8.0).delays()
    first, *rest = (next(delays) for _ in range(7))
    assert 0 <= first < 1.0
    caps = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert all(0.75 * cap <= delay <= cap for delay, cap in zip(rest, caps, strict=True))


# ------------------------------------------------------------------ scripted servers


def welcome(
    user: dict[str, Any] | None = None, session: str = "tok", resumed: bool = False
) -> dict[str, Any]:
    return {
        "type": "welcome",
        "user": user or {"id": 1, "name": "alice"},
        "rooms": ["lobby"],
        "session": session,
        "resumed": resumed,
        "heartbeat": 30,
        "limits": {"max_message_bytes": 16384, "rate_limit": 10, "rate_burst": 20},
    }


def message(
    msg_id: int, text: str, room: str = "lobby", user: dict[str, Any] | None = None
) -> dict[str, Any]:
    author = user or {"id": 1, "name": "alice"}
    return {"type": "message", "id": msg_id, "room": room, "user": author, "text": text, "ts": 0}


Script = Callable[[web.WebSocketResponse, int], Awaitable[None]]


async def scripted_server(
    aiohttp_server: AiohttpServer, script: Script
) -> tuple[TestServer, list[dict[str, str]]]:
    """A chat.v1 server that plays ``script`` for each connection (numbered from 1);
    also returns the query parameters of each connection."""
    queries: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("chat.v1",))
        await ws.prepare(request)
        queries.append(dict(request.query))
        await script(ws, len(queries))
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    return await aiohttp_server(app), queries


# ------------------------------------------------------------------ first meetings


async def test_piped_input_waits_for_every_echo_and_answer_under_load(
    chat: ChatServer, cli: StartCli, connect: Connect
) -> None:
    """`printf '...' | chat-client` exits 0 only after the server echoed every line
    and answered /who, even while another client floods the room."""
    flooder = await connect(json=True, name="flood")
    await flooder.until_type("welcome")

    async def flood() -> None:
        for number in range(400):
            await flooder.send_json(type="message", text=f"noise {number}")

    noise = asyncio.create_task(flood())
    client = await cli(chat.url("/"), "--name", "alice", welcome=False)
    lines = [f"line {number}" for number in range(200)]
    client.keyboard.type(*lines, "/who")
    client.keyboard.close()
    assert await client.exit_code(20) == 0
    await noise
    output = client.screen.getvalue()
    echoed = [line.split("alice: ", 1)[1] for line in output.splitlines() if "alice: line" in line]
    assert echoed == lines
    assert re.search(r"^Users in #lobby \(2\): ", output, re.MULTILINE)
    assert "Not confirmed" not in output
    reader = await connect(json=True, name="reader", history=500)
    stored = (await reader.until_type("history"))["messages"]
    assert [m["text"] for m in stored if m["user"]["name"] == "alice"] == lines


async def test_unanswered_lines_exit_1_and_are_named(
    aiohttp_server: AiohttpServer, cli: StartCli
) -> None:
    """A server that never echoes: after --wait the client names the lines and exits 1."""

    async def script(ws: web.WebSocketResponse, attempt: int) -> None:
        await ws.send_json(welcome())
        async for _ in ws:  # read and never answer
            pass

    server, _ = await scripted_server(aiohttp_server, script)
    client = await cli(
        str(server.make_url("/")).replace("http", "ws", 1), "--wait", "0.5", welcome=True
    )
    client.keyboard.type("first", "/who")
    client.keyboard.close()
    assert await client.exit_code() == 1
    await client.screen.expect(r"^Not confirmed by the server: 2 lines \('first', '/who'\)\.$")


async def test_reconnect_prints_one_line_per_change_and_no_empty_recovery(
    chat: ChatServer, cli: StartCli
) -> None:
    """A server down for many attempts gives one 'lost' line, one 'still reconnecting'
    line and one 'Reconnected.'; nothing missed means no 'Recovered' line."""
    client = await cli(chat.url("/"), "--name", "alice")
    await chat.stop()
    await client.screen.expect(r"^Still reconnecting: connection refused; retrying\.\.\.$")
    await asyncio.sleep(1.0)  # FAST backoff: several more refused attempts meanwhile
    await start_on_the_same_port(chat)
    await client.screen.expect(r"^Reconnected\.$", RECONNECT_TIMEOUT)
    client.keyboard.type("back")
    await client.screen.expect(rf"^{CLOCK} \[#lobby\] alice: back$")
    output = client.screen.getvalue()
    assert output.count("Connection lost") == 1
    assert output.count("Still reconnecting") == 1
    assert "Recovered" not in output


async def start_on_the_same_port(chat: ChatServer) -> None:
    """Restart ``chat`` on its old port. While it was down, an outgoing connection
    of a concurrent test run may have taken that port as its source port for a
    moment, so a refused bind is retried for a while."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECONNECT_TIMEOUT
    while True:
        try:
            await chat.start()
            return
        except OSError:
            await chat.stop()  # the half-started app: close its database again
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_banned_user_never_sees_connected(
    chat: ChatServer, cli: StartCli, http: aiohttp.ClientSession
) -> None:
    """A banned name is refused with 4501 and the reason; no 'Connected' line comes first."""
    await admin_post(http, chat, "bans", name="mallory", reason="spam")
    client = await cli(chat.url("/"), "--name", "mallory", welcome=False)
    assert await client.exit_code() == 2
    await client.screen.expect(r"^Banned by an operator: permanently: spam$")
    assert "Connected" not in client.screen.getvalue()


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/admin/", r"this is a web page, not a chat endpoint \(HTTP 200\)"),
        ("/no/such/page", r"no chat endpoint at this path \(HTTP 404\)"),
    ],
)
async def test_a_url_that_is_not_a_chat_endpoint_says_so(
    chat: ChatServer, cli: StartCli, path: str, words: str
) -> None:
    """ws://host/admin/ or a wrong path: one clear line naming the chat socket, exit 1."""
    client = await cli(chat.url(path), welcome=False)
    assert await client.exit_code() == 1
    line = await client.screen.expect(rf"^Failed to connect to .+: {words}")
    assert line.endswith(f"the chat socket is {chat.url('/ws')}.")


async def test_login_with_the_password_from_the_environment(
    chat: ChatServer, cli: StartCli, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--login` with $CHAT_PASSWORD logs in without a terminal; a wrong one exits 1."""
    alice = await connect(json=True, name="alice")
    await alice.until_type("welcome")
    await alice.send_json(type="register", password="scripted password")
    await alice.until_type("identified")
    await alice.close()
    monkeypatch.setenv("CHAT_PASSWORD", "scripted password")
    client = await cli(chat.url("/"), "--name", "alice", "--login", welcome=False)
    await client.screen.expect(r"^Welcome, alice! You are logged in \(registered\)\.")
    client.keyboard.close()
    assert await client.exit_code() == 0
    monkeypatch.setenv("CHAT_PASSWORD", "not it at all")
    refused = await cli(chat.url("/"), "--name", "alice", "--login", welcome=False)
    await refused.screen.expect(r"^Login refused: wrong name or password\.$")
    assert await refused.exit_code() == 1


def test_login_without_a_name_or_a_password_source_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--login needs --name, and a terminal or $CHAT_PASSWORD (status 2)."""
    monkeypatch.delenv("CHAT_PASSWORD", raising=False)
    with pytest.raises(SystemExit) as raised:
        cli_client.parse_args(["ws://127.0.0.1:1/", "--login"])
    assert raised.value.code == 2
    assert "--login needs --name NAME" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(SystemExit) as raised:
        cli_client.parse_args(["ws://127.0.0.1:1/", "--name", "alice", "--login"])
    assert "--login needs a terminal" in capsys.readouterr().err


# ------------------------------------------------------------------ secrets stay secret

SECRETS = ("pw-login-1", "pw-register-2", "pw-old-3", "pw-new-4", "pw-unregister-5")


async def test_unconfirmed_account_commands_are_named_without_their_passwords(
    server_process: Callable[..., ServerProcess],
) -> None:
    """`/login NAME PW`, `/register PW`, `/password OLD NEW` and `/unregister PW` piped
    to a server that stops answering: the exit summary names them with *** for each
    password, and no password reaches the output."""
    server = await asyncio.to_thread(server_process)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli_client", f"ws://127.0.0.1:{server.port}/",
        "--name", "alice", "--wait", "0.5",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        while b"Welcome, alice!" not in await asyncio.wait_for(proc.stdout.readline(), TIMEOUT):
            pass
        server.signal(signal.SIGSTOP)  # connected, and from now on nothing is answered
        login, register, old, new, unregister = SECRETS
        typed = [f"/login alice {login}", f"/register {register}", f"/password {old} {new}"]
        proc.stdin.write("\n".join([*typed, f"/unregister {unregister}", ""]).encode())
        proc.stdin.close()
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT + 10)
    finally:
        server.signal(signal.SIGCONT)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1
    summary = (
        "Not confirmed by the server: 4 lines ('/login alice ***', '/register ***', "
        "'/password *** ***', '/unregister ***')."
    )
    assert summary in out.decode(), out.decode()
    for secret in SECRETS:
        assert secret.encode() not in out + err


async def test_credentials_in_the_url_are_not_printed(chat: ChatServer, cli: StartCli) -> None:
    """A password in the URL's user info and a ?token= are shown as *** in every line."""
    port = chat.settings.port
    url = f"ws://alice:url-password-6@127.0.0.1:{port}/?token=site-token-7"
    client = await cli(url, welcome=False)
    assert await client.exit_code() == 1
    shown = rf"ws://alice:\*\*\*@127\.0\.0\.1:{port}/\?token=\*\*\*"
    await client.screen.expect(rf"^Connecting to {shown}\.\.\.$")
    output = client.screen.getvalue()
    assert "url-password-6" not in output
    assert "site-token-7" not in output


async def test_a_connect_error_does_not_print_the_url_it_asked_for(
    aiohttp_server: AiohttpServer, cli: StartCli
) -> None:
    """aiohttp's text for too many redirects names the URL with its token: not printed."""

    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(str(request.rel_url))

    app = web.Application()
    app.router.add_get("/", handler)
    server = await aiohttp_server(app)
    url = str(server.make_url("/").with_query(token="site-token-8")).replace("http", "ws", 1)
    client = await cli(url, welcome=False)
    assert await client.exit_code() == 1
    await client.screen.expect(r"^Failed to connect to .+\?token=\*\*\*: too many redirects\.$")
    assert "site-token-8" not in client.screen.getvalue()


def test_masked_hides_each_password_argument() -> None:
    """masked() mirrors how translate() splits account commands; other lines stay."""
    assert cli_client.masked("/login alice two words") == "/login alice ***"
    assert cli_client.masked("/LOGIN  alice  pw") == "/LOGIN  alice ***"
    assert cli_client.masked("/login alice") == "/login alice"
    assert cli_client.masked("/register pw") == "/register ***"
    assert cli_client.masked("/register") == "/register"
    assert cli_client.masked("/password old new") == "/password *** ***"
    assert cli_client.masked("/unregister pw") == "/unregister ***"
    assert cli_client.masked("//register pw") == "//register pw"  # a message
    assert cli_client.masked("/registered pw") == "/registered pw"
    assert cli_client.without_secrets("/login alice pw") == "/login alice"
    assert cli_client.without_secrets("/password old new") == "/password"
