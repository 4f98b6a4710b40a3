"""Property-based tests: random frames in both dialects and random admin API
bodies never crash a handler, never log a traceback, and the server carries on.

One real server runs in a background thread for the module (a server per
example would make hypothesis far too slow); the examples talk to it with the
``websockets`` sync client and ``http.client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from chatserver.app import create_app
from tests.conftest import ADMIN_AUTH, make_settings

RECV_TIMEOUT = 5.0
SERVER_LOGGERS = ("chatserver", "dashboard", "aiohttp", "asyncio")


class LogCollector(logging.Handler):
    """Every record logged while the module's server runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def tracebacks(self) -> list[str]:
        """Server-side records with a traceback or at ERROR (the client's are not ours)."""
        return [
            r.getMessage()
            for r in self.records
            if r.name.startswith(SERVER_LOGGERS) and (r.exc_info or r.levelno >= logging.ERROR)
        ]


@dataclass
class ThreadedServer:
    port: int
    log: LogCollector


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    tmp_path: Path = tmp_path_factory.mktemp("fuzz")
    collector = LogCollector()
    logging.getLogger().addHandler(collector)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner = web.AppRunner(create_app(make_settings(tmp_path)))
    ports: list[int] = []

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.append(runner.addresses[0][1])
        started.set()

    def run() -> None:
        loop.run_until_complete(start())
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="fuzz-server", daemon=True)
    thread.start()
    assert started.wait(15), "server did not start"
    yield ThreadedServer(ports[0], collector)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(15)
    logging.getLogger().removeHandler(collector)


@contextlib.contextmanager
def open_chat(port: int, json_mode: bool) -> Iterator[ClientConnection]:
    """A sync chat client that has read its welcome."""
    with connect(
        f"ws://127.0.0.1:{port}/ws",
        subprotocols=[Subprotocol("chat.v1")] if json_mode else None,
        open_timeout=RECV_TIMEOUT,
        close_timeout=2,
        max_size=None,
    ) as ws:
        ws.recv(RECV_TIMEOUT)  # welcome
        yield ws


def still_answers(ws: ClientConnection, json_mode: bool) -> None:
    """The connection answers a ping command after whatever came before."""
    ws.send(json.dumps({"type": "ping"}) if json_mode else "/rooms")
    wanted = '"type":"pong"' if json_mode else "Your rooms:"
    while True:
        reply = ws.recv(RECV_TIMEOUT)
        assert isinstance(reply, str)
        if wanted in reply:
            return


# Numbers at and past every boundary a field could have.
edge_ints = st.one_of(
    st.integers(),
    st.sampled_from([-1, 0, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**400]),
)
hostile_chars = st.sampled_from(
    [
        "\x00",
        "\n",
        "\r",
        "\x1b",
        "\x85",
        "\u2028",
        "\u2029",
        "\u202e",
        "\u2066",
        "\u200b",
        "\ufeff",
        "\ud800",
        "\U000e0001",
        "\ufffd",
    ]
)
hostile_text = st.lists(st.one_of(st.text(max_size=20), hostile_chars), max_size=10).map("".join)
leaves = st.one_of(st.none(), st.booleans(), edge_ints, st.floats(allow_nan=False), hostile_text)
json_values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = ["type", "text", "room", "name", "before", "limit", "history", "ref"]
TYPES = ["message", "nick", "join", "leave", "who", "history", "ping", "rooms", "help", "x"]
commands = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(TYPES), json_values)},
    optional={key: json_values for key in KEYS[1:]},
)


