"""Idle and half-open sockets are bounded: a request timeout from accept, the
per-address limit from accept, and a total cap that still lets /healthz in.
Raw sockets against ``python -m chatserver``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import ServerProcess

PARTIAL = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # a head that never ends


def raw(port: int, send: bytes = b"", source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    if send:
        sock.sendall(send)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (reading and discarding), or None."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def answer(sock: socket.socket, request: bytes) -> bytes:
    """The status line the server answers ``request`` with."""
    sock.sendall(request)
    sock.settimeout(10)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0]


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


async def test_silent_and_partial_connections_are_closed_after_the_request_timeout(
    server_process: Callable[..., ServerProcess], sockets: list[socket.socket]
) -> None:
    """Sockets that send nothing or half a request head are closed; a full request is served."""
    server = await asyncio.to_thread(server_process, "--request-timeout", "1")
    sockets += [raw(server.port) for _ in range(10)]
    sockets += [raw(server.port, PARTIAL) for _ in range(10)]
    waits = await asyncio.gather(*(asyncio.to_thread(closed_within, s, 15) for s in sockets))
    assert all(wait is not None for wait in waits), waits
    ok = raw(server.port)
    sockets.append(ok)
    assert answer(ok, get("/healthz")) == b"HTTP/1.1 200 OK"


async def test_the_per_address_limit_counts_from_accept(
    server_process: Callable[..., ServerProcess], sockets: list[socket.socket]
) -> None:
    """Silent connections count against --max-connections-per-ip; other addresses are fine."""
    server = await asyncio.to_thread(
        server_process, "--max-connections-per-ip", "5", "--request-timeout", "60"
    )
    sockets += [raw(server.port, source="127.0.0.2") for _ in range(5)]
    over = raw(server.port, source="127.0.0.2")
    sockets.append(over)
    assert answer(over, get("/healthz")) == b"HTTP/1.1 429 Too Many Requests"
    other = raw(server.port, source="127.0.0.3")
    sockets.append(other)
    assert answer(other, get("/healthz")) == b"HTTP/1.1 200 OK"


async def test_past_the_total_cap_requests_get_503_but_healthz_answers(
    server_process: Callable[..., ServerProcess], sockets: list[socket.socket]
) -> None:
    """At --max-connections, a new request gets 503 and /healthz still gets 200."""
    server = await asyncio.to_thread(
        server_process, "--max-connections", "10", "--request-timeout", "60"
    )
    for index in range(10):  # from several addresses: the total counts, not one address
        sockets.append(raw(server.port, source=f"127.0.0.{4 + index % 3}"))
    await asyncio.sleep(0.2)  # let the server accept them all
    busy = raw(server.port)
    sockets.append(busy)
    assert answer(busy, get("/")) == b"HTTP/1.1 503 Service Unavailable"
    health = raw(server.port)
    sockets.append(health)
    assert answer(health, get("/healthz")) == b"HTTP/1.1 200 OK"
    for sock in sockets[:10]:
        sock.close()
    assert closed_within(busy, 5) is not None


def test_the_server_raises_its_soft_open_file_limit() -> None:
    """raise_open_file_limit lifts a low soft RLIMIT_NOFILE to the hard limit."""
    script = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "from chatserver.admission import raise_open_file_limit\n"
        "raise_open_file_limit()\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(hard, 1048576))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "True"
