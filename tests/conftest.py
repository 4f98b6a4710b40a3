"""Shared fixtures: real servers on port 0, real WebSocket clients, real SQLite files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient

from chatserver.app import create_app
from chatserver.settings import Settings

TIMEOUT = 5.0
ADMIN_TOKEN = "test-admin-token"  # every test server's admin token
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
JSON = ("chat.v1",)


class Peer:
    """A real aiohttp WebSocket client with bounded receives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def recv(self, timeout: float = TIMEOUT) -> aiohttp.WSMessage:
        return await asyncio.wait_for(self.ws.receive(), timeout)

    async def text(self, timeout: float = TIMEOUT) -> str:
        msg = await self.recv(timeout)
        assert msg.type is aiohttp.WSMsgType.TEXT, f"expected text, got {msg!r}"
        return str(msg.data)

    async def event(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(await self.text(timeout))
        return data

    async def until(self, pattern: str, timeout: float = TIMEOUT) -> str:
        """Read text lines until one matches ``pattern`` (regex search)."""
        deadline = time.monotonic() + timeout
        while True:
            line = await self.text(max(0.01, deadline - time.monotonic()))
            if re.search(pattern, line):
                return line

    async def until_type(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Read JSON events until one has ``type == kind``."""
        deadline = time.monotonic() + timeout
        while True:
            event = await self.event(max(0.01, deadline - time.monotonic()))
            if event["type"] == kind:
                return event

    async def send(self, data: str) -> None:
        await self.ws.send_str(data)

    async def send_json(self, **command: Any) -> None:
        await self.ws.send_str(json.dumps(command))

    async def closed(self, timeout: float = TIMEOUT) -> tuple[int | None, str]:
        """Read until the server closes; return (close code, reason)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.recv(max(0.01, deadline - time.monotonic()))
            if msg.type is aiohttp.WSMsgType.CLOSE:
                # The frame's code: the client may later overwrite close_code with 1006.
                return int(msg.data), str(msg.extra or "")
            if msg.type is aiohttp.WSMsgType.CLOSED:
                return self.ws.close_code, ""

    async def close(self) -> None:
        await self.ws.close()


Connect = Callable[..., Awaitable[Peer]]


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base = Settings(
        host="127.0.0.1",
        port=0,
        db=str(tmp_path / "chat.db"),
        admin_token=ADMIN_TOKEN,
        heartbeat=0,
        rate_limit=0,
        max_connections_per_ip=0,
        shutdown_timeout=3.0,
    )
    return replace(base, **overrides)


class ChatServer:
    """An in-process server on a free port, restartable on the same database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: TestServer | None = None
        self.app: web.Application | None = None

    async def start(self, **overrides: Any) -> None:
        if overrides:
            self.settings = replace(self.settings, **overrides)
        self.app = create_app(self.settings)
        port = self.settings.port or 0
        self.server = TestServer(self.app, host="127.0.0.1", port=port)
        await self.server.start_server()
        self.settings = replace(self.settings, port=self.server.port or 0)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    def url(self, path: str = "/ws", **query: Any) -> str:
        assert self.server is not None
        base = f"ws://127.0.0.1:{self.server.port}{path}"
        if query:
            base += "?" + "&".join(f"{key}={value}" for key, value in query.items())
        return base


# --------------------------------------------------------------- in-process app client

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, tmp_path: Path) -> Client:
    return await aiohttp_client(create_app(make_settings(tmp_path, admin_token=ADMIN_TOKEN)))


async def join(client: Client, name: str, *, json_mode: bool = True, **query: str) -> Peer:
    """A chat client that has read its welcome."""
    ws = await client.ws_connect(
        "/ws",
        params={"name": name, **query},
        protocols=JSON if json_mode else (),
        timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
    )
    peer = Peer(ws)
    if json_mode:
        welcome = await peer.until_type("welcome")
        assert welcome["user"]["name"] == name
    else:
        assert (await peer.text()).startswith("Welcome")
    return peer


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class ClusterChat(ChatServer):
    """Two in-process nodes on one real Redis, used like one ChatServer: each new
    connection goes to the other node than the one before, so every test of a
    module that opts in also proves the behaviour across nodes."""

    def __init__(self, settings: Settings, redis: RedisServer) -> None:
        super().__init__(replace(settings, redis_url=redis.url, node_id="node0"))
        self.second = ChatServer(replace(settings, redis_url=redis.url, node_id="node1"))
        self.turn = 0

    async def start(self, **overrides: Any) -> None:
        await super().start(**overrides)
        await self.second.start(**overrides)

    async def stop(self) -> None:
        await self.second.stop()
        await super().stop()

    def url(self, path: str = "/ws", **query: Any) -> str:
        self.turn += 1
        if self.turn % 2:
            return super().url(path, **query)
        return self.second.url(path, **query)


@pytest.fixture
def chat_mode() -> str:
    """Where ``chat`` runs; modules that call :func:`both_modes` run it on both."""
    return "embedded"


def both_modes() -> Any:
    """A ``chat_mode`` fixture for a module whose tests also run on two nodes over
    Redis: ``chat_mode = both_modes()`` (tests needing one process's internals
    use the embedded-only fixtures instead)."""

    @pytest.fixture(name="chat_mode", params=["embedded", "redis"])
    def mode(request: pytest.FixtureRequest) -> str:
        return str(request.param)

    return mode


@pytest.fixture
async def chat(chat_mode: str, tmp_path: Path) -> AsyncIterator[ChatServer]:
    """The chat server of a test: embedded, or two nodes on a real Redis."""
    settings = make_settings(tmp_path)
    server: ChatServer
    redis: RedisServer | None = None
    if chat_mode == "redis":
        require_redis()
        redis = RedisServer(tmp_path)
        redis.start()
        server = ClusterChat(settings, redis)
    else:
        server = ChatServer(settings)
    await server.start()
    yield server
    await server.stop()
    if redis is not None:
        redis.stop()


@pytest.fixture
def connect(http: aiohttp.ClientSession, chat: ChatServer) -> Connect:
    """Open a chat connection: ``await connect(json=True, name="x")``."""

    async def open_peer(
        path: str = "/ws",
        json: bool = False,
        server: ChatServer | None = None,
        headers: dict[str, str] | None = None,
        **query: Any,
    ) -> Peer:
        target = server or chat
        ws = await http.ws_connect(
            target.url(path, **query),
            protocols=JSON if json else (),
            headers=headers,
            timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
        )
        return Peer(ws)

    return open_peer


# ------------------------------------------------------------------ subprocess server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """``python -m chatserver`` in a child process, for signals and crashes."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self) -> None:
        cmd = [sys.executable, "-m", "chatserver", "--port", str(self.port), *self.args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if line.startswith("Server started on"):
                # Keep reading: a full pipe would block the server on its next log line.
                threading.Thread(target=self._drain, daemon=True).start()
                return
        raise AssertionError("server did not start:\n" + "".join(self.output))

    def _drain(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stdout:
                self.output.append(line)

    def url(self, **query: Any) -> str:
        base = f"ws://127.0.0.1:{self.port}/ws"
        if query:
            base += "?" + "&".join(f"{key}={value}" for key, value in query.items())
        return base

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(*args: str, port: int | None = None) -> ServerProcess:
        # Not chat.db: the in-process `chat` fixture may hold that one.
        defaults = ["--db", str(tmp_path / "process.db"), "--admin-token", ADMIN_TOKEN]
        defaults += ["--rate-limit", "0", "--max-connections-per-ip", "0"]
        process = ServerProcess([*defaults, *args])
        if port is not None:
            process.port = port
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


# ------------------------------------------------------------------ raw socket peer


class RawPeer:
    """A hand-rolled WebSocket client on a blocking socket: it reads only when
    told to and never answers pings, like a stalled or dead peer."""

    def __init__(
        self, port: int, path: str = "/ws", rcvbuf: int = 4096, protocol: str | None = None
    ) -> None:
        self.sock = socket.socket()
        # A tiny receive buffer makes the server's send side fill up quickly.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        asked = f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else ""
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\n{asked}\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(1024)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def read_frames(self, timeout: float = 10.0) -> Iterator[tuple[int, bytes]]:
        """Yield (opcode, payload) until the connection ends."""
        self.sock.settimeout(timeout)
        while True:
            frame = self._parse()
            if frame is not None:
                yield frame
                continue
            chunk = self.sock.recv(65536)
            if not chunk:
                return
            self.buffer += chunk

    def _parse(self) -> tuple[int, bytes] | None:
        if len(self.buffer) < 2:
            return None
        opcode, length, offset = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
        if length == 126:
            if len(self.buffer) < 4:
                return None
            length, offset = int.from_bytes(self.buffer[2:4], "big"), 4
        elif length == 127:
            if len(self.buffer) < 10:
                return None
            length, offset = int.from_bytes(self.buffer[2:10], "big"), 10
        if len(self.buffer) < offset + length:
            return None
        payload = self.buffer[offset : offset + length]
        self.buffer = self.buffer[offset + length :]
        return opcode, payload

    def message_ids(self, count: int | None = None, timeout: float = 10.0) -> list[int]:
        """Ids of the ``chat.v1`` message events read, until ``count`` of them or
        until the connection ends (an end by reset counts as an end)."""
        ids: list[int] = []
        with contextlib.suppress(ConnectionResetError):
            for opcode, payload in self.read_frames(timeout):
                if opcode == 1 and (event := json.loads(payload))["type"] == "message":
                    ids.append(event["id"])
                    if len(ids) == count:
                        break
        return ids

    def close_code(self, timeout: float = 10.0) -> int | None:
        """Drain the stream; the code of the server's close frame, if one came."""
        try:
            for opcode, payload in self.read_frames(timeout):
                if opcode == 8:
                    return int.from_bytes(payload[:2], "big")
        except (ConnectionResetError, TimeoutError):
            return None
        return None

    def close(self) -> None:
        self.sock.close()


# ------------------------------------------------------------------ real Redis


class RedisServer:
    """A real ``redis-server`` of this test's own, on a free port."""

    def __init__(
        self,
        directory: Path,
        *,
        persist: bool = False,
        password: str = "",
        unix: bool = False,
        user: str = "",
    ) -> None:
        self.port = free_port()
        self.directory = directory
        self.persist = persist
        self.password = password
        self.user = user  # nodes log in as this ACL user (with ``password``)
        self.socket_path = directory / "redis.sock" if unix else None
        self.started = False
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.socket_path is not None:
            return f"unix://{self.socket_path}?db=0"
        auth = f"{self.user}:{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (again, on the same port); a first start retries on other ports."""
        for _ in range(1 if self.started else 3):
            try:
                self._start()
            except AssertionError:
                if self.started:
                    raise
                self.port = free_port()
            else:
                self.started = True
                return
        raise AssertionError("redis-server did not start on three free ports")

    def _start(self) -> None:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persist
            else ["--appendonly", "no"]
        )
        cmd = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--dir", str(self.directory), *persistence,
        ]  # fmt: skip
        if self.password and not self.user:
            cmd += ["--requirepass", self.password]
        if self.socket_path is not None:
            cmd += ["--unixsocket", str(self.socket_path)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            # Ours, not another run's that won the race for the free port.
            if self.cli("CONFIG", "GET", "dir").endswith(str(self.directory)):
                return
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"redis-server did not start on port {self.port}")

    def _auth(self) -> list[str]:
        if self.password and not self.user:  # an ACL user is the nodes'; the CLI stays default
            return ["-a", self.password, "--no-auth-warning"]
        return []

    def cli(self, *args: str) -> str:
        """One command through redis-cli; its output ('' if Redis is down)."""
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), *self._auth(), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
        return result.stdout.strip()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def require_redis() -> None:
    """Skip without redis-server, unless CI said it must be there."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        reason = "redis-server (Debian package redis-server) is not installed"
        if os.environ.get("CHAT_REQUIRE_REDIS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    require_redis()
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