def encode(command: Any) -> str:
    """Raw characters where UTF-8 can carry them; a lone surrogate goes out as an escape."""
    text = json.dumps(command, ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        return json.dumps(command)
    return text


def deep(depth: int, opener: str) -> str:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return opener * depth + "1" + closer * depth


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(frames=st.lists(commands, min_size=1, max_size=5))
def test_random_json_commands_never_crash_the_socket(
    server: ThreadedServer, frames: list[dict[str, Any]]
) -> None:
    """Random chat.v1 commands get replies or errors; the socket and the server carry on."""
    with open_chat(server.port, json_mode=True) as ws:
        for frame in frames:
            ws.send(encode(frame))
        still_answers(ws, json_mode=True)
    assert server.log.tracebacks() == []


@FUZZ
@given(
    depth=st.integers(min_value=1, max_value=2600),  # 2600 levels of {"a": fit 16 KiB
    opener=st.sampled_from(["[", '{"a":']),
    where=st.sampled_from(["top", "field", "unknown"]),
)
def test_any_nesting_depth_gets_an_answer(
    server: ThreadedServer, depth: int, opener: str, where: str
) -> None:
    """Arrays and objects nested to any depth within the frame limit get an error event."""
    inner = deep(depth, opener)
    frame = {
        "top": inner,
        "field": '{"type":"message","text":' + inner + "}",
        "unknown": '{"type":"ping","zzz":' + inner + "}",
    }[where]
    with open_chat(server.port, json_mode=True) as ws:
        ws.send(frame)
        still_answers(ws, json_mode=True)
    assert server.log.tracebacks() == []


@FUZZ
@given(lines=st.lists(st.one_of(hostile_text, st.builds("/{}".format, hostile_text)), max_size=5))
def test_random_text_lines_never_crash_the_socket(server: ThreadedServer, lines: list[str]) -> None:
    """Random lines and slash commands in the text dialect, hostile characters included."""
    with open_chat(server.port, json_mode=False) as ws:
        for line in lines:
            if line.strip():
                ws.send(line.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
        still_answers(ws, json_mode=False)
    assert server.log.tracebacks() == []


@FUZZ
@given(payload=st.binary(max_size=200))
def test_invalid_utf8_in_a_text_frame_ends_only_that_socket(
    server: ThreadedServer, payload: bytes
) -> None:
    """A text frame that is not UTF-8 closes that socket cleanly; others carry on."""
    with open_chat(server.port, json_mode=True) as bystander:
        with open_chat(server.port, json_mode=True) as ws:
            ws.send(b"\xff" + payload, text=True)
            with pytest.raises(ConnectionClosed):
                drain(ws)
        still_answers(bystander, json_mode=True)
    assert server.log.tracebacks() == []


def drain(ws: ClientConnection) -> None:
    """Read until the server closes (ConnectionClosed) or 100 frames came."""
    for _ in range(100):
        ws.recv(RECV_TIMEOUT)


API_ROUTES = [
    ("POST", "kick"),
    ("POST", "bans"),
    ("POST", "mutes"),
    ("POST", "announce"),
    ("POST", "connections/1/kick"),
]
api_bodies = st.fixed_dictionaries(
    {},
    optional={
        key: json_values
        for key in [
            "conn_id",
            "user_id",
            "name",
            "address",
            "by",
            "duration",
            "reason",
            "text",
            "room",
        ]
    },
)


def api_call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=RECV_TIMEOUT)
    try:
        headers = {**ADMIN_AUTH, "Content-Type": "application/json"}
        conn.request(method, "/admin/api/" + path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@FUZZ
@given(route=st.sampled_from(API_ROUTES), body=st.one_of(api_bodies, json_values))
def test_random_api_bodies_get_an_answer_never_a_500(
    server: ThreadedServer, route: tuple[str, str], body: Any
) -> None:
    """Every admin action answers random bodies with 2xx, 400 or 404 and a JSON error."""
    method, path = route
    status, data = api_call(server.port, method, path, encode(body).encode())
    assert status in {200, 201, 400, 404}, (status, data)
    if status >= 400:
        assert data["error"]["code"]
        assert data["error"]["message"]
    assert server.log.tracebacks() == []


@FUZZ
@given(
    path=st.sampled_from(
        ["connections", "rooms", "audit", "bans/{}", "mutes/{}", "connections/{}"]
    ),
    value=st.one_of(edge_ints.map(str), hostile_text),
    key=st.sampled_from(["limit", "before", "page", "per_page", "sort", "q", "room"]),
)
def test_random_api_queries_get_an_answer_never_a_500(
    server: ThreadedServer, path: str, value: str, key: str
) -> None:
    """Query strings and path ids with huge, negative and hostile values never make a 500."""
    # surrogatepass: a lone surrogate goes out as the invalid UTF-8 a hostile peer sends.
    raw = quote(value.encode("utf-8", "surrogatepass"), safe="")
    target = path.format(raw) if "{}" in path else path
    method = "DELETE" if path.startswith(("bans", "mutes")) else "GET"
    query = f"?{key}={raw}"
    status, data = api_call(server.port, method, target + query)
    assert status in {200, 400, 404}, (status, data)
    assert server.log.tracebacks() == []
