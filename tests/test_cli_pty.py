"""The chat client on a real pseudo-terminal: prompt_toolkit input, incoming
lines printed above the line being typed, Ctrl-D / Ctrl-C / /quit.

The test reads the terminal through a tiny emulator that applies the cursor
movements and erasures prompt_toolkit uses, so assertions are about what a
user would see on the screen, not about the raw byte stream.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ChatServer, Connect, ServerProcess

TIMEOUT = 5.0
ROWS, COLUMNS = 24, 80
REPO = Path(__file__).resolve().parents[1]
CSI = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z@])")
PROMPT = "[#lobby] > "


class Screen:
    """Just enough of a VT100 to replay prompt_toolkit's output: text, CR, LF,
    backspace, cursor moves and erasures. Rows grow without scrolling, so the
    whole session stays visible."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = [[]]
        self.row = self.col = 0
        self.pending = ""

    def feed(self, data: str) -> None:
        data, self.pending = self.pending + data, ""
        index = 0
        while index < len(data):
            char = data[index]
            if char == "\x1b":
                match = CSI.match(data, index)
                if match is None:
                    if len(data) - index < 16:  # an escape sequence cut in two
                        self.pending = data[index:]
                        return
                    index += 2  # another escape sequence: skip it
                    continue
                self._control(match.group(1), match.group(2))
                index = match.end()
                continue
            self._char(char)
            index += 1

    def _char(self, char: str) -> None:
        if char == "\r":
            self.col = 0
        elif char == "\n":
            self._move(self.row + 1, self.col)
        elif char == "\x08":
            self.col = max(0, self.col - 1)
        elif char >= " ":
            line = self._line()
            line.extend(" " * (self.col + 1 - len(line)))
            line[self.col] = char
            self.col += 1

    def _control(self, params: str, final: str) -> None:
        if params.startswith("?"):
            return  # modes: cursor visibility, bracketed paste, autowrap
        count = int(params.split(";")[0] or 1) if final in "ABCD" else 0
        if final == "A":
            self._move(max(0, self.row - count), self.col)
        elif final == "B":
            self._move(self.row + count, self.col)
        elif final == "C":
            self.col = min(COLUMNS - 1, self.col + count)
        elif final == "D":
            self.col = max(0, self.col - count)
        elif final == "K":
            del self._line()[self.col :]
        elif final == "J":
            del self._line()[self.col :]
            del self.rows[self.row + 1 :]

    def _move(self, row: int, col: int) -> None:
        while len(self.rows) <= row:
            self.rows.append([])
        self.row, self.col = row, col

    def _line(self) -> list[str]:
        return self.rows[self.row]

    def lines(self) -> list[str]:
        return ["".join(row).rstrip() for row in self.rows]

    def text(self) -> str:
        return "\n".join(self.lines())

    @property
    def cursor_line(self) -> str:
        """The line the cursor is on, up to the cursor: what is being typed."""
        return "".join(self._line()[: self.col]).ljust(self.col)


class Terminal:
    """``python -m cli_client`` on a pseudo-terminal."""

    def __init__(self, *args: str) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        env = {key: value for key, value in os.environ.items() if key != "NO_COLOR"}
        # No terminal answers prompt_toolkit's cursor position requests here.
        env.update(TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli_client", *args],
            stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env,
            start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        os.set_blocking(master, False)
        self.master = master
        self.raw = bytearray()
        self.screen = Screen()

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def read(self) -> None:
        try:
            while chunk := os.read(self.master, 65536):
                self.raw.extend(chunk)
                self.screen.feed(chunk.decode("utf-8", "replace"))
        except BlockingIOError:
            pass
        except OSError:  # EIO: the client exited and closed the terminal
            pass

    async def until(self, check: Callable[[Screen], bool], what: str) -> None:
        """Wait (bounded) until ``check(screen)`` holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:
            self.read()
            if check(self.screen):
                return
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{self.screen.text()}")
            await asyncio.sleep(0.02)

    async def shows(self, pattern: str) -> None:
        """Wait until a screen line matches ``pattern``."""
        await self.until(
            lambda screen: any(re.search(pattern, line) for line in screen.lines()), pattern
        )

    async def typing(self, text: str) -> None:
        """Wait until the prompt line shows ``text`` being typed."""
        await self.until(lambda screen: screen.cursor_line == PROMPT + text, f"typing {text!r}")

    async def exit_code(self) -> int:
        code = await asyncio.to_thread(self.proc.wait, TIMEOUT)
        self.read()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


StartTerminal = Callable[..., Awaitable[Terminal]]


@pytest.fixture
async def terminal(chat: ChatServer) -> AsyncIterator[StartTerminal]:
    """Start the client on a terminal, connected to ``chat``, at its first prompt."""
    started: list[Terminal] = []

    async def start(*args: str) -> Terminal:
        term = Terminal(chat.url("/"), *args)
        started.append(term)
        await term.shows(r"^Welcome, ")
        await term.typing("")
        return term

    yield start
    for term in started:
        term.close()


async def test_incoming_lines_do_not_tear_the_typed_line(
    terminal: StartTerminal, connect: Connect
) -> None:
    """A line arriving mid-typing is printed above the prompt, which keeps the typed text."""
    bob = await connect(name="bob")
    await bob.until("bob has connected")
    term = await terminal("--name", "alice")
    await bob.until("alice has connected")
    term.type("hel")
    await term.typing("hel")
    await bob.send("ping from bob")
    await term.shows(r"^\d\d:\d\d \[#lobby\] bob: ping from bob$")
    await term.typing("hel")
    lines = term.screen.lines()
    assert lines[term.screen.row - 1].endswith("bob: ping from bob")
    assert lines[term.screen.row] == PROMPT + "hel"
    term.type("lo\r")
    assert await bob.until("alice:") == "alice: hello"
    await term.shows(r"^\d\d:\d\d \[#lobby\] alice: hello$")
    term.type("\x04")  # Ctrl-D on an empty line
    assert await term.exit_code() == 0
    await term.shows(r"^Connection closed \(code 1000\)\.$")


async def test_output_is_colored_on_a_terminal(terminal: StartTerminal) -> None:
    """On a terminal, rooms and notices are colored with ANSI sequences."""
    term = await terminal("--name", "alice")
    assert b"\x1b[36m[#lobby]\x1b[0m" in term.raw
    assert b"\x1b[33mConnected successfully!\x1b[0m" in term.raw


async def test_ctrl_c_at_the_prompt_exits_zero(terminal: StartTerminal) -> None:
    """Ctrl-C at the prompt closes the connection and exits 0 without a traceback."""
    term = await terminal()
    term.type("half typed")
    await term.typing("half typed")
    term.type("\x03")
    assert await term.exit_code() == 0
    await term.shows(r"^Connection closed \(code 1000\)\.$")
    assert "Traceback" not in term.screen.text()


async def test_quit_command_at_the_prompt_exits_zero(
    terminal: StartTerminal, connect: Connect
) -> None:
    """/quit typed at the prompt leaves the chat: others see the disconnect, status 0."""
    bob = await connect(name="bob")
    await bob.until("bob has connected")
    term = await terminal("--name", "alice")
    term.type("/quit\r")
    assert await term.exit_code() == 0
    assert await bob.until("alice has dis") == "alice has disconnected."


SECRET = "pty secret pw 123"


async def test_login_flag_asks_for_the_password_without_echo(
    chat: ChatServer, connect: Connect
) -> None:
    """`--name alice --login` asks for the password (not echoed) and logs in."""
    alice = await connect(json=True, name="alice")
    await alice.until_type("welcome")
    await alice.send_json(type="register", password=SECRET)
    await alice.until_type("identified")
    await alice.close()
    term = Terminal(chat.url("/"), "--name", "alice", "--login")
    try:
        await term.shows(r"^Password for alice:")
        term.type(SECRET + "\r")
        await term.shows(r"^Welcome, alice! You are logged in \(registered\)\.")
        assert SECRET not in term.screen.text()
        assert SECRET.encode() not in term.raw
    finally:
        term.close()


async def test_register_at_the_prompt_asks_twice_without_showing_it(
    terminal: StartTerminal, connect: Connect
) -> None:
    """/register asks for a new password twice, masked, and registers the name."""
    term = await terminal("--name", "bob")
    term.type("/register\r")
    await term.shows(r"^New password:")
    term.type(SECRET + "\r")
    await term.shows(r"^Same password again:")
    term.type(SECRET + "\r")
    await term.shows(r"^\*\*\* You are bob \(registered\)\.$")
    assert SECRET not in term.screen.text()
    assert SECRET.encode() not in term.raw
    guest = await connect(json=True, name="bob")
    await guest.until_type("welcome")
    assert (await guest.until_type("error"))["code"] == "name_registered"


async def register(url: str, name: str, password: str) -> None:
    """Register ``name`` with ``password`` over a JSON connection to ``url``."""
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{url}?name={name}", protocols=("chat.v1",)) as ws,
    ):
        await ws.send_json({"type": "register", "password": password})
        async with asyncio.timeout(TIMEOUT):
            while (await ws.receive_json())["type"] != "identified":
                pass


@pytest.mark.parametrize(
    ("command", "prompts", "answer"),
    [
        ("/login alice", ["Password for alice:"], r"\*\*\* You are alice \(registered\)\."),
        ("/register", ["New password:", "Same password again:"], r"\*\*\* You are bob \(regis"),
    ],
)
async def test_account_command_typed_before_the_welcome_is_sent_once_connected(
    server_process: Callable[..., ServerProcess], command: str, prompts: list[str], answer: str
) -> None:
    """/login or /register typed while the server does not answer yet: the password is
    asked for (not echoed) and the command is sent, with it, once the welcome came."""
    server = await asyncio.to_thread(server_process)
    await register(server.url(), "alice", SECRET)
    server.signal(signal.SIGSTOP)  # the handshake waits: no welcome yet
    term = Terminal(f"ws://127.0.0.1:{server.port}/", "--name", "bob")
    try:
        await term.shows(r"^Connecting to ")
        term.type(command + "\r")
        for prompt in prompts:
            await term.shows("^" + prompt)
            term.type(SECRET + "\r")
        await term.shows(rf"^Not connected yet; {command} will be sent once connected\.$")
        server.signal(signal.SIGCONT)
        await term.shows(r"^Welcome, bob! ")
        await term.shows(answer)
        assert "Usage" not in term.screen.text()
        assert SECRET.encode() not in term.raw
    finally:
        server.signal(signal.SIGCONT)
        term.close()


async def test_a_password_typed_on_the_command_line_is_masked_and_not_recalled(
    terminal: StartTerminal, chat: ChatServer
) -> None:
    """`/login alice PASSWORD` shows the password as asterisks, while typed and after;
    the up arrow recalls `/login alice` without it."""
    await register(chat.url(), "alice", SECRET)
    term = await terminal("--name", "bob")
    term.type(f"/login alice {SECRET}")
    await term.typing("/login alice " + "*" * len(SECRET))
    term.type("\r")
    await term.shows(r"^\*\*\* You are alice \(registered\)\.$")
    term.type("\x1b[A")  # up arrow: the last line typed
    await term.typing("/login alice")
    assert SECRET not in term.screen.text()
    assert SECRET.encode() not in term.raw
